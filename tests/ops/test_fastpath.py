"""The fast paths (ops/fastpath.py) against the plain forms they replace: forward and the gradient of every input,
fp32 tightly and bf16 loosely; and whole FLASH / Transformer++ models with every fast path on against all off."""

import pytest
import torch

from flashgau.config import ModelConfig
from flashgau.layers.positions import rope_tables
from flashgau.model import LanguageModel
from flashgau.ops import fastpath, mixed_chunk_attention
from flashgau.ops.chunks import exclusive_cumsum, sums_before
from flashgau.ops.local_blocks import (causal_local_attention, causal_local_attention_with_summaries, default_block,
                                      local_fraction)
from flashgau.ops.projection import gau_projection, gau_projection_inference, gau_projection_plain
from flashgau.ops.rope import rotate, rotate_plain
from flashgau.ops.shift import shift_channels, shift_channels_plain

from op_helpers import assert_forward_backward_close, random_right_padding, with_inputs

BF16 = dict(atol=5e-2, rtol=5e-2)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _plain_causal_local(q, k, v, bias):
    """The plain form: the whole C x C square, the upper half masked with -inf in the bias."""
    C = q.shape[1]
    keep = torch.ones(C, C, dtype=torch.bool).tril()
    scores = torch.baddbmm(bias.masked_fill(~keep, float("-inf")), q, k.transpose(1, 2), alpha=1.0 / C)
    return torch.relu(scores).square() @ v


def _local_inputs(N, C, s, e, dtype, seed=0):
    g = _gen(seed)
    q, k = (torch.randn(N, C, s, generator=g) * 2 for _ in range(2))
    v = torch.randn(N, C, e, generator=g)
    bias = torch.randn(C, C, generator=g) * 0.1
    return [t.to(dtype) for t in (q, k, v, bias)]


# ------------------------------------------------------------------------------------------ causal local strips
@pytest.mark.parametrize("C,block", [(16, 4), (16, 8), (16, 16), (12, 3), (256, 128), (128, 64)])
def test_causal_local_strips_match_the_masked_square_fp32(C, block):
    inputs = _local_inputs(3, C, 8, 12, torch.float32)
    assert_forward_backward_close(lambda q, k, v, b: causal_local_attention(q, k, v, b, block), _plain_causal_local,
                                  inputs, names=["q", "k", "v", "bias"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("C,block", [(16, 4), (64, 16)])
def test_causal_local_strips_match_the_masked_square_bf16(C, block):
    inputs = _local_inputs(2, C, 8, 12, torch.bfloat16)
    fast = lambda q, k, v, b: causal_local_attention(q, k, v, b, block).float()   # noqa: E731
    ref = lambda q, k, v, b: _plain_causal_local(q, k, v, b).float()             # noqa: E731
    assert_forward_backward_close(fast, ref, inputs, names=["q", "k", "v", "bias"], **BF16)


def test_causal_local_gradcheck_fp64():
    inputs = [t.requires_grad_() for t in _local_inputs(2, 6, 3, 4, torch.float64)]
    assert torch.autograd.gradcheck(lambda q, k, v, b: causal_local_attention(q, k, v, b, 2), inputs)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, dict(atol=1e-5, rtol=1e-4)), (torch.bfloat16, BF16)])
@pytest.mark.parametrize("used", ["both", "local", "summaries"])
def test_causal_local_with_summaries_matches_the_two_plain_products(dtype, tol, used):
    """One node for the local part and lin_k^T v: both outputs, and every input's gradient when either or both are
    used downstream (v's gradients summed in one buffer)."""
    q, k, v, bias = _local_inputs(3, 16, 8, 12, dtype)
    lin_k = torch.randn(3, 16, 8, generator=_gen(1)).to(dtype)

    def pick(out, kv):
        parts = {"local": [out.flatten()], "summaries": [kv.flatten()], "both": [out.flatten(), kv.flatten()]}
        return torch.cat(parts[used]).float()

    fast = lambda q, k, v, b, lk: pick(*causal_local_attention_with_summaries(q, k, v, b, 4, lk))   # noqa: E731
    ref = lambda q, k, v, b, lk: pick(_plain_causal_local(q, k, v, b), lk.transpose(1, 2) @ v)     # noqa: E731
    names, inputs = ["q", "k", "v", "bias", "lin_k"], [q, k, v, bias, lin_k]
    read = {"both": [0, 1, 2, 3, 4], "local": [0, 1, 2, 3], "summaries": [2, 4]}[used]   # inputs the outputs read
    assert_forward_backward_close(with_inputs(fast, inputs, read), with_inputs(ref, inputs, read),
                                  [inputs[i] for i in read], names=[names[i] for i in read], **tol)


