"""The causal global part of mixed chunk attention without the products whose result is zero or unused.

Causal, chunk g's queries see the summaries of the chunks before it: chunk 0 sees none (its global term is lin_q
times a zero matrix), and no chunk sees the last chunk's summary (it only feeds the decoding state). Of the global
part's four products per chunk (the summary lin_k^T v and lin_q kv_seen, and the two gradients of each), the plain
form computes all G; here the summaries of chunks [0, G - 1) and the global products of chunks [1, G) are computed,
forward and backward (the global_trim fast path, ops/fastpath.py): (G - 1) / G of the work, a saving of half of it
at G = 2 (context 512, chunk 256). The results are those of the plain form: the skipped products are exactly zero,
or are never read.

The chunks of one row are contiguous in the chunked layout (N = R*G matrices, R = batch x heads), so the chunks
[lo, hi) of every row are not one strided batch in general: `chunk_batches` cuts them into as few uniformly strided
3-D views as it can (one when R = 1 or when one chunk per row is kept, else one per chunk or per row, the fewer).

Shapes: R rows (batch x heads), G chunks, C chunk length, s query/key width, e value width. lin_q, lin_k (R*G, C, s),
v and out (R*G, C, e), kv (R*G, s, e).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .autocast import autocast_off


def chunk_batches(x: Tensor, rows: int, lo: int, hi: int) -> list[Tensor]:
    """x (rows*G, ...) -> 3-D views of its chunks [lo, hi) of every row, together covering them once, in as few
    views as uniform strides allow: (hi - lo, ...) per row, or (rows, ...) per chunk."""
    if hi <= lo:
        return []
    grouped = x.view(rows, -1, *x.shape[1:])
    if rows == 1:
        return [grouped[0, lo:hi]]
    if hi - lo == 1 or hi - lo <= rows:
        return [grouped[:, g] for g in range(lo, hi)]
    return [grouped[r, lo:hi] for r in range(rows)]


def trimmed_summaries(lin_k: Tensor, v: Tensor, rows: int) -> Tensor:
    """lin_k^T v per chunk (R*G, s, e), the last chunk of every row zero (not computed)."""
    lin_k, v = lin_k.contiguous(), v.contiguous()
    N, _, s = lin_k.shape
    kv = lin_k.new_empty(N, s, v.shape[-1])
    G = N // rows
    kv.view(rows, G, s, -1)[:, G - 1].zero_()
    for out, k, val in zip(chunk_batches(kv, rows, 0, G - 1), chunk_batches(lin_k, rows, 0, G - 1),
                           chunk_batches(v, rows, 0, G - 1)):
        torch.bmm(k.transpose(1, 2), val, out=out)
    return kv


def trimmed_summaries_backward(lin_k: Tensor, v: Tensor, d_kv: Tensor, dv: Tensor, rows: int) -> Tensor:
    """The backward of `trimmed_summaries` given d_kv (R*G, s, e), whose last chunk per row is ignored (its summary
    was not computed): adds lin_k d_kv into dv (R*G, C, e) in place, returns d lin_k (R*G, C, s)."""
    lin_k, v, d_kv = lin_k.contiguous(), v.contiguous(), d_kv.contiguous()
    N = lin_k.shape[0]
    G = N // rows
    d_lin_k = torch.empty_like(lin_k)
    d_lin_k.view(rows, G, *lin_k.shape[1:])[:, G - 1].zero_()
    for dlk, ddv, k, val, dkv in zip(*(chunk_batches(t, rows, 0, G - 1) for t in (d_lin_k, dv, lin_k, v, d_kv))):
        ddv.baddbmm_(k, dkv)
        torch.bmm(val, dkv.transpose(1, 2), out=dlk)
    return d_lin_k


def add_trimmed_global(out: Tensor, lin_q: Tensor, kv_seen: Tensor, rows: int) -> Tensor:
    """out (R*G, C, e) plus lin_q kv_seen per chunk, in place, for the chunks [1, G) of every row (kv_seen of chunk 0
    is the empty sum: zero); returns out. Gradients: out's passes through; lin_q's and kv_seen's chunk 0 get zero."""
    return _TrimmedGlobal.apply(out, lin_q, kv_seen, rows)


class _TrimmedGlobal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out: Tensor, lin_q: Tensor, kv_seen: Tensor, rows: int) -> Tensor:
        G = out.shape[0] // rows
        lin_q, kv_seen = lin_q.contiguous(), kv_seen.contiguous()
        with autocast_off(out.device):
            for o, q, kv in zip(*(chunk_batches(t, rows, 1, G) for t in (out, lin_q, kv_seen))):
                o.baddbmm_(q, kv)
        ctx.mark_dirty(out)
        ctx.save_for_backward(lin_q, kv_seen)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        lin_q, kv_seen = ctx.saved_tensors
        rows = ctx.rows
        G = grad.shape[0] // rows
        with autocast_off(grad.device):
            grad = grad.contiguous()
            d_q = torch.empty_like(lin_q)
            d_kv = torch.empty_like(kv_seen)
            d_q.view(rows, G, *lin_q.shape[1:])[:, 0].zero_()
            d_kv.view(rows, G, *kv_seen.shape[1:])[:, 0].zero_()
            views = (chunk_batches(t, rows, 1, G) for t in (d_q, d_kv, grad, lin_q, kv_seen))
            for dq, dkv, g, q, kv in zip(*views):
                torch.bmm(g, kv.transpose(1, 2), out=dq)
                torch.bmm(q.transpose(1, 2), g, out=dkv)
        return grad, d_q, d_kv, None
