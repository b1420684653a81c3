"""Combiner-Fixed attention: the chunked and step forms against the dense reference of its factorised attention."""

import pytest
import torch

from flashgau.ops.combiner import (
    CombinerState,
    combiner_attention,
    combiner_attention_step,
    empty_combiner_state,
)
from flashgau.ops.reference.combiner import combiner_attention_matrix_reference, combiner_attention_reference
from op_helpers import assert_forward_backward_close, random_right_padding

TOL = dict(atol=2e-5, rtol=2e-4)


def _fast(q, k, v, **kw):
    return combiner_attention(q, k, v, **kw)[0]


def _inputs(B=2, H=3, T=11, dh=8, dv=6, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, dh, generator=g) * spread
    k = torch.randn(B, H, T, dh, generator=g) * spread
    v = torch.randn(B, H, T, dv, generator=g)
    return q, k, v


def _softmax(q, k, v, causal):
    s = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        T = q.shape[-2]
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return (torch.softmax(s, -1) @ v.double()).float()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T,chunk", [(1, 4), (5, 4), (8, 4), (13, 4), (24, 8), (37, 8), (6, 1)])
def test_forward_backward_match_reference(causal, T, chunk):
    options = dict(chunk_size=chunk, causal=causal)
    assert_forward_backward_close(lambda *a: _fast(*a, **options),
                                  lambda *a: combiner_attention_reference(*a, **options), _inputs(T=T), **TOL)


@pytest.mark.parametrize("causal", [True, False])
def test_one_chunk_is_exact_softmax_attention(causal):
    q, k, v = _inputs(T=7)
    out = _fast(q, k, v, chunk_size=8, causal=causal)
    torch.testing.assert_close(out, _softmax(q, k, v, causal), **TOL)


@pytest.mark.parametrize("causal", [True, False])
def test_factorised_matrix_is_full_attention(causal):
    """Every visible key has positive weight (through its chunk's abstraction when far), rows sum to 1, and the
    weights differ from exact softmax attention (the factorisation is an approximation)."""
    B, H, T = 1, 2, 19
    q, k, v = _inputs(B=B, H=H, T=T)
    a = combiner_attention_matrix_reference(q, k, chunk_size=4, causal=causal)
    visible = torch.ones(T, T, dtype=torch.bool)
    if causal:
        visible = visible.tril()
    assert (a[..., visible] > 0).all()
    assert (a[..., ~visible] == 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(B, H, T, dtype=torch.float64))
    assert not torch.allclose(a @ v.double(), _softmax(q, k, v, causal).double(), atol=1e-3)


@pytest.mark.parametrize("causal", [True, False])
def test_key_mask_matches_reference(causal):
    B, T, C = 3, 22, 4
    q, k, v = _inputs(B=B, T=T)
    if causal:
        mask = random_right_padding(B, T)
    else:
        mask = torch.rand(B, T, generator=torch.Generator().manual_seed(5)) > 0.45
        mask[:, 0] = True
        mask[1, 4:8] = False                                              # a whole chunk of padding
    out = _fast(q, k, v, chunk_size=C, causal=causal, key_mask=mask)
    ref = combiner_attention_reference(q, k, v, chunk_size=C, causal=causal, key_mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], **TOL)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[~mask[:, None, :, None].expand_as(x)] = 9.0                    # padding values must not matter
    out2 = _fast(q2, k2, v2, chunk_size=C, causal=causal, key_mask=mask)
    torch.testing.assert_close(out2[real], out[real], atol=1e-6, rtol=1e-6)


def test_all_masked_gives_zero_not_nan():
    q, k, v = (t.requires_grad_() for t in _inputs(B=1, T=9))
    mask = torch.zeros(1, 9, dtype=torch.bool)
    for causal in (True, False):
        out = _fast(q, k, v, chunk_size=4, causal=causal, key_mask=mask)
        assert torch.equal(out, torch.zeros_like(out))
        out.sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_causal_outputs_ignore_the_future():
    T, t0, C = 30, 11, 4
    q, k, v = _inputs(T=T)
    out = _fast(q, k, v, chunk_size=C, causal=True)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, t0:] = torch.randn_like(x[:, :, t0:]) * 5
    out2 = _fast(q2, k2, v2, chunk_size=C, causal=True)
    torch.testing.assert_close(out2[:, :, :t0], out[:, :, :t0], atol=1e-6, rtol=1e-6)
    short = _fast(q[:, :, :t0], k[:, :, :t0], v[:, :, :t0], chunk_size=C, causal=True)
    torch.testing.assert_close(short, out[:, :, :t0], atol=1e-6, rtol=1e-6)


