"""What transformers' GenerationTesterMixin and PipelineTesterMixin check of a decoder-only model, in flashgau's own
words (their files are not in transformers' PyPI source distribution, so test_transformers_common.py skips them
here), for what tests/hf/test_generate.py does not already cover:

- return_dict_in_generate with output_scores / output_logits / output_hidden_states: the output class, one entry per
  step, the first step over the prompt and later steps one token through the cache, for greedy, sampling and beam
  search; beam scores that are the log-probabilities of one parallel pass. output_attentions: each step's weights
  over the whole sequence (generate re-runs it, documented) where the arch has weights, one ValueError for FLASH.
- num_return_sequences with sampling (the prompt repeated) and with beam search (distinct, best first).
- inputs_embeds: refused by name (flashgau embeds its own ids; docs/hugging_face.md).
- assisted and prompt lookup decoding: refused, as a flashgau cache cannot be cropped (docs/hugging_face.md), with or
  without a cache argument.
- eos_token_id stops a row and pads it; min_new_tokens holds eos back.
- pipeline("text-generation") and pipeline("fill-mask") give the same outputs batched with padding as one by one,
  with padding on either side.
"""

import copy

import pytest
import torch

from hf_helpers import NEEDS_HF, VOCAB, hf_causal, tokens

pytest.importorskip("transformers", reason=NEEDS_HF)

from transformers import pipeline  # noqa: E402
from transformers.generation import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput  # noqa: E402

from flashgau.hf import FlashgauByteTokenizer, FlashgauCache, FlashgauForMaskedLM  # noqa: E402

T, LENGTHS, NEW, D = 6, [6, 4], 4, 64          # prompt columns, real tokens per row, new tokens, the tiny d_model
HEADS = {"transformer++": 4, "flash-quad": 1}   # heads of the attention weights (a GAU has one)


def _left_padded(lengths=LENGTHS, seed=3):
    """Prompts (ids >= 1) left-padded with 0 as HF pads them, their mask, and each row's real tokens."""
    x = tokens(len(lengths), T, seed=seed).clamp(min=1)
    ids, mask = torch.zeros_like(x), torch.zeros_like(x)
    for b, n in enumerate(lengths):
        ids[b, T - n:], mask[b, T - n:] = x[b, :n], 1
    return ids, mask, [x[b, :n] for b, n in enumerate(lengths)]


