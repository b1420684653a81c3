"""FAVOR+ (Performer attention): the chunked and step forms against the dense reference, and the estimator
against exact softmax attention."""

import math

import pytest
import torch

from flashgau.ops.favor import (
    FavorState,
    draw_orthogonal_features,
    empty_favor_state,
    favor_attention,
    favor_attention_step,
    favor_features,
)
from flashgau.ops.reference.favor import favor_attention_reference, favor_features_reference
from op_helpers import assert_forward_backward_close, random_right_padding

TOL = dict(atol=2e-5, rtol=2e-4)


def _fast(q, k, v, projection, **kw):
    return favor_attention(q, k, v, projection, **kw)[0]


def _inputs(B=2, H=3, T=11, dh=8, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, dh, generator=g) * spread for _ in range(3))
    return q, k, v


def _projection(m=24, dh=8, seed=1, **kw):
    return draw_orthogonal_features(m, dh, generator=torch.Generator().manual_seed(seed), **kw)


def _softmax_attention(q, k, v, causal):
    s = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        T = q.shape[-2]
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s, -1) @ v.double()


# --- random features -----------------------------------------------------------------------------------------


def test_orthogonal_blocks_and_norms():
    dh, m = 8, 20                                               # blocks of 8, 8 and 4 rows
    w = _projection(m, dh)
    assert w.shape == (m, dh) and w.dtype == torch.float32
    unit = w / w.norm(dim=1, keepdim=True)
    for lo, hi in ((0, 8), (8, 16), (16, 20)):
        gram = unit[lo:hi] @ unit[lo:hi].T
        torch.testing.assert_close(gram, torch.eye(hi - lo), atol=1e-5, rtol=0)
    assert not torch.allclose(unit[:8] @ unit[8:16].T, torch.zeros(8, 8), atol=1e-3)   # blocks independent
    norms = w.norm(dim=1)
    assert norms.std() > 0.05                                   # chi-distributed, not constant
    sq = _projection(m, dh, scaling="sqrt")
    torch.testing.assert_close(sq.norm(dim=1), torch.full((m,), math.sqrt(dh)), atol=1e-5, rtol=0)


def test_draw_is_seeded():
    torch.testing.assert_close(_projection(seed=5), _projection(seed=5), atol=0, rtol=0)
    assert not torch.allclose(_projection(seed=5), _projection(seed=6))
    with pytest.raises(ValueError):
        draw_orthogonal_features(8, 8, scaling="unit")


def test_features_match_reference_and_are_unbiased():
    q, k, _ = _inputs(B=1, H=1, T=4, dh=8)
    w = _projection(16, 8)
    torch.testing.assert_close(favor_features(q, w).double(), favor_features_reference(q, w), atol=1e-6, rtol=1e-5)
    # E[phi(q) . phi(k)] = exp(q.k / sqrt(dh)): average the estimate over many independent draws.
    x, y = q[0, 0, 0] * 0.5, k[0, 0, 0] * 0.5
    exact = math.exp(float(x @ y) / math.sqrt(8))
    est = torch.stack([favor_features_reference(x, _projection(64, 8, seed=s))
                       @ favor_features_reference(y, _projection(64, 8, seed=s)) for s in range(200)])
    assert abs(float(est.mean()) - exact) < 0.03 * exact


# --- parallel form against the dense reference ---------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T,chunk", [(1, 4), (5, 4), (16, 4), (23, 8), (37, 16), (9, 1)])
def test_forward_backward_match_reference(causal, T, chunk):
    w = _projection()
    assert_forward_backward_close(lambda *a: _fast(*a, w, causal=causal, chunk_size=chunk),
                                  lambda *a: favor_attention_reference(*a, w, causal=causal), _inputs(T=T), **TOL)


@pytest.mark.parametrize("causal", [True, False])
def test_key_mask_matches_reference(causal):
    B, T = 3, 21
    q, k, v = _inputs(B=B, T=T)
    w = _projection()
    if causal:
        mask = random_right_padding(B, T)
    else:
        mask = torch.rand(B, T, generator=torch.Generator().manual_seed(4)) > 0.4
        mask[:, 0] = True
    out = _fast(q, k, v, w, causal=causal, key_mask=mask, chunk_size=8)
    ref = favor_attention_reference(q, k, v, w, causal=causal, key_mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], **TOL)
    # padded keys do not matter, whatever their values
    k2, v2 = k.clone(), v.clone()
    k2[~mask[:, None, :, None].expand_as(k)] = 50.0
    v2[~mask[:, None, :, None].expand_as(v)] = -7.0
    out2 = _fast(q, k2, v2, w, causal=causal, key_mask=mask, chunk_size=8)
    torch.testing.assert_close(out2[real], out[real], atol=1e-6, rtol=1e-6)


