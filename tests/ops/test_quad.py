"""GAU's quadratic relu^2 attention (ops/quad.py): parallel form against the dense reference and the paper's formula
(divide by n, then add the bias, then relu^2; no 1/sqrt(s)), and the step form over a KVCache against the parallel
form."""

import pytest
import torch

from flashgau.ops.kv_cache import KVCache
from flashgau.ops.quad import relu2_attention, relu2_attention_step
from flashgau.ops.reference.quad import relu2_attention_reference
from op_helpers import assert_forward_backward_close, right_padding

TOL = dict(atol=2e-5, rtol=2e-4)


def _fast(q, k, v, bias, **kw):
    return relu2_attention(q, k, v, bias, **kw)[0]


def _inputs(B=2, H=1, T=7, s=8, e=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, T, s, generator=g) for _ in range(2))
    v = torch.randn(B, H, T, e, generator=g)
    bias = torch.randn(T, T, generator=g) * 0.5
    return [t.to(dtype) for t in (q, k, v, bias)]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_reference_is_the_paper_formula(causal):
    """o_i = sum_j relu(q_i.k_j / n + b_ij)^2 v_j, written as a loop (order: /n, + b, relu, square)."""
    q, k, v, bias = _inputs(B=1, T=5, dtype=torch.float64)
    n = 3.0
    want = torch.zeros(5, 5, dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            if causal and j > i:
                continue
            want[i] += max(float(q[0, 0, i] @ k[0, 0, j]) / n + float(bias[i, j]), 0.0) ** 2 * v[0, 0, j]
    for op in (_fast, relu2_attention_reference):
        got = op(q, k, v, bias, norm=n, causal=causal)[0, 0]
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T", [1, 2, 9, 24])
@pytest.mark.parametrize("per_row_norm", [False, True])
def test_forward_backward_match_reference(causal, T, per_row_norm):
    options = dict(norm=torch.tensor([T, 2.0, 7.5]) if per_row_norm else float(T), causal=causal)
    assert_forward_backward_close(lambda *a: _fast(*a, **options), lambda *a: relu2_attention_reference(*a, **options),
                                  _inputs(B=3, H=2, T=T), names="qkvb", **TOL)


def test_per_row_norm_divides_each_row_by_its_own_n():
    q, k, v, bias = _inputs(B=2, T=6)
    out = _fast(q, k, v, bias, norm=torch.tensor([6.0, 2.0]), causal=False)
    for r, n in enumerate((6.0, 2.0)):
        alone = _fast(q[r:r + 1], k[r:r + 1], v[r:r + 1], bias, norm=n, causal=False)
        torch.testing.assert_close(out[r:r + 1], alone, **TOL)


def test_gradcheck_fp64():
    xs = [t.requires_grad_() for t in _inputs(B=1, T=4, s=3, e=2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: _fast(*a, norm=4.0, causal=True), xs)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_key_mask_matches_reference_and_ignores_padding(causal):
    T = 9
    lengths = [9, 1, 4, 6]
    xs = _inputs(B=4, T=T, seed=3)
    mask = right_padding(lengths, T)
    out = _fast(*xs, norm=float(T), causal=causal, key_mask=mask)
    ref = relu2_attention_reference(*xs, norm=float(T), causal=causal, key_mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], **TOL)
    garbage = [t.clone() for t in xs[:3]]
    for t in garbage:
        t[~mask[:, None, :, None].expand_as(t)] = 40.0
    out2 = _fast(*garbage, xs[3], norm=float(T), causal=causal, key_mask=mask)
    torch.testing.assert_close(out2[real], out[real], atol=1e-6, rtol=1e-6)


def test_bidirectional_arbitrary_key_mask():
    """Holes anywhere in a bidirectional mask: masked keys contribute nothing."""
    T = 8
    xs = _inputs(B=2, T=T, seed=4)
    mask = torch.rand(2, T, generator=torch.Generator().manual_seed(1)) > 0.5
    out = _fast(*xs, norm=8.0, causal=False, key_mask=mask)
    ref = relu2_attention_reference(*xs, norm=8.0, causal=False, key_mask=mask)
    torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.parametrize("j", [0, 3, 6])
def test_causal_no_leakage(j):
    T = 7
    xs = _inputs(T=T)
    base = _fast(*xs, norm=float(T), causal=True)
    moved = [t.clone() for t in xs[:3]]
    for t in moved:
        t[:, :, j] += 2.0
    out = _fast(*moved, xs[3], norm=float(T), causal=True)
    assert torch.equal(out[:, :, :j], base[:, :, :j])
    assert (out[:, :, j] - base[:, :, j]).abs().max() > 1e-4


def test_bf16_close_to_reference():
    xs = _inputs(B=2, T=16)
    ref = relu2_attention_reference(*[t.bfloat16().double() for t in xs], norm=16.0, causal=True)
    out = _fast(*[t.bfloat16() for t in xs], norm=16.0, causal=True)
    assert out.dtype == torch.bfloat16
    assert (out.double() - ref).norm() / ref.norm() < 2e-2


@pytest.mark.parametrize("lengths", [[1, 1], [5, 2], [3, 8, 1]])
def test_step_over_kv_cache_equals_parallel(lengths):
    """Prefill rows of different lengths into a KVCache, then decode token by token (the cache grows past its
    prefill capacity); each step equals the parallel causal output at that row's position."""
    B = len(lengths)
    steps = 20
    lengths = torch.tensor(lengths)
    T = int(lengths.max()) + steps
    q, k, v, bias = _inputs(B=B, H=2, T=T, seed=7)
    n = 32.0                                                   # fixed normaliser, as in causal decoding (P2)
    want = _fast(q, k, v, bias, norm=n, causal=True)
    P = int(lengths.max())
    cache = KVCache.from_prefill(k[:, :, :P], v[:, :, :P])
    rows = torch.arange(B)
    for step in range(steps):
        pos = lengths + step
        cache.reserve(int(pos.max()) + 1, exact=False)          # room for this token (generation does this)
        S = cache.capacity
        bias_row = torch.full((B, 1, 1, S), -1e4)              # slots past T are masked anyway
        width = min(S, T)
        bias_row[..., :width] = bias[pos][:, None, None, :width]
        token = [t[rows, :, pos][:, :, None] for t in (q, k, v)]
        o, state = relu2_attention_step(*token, bias_row, cache, pos, norm=n)
        assert state is cache                                   # written in place
        torch.testing.assert_close(o[:, :, 0], want[rows, :, pos], **TOL, msg=lambda m, s=step: f"step {s}: {m}")
    assert cache.capacity >= T


def test_step_per_row_norm():
    q, k, v, bias = _inputs(B=2, T=5)
    norm = torch.tensor([5.0, 3.0])
    want = _fast(q, k, v, bias, norm=norm, causal=True)[:, :, -1:]
    cache = KVCache.from_prefill(k[:, :, :4], v[:, :, :4], capacity=5)
    got, _ = relu2_attention_step(q[:, :, -1:], k[:, :, -1:], v[:, :, -1:], bias[-1].expand(2, 1, 1, 5), cache,
                                  torch.tensor([4, 4]), norm=norm)
    torch.testing.assert_close(got, want, **TOL)
