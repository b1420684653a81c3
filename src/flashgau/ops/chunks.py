"""Chunk plumbing shared by the chunked ops (mixed_chunk, mixed_chunk_softmax, combiner, favor).

- `to_chunks`, `chunk_mask`: cut the time axis into G = ceil(T / C) chunks of C tokens (padding the last one);
- `sums_before`: exclusive prefix sums over the chunk axis (what a causal query sees of earlier chunks);
  `exclusive_cumsum` the same for n entries -> n (the last one dropped), without the zero block, with a written-out
  backward (the lean_global fast path, ops/fastpath.py);
- `open_chunk`, `pick_rows`: the per-row decoding state after a prefill of `length` real tokens: the sum over its
  finished chunks and its open chunk (length // C; the empty chunk after the last when length is a multiple of C);
- `masked_softmax`: a softmax restricted to allowed entries, 0 (not NaN) for a row with none.

Shapes: B batch, H heads, T tokens, G chunks, C chunk length, w any width.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def to_chunks(x: Tensor, C: int, *, value: float = 0.0) -> Tensor:
    """(..., T, w) -> (..., G, C, w): the time axis padded with `value` up to G * C tokens, then cut in chunks."""
    T, w = x.shape[-2:]
    G = -(-T // C)
    if G * C > T:
        x = F.pad(x, (0, 0, 0, G * C - T), value=value)
    return x.reshape(*x.shape[:-2], G, C, w)


def chunk_mask(key_mask: Optional[Tensor], B: int, T: int, C: int, device) -> Tensor:
    """(B, G, C) bool: True where a chunk slot holds a real token (key_mask (B, T), None: all T real)."""
    real = torch.ones(B, T, dtype=torch.bool, device=device) if key_mask is None else key_mask.bool()
    return to_chunks(real[..., None], C, value=False)[..., 0]


def sums_before(x: Tensor, dim: int) -> Tensor:
    """Exclusive prefix sums along `dim` (n entries -> n + 1): entry g is the sum of the entries before g, so the
    first is 0 and the last is the sum of all."""
    shape = list(x.shape)
    shape[dim] = 1
    return torch.cat([x.new_zeros(shape), x.cumsum(dim)], dim=dim)


def exclusive_cumsum(x: Tensor, dim: int) -> Tensor:
    """Entry g = the sum of the entries before g along `dim` (the first is 0): sums_before(x)[:n] without the
    concatenated zero block, one pass forward; backward, the sum of the gradients after each entry.

    In fp32 and fp64 both run as n - 1 adds of whole slices (out[g] = out[g - 1] + x[g - 1]; backward
    dx[g] = dx[g + 1] + grad[g + 1]), each over contiguous memory when `dim` is not the last axis: torch.cumsum along
    such a dim steps through memory at the dim's stride for every position (mixed_chunk's kv (B, H, G, s, e), small
    preset, T = 8192, in a profiled training step on the 2-core AVX-512 EPYC: 8-9 ms per cumsum call, ~1 ms for the
    31 adds). The backward sums from the end, as the reference's flipped cumsum does. Lower precisions keep
    torch.cumsum (fp32 accumulation, one rounding per entry), backward the total minus an inclusive prefix sum."""
    return _ExclusiveCumsum.apply(x, dim % x.dim())


def _by_slices(x: Tensor) -> bool:
    return x.dtype in (torch.float32, torch.float64)


class _ExclusiveCumsum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dim: int) -> Tensor:
        ctx.dim = dim
        n = x.shape[dim]
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        out.select(dim, 0).zero_()
        if _by_slices(x):
            for g in range(1, n):
                torch.add(out.select(dim, g - 1), x.select(dim, g - 1), out=out.select(dim, g))
        elif n > 1:
            torch.cumsum(x.narrow(dim, 0, n - 1), dim, out=out.narrow(dim, 1, n - 1))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        dim = ctx.dim
        n = grad.shape[dim]
        if _by_slices(grad):
            dx = torch.empty_like(grad, memory_format=torch.contiguous_format)
            dx.select(dim, n - 1).zero_()
            for g in range(n - 2, -1, -1):
                torch.add(dx.select(dim, g + 1), grad.select(dim, g + 1), out=dx.select(dim, g))
            return dx, None
        prefix = torch.cumsum(grad, dim)                                    # inclusive
        total = prefix.narrow(dim, n - 1, 1).clone()                        # prefix is overwritten
        return torch.sub(total, prefix, out=prefix), None                    # sum of the gradients after g


def pick_rows(x: Tensor, index: Tensor, dim: int = 2) -> Tensor:
    """x[b, ..., index[b], ...] along `dim` for each row b: x (B, ...) and index (B,) -> x without axis `dim`."""
    return x.movedim(dim, 1)[torch.arange(x.shape[0], device=x.device), index].contiguous()


def open_chunk(x: Tensor, length: Tensor, C: int, *, fill: float = 0.0) -> Tensor:
    """Each row's open chunk after `length` (B,) real tokens: x (B, H, G, ...) -> x[b, :, length[b] // C] (B, H, ...),
    a chunk of `fill` when length[b] // C = G (every chunk finished: the next one starts empty)."""
    after_last = x.new_full((*x.shape[:2], 1, *x.shape[3:]), fill)
    return pick_rows(torch.cat([x, after_last], dim=2), length // C)


def masked_softmax(logits: Tensor, allowed: Tensor) -> Tensor:
    """Softmax over the last axis restricted to `allowed`; a row with nothing allowed gives zeros (not NaN)."""
    logits = logits.masked_fill(~allowed, float("-inf"))
    top = logits.detach().amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = (logits - top).exp()
    total = e.sum(-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))
