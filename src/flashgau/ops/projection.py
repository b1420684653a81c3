"""GAU's projection and its epilogue as one autograd function (the fused_projection fast path, ops/fastpath.py).

From the normalised input h (B, T, d) of a GAU layer and its uvz weight W (2e + s, d) and bias b (layers/gau.py,
paper Code 1):

    y_u, y_v, y_z = h W_u^T + b_u, h W_v^T + b_v, h W_z^T + b_z    the rows [0, e), [e, 2e), [2e, 2e + s) of W, b
    u, v, z = silu(y_u), silu(y_v), silu(y_z)                     u, v (B, T, e), z (B, T, s)
    map_i   = rope(z * gamma_i + beta_i)                          i < n (2 for FLASH-Quad: q, k; 4 for FLASH), RoPE
                                                                  on the first `dims` channels (partial RoPE), the
                                                                  rest passed through

Forward: the product in three parts, each written into its own contiguous tensor (one product of the whole W
writes y_u, y_v, y_z as strided column blocks of one (T, 2e + s) output; SiLU reads a strided block ~1.5x slower
than a contiguous one on a Xeon with AMX, and bf16 batched products copy a strided v first); one SiLU pass per
part; one scale/offset pass per map written straight into the maps' buffer, RoPE's two halves written in place
(ops/rope.py; no `cat`, no temporaries). Backward, written out: the maps' gradients rotated back, gamma's and beta's
gradients reduced, z's gradient accumulated over the maps, one SiLU backward per part (contiguous), and per part the
weight's rows (dW_p = dy_p^T h), the bias's (the sum of dy_p over tokens) and h's gradient accumulated (dh += dy_p
W_p). Only h and the three pre-activations are saved; z = silu(y_z) is recomputed in backward (s of the 2e + s
channels). `gau_projection_plain` (same signature) and layers/gau.py's plain path (autograd through the product,
silu, split, addcmul and apply_rope) are the reference; tests/ops/test_fastpath.py holds them equal forward and
backward, fp32 and bf16.

`gau_projection_inference` (same signature and results) is the forward alone, for calls without gradients: all maps
in one pass, no autograd function around it; one token per row (decoding) takes one product and one SiLU pass.

Under autocast the product runs in the autocast dtype, as nn.Linear's does (h, W, b cast to it; fp64 is left
alone), and everything after it in that dtype; gamma and beta are cast to it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from .autocast import autocast_off, cast
from .rope import rotate_back_into, rotate_into, rotate_plain


def gau_projection_plain(h: Tensor, weight: Tensor, bias: Tensor, gamma: Tensor, beta: Tensor, cos: Tensor,
                         sin: Tensor, *, e: int, s: int, dims: int) -> tuple[Tensor, ...]:
    """The reference form of `gau_projection`, same signature and results: autograd through the product, silu,
    split, addcmul and the plain RoPE (chunk, products, cat), as layers/gau.py's plain path computes it."""
    y = F.linear(h, weight, bias)
    with autocast_off(y.device):
        u, v, z = F.silu(y).split([e, e, s], dim=-1)
        zs = torch.addcmul(beta.to(y.dtype)[:, None, None], z[None], gamma.to(y.dtype)[:, None, None])
        maps = rotate_plain(zs, cos, sin, dims) if dims else zs
    return (u, v, *maps.unbind(0))


def gau_projection(h: Tensor, weight: Tensor, bias: Tensor, gamma: Tensor, beta: Tensor, cos: Tensor, sin: Tensor,
                   *, e: int, s: int, dims: int) -> tuple[Tensor, ...]:
    """(u, v, map_0, ..., map_{n-1}): u, v (B, T, e), maps (B, T, s). h (B, T, d); weight (2e + s, d), bias
    (2e + s,); gamma, beta (n, s); cos, sin the RoPE tables of a dims-wide rotation, (T, dims/2) or (B, T, dims/2), in
    the dtype the product runs in (ignored when dims = 0)."""
    h, weight, bias = _product_dtypes(h, weight, bias)
    return _GAUProjection.apply(h, weight, bias, gamma, beta, cos, sin, e, s, dims)


def gau_projection_inference(h: Tensor, weight: Tensor, bias: Tensor, gamma: Tensor, beta: Tensor, cos: Tensor,
                             sin: Tensor, *, e: int, s: int, dims: int) -> tuple[Tensor, ...]:
    """`gau_projection`'s forward without autograd, for calls that need no gradient: the scale/offset of every map
    in one addcmul and RoPE over all maps at once (6 ops, where the autograd function runs 5 per map inside its
    apply). Several tokens per row (prefill, scoring) get u, v and z as the autograd form does: the same arithmetic
    per element. One token per row (decoding, where each op's fixed cost outweighs its arithmetic) gets them as views
    of one product and one SiLU pass (3% of a decoding step), within the last bit of the parts' products and SiLU
    passes. The maps are slices of one (n, B, T, s) buffer."""
    autocast = _autocast_on(h)
    if autocast:
        h, weight, bias = _product_dtypes(h, weight, bias)
    with autocast_off(h.device) if autocast else contextlib.nullcontext():   # entering one costs ~10 us a layer
        if h.shape[-2] > 1:                                            # prefill, scoring: as the autograd form
            u, v, z = (F.silu(y) for y in _products(h, weight, bias, e, s))
        else:                                                          # decoding: one product, one SiLU pass
            act = F.silu(F.linear(h, weight, bias))
            u, v, z = act[..., :e], act[..., e:2 * e], act[..., 2 * e:]
        n = gamma.shape[0]
        g, b = cast(gamma, h.dtype).view(n, 1, 1, s), cast(beta, h.dtype).view(n, 1, 1, s)
        zs = torch.addcmul(b, z, g)                                     # (n, B, T, s), z broadcast over the maps
        maps = rotate_into(torch.empty_like(zs), zs, cos, sin, dims) if dims else zs
    return (u, v, *maps.unbind(0))


