"""HF generate on a flashgau model: the tokens flashgau's own generate makes (greedy), for every causal arch, with
prompts padded on the left (as HF pads them) or on the right; a fixed-size cache for FLASH; beam search and sampling
with the cache equal to the same without it (the cache is reordered, not recomputed)."""

import pytest
import torch

from hf_helpers import NEEDS_HF, hf_causal, tokens

pytest.importorskip("transformers", reason=NEEDS_HF)

from flashgau import ARCHS  # noqa: E402
from flashgau.hf import FlashgauCache  # noqa: E402

LENGTHS = [7, 3, 5]
NEW = 9                                          # chunk_size 4: crosses chunk boundaries
CASES = [(arch, {}) for arch in ARCHS] + [("flash-quad", {"normalizer": "paper"}),   # no decoding state
                                          ("flash", {"first_to_all": True})]
IDS = [arch for arch in ARCHS] + ["flash-quad-paper", "flash-first-to-all"]


def _prompts(pad: int = 0):
    """The same three prompts (ids >= 1), right-padded and left-padded with `pad`, and their masks."""
    x = tokens(3, 7, seed=3).clamp(min=1)
    right = torch.arange(7)[None, :] < torch.tensor(LENGTHS)[:, None]
    left = right.flip(1)
    right_ids, left_ids = x.masked_fill(~right, pad), torch.full_like(x, pad)
    for b, n in enumerate(LENGTHS):
        left_ids[b, 7 - n:] = x[b, :n]
    return right_ids, right.long(), left_ids, left.long()


@pytest.mark.parametrize("arch, extra", CASES, ids=IDS)
def test_greedy_generate_equals_flashgau_generate_with_left_or_right_padding(arch, extra, build):
    model = build(arch, **extra)
    right_ids, right, left_ids, left = _prompts()
    want = model.generate(right_ids, NEW, temperature=0, attention_mask=right)
    hf = hf_causal(model)
    args = dict(max_new_tokens=NEW, do_sample=False, return_dict_in_generate=True, output_logits=True)
    with torch.no_grad():
        from_left = hf.generate(left_ids, attention_mask=left, **args)
        from_right = hf.generate(right_ids, attention_mask=right, **args)
    for b, n in enumerate(LENGTHS):
        assert torch.equal(from_left.sequences[b, 7:], want[b, n:n + NEW]), (arch, b)
        assert torch.equal(from_right.sequences[b, 7:], want[b, n:n + NEW]), (arch, b)   # after the row's padding
        if not model.supports_cache:
            continue                 # outputs depend on the final length: no single parallel pass to compare with
        # every step's logits are those of one parallel pass over the row's final sequence (teacher forcing)
        with torch.no_grad():
            parallel = model(want[b:b + 1, :n + NEW - 1]).logits[0, n - 1:]
        for out in (from_left, from_right):
            steps = torch.stack([step[b] for step in out.logits])
            assert torch.allclose(steps, parallel, atol=1e-4), (arch, b)


def test_generate_without_padding_and_through_the_cache_or_not(build):
    model = build("flash")
    prompt = tokens(2, 6).clamp(min=1)
    want = model.generate(prompt, NEW, temperature=0)
    hf = hf_causal(model)
    with torch.no_grad():
        assert torch.equal(hf.generate(prompt, max_new_tokens=NEW, do_sample=False), want)
        assert torch.equal(hf.generate(prompt, max_new_tokens=NEW, do_sample=False, use_cache=False), want)


@pytest.mark.parametrize("arch, grows", [("flash", False), ("transformer++", True)])
def test_flash_cache_keeps_its_size_however_many_tokens_are_generated(arch, grows, build):
    hf = hf_causal(build(arch))
    prompt = tokens(1, 4).clamp(min=1)
    sizes = []
    with torch.no_grad():
        for new in (4, 40):                          # 1 vs 10 chunk boundaries
            out = hf.generate(prompt, max_new_tokens=new, do_sample=False, return_dict_in_generate=True)
            assert isinstance(out.cache, FlashgauCache) and out.cache.get_seq_length() == 4 + new - 1
            sizes.append(out.cache.nbytes())
    assert (sizes[1] > sizes[0]) == grows


@pytest.mark.parametrize("arch", ["flash", "transformer++", "combiner"])
def test_beam_search_reorders_the_cache(arch, build):
    hf = hf_causal(build(arch))
    _, _, left_ids, left = _prompts()
    args = dict(attention_mask=left, max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False)
    with torch.no_grad():
        cached = hf.generate(left_ids, **args)
        recomputed = hf.generate(left_ids, use_cache=False, **args)
    assert cached.shape == (6, 13) and torch.equal(cached, recomputed)


def test_sampling_with_the_cache_equals_sampling_without(build):
    hf = hf_causal(build("flash"))
    _, _, left_ids, left = _prompts()
    runs = []
    for use_cache in (True, False):
        torch.manual_seed(7)
        with torch.no_grad():
            runs.append(hf.generate(left_ids, attention_mask=left, max_new_tokens=8, do_sample=True, top_k=0,
                                    use_cache=use_cache))
    assert torch.equal(*runs)


def test_a_model_without_decoding_state_refuses_a_cache(build):
    hf = hf_causal(build("flash-quad", normalizer="paper"))
    prompt = tokens(1, 4).clamp(min=1)
    with pytest.raises(ValueError, match="no decoding state"):
        hf(prompt, cache=FlashgauCache())
    with torch.no_grad():
        out = hf(prompt, use_cache=True)
    assert out.cache is None


def test_generate_continues_from_a_returned_cache(build):
    hf = hf_causal(build("flash"))
    prompt = tokens(1, 5).clamp(min=1)
    with torch.no_grad():
        whole = hf.generate(prompt, max_new_tokens=12, do_sample=False)
        first = hf.generate(prompt, max_new_tokens=5, do_sample=False, return_dict_in_generate=True)
        assert first.cache.get_seq_length() == 9                  # the last token is not fed yet
        more = hf.generate(first.sequences, cache=first.cache, max_new_tokens=7, do_sample=False)
    assert torch.equal(more, whole)
