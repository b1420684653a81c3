"""Softmax attention (ops/softmax.py, torch SDPA) against the dense reference; step form over a KVCache against the
parallel form."""

import math

import pytest
import torch

from flashgau.ops.kv_cache import KVCache
from flashgau.ops.reference.softmax import softmax_attention_reference
from flashgau.ops.softmax import softmax_attention, softmax_attention_step
from op_helpers import assert_forward_backward_close, right_padding

TOL = dict(atol=2e-5, rtol=2e-4)


def _fast(q, k, v, **kw):
    return softmax_attention(q, k, v, **kw)[0]


def _inputs(B=2, H=3, T=7, dh=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, dh, generator=g).to(dtype) for _ in range(3)]


def test_reference_is_softmax_over_scaled_scores():
    q, k, v = _inputs(B=1, H=1, T=4, dh=4, dtype=torch.float64)
    want = torch.zeros(4, 4, dtype=torch.float64)
    for i in range(4):
        w = torch.tensor([math.exp(float(q[0, 0, i] @ k[0, 0, j]) / 2.0) for j in range(i + 1)], dtype=torch.float64)
        want[i] = (w / w.sum()) @ v[0, 0, :i + 1]
    torch.testing.assert_close(softmax_attention_reference(q, k, v, causal=True)[0, 0], want)
    torch.testing.assert_close(_fast(q, k, v, causal=True)[0, 0], want)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T", [1, 5, 17])
def test_forward_backward_match_reference(causal, T):
    assert_forward_backward_close(lambda *a: _fast(*a, causal=causal),
                                  lambda *a: softmax_attention_reference(*a, causal=causal), _inputs(T=T), **TOL)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_right_padding_matches_reference_and_ignores_padding(causal):
    T = 9
    lengths = [9, 1, 4, 7]
    xs = _inputs(B=4, T=T, seed=2)
    mask = right_padding(lengths, T)
    out = _fast(*xs, causal=causal, key_mask=mask)
    ref = softmax_attention_reference(*xs, causal=causal, key_mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], **TOL)
    garbage = [t.clone() for t in xs]
    for t in garbage:
        t[~mask[:, None, :, None].expand_as(t)] = 30.0
    out2 = _fast(*garbage, causal=causal, key_mask=mask)
    torch.testing.assert_close(out2[real], out[real], atol=1e-6, rtol=1e-6)
    for r, n in enumerate(lengths):                            # each row alone, unpadded
        alone = _fast(*[t[r:r + 1, :, :n] for t in xs], causal=causal)
        torch.testing.assert_close(out[r:r + 1, :, :n], alone, **TOL)


def test_bidirectional_arbitrary_key_mask():
    xs = _inputs(B=2, T=8, seed=3)
    mask = torch.rand(2, 8, generator=torch.Generator().manual_seed(0)) > 0.5
    mask[:, 0] = True
    out = _fast(*xs, causal=False, key_mask=mask)
    ref = softmax_attention_reference(*xs, causal=False, key_mask=mask)
    torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.parametrize("j", [0, 4, 8])
def test_causal_no_leakage(j):
    xs = _inputs(T=9)
    base = _fast(*xs, causal=True)
    moved = [t.clone() for t in xs]
    for t in moved:
        t[:, :, j] += 2.0
    out = _fast(*moved, causal=True)
    torch.testing.assert_close(out[:, :, :j], base[:, :, :j], atol=0, rtol=0)
    assert (out[:, :, j] - base[:, :, j]).abs().max() > 1e-4


def test_bf16_close_to_reference():
    xs = _inputs(T=16)
    ref = softmax_attention_reference(*[t.bfloat16().double() for t in xs], causal=True)
    out = _fast(*[t.bfloat16() for t in xs], causal=True)
    assert out.dtype == torch.bfloat16
    assert (out.double() - ref).norm() / ref.norm() < 2e-2


@pytest.mark.parametrize("lengths", [[1], [6, 2, 3]])
def test_step_over_kv_cache_equals_parallel(lengths):
    B = len(lengths)
    steps = 19
    lengths = torch.tensor(lengths)
    T = int(lengths.max()) + steps
    q, k, v = _inputs(B=B, T=T, seed=5)
    want = _fast(q, k, v, causal=True)
    P = int(lengths.max())
    cache = KVCache.from_prefill(k[:, :, :P], v[:, :, :P])
    rows = torch.arange(B)
    for step in range(steps):
        pos = lengths + step
        cache.reserve(int(pos.max()) + 1, exact=False)          # room for this token (generation does this)
        o, state = softmax_attention_step(*(t[rows, :, pos][:, :, None] for t in (q, k, v)), cache, pos)
        assert state is cache                                   # written in place
        torch.testing.assert_close(o[:, :, 0], want[rows, :, pos], **TOL, msg=lambda m, s=step: f"step {s}: {m}")


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_bias_and_scale_match_reference_with_padding_and_decode(causal):
    """A GAU with a softmax kernel: an additive (T, T) bias and a scale; fast == dense reference (forward and
    backward, the bias's gradient included) with padded keys hidden, and (causal) steps with the bias row equal the
    parallel form."""
    B, T = 2, 9
    q, k, v = _inputs(B=B, T=T)
    bias = torch.randn(T, T, generator=torch.Generator().manual_seed(3))
    mask = right_padding([9, 5], T)
    kw = dict(causal=causal, key_mask=mask, scale=0.3)
    real = mask[:, None, :, None]
    assert_forward_backward_close(lambda *a: _fast(*a[:3], bias=a[3], **kw),
                                  lambda *a: softmax_attention_reference(*a[:3], bias=a[3], **kw), [q, k, v, bias],
                                  real=real, **TOL)
    if not causal:
        return
    full = _fast(q, k, v, causal=True, bias=bias, scale=0.3)
    cache = KVCache.from_prefill(k[:, :, :3], v[:, :, :3], capacity=T)
    for t in range(3, T):
        o, cache = softmax_attention_step(*(x[:, :, t:t + 1] for x in (q, k, v)), cache, torch.full((B,), t),
                                          bias=bias[t].expand(B, 1, 1, T), scale=0.3)
        torch.testing.assert_close(o, full[:, :, t:t + 1], **TOL)
