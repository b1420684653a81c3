"""The causal local part of mixed chunk attention, computing only what the causal mask keeps.

Inside a chunk of C tokens, query i sees keys j <= i with weight relu(q_i.k_j / C + bias_ij)^2. The plain form
(ops/mixed_chunk.py) computes the whole C x C square of scores per chunk and masks its upper half with -inf in the
bias. Here each chunk's queries are cut into n = C / c row strips of c queries; strip i (queries [ic, (i+1)c))
multiplies against keys [0, (i+1)c) only, the last c x c block of the strip masked on its diagonal. The strips
cover n(n+1)/2 of the n^2 blocks: (n + 1) / (2n) of the square (5/8 at C = 256, c = 64), forward and backward.

    forward, strip i (m = (i+1)c):   S = bias[rows, :m] + Q_i K_{:m}^T / C      R = relu(S)      O_i = R^2 V_{:m}
    backward:                         dW = dO_i V_{:m}^T    D = R * dW (= dS / 2)
                                      dQ_i = (2/C) D K_{:m}   dK_{:m} += (2/C) D^T Q_i   dV_{:m} += (R^2)^T dO_i
                                      dbias[rows, :m] = 2 * sum over chunks of D

Only R (the strips' relu(S), (n + 1) / (2n) of one T x C map) is saved for backward; R^2 is recomputed there. Scores and
products run in the dtype of the inputs with autocast off, as the plain form computes them (bf16 inputs: bf16).

`causal_local_attention_with_summaries` also returns the global part's chunk summaries lin_k^T v (N, s, e) from the
same autograd node (the local_summaries fast path, ops/fastpath.py): v's two gradients then meet in one buffer, the
summaries' added in place (dV += lin_k dKV), where two consumers of v would make autograd add two full-size
gradients, and lin_k's gradient v dKV^T comes out in its own layout (no copy of a transposed one).
Shapes: N = batch x heads x chunks; q, k, lin_k (N, C, s); v (N, C, e); bias (C, C).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .autocast import autocast_off
from .global_trim import trimmed_summaries, trimmed_summaries_backward

DEFAULT_BLOCK = 128         # rows per strip (C = 256: two strips, 3/4 of the square); see default_block


def default_block(C: int) -> Optional[int]:
    """The strip height for chunk length C: 128 rows where that gives two strips or more, else 64, else None (the
    plain full square). Strips of fewer rows compute less but run slower per FLOP (smaller products): on the 2-core
    AVX2 EPYC, at C = 256 and T = 8192, the earlier work on this change timed the local part's forward + backward at
    80 ms per layer as the full square, 66 ms in strips of 128 (3/4 of the square) and 68 ms in strips of 64 (5/8);
    benchmarks/results/perf-fastpath.md has the whole step."""
    for block in (DEFAULT_BLOCK, DEFAULT_BLOCK // 2):
        if C % block == 0 and C >= 2 * block:
            return block
    return None


def local_fraction(C: int, block: Optional[int]) -> float:
    """Share of the C x C square the causal local part computes: (n + 1) / (2n) with n = C / block strips, 1 for the
    plain form (block None)."""
    if block is None:
        return 1.0
    n = C // block
    return (n + 1) / (2 * n)


def causal_local_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, block: int) -> Tensor:
    """sum_{j <= i in the chunk} relu(q_i.k_j / C + bias_ij)^2 v_j for every query i of every chunk: (N, C, e).
    block (rows per strip) must divide C."""
    _check_block(q.shape[1], block)
    return _CausalLocal.apply(q, k, v, bias, block, None, None)[0]


def causal_local_attention_with_summaries(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, block: int,
                                          lin_k: Tensor, rows: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """(causal_local_attention(q, k, v, bias, block), lin_k^T v per chunk (N, s, e)) from one autograd node. rows
    (R, with N = R*G): the last chunk of each row gets a zero summary, not computed, and no gradient
    (ops/global_trim.py: the causal global part never reads it)."""
    _check_block(q.shape[1], block)
    return _CausalLocal.apply(q, k, v, bias, block, lin_k, rows)


def _check_block(C: int, block: int) -> None:
    if block < 1 or C % block:
        raise ValueError(f"the strip height {block} must divide the chunk length {C}")


class _CausalLocal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, block: int, lin_k: Optional[Tensor],
                rows: Optional[int]):
        N, C, _ = q.shape
        dtype = q.dtype
        with autocast_off(q.device):
            keep = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
            masked = bias.to(dtype).masked_fill(~keep, float("-inf"))
            out = torch.empty(N, C, v.shape[-1], dtype=dtype, device=q.device)
            relus = []
            for lo in range(0, C, block):
                hi = lo + block
                r = torch.baddbmm(masked[lo:hi, :hi], q[:, lo:hi], k[:, :hi].transpose(1, 2), alpha=1.0 / C).relu_()
                torch.bmm(r * r, v[:, :hi].to(dtype), out=out[:, lo:hi])
                relus.append(r)
            if lin_k is None:
                kv = None
            elif rows is None:
                kv = torch.bmm(lin_k.to(dtype).transpose(1, 2), v.to(dtype))
            else:
                kv = trimmed_summaries(lin_k.to(dtype), v.to(dtype), rows)
        ctx.save_for_backward(q, k, v, lin_k, *relus)
        ctx.block, ctx.bias_dtype, ctx.rows = block, bias.dtype, rows
        return out, kv

    @staticmethod
    def backward(ctx, d_out: Tensor, d_kv: Optional[Tensor]):
        q, k, v, lin_k, *relus = ctx.saved_tensors
        block = ctx.block
        N, C, _ = q.shape
        dtype = q.dtype
        with autocast_off(q.device):
            d_out = d_out.to(dtype).contiguous()
            vv = v.to(dtype)
            dq = torch.empty_like(q)
            dk = torch.empty_like(k)
            dv = torch.empty(v.shape, dtype=dtype, device=v.device)
            dbias = torch.zeros(C, C, dtype=dtype, device=q.device)
            # the last strip spans every key: it writes dK, dV whole, the earlier ones add into their prefixes
            for index in reversed(range(C // block)):
                lo, hi = index * block, (index + 1) * block
                r, do = relus[index], d_out[:, lo:hi]
                w_t = (r * r).transpose(1, 2)
                d = torch.bmm(do, vv[:, :hi].transpose(1, 2)).mul_(r)            # dS / 2
                dbias[lo:hi, :hi] = d.sum(0)
                torch.bmm(d, k[:, :hi], out=dq[:, lo:hi])
                if hi == C:
                    torch.bmm(w_t, do, out=dv)
                    torch.bmm(d.transpose(1, 2), q[:, lo:hi], out=dk)
                else:
                    dv[:, :hi].baddbmm_(w_t, do)
                    dk[:, :hi].baddbmm_(d.transpose(1, 2), q[:, lo:hi])
            scale = 2.0 / C
            dq.mul_(scale)
            dk.mul_(scale)
            dbias.mul_(2.0)
            d_lin_k = None
            if lin_k is not None:                               # the summaries: kv = lin_k^T v
                d_kv = d_kv.to(dtype)
                lk = lin_k.to(dtype)
                if ctx.rows is None:
                    dv.baddbmm_(lk, d_kv)
                    d_lin_k = torch.bmm(vv, d_kv.transpose(1, 2))
                else:
                    d_lin_k = trimmed_summaries_backward(lk, vv, d_kv.contiguous(), dv, ctx.rows)
                d_lin_k = d_lin_k.to(lin_k.dtype)
        return dq, dk, dv.to(v.dtype), dbias.to(ctx.bias_dtype), None, d_lin_k, None
