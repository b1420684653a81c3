"""GAU's projection epilogue as one autograd function (the fused_projection fast path, ops/fastpath.py).

From the pre-activation y = h W_uvz + b (B, T, 2e + s) of a GAU layer (layers/gau.py, paper Code 1):

    u, v, z = split(silu(y))                         u, v (B, T, e), z (B, T, s)
    map_i   = rope(z * gamma_i + beta_i)             i < n (2 for FLASH-Quad: q, k; 4 for FLASH), RoPE on the
                                                     first `dims` channels (partial RoPE), the rest passed through

Forward: one SiLU pass over y, written into three tensors (u, v and z each contiguous: the attention's batched
products read v as it is, where bf16 products on a CPU copy a strided v first; 5% of a bf16 training step at 512 x 8
on a Xeon with AMX, no change in fp32), one scale/offset pass per map written straight into the maps' buffer, RoPE's
two halves written in place (ops/rope.py; no `cat`, no temporaries). Backward, written out: the maps' gradients
rotated back, gamma's and beta's gradients reduced, z's gradient accumulated over the maps, and one SiLU backward
per part straight into the slices of dy (no `cat` of the parts' gradients). Only y and the tables are saved; z =
silu(y_z) is recomputed in backward (s of the 2e + s channels). `gau_projection_plain` (same signature) and
layers/gau.py's plain path (autograd through silu, split, addcmul and apply_rope) are the reference;
tests/ops/test_fastpath.py holds them equal forward and backward, fp32 and bf16.

`gau_projection_inference` (same signature and results) is the forward alone, for calls without gradients
(decoding): all maps in one pass, no autograd function around it.

Everything runs in y's dtype (bf16 under autocast, as the plain form computes it); gamma and beta are cast to it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from .autocast import autocast_off, cast
from .rope import rotate_back_into, rotate_into, rotate_plain


def gau_projection_plain(y: Tensor, gamma: Tensor, beta: Tensor, cos: Tensor, sin: Tensor, *, e: int, s: int,
                         dims: int) -> tuple[Tensor, ...]:
    """The reference form of `gau_projection`, same signature and results: autograd through silu, split, addcmul
    and the plain RoPE (chunk, products, cat), as layers/gau.py's plain path computes it."""
    with autocast_off(y.device):
        u, v, z = F.silu(y).split([e, e, s], dim=-1)
        zs = torch.addcmul(beta.to(y.dtype)[:, None, None], z[None], gamma.to(y.dtype)[:, None, None])
        maps = rotate_plain(zs, cos, sin, dims) if dims else zs
    return (u, v, *maps.unbind(0))


def gau_projection_inference(y: Tensor, gamma: Tensor, beta: Tensor, cos: Tensor, sin: Tensor, *, e: int, s: int,
                             dims: int) -> tuple[Tensor, ...]:
    """`gau_projection`'s forward without autograd, for calls that need no gradient (decoding runs one token per row
    in inference mode, where each op's fixed cost outweighs its arithmetic): the scale/offset of every map in one
    addcmul and RoPE over all maps at once (6 ops, where the autograd function runs 5 per map inside its apply).
    Longer inputs (prefill, scoring) get u, v and z as the autograd form does: the same arithmetic per element.
    One token per row gets them as views of one SiLU pass (four ops fewer, 3% of a decoding step), where SiLU's
    vectorised loop and its scalar tail may differ from the per-part pass in the last bit of fp32. The maps are
    slices of one (n, B, T, s) buffer."""
    plain_dtypes = torch.is_autocast_enabled(y.device.type)
    with autocast_off(y.device) if plain_dtypes else contextlib.nullcontext():
        if y.shape[-2] > 1:                                            # prefill, scoring: v contiguous
            u, v, z = _silu_parts(y, e)
        else:                                                          # decoding: one op
            act = F.silu(y)
            u, v, z = act[..., :e], act[..., e:2 * e], act[..., 2 * e:]
        g, b = cast(gamma, y.dtype)[:, None, None], cast(beta, y.dtype)[:, None, None]
        zs = torch.addcmul(b, z[None], g)                               # (n, B, T, s)
        maps = rotate_into(torch.empty_like(zs), zs, cos, sin, dims) if dims else zs
    return (u, v, *maps.unbind(0))


def _silu_parts(y: Tensor, e: int) -> tuple[Tensor, Tensor, Tensor]:
    """silu(y) split into u, v (..., e) and z (..., s), each written into its own contiguous tensor (one pass)."""
    u, v = y.new_empty((*y.shape[:-1], e)), y.new_empty((*y.shape[:-1], e))
    torch.ops.aten.silu.out(y[..., :e], out=u)
    torch.ops.aten.silu.out(y[..., e:2 * e], out=v)
    return u, v, F.silu(y[..., 2 * e:])


def gau_projection(y: Tensor, gamma: Tensor, beta: Tensor, cos: Tensor, sin: Tensor, *, e: int, s: int,
                   dims: int) -> tuple[Tensor, ...]:
    """(u, v, map_0, ..., map_{n-1}): u, v (B, T, e), maps (B, T, s). y (B, T, 2e + s); gamma, beta (n, s); cos, sin
    the RoPE tables of a dims-wide rotation, (T, dims/2) or (B, T, dims/2), in y's dtype (ignored when dims = 0)."""
    return _GAUProjection.apply(y, gamma, beta, cos, sin, e, s, dims)


class _GAUProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, gamma, beta, cos, sin, e, s, dims):
        dtype = y.dtype
        n = gamma.shape[0]
        with autocast_off(y.device):
            u, v, z = _silu_parts(y, e)
            g, b = gamma.to(dtype), beta.to(dtype)
            maps = y.new_empty((n, *z.shape))
            if dims:
                zs = y.new_empty(z.shape)
                for i in range(n):
                    torch.addcmul(b[i], z, g[i], out=zs)
                    rotate_into(maps[i], zs, cos, sin, dims)
            else:
                torch.addcmul(b[:, None, None], z[None], g[:, None, None], out=maps)
        ctx.save_for_backward(y, gamma, beta, cos, sin)
        ctx.sizes = (e, s, dims)
        ctx.set_materialize_grads(False)
        return (u, v, *maps.unbind(0))

    @staticmethod
    def backward(ctx, du, dv, *dmaps):
        y, gamma, beta, cos, sin = ctx.saved_tensors
        e, s, dims = ctx.sizes
        dtype = y.dtype
        with autocast_off(y.device):
            g = gamma.to(dtype)
            y_z = y[..., 2 * e:]
            z = F.silu(y_z)
            dgamma = torch.zeros(gamma.shape, dtype=torch.float32, device=y.device)
            dbeta = torch.zeros(beta.shape, dtype=torch.float32, device=y.device)
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
            dy = torch.empty_like(y)
            for lo, hi, grad in ((0, e, du), (e, 2 * e, dv), (2 * e, 2 * e + s, dz)):
                if grad is None:
                    dy[..., lo:hi].zero_()
                else:
                    torch.ops.aten.silu_backward.grad_input(grad, y[..., lo:hi], grad_input=dy[..., lo:hi])
        return dy, dgamma.to(gamma.dtype), dbeta.to(beta.dtype), None, None, None, None, None