def test_causal_local_with_summaries_gradcheck_fp64():
    q, k, v, bias = (t.requires_grad_() for t in _local_inputs(2, 6, 3, 4, torch.float64))
    lin_k = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: torch.cat([t.flatten() for t in causal_local_attention_with_summaries(*a[:4], 3, a[4])]),
        [q, k, v, bias, lin_k])


def test_causal_local_refuses_a_strip_height_that_does_not_divide_c():
    with pytest.raises(ValueError, match="divide"):
        causal_local_attention(*_local_inputs(1, 8, 2, 2, torch.float32), 3)


def test_default_block_and_fraction():
    assert default_block(256) == 128 and local_fraction(256, 128) == 0.75
    assert default_block(128) == 64
    assert default_block(16) is None and local_fraction(16, None) == 1.0


# ------------------------------------------------------------------------------------- mixed chunk, whole op
def _mc_inputs(B, T, s, e, dtype=torch.float32, seed=0):
    g = _gen(seed)
    maps = [torch.randn(B, 1, T, s, generator=g) for _ in range(4)]
    v = torch.randn(B, 1, T, e, generator=g)
    return [t.to(dtype) for t in (*maps, v)]


@pytest.mark.parametrize("parts", ["both", "local", "global"])
@pytest.mark.parametrize("T,C,block", [(37, 8, 4), (64, 16, None), (50, 16, 2), (300, 128, None)])
def test_mixed_chunk_fast_paths_match_plain(T, C, block, parts):
    B, s, e = 2, 8, 12
    inputs = _mc_inputs(B, T, s, e)
    bias = torch.randn(C, C, generator=_gen(5)) * 0.1
    km = random_right_padding(B, T)
    real = km[:, None, :, None]

    def run(plain):
        def f(qq, qk, lq, lk, v, b):
            with fastpath.plain("causal_blocks", "lean_global", "global_trim") if plain else torch.enable_grad():
                return mixed_chunk_attention(qq, qk, lq, lk, v, b, chunk_size=C, causal=True, key_mask=km,
                                             parts=parts, local_block=block)[0]
        return f

    every = [*inputs, bias]
    used = {"both": range(6), "local": (0, 1, 4, 5), "global": (2, 3, 4)}[parts]
    assert_forward_backward_close(with_inputs(run(False), every, used), with_inputs(run(True), every, used),
                                  [every[i] for i in used], real=real, atol=1e-5, rtol=1e-4)


def test_mixed_chunk_fast_paths_keep_the_final_state():
    B, T, C = 2, 45, 16
    inputs = _mc_inputs(B, T, 8, 12)
    bias = torch.randn(C, C, generator=_gen(5)) * 0.1
    km = random_right_padding(B, T)
    args = dict(chunk_size=C, causal=True, key_mask=km, output_final_state=True, local_block=4)
    o, state = mixed_chunk_attention(*inputs, bias, **args)
    with fastpath.plain():
        o_ref, state_ref = mixed_chunk_attention(*inputs, bias, **args)
    torch.testing.assert_close(o, o_ref)
    for name in ("kv", "count", "quad_k", "lin_k", "v"):
        torch.testing.assert_close(getattr(state, name), getattr(state_ref, name))


def test_mixed_chunk_refuses_a_local_block_that_does_not_divide_c():
    inputs = _mc_inputs(1, 16, 4, 4)
    with pytest.raises(ValueError, match="local_block"):
        mixed_chunk_attention(*inputs, torch.zeros(8, 8), chunk_size=8, causal=True, local_block=3)