def test_all_keys_masked_gives_zero_not_nan():
    q, k, v = _inputs(B=1, T=6)
    w = _projection()
    mask = torch.zeros(1, 6, dtype=torch.bool)
    for causal in (True, False):
        out = _fast(q, k, v, w, causal=causal, key_mask=mask, chunk_size=4)
        assert torch.equal(out, torch.zeros_like(out))


def test_causal_outputs_ignore_the_future():
    T, t0 = 29, 13
    q, k, v = _inputs(T=T)
    w = _projection()
    out = _fast(q, k, v, w, causal=True, chunk_size=8)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, t0:] = torch.randn_like(x[:, :, t0:]) * 6       # large values also move no shift of the past
    out2 = _fast(q2, k2, v2, w, causal=True, chunk_size=8)
    torch.testing.assert_close(out2[:, :, :t0], out[:, :, :t0], atol=1e-6, rtol=1e-6)
    short = _fast(q[:, :, :t0], k[:, :, :t0], v[:, :, :t0], w, causal=True, chunk_size=8)
    torch.testing.assert_close(short, out[:, :, :t0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_extreme_logits_stay_finite_and_exact(causal):
    """Raw features overflow fp32 (keys aligned with a random direction: exponent ~ |w|^2 / 2 ~ 128 at dh = 256)
    and underflow it (large random keys: exponents ~ -1000); the shifted computation must match the float64
    reference."""
    dh, m, T = 256, 16, 11
    w = _projection(m, dh)
    g = torch.Generator().manual_seed(2)
    k = torch.randn(1, 2, T, dh, generator=g) * 0.3
    k[:, :, 1::3] = 0.9 * w[torch.arange(1, T, 3) % m] * dh ** 0.25    # k' = 0.9 w_r
    k[:, :, 2::4] *= 5.0
    q = torch.randn(1, 2, T, dh, generator=g) * 0.3
    v = torch.randn(1, 2, T, 8, generator=g)
    raw = favor_features(k, w)
    assert torch.isinf(raw).any() and (raw == 0).any()
    out = _fast(q, k, v, w, causal=causal, chunk_size=4)
    assert torch.isfinite(out).all()
    ref = favor_attention_reference(q, k, v, w, causal=causal)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-3)
    state = empty_favor_state(1, 2, m, 8)
    steps = [favor_attention_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], w, state)[0]
             for t in range(T)]
    if causal:
        torch.testing.assert_close(torch.cat(steps, 2), ref, atol=1e-4, rtol=1e-3)


def test_half_precision_inputs_keep_their_dtype():
    q, k, v = (t.to(torch.bfloat16) for t in _inputs(T=10))
    out = _fast(q, k, v, _projection(), causal=True, chunk_size=4)
    assert out.dtype == torch.bfloat16
    ref = favor_attention_reference(q.float(), k.float(), v.float(), _projection(), causal=True)
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)


def test_causal_memory_has_no_per_token_state():
    """No tensor saved for backward is as large as a per-token prefix sum (B, H, T, m, dh)."""
    B, H, T, dh, m, C = 1, 1, 256, 16, 32, 16
    q, k, v = (t.requires_grad_() for t in _inputs(B=B, H=H, T=T, dh=dh))
    w = _projection(m, dh)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = _fast(q, k, v, w, causal=True, chunk_size=C)
    out.sum().backward()
    assert max(sizes) <= B * H * T * m * dh // 8


# --- the estimator ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_error_against_softmax_shrinks_with_more_features(causal):
    """FAVOR+ estimates softmax attention; the error, averaged over feature draws, falls like 1/sqrt(m)."""
    # moderate logits: the variance of positive features grows like exp(|q' + k'|^2), so large norms converge slowly
    q, k, v = _inputs(B=2, H=2, T=24, dh=16, seed=7)
    q, k = q * 0.5, k * 0.5
    exact = _softmax_attention(q, k, v, causal)
    errors = {}
    for m in (8, 32, 128, 512):
        errs = []
        for seed in range(16):
            w = draw_orthogonal_features(m, 16, generator=torch.Generator().manual_seed(100 + seed))
            out = _fast(q, k, v, w, causal=causal, chunk_size=8).double()
            errs.append(((out - exact).norm() / exact.norm()).item())
        errors[m] = sum(errs) / len(errs)
    values = [errors[m] for m in sorted(errors)]
    assert all(b < a for a, b in zip(values, values[1:])), errors
    assert errors[512] < 0.3 * errors[8], errors
    assert errors[512] < 0.15, errors


# --- decoding --------------------------------------------------------------------------------------------------


