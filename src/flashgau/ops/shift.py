"""Token shift's channel shift (layers/token_shift.py): channels [0, n) of every token taken from its neighbours.

    out[:, t, :back]  = src[:, t - 1, :back]     (0 at t = 0)            from the previous token
    out[:, t, back:n] = src[:, t + 1, back:n]    (0 at t = T - 1)        from the next token (bidirectional)
    out[:, t, n:]     = h[:, t, n:]                                      the rest unchanged
    src = h, or h times the key mask (B, T) so that padded tokens shift in zeros

A causal block takes all n channels from the previous token (back = n); a bidirectional one back = n - n // 2.

`shift_channels` is one autograd function (the shift_nocat fast path, ops/fastpath.py): forward writes the three
regions of one output, backward the transposed shift of the gradient into one buffer. `shift_channels_plain` is the
form it replaces (cat of zero rows and slices, then cat of the channel groups; its backward zero-fills a full-size
buffer per slice and adds the two gradients of h: its ops took ~2% of a profiled FLASH training step at 8K on a
2-core Xeon with AMX; one shift's forward + backward at (1, 8192, 256) 6.6 ms there, this form's 3.5), kept as its
reference. Shapes: h (B, T, d), key_mask (B, T) bool or None, 0 <= back <= n <= d.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def shift_channels_plain(h: Tensor, n: int, back: int, key_mask: Optional[Tensor] = None) -> Tensor:
    """The reference form (cat of slices and zero rows)."""
    src = h[..., :n] if key_mask is None else h[..., :n] * key_mask[..., None].to(h.dtype)
    parts = [_later(src[..., :back], 1)]
    if back < n:
        parts.append(_later(src[..., back:], -1))
    return torch.cat([*parts, h[..., n:]], dim=-1)


def _later(x: Tensor, by: int) -> Tensor:
    """x (B, T, c) moved `by` positions along T (by > 0: each token gets the one `by` before it), zeros shifted in."""
    if by > 0:
        return torch.cat([x.new_zeros(x.shape[0], by, x.shape[2]), x[:, :-by]], dim=1)
    return torch.cat([x[:, -by:], x.new_zeros(x.shape[0], -by, x.shape[2])], dim=1)


def shift_channels(h: Tensor, n: int, back: int, key_mask: Optional[Tensor] = None) -> Tensor:
    """The shift (module docstring) as one autograd function; the key mask gets no gradient."""
    if not 0 <= back <= n <= h.shape[-1]:
        raise ValueError(f"need 0 <= back <= n <= width, got back={back}, n={n}, width={h.shape[-1]}")
    mask = None if key_mask is None else key_mask.to(h.dtype)[..., None]
    return _Shift.apply(h, n, back, mask)


def _shift_into(out: Tensor, x: Tensor, n: int, back: int, mask: Optional[Tensor], *, inverse: bool) -> Tensor:
    """out = shift(x); inverse: the transposed shift (the gradient's: previous and next swapped). mask (B, T, 1)
    multiplies each shifted channel at the token the forward shift reads it from: the source rows forward, the
    destination rows in the transpose."""
    earlier, later = slice(None, -1), slice(1, None)
    out[..., n:].copy_(x[..., n:])
    for lo, hi, forward_from_previous in ((0, back, True), (back, n, False)):
        if lo == hi:
            continue
        from_previous = forward_from_previous != inverse
        dst, src = (later, earlier) if from_previous else (earlier, later)
        if mask is None:
            out[:, dst, lo:hi].copy_(x[:, src, lo:hi])
        else:
            torch.mul(x[:, src, lo:hi], mask[:, dst if inverse else src], out=out[:, dst, lo:hi])
        (out[:, :1, lo:hi] if from_previous else out[:, -1:, lo:hi]).zero_()     # nothing shifted in at the edge
    return out


class _Shift(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, n: int, back: int, mask: Optional[Tensor]) -> Tensor:
        ctx.sizes = (n, back)
        ctx.save_for_backward(mask)
        return _shift_into(torch.empty_like(h, memory_format=torch.contiguous_format), h, n, back, mask,
                           inverse=False)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        n, back = ctx.sizes
        dh = _shift_into(torch.empty_like(grad, memory_format=torch.contiguous_format), grad, n, back, mask,
                         inverse=True)
        return dh, None, None, None