# ---------------------------------------------------------------------------------------- exclusive cumsum
@pytest.mark.parametrize("dtype,tol", [(torch.float32, dict(atol=1e-5, rtol=1e-5)), (torch.bfloat16, BF16)])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_exclusive_cumsum_matches_sums_before(n, dtype, tol):
    x = torch.randn(2, 3, n, 4, 5, generator=_gen()).to(dtype)
    assert_forward_backward_close(lambda t: exclusive_cumsum(t, 2), lambda t: sums_before(t[:, :, :-1], 2), [x],
                                  **tol)


@pytest.mark.parametrize("dim", [1, -1])
def test_exclusive_cumsum_gradcheck_fp64(dim):
    """The slice-by-slice form (fp32, fp64), over a middle axis and the last (strided slices)."""
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=_gen()).requires_grad_()
    torch.testing.assert_close(exclusive_cumsum(x, dim), sums_before(x.narrow(dim, 0, x.shape[dim] - 1), dim))
    assert torch.autograd.gradcheck(lambda t: exclusive_cumsum(t, dim), [x])


# ----------------------------------------------------------------------------------------------------- RoPE
@pytest.mark.parametrize("dtype,tol", [(torch.float32, dict(atol=1e-6, rtol=1e-5)), (torch.bfloat16, BF16)])
@pytest.mark.parametrize("width,dims", [(16, 16), (16, 8), (12, 4)])
@pytest.mark.parametrize("per_row", [False, True])
def test_rope_without_cat_matches_plain(width, dims, per_row, dtype, tol):
    B, H, T = 2, 3, 9
    x = torch.randn(B, H, T, width, generator=_gen()).to(dtype)
    pos = torch.randint(0, 100, (B, T), generator=_gen(1)) if per_row else torch.arange(T)
    cos, sin = rope_tables(pos, dims, dtype)
    assert_forward_backward_close(lambda t: rotate(t, cos, sin, dims), lambda t: rotate_plain(t, cos, sin, dims),
                                  [x], **tol)


def test_rope_gradient_through_a_broadcast_input():
    """x broadcast against per-row tables (x (1, H, T, w), tables (B, 1, T, w/2)): the gradient is summed back."""
    x = torch.randn(1, 2, 5, 8, generator=_gen())
    cos, sin = rope_tables(torch.randint(0, 50, (3, 5), generator=_gen(1)), 8, torch.float32)
    assert_forward_backward_close(lambda t: rotate(t, cos, sin, 8), lambda t: rotate_plain(t, cos, sin, 8), [x],
                                  atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------ GAU projection and epilogue
def _projection_inputs(B, T, d, e, s, n, dims, per_row, dtype):
    """h, W, b, gamma, beta (fp32 parameters, h in dtype) and the RoPE tables as layers/gau.py hands them."""
    h = torch.randn(B, T, d, generator=_gen()).to(dtype)
    weight = torch.randn(2 * e + s, d, generator=_gen(4)) * d ** -0.5 * 2
    bias = torch.randn(2 * e + s, generator=_gen(5)) * 0.1
    gamma = torch.randn(n, s, generator=_gen(1))
    beta = torch.randn(n, s, generator=_gen(2)) * 0.1
    pos = torch.randint(0, 100, (B, T), generator=_gen(3)) if per_row else torch.arange(T)
    if dims:
        cos, sin = rope_tables(pos, dims, dtype)
        if per_row:
            cos, sin = cos[:, 0], sin[:, 0]                                # (B, T, half), as layers/gau.py hands them
    else:
        cos = sin = h
    return [h, weight.to(dtype), bias.to(dtype), gamma, beta], (cos, sin)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, dict(atol=1e-5, rtol=1e-5)), (torch.bfloat16, BF16)])