def test_step_equals_parallel():
    B, H, T, dh = 2, 3, 13, 8
    q, k, v = _inputs(B=B, H=H, T=T, dh=dh, spread=2.0)
    w = _projection(24, dh)
    full = _fast(q, k, v, w, causal=True, chunk_size=4)
    state = empty_favor_state(B, H, 24, dh)
    outs = []
    for t in range(T):
        o, state = favor_attention_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], w, state)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, dim=2), full, **TOL)
    assert isinstance(state, FavorState)
    assert state.kv.shape == (B, H, 24, dh) and state.nbytes() == empty_favor_state(B, H, 24, dh).nbytes()


def test_prefill_state_then_steps_equal_parallel():
    B, H, T, dh, extra = 3, 2, 17, 8, 6
    q, k, v = _inputs(B=B, H=H, T=T + extra, dh=dh)
    w = _projection(24, dh)
    mask = random_right_padding(B, T)
    lengths = mask.sum(1)
    _, state = favor_attention(q[:, :, :T], k[:, :, :T], v[:, :, :T], w, causal=True, key_mask=mask,
                               chunk_size=4, output_final_state=True)
    snapshot = state.clone()
    # each row continues from its own length; compare with one parallel pass over its real tokens
    idx = lengths[:, None] + torch.arange(extra)[None, :]            # (B, extra) positions to decode
    for j in range(extra):
        pick = idx[:, j].reshape(B, 1, 1, 1).expand(B, H, 1, dh)
        o, state = favor_attention_step(q.gather(2, pick), k.gather(2, pick), v.gather(2, pick), w, state)
        for b in range(B):
            n = int(idx[b, j]) + 1
            row = _fast(q[b:b + 1, :, :n], k[b:b + 1, :, :n], v[b:b + 1, :, :n], w, causal=True, chunk_size=4)
            torch.testing.assert_close(o[b:b + 1], row[:, :, -1:], **TOL)
    assert not torch.equal(snapshot.kv, state.kv)                    # clone() is a real copy


# --- precision policy and the reference's epsilon floor ---------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
def test_the_op_runs_in_fp32_under_autocast(causal):
    """One precision policy: fp32 features, sums and matmuls under bf16 autocast too (autocast would round the
    matmuls to bf16); the output comes back in v's dtype."""
    q, k, v = _inputs(T=19)
    w = _projection()
    exact = _fast(q, k, v, w, causal=causal, chunk_size=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = _fast(q, k, v, w, causal=causal, chunk_size=4)
        state = empty_favor_state(2, 3, 24, 8)
        step = [favor_attention_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], w, state)[0]
                for t in range(19)]
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, exact, atol=1e-6, rtol=1e-6)
    if causal:
        torch.testing.assert_close(torch.cat(step, 2), exact, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T,chunk", [(1, 4), (11, 4), (19, 8), (7, 1)])
def test_epsilon_floor_matches_its_reference(causal, T, chunk):
    """The floored features (exp(a - shift) + eps) with the shift of each query's visible keys: the chunked op
    against the dense definition, forward and backward, and with padding."""
    w = _projection()
    kw = dict(causal=causal, epsilon=1e-2)
    assert_forward_backward_close(lambda *a: _fast(*a, w, chunk_size=chunk, **kw),
                                  lambda *a: favor_attention_reference(*a, w, **kw), _inputs(T=T, spread=1.5),
                                  **TOL)
    mask = random_right_padding(2, T)
    out = _fast(*_inputs(T=T, spread=1.5), w, chunk_size=chunk, key_mask=mask, **kw)
    ref = favor_attention_reference(*_inputs(T=T, spread=1.5), w, key_mask=mask, **kw)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], **TOL)


def test_epsilon_floor_changes_the_output_and_decodes_exactly():
    B, H, T, dh, extra = 3, 2, 13, 8, 6
    q, k, v = _inputs(B=B, H=H, T=T + extra, dh=dh, spread=1.5)
    w = _projection(24, dh)
    kw = dict(causal=True, chunk_size=4, epsilon=1e-2)
    full = _fast(q, k, v, w, **kw)
    assert (full - _fast(q, k, v, w, causal=True, chunk_size=4)).abs().max() > 1e-4
    mask = random_right_padding(B, T)
    lengths = mask.sum(1)
    _, state = favor_attention(q[:, :, :T], k[:, :, :T], v[:, :, :T], w, key_mask=mask, output_final_state=True,
                               **kw)
    for j in range(extra):
        pick = (lengths + j).reshape(B, 1, 1, 1).expand(B, H, 1, dh)
        o, state = favor_attention_step(q.gather(2, pick), k.gather(2, pick), v.gather(2, pick), w, state,
                                        epsilon=1e-2)
        for b in range(B):
            n = int(lengths[b]) + j + 1
            row = _fast(q[b:b + 1, :, :n], k[b:b + 1, :, :n], v[b:b + 1, :, :n], w, **kw)
            torch.testing.assert_close(o[b:b + 1], row[:, :, -1:], **TOL)
