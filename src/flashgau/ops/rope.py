"""Rotary position embedding (RoPE) in the half-split layout, given its cos/sin tables:

    x = [x1, x2, rest] (x1, x2 each dims/2 wide)  ->  [x1 cos - x2 sin, x2 cos + x1 sin, rest]

`rotate` is one autograd function that writes the two rotated halves into the output (no `cat`, no temporaries)
and rotates the gradient back by the transposed rotation in backward (the rope_nocat fast path, ops/fastpath.py);
`rotate_plain` is the form it replaces (chunk, four products, cat), kept as its reference. `rotate_into` is the
forward's arithmetic on preallocated tensors, shared with the GAU projection (ops/projection.py), and
`rotate_back_into` the backward's.

Shapes: x (..., T, width) with width >= dims; cos, sin (T, dims/2) or broadcastable to x's (..., T, dims/2), in x's
dtype. dims even, 0 < dims <= width.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotate_plain(x: Tensor, cos: Tensor, sin: Tensor, dims: int) -> Tensor:
    """The reference form (chunk, products, cat)."""
    if dims < x.shape[-1]:
        return torch.cat([rotate_plain(x[..., :dims], cos, sin, dims), x[..., dims:]], dim=-1)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def rotate_into(out: Tensor, x: Tensor, cos: Tensor, sin: Tensor, dims: int, *, inverse: bool = False) -> Tensor:
    """out = rope(x) (inverse: the transposed rotation, i.e. sin -> -sin), out preallocated with x's shape and not
    aliasing x; channels from dims on are copied."""
    h = dims // 2
    x1, x2 = x[..., :h], x[..., h:dims]
    o1, o2 = out[..., :h], out[..., h:dims]
    sign = 1.0 if inverse else -1.0
    torch.mul(x1, cos, out=o1)
    o1.addcmul_(x2, sin, value=sign)
    torch.mul(x2, cos, out=o2)
    o2.addcmul_(x1, sin, value=-sign)
    if dims < x.shape[-1]:
        out[..., dims:].copy_(x[..., dims:])
    return out


def rotate_back_into(out: Tensor, grad: Tensor, cos: Tensor, sin: Tensor, dims: int) -> Tensor:
    """The gradient of rope(x) with respect to x, given the gradient of the output: the transposed rotation."""
    return rotate_into(out, grad, cos, sin, dims, inverse=True)


def rotate(x: Tensor, cos: Tensor, sin: Tensor, dims: int) -> Tensor:
    """rope(x) as one autograd function (module docstring)."""
    return _Rotate.apply(x, cos, sin, dims)


class _Rotate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor, dims: int) -> Tensor:
        ctx.save_for_backward(cos, sin)
        ctx.dims, ctx.x_shape = dims, x.shape
        shape = torch.broadcast_shapes(x.shape[:-1], cos.shape[:-1]) + x.shape[-1:]
        return rotate_into(x.new_empty(shape), x, cos, sin, dims)

    @staticmethod
    def backward(ctx, grad: Tensor):
        cos, sin = ctx.saved_tensors
        dx = rotate_back_into(torch.empty_like(grad, memory_format=torch.contiguous_format), grad, cos, sin, ctx.dims)
        if dx.shape != ctx.x_shape:                  # x was broadcast against the tables
            dx = dx.sum_to_size(ctx.x_shape)
        return dx, None, None, None