@pytest.mark.parametrize("n,dims", [(4, 8), (2, 8), (4, 4), (2, 0)])
@pytest.mark.parametrize("per_row", [False, True])
def test_gau_projection_matches_plain(n, dims, per_row, dtype, tol):
    e, s = 12, 8
    inputs, (cos, sin) = _projection_inputs(2, 7, 10, e, s, n, dims, per_row, dtype)

    def as_one(fn):
        return lambda *a: torch.cat([t.float().flatten() for t in fn(*a, cos, sin, e=e, s=s, dims=dims)])

    assert_forward_backward_close(as_one(gau_projection), as_one(gau_projection_plain), inputs,
                                  names=["h", "weight", "bias", "gamma", "beta"], **tol)


def test_gau_projection_under_bf16_autocast_runs_the_product_in_bf16_like_linear():
    """fp32 h and parameters under bf16 autocast: the outputs are bf16 and match the plain form (nn.Linear's
    autocast), and the parameters' gradients come back in fp32."""
    e, s = 12, 8
    inputs, (cos, sin) = _projection_inputs(2, 7, 10, e, s, 4, 8, False, torch.bfloat16)
    h, weight, bias, gamma, beta = (t.float() for t in inputs)
    runs = []
    for fn in (gau_projection, gau_projection_plain):
        leaves = [t.clone().requires_grad_() for t in (h, weight, bias, gamma, beta)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs = fn(*leaves, cos, sin, e=e, s=s, dims=8)
        torch.cat([t.float().flatten() for t in outs]).sum().backward()
        runs.append((outs, leaves))
    (outs, leaves), (outs_ref, leaves_ref) = runs
    assert all(t.dtype == torch.bfloat16 for t in outs)
    for a, b in zip(outs, outs_ref):
        torch.testing.assert_close(a.float(), b.float(), **BF16)
    for a, b in zip(leaves, leaves_ref):
        assert a.grad.dtype == torch.float32
        torch.testing.assert_close(a.grad, b.grad, **BF16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,dims", [(4, 8), (2, 8), (4, 4), (2, 0)])
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("T", [7, 1])
def test_gau_projection_inference_equals_the_autograd_forward(n, dims, per_row, dtype, T):
    """The no-gradient form gives the autograd function's outputs: exactly for several tokens per row (the same
    products and passes per element, all maps in one pass); for one token per row (decoding: one product and one
    SiLU pass over the row, not one per part) within the last bit of the dtype."""
    e, s = 12, 8
    inputs, (cos, sin) = _projection_inputs(2, T, 10, e, s, n, dims, per_row, dtype)
    want = gau_projection(*inputs, cos, sin, e=e, s=s, dims=dims)
    with torch.inference_mode():
        got = gau_projection_inference(*inputs, cos, sin, e=e, s=s, dims=dims)
    assert len(got) == len(want) == n + 2
    assert all(t.is_contiguous() for t in want[:2])          # the attention's products read v without a copy
    assert T == 1 or all(t.is_contiguous() for t in got[:2])
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        if T > 1:
            torch.testing.assert_close(g, w, atol=0, rtol=0)
        else:
            torch.testing.assert_close(g, w, atol=1e-6 if dtype == torch.float32 else 1e-2,
                                       rtol=2.5e-7 if dtype == torch.float32 else 8e-3)


def test_gau_projection_with_unused_outputs():
    """Outputs the caller does not use (no gradient reaches them) are handled as zero gradients."""
    inputs, (cos, sin) = _projection_inputs(1, 5, 6, 6, 4, 2, 4, False, torch.float32)
    leaves = [t.clone().requires_grad_() for t in inputs]
    u, v, q, k = gau_projection(*leaves, cos, sin, e=6, s=4, dims=4)
    q.sum().backward()
    refs = [t.clone().requires_grad_() for t in inputs]
    gau_projection_plain(*refs, cos, sin, e=6, s=4, dims=4)[2].sum().backward()
    for a, b in zip(leaves, refs):
        torch.testing.assert_close(a.grad, b.grad)


def test_gau_projection_gradcheck_fp64():
    """The written-out backward against finite differences (h, W, b, gamma, beta; the first map writes z's
    gradient)."""
    e, s, n, dims = 3, 4, 2, 4
    inputs, (cos, sin) = _projection_inputs(1, 5, 3, e, s, n, dims, False, torch.float64)
    inputs = [t.double().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *a: gau_projection(*a, cos, sin, e=e, s=s, dims=dims), inputs)


# ---------------------------------------------------------------------------------------------- token shift
@pytest.mark.parametrize("T", [1, 2, 9])
@pytest.mark.parametrize("n,back", [(6, 6), (6, 3), (5, 3), (10, 0), (10, 10), (0, 0)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, dict(atol=0, rtol=0)), (torch.bfloat16, dict(atol=0, rtol=0))])
def test_shift_without_cat_matches_plain(T, n, back, masked, dtype, tol):
    """A pure data movement (and a 0/1 mask): equal to the last bit, forward and backward."""
    h = torch.randn(3, T, 10, generator=_gen()).to(dtype)
    mask = random_right_padding(3, T) if masked else None
    assert_forward_backward_close(lambda x: shift_channels(x, n, back, mask),
                                  lambda x: shift_channels_plain(x, n, back, mask), [h], names=["h"], **tol)


def test_shift_moves_the_channels_it_says():
    h = torch.arange(1.0, 13.0).reshape(1, 3, 4)                   # token t, channel c: 4t + c + 1
    out = shift_channels(h, 3, 2, torch.tensor([[True, True, False]]))
    # channels 0, 1 from the previous token, channel 2 from the next (token 2 is padding: it shifts in 0), 3 kept
    assert out.tolist() == [[[0, 0, 7, 4], [1, 2, 0, 8], [5, 6, 0, 12]]]


def test_shift_gradcheck_fp64():
    h = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    mask = random_right_padding(2, 5)
    for n, back in ((4, 4), (4, 2), (7, 3)):
        assert torch.autograd.gradcheck(lambda x: shift_channels(x, n, back, mask), [h])


def test_shift_refuses_inconsistent_widths():
    with pytest.raises(ValueError, match="back <= n <= width"):
        shift_channels(torch.zeros(1, 2, 4), 5, 2)


# ------------------------------------------------------------------------------------------------ whole models
def _model(arch, **overrides):
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", arch=arch, **overrides)
    return LanguageModel(cfg)


@pytest.mark.parametrize("arch,overrides", [
    ("flash", dict(chunk_size=64)),                        # strips of 32 rows
    ("flash", dict(chunk_size=16, rope_fraction=0.5)),     # plain square (C too small for strips), partial RoPE
    ("flash", dict(chunk_size=64, mixed_chunk_parts="local")),
    ("flash", dict(chunk_size=64, gau_heads=2)),           # several heads: the plain projection
    ("flash-quad", dict()),
    ("transformer++", dict()),
])
def test_model_with_fast_paths_matches_plain(arch, overrides):
    model = _model(arch, **overrides)
    ids = torch.randint(0, model.config.vocab_size, (2, 150), generator=_gen())
    mask = random_right_padding(2, 150)

    def run():
        model.zero_grad(set_to_none=True)
        out = model(ids, labels=ids, attention_mask=mask)
        out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    logits, grads = run()
    with fastpath.plain():
        logits_ref, grads_ref = run()
    torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=1e-4)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], atol=1e-5, rtol=1e-4,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_plain_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown fast path"):
        with fastpath.plain("nope"):
            pass


@pytest.mark.parametrize("arch", ["flash", "flash-quad"])
def test_model_with_fast_paths_matches_plain_under_bf16_autocast(arch):
    """Under bf16 autocast the fast forms run in bf16 where the plain forms do: logits and gradients agree loosely."""
    model = _model(arch, chunk_size=64)
    ids = torch.randint(0, model.config.vocab_size, (1, 128), generator=_gen())

    def run():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(ids, labels=ids)
        out.loss.float().backward()
        return out.logits.detach().float(), torch.cat([p.grad.flatten() for p in model.parameters()])

    logits, grads = run()
    with fastpath.plain():
        logits_ref, grads_ref = run()
    torch.testing.assert_close(logits, logits_ref, atol=5e-2, rtol=5e-2)
    assert (grads - grads_ref).norm() <= 0.05 * grads_ref.norm()