def _log_probs_of_continuation(model, real: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """The summed log-probabilities flashgau's parallel pass gives the tokens `new` after the prompt `real`."""
    seq = torch.cat([real, new])[None]
    with torch.no_grad():
        logp = model(seq[:, :-1]).logits[0, len(real) - 1:].log_softmax(-1)
    return logp.gather(1, new[:, None]).sum()


# ------------------------------------------------------------------ 1. dict outputs, step by step

MODES = {"greedy": dict(do_sample=False),
         "sample": dict(do_sample=True, temperature=0.7, top_k=5),
         "beam": dict(do_sample=False, num_beams=3, num_return_sequences=2, length_penalty=0.0)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ["flash", "transformer++", "flash-quad"])
def test_dict_outputs_hold_one_entry_per_step_in_hf_shapes(arch, mode, build):
    model = build(arch, n_layers=2)
    hf = hf_causal(model)
    ids, mask, real = _left_padded()
    args = MODES[mode]
    beams, returned = args.get("num_beams", 1), args.get("num_return_sequences", 1)
    torch.manual_seed(0)
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=NEW, return_dict_in_generate=True,
                          output_scores=True, output_logits=True, output_hidden_states=True, **args)
    assert type(out) is (GenerateBeamDecoderOnlyOutput if mode == "beam" else GenerateDecoderOnlyOutput)
    B = len(LENGTHS)
    assert out.sequences.shape == (B * returned, T + NEW)
    assert out.attentions is None and isinstance(out.cache, FlashgauCache)
    assert len(out.scores) == len(out.logits) == len(out.hidden_states) == NEW
    for step in range(NEW):
        assert out.scores[step].shape == out.logits[step].shape == (B * beams, VOCAB)
        assert len(out.hidden_states[step]) == 3                  # each block's input and the final normed output
        width = T if step == 0 else 1                              # the prompt, then one token through the cache
        assert all(h.shape == (B * beams, width, D) for h in out.hidden_states[step])
    new = out.sequences[:, T:]
    if mode == "greedy":                 # no processor: the scores are the logits, and each token is their argmax
        for step in range(NEW):
            assert torch.equal(out.scores[step], out.logits[step])
            assert torch.equal(new[:, step], out.scores[step].argmax(-1))
    elif mode == "sample":               # the scores are the logits / temperature, top-5 kept; the token is one of them
        for step in range(NEW):
            kept = out.scores[step].isfinite()
            assert (kept.sum(-1) == 5).all()
            torch.testing.assert_close(out.scores[step][kept], out.logits[step][kept] / 0.7)
            assert kept.gather(1, new[:, step:step + 1]).all()
            top = out.logits[step].topk(5).indices
            assert torch.equal(kept, torch.zeros_like(kept).scatter(1, top, True))
    else:                                # beam: length_penalty 0, so a beam's score is its summed log-probabilities
        assert out.beam_indices.shape == (B * returned, NEW) and out.sequences_scores.shape == (B * returned,)
        transition = hf.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
        torch.testing.assert_close(transition.sum(-1), out.sequences_scores, atol=1e-4, rtol=1e-4)
        for r in range(B * returned):
            want = _log_probs_of_continuation(model, real[r // returned], new[r])
            torch.testing.assert_close(out.sequences_scores[r], want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("beams", [1, 2], ids=["greedy", "beam"])
@pytest.mark.parametrize("arch", ["transformer++", "flash-quad"])
def test_generate_attentions_are_each_steps_weights_over_the_whole_sequence(arch, beams, build):
    hf = hf_causal(build(arch, n_layers=2))
    ids, mask, _ = _left_padded()
    args = dict(attention_mask=mask, max_new_tokens=NEW, do_sample=False, num_beams=beams)
    with torch.no_grad():
        plain = hf.generate(ids, **args)
        out = hf.generate(ids, return_dict_in_generate=True, output_attentions=True, output_hidden_states=True,
                          **args)
        final = torch.cat([mask, torch.ones_like(out.sequences[:, T:])], 1)
        full = hf(out.sequences[:, :-1], attention_mask=final[:, :-1], output_attentions=True, use_cache=False)
    assert torch.equal(out.sequences, plain)       # re-running the sequence for the weights changes no token
    B = len(LENGTHS) * beams
    assert len(out.attentions) == len(out.hidden_states) == NEW
    for step in range(NEW):
        n = T + step                                # generate re-runs the whole sequence: (B, H, n, n) per block
        assert len(out.attentions[step]) == 2
        assert all(a.shape == (B, HEADS[arch], n, n) for a in out.attentions[step])
        assert all(h.shape == (B, n, D) for h in out.hidden_states[step])
        if beams == 1:                              # the newest query's weights: those of one pass over the result
            for layer in range(2):
                torch.testing.assert_close(out.attentions[step][layer][:, :, -1],
                                           full.attentions[layer][:, :, n - 1, :n], atol=1e-5, rtol=1e-4)


def test_flash_refuses_output_attentions_in_generate_with_one_clear_error(build):
    hf = hf_causal(build("flash"))
    ids, mask, _ = _left_padded()
    for extra in (dict(return_dict_in_generate=True), dict(num_beams=2, return_dict_in_generate=True), {}):
        with pytest.raises(ValueError, match="output_attentions is not available for arch 'flash'") as err:
            with torch.no_grad():
                hf.generate(ids, attention_mask=mask, max_new_tokens=2, do_sample=False, output_attentions=True,
                            **extra)
        assert "\n" not in str(err.value) and "mixed chunk" in str(err.value)


# ------------------------------------------------------------------ 2. num_return_sequences

@pytest.mark.parametrize("arch", ["flash", "transformer++"])
def test_num_return_sequences_with_sampling_samples_each_prompt_repeated(arch, build):
    hf = hf_causal(build(arch))
    ids, mask, _ = _left_padded()
    args = dict(max_new_tokens=8, do_sample=True, temperature=1.5, top_k=0)
    with torch.no_grad():
        torch.manual_seed(11)
        out = hf.generate(ids, attention_mask=mask, num_return_sequences=3, **args)
        torch.manual_seed(11)
        repeated = hf.generate(ids.repeat_interleave(3, 0), attention_mask=mask.repeat_interleave(3, 0), **args)
    assert out.shape == (6, T + 8)
    assert torch.equal(out[:, :T], ids.repeat_interleave(3, 0))
    assert torch.equal(out, repeated)               # the same as asking for each prompt three times
    for b in range(2):
        samples = {tuple(row.tolist()) for row in out[3 * b:3 * b + 3, T:]}
        assert len(samples) > 1, (arch, b)          # not one sample copied


@pytest.mark.parametrize("arch", ["flash", "transformer++"])
def test_num_return_sequences_with_beam_search_are_distinct_beams_best_first(arch, build):
    model = build(arch)
    hf = hf_causal(model)
    ids, mask, real = _left_padded()
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=NEW, num_beams=4, num_return_sequences=3,
                          do_sample=False, length_penalty=0.0, return_dict_in_generate=True, output_scores=True)
    assert out.sequences.shape == (6, T + NEW) and out.sequences_scores.shape == (6,)
    assert torch.equal(out.sequences[:, :T], ids.repeat_interleave(3, 0))
    for b in range(2):
        beams = out.sequences[3 * b:3 * b + 3, T:]
        assert len({tuple(row.tolist()) for row in beams}) == 3, (arch, b)
        scores = out.sequences_scores[3 * b:3 * b + 3]
        assert (scores[:-1] >= scores[1:]).all()
        want = torch.stack([_log_probs_of_continuation(model, real[b], row) for row in beams])
        torch.testing.assert_close(scores, want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="num_return_sequences"):
        hf.generate(ids, attention_mask=mask, max_new_tokens=2, num_beams=2, num_return_sequences=3)


# ------------------------------------------------------------------ 3. inputs_embeds

def test_inputs_embeds_are_refused_by_name_in_forward_and_generate(build):
    hf = hf_causal(build("flash"))
    ids, mask, _ = _left_padded()
    embeds = hf.get_input_embeddings()(ids)
    # the forward takes no inputs_embeds (a row's positions count from its first real token and the model embeds its
    # own ids: docs/hugging_face.md), so neither does generate, which says so by name before running the model
    with pytest.raises(ValueError, match=r"take no inputs_embeds \(give input_ids\)"):
        hf(ids, inputs_embeds=embeds)
    for given in (dict(inputs_embeds=embeds), dict(input_ids=ids, inputs_embeds=embeds)):
        with pytest.raises(ValueError, match="inputs_embeds"):
            hf.generate(attention_mask=mask, max_new_tokens=2, **given)


# ------------------------------------------------------------------ 4. assisted and prompt lookup decoding

ASSISTED = {"assistant": lambda hf: dict(assistant_model=copy.deepcopy(hf)),
            "prompt-lookup": lambda hf: dict(prompt_lookup_num_tokens=2)}


@pytest.mark.parametrize("with_cache", [False, True], ids=["no-cache-argument", "cache-argument"])
@pytest.mark.parametrize("method", ASSISTED)
@pytest.mark.parametrize("arch", ["flash", "transformer++"])
def test_assisted_and_prompt_lookup_decoding_are_refused_as_the_cache_cannot_be_rolled_back(arch, method,
                                                                                           with_cache, build):
    """Both verify drafted tokens and crop the cache back past the rejected ones. FLASH's state has folded every
    token into running sums and cannot be rolled back; the KV caches of the other archs live in the same
    FlashgauCache, which crops nothing (is_croppable False), so generate refuses both for every arch in one line,
    whether a cache is passed or not (docs/hugging_face.md: "Assisted and speculative decoding"). Greedy tokens are
    therefore not compared."""
    hf = hf_causal(build(arch))
    prompt = tokens(1, 5).clamp(min=1)
    assert FlashgauCache().is_croppable is False
    with pytest.raises(NotImplementedError, match="cannot be rolled back"):
        FlashgauCache().crop(1)
    cache = dict(cache=FlashgauCache()) if with_cache else {}
    with pytest.raises(ValueError, match="cannot be rolled back") as err, torch.no_grad():
        hf.generate(prompt, max_new_tokens=4, do_sample=False, **cache, **ASSISTED[method](hf))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ 5. stopping

def _an_eos_for_one_row(new: torch.Tensor):
    """(row, step, token): a token the greedy run writes first at a step of one row that is neither its first nor
    its last (so that the row stops after some tokens and some padding follows), and nowhere in the other row."""
    for row in range(2):
        for step in range(1, new.shape[1] - 1):
            tok = int(new[row, step])
            if tok not in new[row, :step].tolist() and tok not in new[1 - row].tolist():
                return row, step, tok
    raise AssertionError(f"no token of one row only in {new.tolist()}: choose other prompts")


@pytest.mark.parametrize("arch", ["flash", "transformer++"])
def test_eos_stops_a_row_and_pads_it_while_the_other_row_goes_on(arch, build):
    hf = hf_causal(build(arch))
    ids, mask, _ = _left_padded()
    args = dict(attention_mask=mask, max_new_tokens=8, do_sample=False)
    with torch.no_grad():
        greedy = hf.generate(ids, **args)
        row, step, eos = _an_eos_for_one_row(greedy[:, T:])
        pad, other = [t for t in range(1, VOCAB) if t not in greedy[:, T:].flatten().tolist()][:2]
        for given in (eos, [other, eos]):               # one id or a list of them
            out = hf.generate(ids, eos_token_id=given, pad_token_id=pad, **args)
            assert out.shape == greedy.shape
            assert torch.equal(out[1 - row], greedy[1 - row])          # the other row: through the cache as before
            stop = T + step + 1
            assert torch.equal(out[row, :stop], greedy[row, :stop]) and out[row, stop - 1] == eos
            assert (out[row, stop:] == pad).all()
        alone = hf.generate(ids[row:row + 1], attention_mask=mask[row:row + 1], max_new_tokens=8, do_sample=False,
                            eos_token_id=eos, pad_token_id=pad)
    assert torch.equal(alone[0], greedy[row, :T + step + 1])              # every row done: generate stops there


@pytest.mark.parametrize("arch", ["flash", "transformer++"])
def test_min_new_tokens_holds_eos_back(arch, build):
    hf = hf_causal(build(arch))
    prompt = tokens(1, 5, seed=5).clamp(min=1)
    with torch.no_grad():
        eos = int(hf.generate(prompt, max_new_tokens=1, do_sample=False)[0, -1])      # greedy's first token
        assert hf.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=eos).shape == (1, 6)
        out = hf.generate(prompt, max_new_tokens=8, min_new_tokens=4, do_sample=False, eos_token_id=eos,
                          return_dict_in_generate=True, output_scores=True, output_logits=True)
    new = out.sequences[0, 5:]
    assert len(new) >= 4 and eos not in new[:4].tolist()
    for step in range(len(new)):
        held = step < 4
        assert (out.scores[step][0, eos] == float("-inf")) == held and out.logits[step][0, eos].isfinite()
        assert new[step] == out.scores[step][0].argmax()
    if len(new) < 8:                                # stopped early: by eos, once allowed
        assert new[-1] == eos


# ------------------------------------------------------------------ 6. pipelines, batched with padding

TEXTS = ["To be, or not to be", "Ay"]


@pytest.mark.parametrize("arch", ["flash", "transformer++"])
def test_text_generation_pipeline_batched_with_padding_equals_one_by_one(arch, build):
    model = build(arch, vocab_size=256)
    tokenizer = FlashgauByteTokenizer()
    generator = pipeline("text-generation", model=hf_causal(model), tokenizer=tokenizer)
    args = dict(max_new_tokens=6, do_sample=False)
    one_by_one = [generator(text, return_tensors=True, **args)[0]["generated_token_ids"] for text in TEXTS]
    batched = generator(TEXTS, batch_size=2, return_tensors=True, **args)
    padded = [b[0]["generated_token_ids"] for b in batched]     # as the batch was: the short prompt left-padded
    assert [len(ids) for ids in padded] == [len(one_by_one[0])] * 2
    assert [ids[ids.index(next(t for t in ids if t != 0)):] for ids in padded] == one_by_one   # byte 0 pads
    for text, got in zip(TEXTS, one_by_one):       # flashgau's own greedy tokens
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        assert got == model.generate(ids, 6, temperature=0)[0].tolist()
    texts = generator(TEXTS, batch_size=2, return_full_text=False, **args)
    assert [t[0]["generated_text"] for t in texts] == [tokenizer.decode(ids[len(tokenizer(text)["input_ids"]):])
                                                       for text, ids in zip(TEXTS, one_by_one)]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("arch", ["flash", "transformer++"])
def test_fill_mask_pipeline_batched_with_padding_equals_one_by_one(arch, side, build):
    encoder = build(arch, causal=False, vocab_size=257)          # 256 bytes + the mask token
    tokenizer = FlashgauByteTokenizer(mask_token="<mask>", padding_side=side)   # left: the tokenizer's default
    fill = pipeline("fill-mask", model=FlashgauForMaskedLM.from_language_model(encoder, pad_token_id=0).eval(),
                    tokenizer=tokenizer)
    texts = ["To be, or not<mask>to be, that is", "a<mask>b"]
    one_by_one = [fill(text, top_k=3) for text in texts]
    batched = fill(texts, top_k=3, batch_size=2)
    assert len(batched) == 2
    for text, alone, together in zip(texts, one_by_one, batched):
        assert [g["token"] for g in together] == [g["token"] for g in alone]
        assert [g["score"] for g in together] == pytest.approx([g["score"] for g in alone], abs=1e-5)
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            logits = encoder(ids).logits[0, ids[0].tolist().index(256)]
        assert [g["token"] for g in alone] == logits.topk(3).indices.tolist()