def product_dtype(h: Tensor) -> torch.dtype:
    """The dtype nn.Linear's product of h runs in: autocast's on h's device where it is on (fp64 is left alone),
    else h's."""
    if h.dtype == torch.float64 or not _autocast_on(h):
        return h.dtype
    return torch.get_autocast_dtype(h.device.type)


def _autocast_on(h: Tensor) -> bool:
    device = h.device.type
    return torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)


def _product_dtypes(h: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """h, weight, bias in product_dtype(h)."""
    dtype = product_dtype(h)
    return cast(h, dtype), cast(weight, dtype), cast(bias, dtype)


def _spans(e: int, s: int) -> tuple[tuple[int, int], ...]:
    """The rows of W (and channels of y) of u, v and z."""
    return (0, e), (e, 2 * e), (2 * e, 2 * e + s)


def _products(h: Tensor, weight: Tensor, bias: Tensor, e: int, s: int) -> list[Tensor]:
    """y_u, y_v, y_z, each a contiguous (B, T, width) tensor (one product per part; the rows of W are contiguous)."""
    flat = h.reshape(-1, h.shape[-1])
    return [torch.addmm(bias[lo:hi], flat, weight[lo:hi].t()).view(*h.shape[:-1], hi - lo) for lo, hi in _spans(e, s)]


class _GAUProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, gamma, beta, cos, sin, e, s, dims):
        dtype = h.dtype
        n = gamma.shape[0]
        with autocast_off(h.device):
            pre = _products(h, weight, bias, e, s)
            u, v, z = (F.silu(y) for y in pre)
            g, b = gamma.to(dtype), beta.to(dtype)
            maps = h.new_empty((n, *z.shape))
            if dims:
                zs = h.new_empty(z.shape)
                for i in range(n):
                    torch.addcmul(b[i], z, g[i], out=zs)
                    rotate_into(maps[i], zs, cos, sin, dims)
            else:
                torch.addcmul(b[:, None, None], z[None], g[:, None, None], out=maps)
        ctx.save_for_backward(h, weight, *pre, gamma, beta, cos, sin)
        ctx.sizes = (e, s, dims)
        ctx.set_materialize_grads(False)
        return (u, v, *maps.unbind(0))

    @staticmethod
    def backward(ctx, du, dv, *dmaps):
        h, weight, y_u, y_v, y_z, gamma, beta, cos, sin = ctx.saved_tensors
        e, s, dims = ctx.sizes
        dtype = h.dtype
        with autocast_off(h.device):
            g = gamma.to(dtype)
            z = F.silu(y_z)
            dgamma = torch.zeros(gamma.shape, dtype=torch.float32, device=h.device)
            dbeta = torch.zeros(beta.shape, dtype=torch.float32, device=h.device)
            dz = None                                                   # the first map writes it, the others add
            dzs = torch.empty_like(z) if dims else None
            for i, dm in enumerate(dmaps):
                if dm is None:
                    continue
                d = rotate_back_into(dzs, dm, cos, sin, dims) if dims else dm
                dbeta[i] = d.sum((0, 1), dtype=torch.float32)
                dgamma[i] = (d * z).sum((0, 1), dtype=torch.float32)
                if dz is None:
                    dz = torch.mul(d, g[i])
                else:
                    dz.addcmul_(d, g[i])
            flat = h.reshape(-1, h.shape[-1])
            dweight, dbias, dh = torch.empty_like(weight), weight.new_empty(weight.shape[0]), None
            for (lo, hi), grad, y in zip(_spans(e, s), (du, dv, dz), (y_u, y_v, y_z)):
                if grad is None:                                        # an output nobody used
                    dweight[lo:hi].zero_()
                    dbias[lo:hi].zero_()
                    continue
                dy = torch.ops.aten.silu_backward(grad, y).reshape(-1, hi - lo)
                torch.mm(dy.t(), flat, out=dweight[lo:hi])
                torch.sum(dy, 0, out=dbias[lo:hi])
                dh = torch.mm(dy, weight[lo:hi]) if dh is None else dh.addmm_(dy, weight[lo:hi])
            dh = torch.zeros_like(h) if dh is None else dh.view(h.shape)
        return dh, dweight, dbias, dgamma.to(gamma.dtype), dbeta.to(beta.dtype), None, None, None, None, None
