"""generate() and the decoding states: constant-size FLASH state, sampling controls, batches of prompts of
different lengths, end-of-sequence handling, continuing a stream from a kept state."""

import pytest
import torch

from flashgau import DecodeState
from flashgau.ops import FlashState, KVCache
from model_helpers import attention_state, tokens


def test_flash_state_size_does_not_grow_with_position(build):
    model = build("flash")                 # chunk_size 4
    x = tokens(2, 60)
    with torch.no_grad():
        _, state = model.prefill(x[:, :2])
        assert all(isinstance(attention_state(s), FlashState) for s in state.layers)
        sizes = set()
        for t in range(2, 60):            # 14 chunk boundaries
            model.decode_step(x[:, t], state)
            sizes.add(state.nbytes())
    assert len(sizes) == 1


def test_kv_cache_grows_for_quadratic_archs(build):
    model = build("transformer++")
    with torch.no_grad():
        _, state = model.prefill(tokens(1, 4))
        assert isinstance(attention_state(state.layers[0]), KVCache)
        before = state.nbytes()
        for t in range(40):
            model.decode_step(tokens(1, 1, seed=t)[:, 0], state)
    assert state.nbytes() > before


def test_sampling_is_reproducible_and_controls_work(build):
    model = build("flash")
    prompt = tokens(2, 5)
    g = lambda seed: torch.Generator().manual_seed(seed)
    a = model.generate(prompt, 15, temperature=1.0, generator=g(0))
    assert torch.equal(a, model.generate(prompt, 15, temperature=1.0, generator=g(0)))
    assert torch.equal(a, model.generate(prompt, 15, temperature=1.0, seed=0))
    assert not torch.equal(a, model.generate(prompt, 15, temperature=1.0, generator=g(1)))
    greedy = model.generate(prompt, 15, temperature=0)
    assert torch.equal(model.generate(prompt, 15, temperature=1.0, top_k=1, generator=g(5)), greedy)
    assert torch.equal(model.generate(prompt, 15, temperature=1.0, top_p=1e-6, generator=g(5)), greedy)
    # top_k = 3: every sampled token is among the 3 most likely at its step
    out = model.generate(prompt, 10, temperature=1.0, top_k=3, generator=g(2))
    logits = model(out[:, :-1]).logits[:, 4:]
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == out[:, 5:, None]).any(-1).all()


def test_prompts_of_different_lengths(build):
    model = build("flash")
    lengths = [7, 3]
    x = tokens(2, 7)
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    out = model.generate(x, 6, temperature=0, attention_mask=mask, pad_token_id=0)
    assert out.shape == (2, 13)
    for b, n in enumerate(lengths):
        alone = model.generate(x[b:b + 1, :n], 6, temperature=0)[0]
        assert torch.equal(out[b, :n + 6], alone)
        assert (out[b, n + 6:] == 0).all()


def test_eos_stops_a_row_and_pads_it(build):
    model = build("flash")
    prompt = tokens(2, 4)
    greedy = model.generate(prompt, 10, temperature=0)
    eos = int(greedy[0, 6])                       # the token row 0 emits third
    out = model.generate(prompt, 10, temperature=0, eos_token_id=eos)
    first = int((greedy[0, 4:] == eos).nonzero()[0]) + 4
    assert torch.equal(out[0, :first + 1], greedy[0, :first + 1])
    assert (out[0, first + 1:] == eos).all()       # padded with eos after it


def test_continuing_from_a_kept_state_equals_one_long_generation(build):
    model = build("flash")
    prompt = tokens(1, 6)
    whole = model.generate(prompt, 12, temperature=0)
    first, state = model.generate(prompt, 5, temperature=0, return_state=True)
    assert isinstance(state, DecodeState) and int(state.pos) == 11
    assert torch.equal(first, whole[:, :11])
    # feed nothing new: just keep sampling from where the stream stopped
    more, state = model.generate(whole[:, 11:12], 6, temperature=0, state=state, return_state=True)
    assert torch.equal(more[:, 1:], whole[:, 12:18])


@pytest.mark.parametrize("arch", ["flash", "transformer++", "performer", "combiner", "mc-transformer++"])
def test_selected_rows_decode_as_those_rows_alone(arch, build):
    """DecodeState.select (beam search's reorder): rows picked, repeated and reordered keep decoding as themselves."""
    model = build(arch)
    x = tokens(3, 9)
    mask = torch.arange(9)[None, :] < torch.tensor([9, 5, 7])[:, None]
    with torch.no_grad():
        _, state = model.prefill(x, mask)
        picked = state.select(torch.tensor([2, 0, 2]))
        assert picked.pos.tolist() == [7, 9, 7] and torch.equal(picked.last_logits[0], state.last_logits[2])
        for t in range(6):                         # across chunk boundaries
            step = tokens(3, 1, seed=10 + t)[:, 0]     # one token per original row
            model.decode_step(step, state)
            logits, picked = model.decode_step(step[[2, 0, 2]], picked)
            assert torch.allclose(logits, state.last_logits[[2, 0, 2]], atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=-1), "max_new_tokens"), (dict(temperature=-0.5), "temperature"),
    (dict(temperature=float("inf")), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p"), (dict(max_new_tokens=100), "max_seq_len"),
])
def test_bad_generate_arguments(kwargs, message, build):
    model = build("flash")
    args = dict(max_new_tokens=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        model.generate(tokens(1, 4), **args)


def test_generate_restores_training_mode_and_refuses_encoders(build):
    model = build("flash").train()
    model.generate(tokens(1, 3), 2, temperature=0)
    assert model.training
    encoder = build("flash", causal=False)
    with pytest.raises(ValueError, match="causal"):
        encoder.prefill(tokens(1, 3))


@pytest.mark.parametrize("arch", ["flash", "flash-quad"])
def test_blocks_stepped_alone_equal_the_shared_step_positions(arch):
    """decode_step hands one StepPositions to all blocks (RoPE tables and host positions computed once per step); a
    block stepped alone makes its own: the same outputs, rows at the same and at different slots."""
    from flashgau import LanguageModel, ModelConfig
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig.preset("tiny", arch=arch, chunk_size=8)).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    with torch.no_grad():
        for mask in (None, torch.tensor([[1] * 6, [1] * 3 + [0] * 3])):
            _, state = model.prefill(ids, mask)
            alone = state.select(torch.arange(2))
            for t in range(10):
                tok = ids[:, t % 6]
                inputs = []
                model.decode_step(tok, state, block_inputs=inputs)
                for layer_state in alone.layers:
                    layer_state.reserve(int(alone.pos.max()) + 1, exact=False)
                x = model.embed_tokens(tok[:, None], alone.pos[:, None])
                for i, block in enumerate(model.blocks):
                    x, alone.layers[i] = block.step(x, alone.layers[i], alone.pos)
                    torch.testing.assert_close(x, inputs[i + 1], atol=0, rtol=0)
                alone.pos += 1