def test_step_equals_parallel_and_state_grows_per_chunk():
    B, H, T, dh, dv, C = 2, 3, 23, 8, 6, 4
    q, k, v = _inputs(B=B, H=H, T=T, dh=dh, dv=dv)
    full = _fast(q, k, v, chunk_size=C, causal=True)
    state = empty_combiner_state(B, H, C, dh, dv)
    outs = []
    for t in range(T):
        state.reserve(t + 1, exact=False)                                 # room for this token's summary
        o, state = combiner_attention_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], state,
                                           torch.full((B,), t))
        outs.append(o)
        assert state.sum_k.shape[2] >= (t + 1) // C
    torch.testing.assert_close(torch.cat(outs, dim=2), full, **TOL)
    assert isinstance(state, CombinerState)
    assert state.sum_k.shape[2] < 2 * (T // C) + 4                        # one summary per chunk, not per token


def test_reserve_exact_or_doubling():
    state = empty_combiner_state(1, 1, 4, 8)
    state.reserve(9)
    assert state.sum_k.shape[2] == state.sum_v.shape[2] == 3              # ceil(9 / 4) summaries, exactly
    state.reserve(12)
    assert state.sum_k.shape[2] == 3                                      # already enough: nothing to do
    state.reserve(13, exact=False)
    assert state.sum_k.shape[2] == 6                                      # growing one token at a time: doubling


def test_prefill_state_then_steps_equal_parallel():
    B, H, T, extra, C = 3, 2, 14, 7, 4
    q, k, v = _inputs(B=B, H=H, T=T + extra)
    mask = random_right_padding(B, T)
    mask[1] = torch.arange(T) < 8                                         # a row ending on a chunk boundary
    lengths = mask.sum(1)
    _, state = combiner_attention(q[:, :, :T], k[:, :, :T], v[:, :, :T], chunk_size=C, causal=True,
                                  key_mask=mask, output_final_state=True)
    snapshot = state.clone()
    idx = lengths[:, None] + torch.arange(extra)[None, :]
    for j in range(extra):
        pick = lambda x: x.gather(2, idx[:, j].reshape(B, 1, 1, 1).expand(B, H, 1, x.shape[-1]))
        state.reserve(int(idx[:, j].max()) + 1, exact=False)
        o, state = combiner_attention_step(pick(q), pick(k), pick(v), state, idx[:, j])
        for b in range(B):
            n = int(idx[b, j]) + 1
            row = _fast(q[b:b + 1, :, :n], k[b:b + 1, :, :n], v[b:b + 1, :, :n], chunk_size=C, causal=True)
            torch.testing.assert_close(o[b:b + 1], row[:, :, -1:], **TOL)
    assert not torch.equal(snapshot.k, state.k)                           # the steps wrote into state only


# --- separate summary inputs (ModelConfig.combiner_pooling="unrotated") ------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T,chunk", [(5, 4), (13, 4), (24, 8), (6, 1)])
def test_summary_inputs_match_reference(causal, T, chunk):
    """Summaries pooled from (and read with) summary_q, summary_k; the direct part with q, k: fast == dense
    reference, forward and backward, with padding; and different from pooling q, k themselves."""
    q, k, v = _inputs(T=T)
    sq, sk, _ = _inputs(T=T, seed=5)
    kw = dict(chunk_size=chunk, causal=causal)
    assert_forward_backward_close(
        lambda q, k, v, sq, sk: _fast(q, k, v, summary_q=sq, summary_k=sk, **kw),
        lambda q, k, v, sq, sk: combiner_attention_reference(q, k, v, summary_q=sq, summary_k=sk, **kw),
        (q, k, v, sq, sk), **TOL)
    mask = random_right_padding(2, T)
    out = _fast(q, k, v, summary_q=sq, summary_k=sk, key_mask=mask, **kw)
    ref = combiner_attention_reference(q, k, v, summary_q=sq, summary_k=sk, key_mask=mask, **kw)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], **TOL)
    if T > chunk:
        assert (out - _fast(q, k, v, key_mask=mask, **kw)).abs().max() > 1e-4


def test_summary_inputs_prefill_then_steps_equal_parallel():
    from flashgau.ops.combiner import CombinerPoolState

    B, H, T, extra, C = 3, 2, 13, 7, 4
    q, k, v = _inputs(B=B, H=H, T=T + extra)
    sq, sk, _ = _inputs(B=B, H=H, T=T + extra, seed=5)
    mask = random_right_padding(B, T)
    lengths = mask.sum(1)
    _, state = combiner_attention(*(t[:, :, :T] for t in (q, k, v)), chunk_size=C, causal=True, key_mask=mask,
                                  summary_q=sq[:, :, :T], summary_k=sk[:, :, :T], output_final_state=True)
    assert isinstance(state, CombinerPoolState)
    state.reserve(T + extra)
    for j in range(extra):
        pos = lengths + j
        rows = torch.arange(B)
        pick = [t[rows, :, pos][:, :, None] for t in (q, k, v, sq, sk)]
        o, state = combiner_attention_step(*pick[:3], state, pos, summary_q=pick[3], summary_k=pick[4])
        for b in range(B):
            n = int(pos[b]) + 1
            row = _fast(*(t[b:b + 1, :, :n] for t in (q, k, v)), summary_q=sq[b:b + 1, :, :n],
                        summary_k=sk[b:b + 1, :, :n], chunk_size=C, causal=True)
            torch.testing.assert_close(o[b:b + 1, :, 0], row[:, :, -1], **TOL)
    with pytest.raises(ValueError, match="made with summary inputs"):
        combiner_attention_step(*pick[:3], state, pos)
    with pytest.raises(ValueError, match="both summary_q and summary_k"):
        combiner_attention(q, k, v, chunk_size=C, causal=True, summary_q=sq)
