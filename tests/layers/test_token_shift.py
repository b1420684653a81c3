"""Token shift (layers/token_shift.py; ModelConfig.token_shift): the shift itself, its padding rule, its decoding
carry and the block-level state that wraps an attention state. (Every arch with token shift on is held to the model
properties in tests/models/test_model_properties.py.)"""

import pytest
import torch

from flashgau import LanguageModel, ModelConfig
from flashgau.layers import Context
from flashgau.layers.token_shift import ShiftState, TokenShift
from flashgau.ops import FlashState, KVCache


def _h(B=2, T=7, d=8, seed=0):
    return torch.randn(B, T, d, generator=torch.Generator().manual_seed(seed))


def _ctx(T, causal, mask=None):
    return Context(positions=torch.arange(T), key_mask=mask, causal=causal)


def test_causal_shift_takes_the_first_channels_from_the_previous_token():
    h = _h()
    out = TokenShift(0.5, 8)(h, _ctx(7, True))                              # n = 4 channels
    assert torch.equal(out[:, 1:, :4], h[:, :-1, :4])
    assert torch.equal(out[:, 0, :4], torch.zeros(2, 4))                     # nothing before position 0
    assert torch.equal(out[..., 4:], h[..., 4:])


def test_bidirectional_shift_takes_half_from_each_neighbour():
    h = _h()
    out = TokenShift(0.75, 8)(h, _ctx(7, False))                             # n = 6: 3 from t - 1, 3 from t + 1
    assert torch.equal(out[:, 1:, :3], h[:, :-1, :3]) and torch.equal(out[:, 0, :3], torch.zeros(2, 3))
    assert torch.equal(out[:, :-1, 3:6], h[:, 1:, 3:6]) and torch.equal(out[:, -1, 3:6], torch.zeros(2, 3))
    assert torch.equal(out[..., 6:], h[..., 6:])


@pytest.mark.parametrize("fraction, d, n", [(0.0, 8, 0), (0.5, 64, 32), (0.25, 10, 2), (1.0, 8, 8)])
def test_channel_count_and_off_is_identity(fraction, d, n):
    shift = TokenShift(fraction, d)
    assert shift.n == n and shift.active == (n > 0)
    if not n:
        h = _h(d=d)
        assert shift(h, _ctx(7, True)) is h
        assert shift.wrap("the attention state", [h], _ctx(7, True)) == "the attention state"


@pytest.mark.parametrize("causal", [True, False])
def test_a_padded_token_never_shifts_into_a_real_one(causal):
    """Padded sources shift in zeros: changing what sits at padded positions changes no real output, and a real
    token next to padding gets zeros (bidirectional: also any mask, not only right padding)."""
    shift = TokenShift(1.0, 8)
    h = _h(B=3)
    if causal:
        mask = torch.arange(7)[None, :] < torch.tensor([7, 4, 1])[:, None]
    else:
        mask = torch.tensor([[1, 1, 0, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1]]).bool()
    out = shift(h, _ctx(7, causal, mask))
    garbage = torch.where(mask[..., None], h, torch.full_like(h, 100.0))
    out2 = shift(garbage, _ctx(7, causal, mask))
    torch.testing.assert_close(out2[mask], out[mask], atol=0, rtol=0)
    if not causal:
        assert torch.equal(out[0, 1, 4:], torch.zeros(4))                   # its next token (2) is padding
        assert torch.equal(out[0, 3, :4], torch.zeros(4))                   # its previous token (2) is padding


def test_steps_with_the_carry_equal_the_parallel_shift():
    """prefill's carry (channels of each row's last real token) + one step per token == the parallel shift."""
    shift = TokenShift(0.5, 8)
    h = _h(B=2, T=9)
    lengths = torch.tensor([5, 2])
    mask = torch.arange(5)[None, :] < lengths[:, None]
    want = shift(h, _ctx(9, True))
    state = shift.wrap("attn", [h[:, :5]], _ctx(5, True, mask))
    assert isinstance(state, ShiftState) and state.carry.shape == (2, 1, 4)
    assert torch.equal(state.carry[:, 0], h[torch.arange(2), lengths - 1, :4])
    for i in range(4):
        pos = lengths + i
        step = shift.step(h[torch.arange(2), pos][:, None], state.carry[:, 0])
        torch.testing.assert_close(step[:, 0], want[torch.arange(2), pos], atol=0, rtol=0)


def test_shift_state_is_a_state_wrapping_the_attention_state():
    """select / clone / nbytes reach the wrapped state; reserve is the wrapped state's."""
    inner = KVCache.from_prefill(torch.randn(3, 1, 4, 2), torch.randn(3, 1, 4, 5))
    state = ShiftState(attn=inner, carry=torch.arange(3.0)[:, None, None].expand(3, 2, 4).clone())
    picked = state.select(torch.tensor([2, 0]))
    assert isinstance(picked.attn, KVCache) and torch.equal(picked.attn.k, inner.k[[2, 0]])
    assert picked.carry[:, 0, 0].tolist() == [2.0, 0.0]
    copy = state.clone()
    copy.carry.add_(1)
    copy.attn.k.add_(1)
    assert not torch.equal(copy.carry, state.carry) and not torch.equal(copy.attn.k, state.attn.k)
    assert state.nbytes() == inner.nbytes() + state.carry.nelement() * 4
    state.reserve(10)
    assert state.attn.capacity == 10


@pytest.mark.parametrize("arch, points", [("flash", 1), ("flash-quad", 1), ("transformer++", 2), ("combiner", 2)])
def test_models_with_token_shift_decode_from_wrapped_states(arch, points):
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", arch=arch, vocab_size=50, chunk_size=4, max_seq_len=64, token_shift=0.5)
    model = LanguageModel(cfg).eval()
    ids = torch.randint(0, 50, (2, 6))
    _, state = model.prefill(ids)
    layer = state.layers[0]
    assert isinstance(layer, ShiftState) and layer.carry.shape == (2, points, 32)
    assert isinstance(layer.attn, FlashState if arch == "flash" else (KVCache, object))
    torch.manual_seed(0)
    plain = LanguageModel(ModelConfig.preset("tiny", arch=arch, vocab_size=50, chunk_size=4, max_seq_len=64,
                                             token_shift=0.0)).eval()
    x, ctx = torch.randn(2, 6, 64), _ctx(6, True)
    plain_branch, shifted_branch = plain.blocks[0](x, ctx) - x, model.blocks[0](x, ctx) - x     # same weights
    assert (plain_branch - shifted_branch).abs().max() > 0.1 * plain_branch.abs().max()         # the shift matters


def test_token_shift_is_validated():
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match="token_shift must be a number in"):
            ModelConfig(token_shift=bad)
