"""Dense reference of Combiner-Fixed attention: the full T x T matrix of its factorised attention weights.

Chunks are r = position // C. For each chunk r (real tokens only): qbar_r, kbar_r = elementwise max of its queries,
keys; q(j|r) = softmax over j in r of qbar_r.k_j * scale. For query i in chunk g, with Z_i the normaliser:

    A_ij = exp(q_i.k_j * scale) / Z_i                    j real, in chunk g (and j <= i when causal)
    A_ij = exp(q_i.kbar_r * scale) / Z_i * q(j|r)        j real, in a visible chunk r = chunk(j)
                                                          (r < g when causal, r != g when bidirectional)
    Z_i  = sum over the direct keys of exp(q_i.k_j * scale) + sum over visible chunks r of exp(q_i.kbar_r * scale)

and o = A v. Computed in float64, one chunk at a time, without the fast path's padding and reshaping. With
summary_q, summary_k given, qbar_r, kbar_r and q(j|r) come from them (q(j|r) = softmax of qbar_r.summary_k_j) and
the abstraction logit is summary_q_i.kbar_r; the direct logits keep q and k.
Shapes: q, k (B, H, T, dh); v (B, H, T, dv); key_mask (B, T) bool, True = real token.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def combiner_attention_matrix_reference(q: Tensor, k: Tensor, *, chunk_size: int, causal: bool,
                                        key_mask: Optional[Tensor] = None, scale: Optional[float] = None,
                                        summary_q: Optional[Tensor] = None,
                                        summary_k: Optional[Tensor] = None) -> Tensor:
    """The (B, H, T, T) float64 attention matrix A of Combiner-Fixed (rows sum to 1 or, with no visible key, 0)."""
    B, H, T, dh = q.shape
    scale = dh ** -0.5 if scale is None else scale
    q, k = q.double(), k.double()
    sq = q if summary_q is None else summary_q.double()
    sk = k if summary_k is None else summary_k.double()
    real = torch.ones(B, T, dtype=torch.bool) if key_mask is None else key_mask.bool().cpu()
    real = real.to(q.device)
    chunk = torch.arange(T, device=q.device) // chunk_size
    n_chunks = int(chunk.max()) + 1

    # per-chunk abstractions
    k_bar = q.new_zeros(B, H, n_chunks, dh)
    local_dist = q.new_zeros(B, H, n_chunks, T)          # q(j|r), zero outside chunk r
    has_real = torch.stack([((chunk == r)[None, :] & real).any(1) for r in range(n_chunks)], dim=1)   # (B, G)
    for r in range(n_chunks):
        members = (chunk == r)[None, :] & real           # (B, T)
        sel = members[:, None, :, None]
        q_bar = sq.masked_fill(~sel, float("-inf")).amax(2)                        # (B, H, dh)
        k_bar[:, :, r] = torch.where(has_real[:, r, None, None], sk.masked_fill(~sel, float("-inf")).amax(2),
                                     torch.zeros(()).double())
        q_bar = torch.where(has_real[:, r, None, None], q_bar, torch.zeros(()).double())
        logits = (sk @ q_bar[..., None])[..., 0] * scale                           # (B, H, T)
        logits = logits.masked_fill(~members[:, None, :], float("-inf"))
        logits = logits.masked_fill(~has_real[:, None, r, None], 0.0)           # empty chunk: no NaN
        dist = torch.softmax(logits, dim=-1) * has_real[:, None, r, None]
        local_dist[:, :, r] = dist

    # visibility
    i = torch.arange(T, device=q.device)
    direct = (chunk[:, None] == chunk[None, :])[None, None] & real[:, None, None, :]
    if causal:
        direct = direct & (i[None, :] <= i[:, None])
    g = chunk[:, None]
    r = torch.arange(n_chunks, device=q.device)[None, :]
    visible_chunk = ((r < g) if causal else (r != g))[None, None] & has_real[:, None, None, :]   # (B, 1, T, G)

    s_direct = (q @ k.transpose(-1, -2)) * scale                                   # (B, H, T, T)
    s_region = (sq @ k_bar.transpose(-1, -2)) * scale                              # (B, H, T, G)
    top = torch.maximum(s_direct.masked_fill(~direct, float("-inf")).amax(-1),
                         s_region.masked_fill(~visible_chunk, float("-inf")).amax(-1))
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))[..., None]
    e_direct = torch.exp(s_direct - top) * direct
    e_region = torch.exp(s_region - top) * visible_chunk                           # (B, H, T, G)
    Z = e_direct.sum(-1, keepdim=True) + e_region.sum(-1, keepdim=True)
    # spread each chunk's weight over its keys with q(j|r): (B, H, T, G) x (B, H, G, T)
    a = e_direct + e_region @ local_dist
    return a / torch.where(Z > 0, Z, torch.ones_like(Z))


def combiner_attention_reference(q: Tensor, k: Tensor, v: Tensor, *, chunk_size: int, causal: bool,
                                 key_mask: Optional[Tensor] = None, scale: Optional[float] = None,
                                 summary_q: Optional[Tensor] = None, summary_k: Optional[Tensor] = None) -> Tensor:
    """o = A v with A from combiner_attention_matrix_reference. Returns v's dtype."""
    a = combiner_attention_matrix_reference(q, k, chunk_size=chunk_size, causal=causal, key_mask=key_mask,
                                            scale=scale, summary_q=summary_q, summary_k=summary_k)
    return (a @ v.double()).to(v.dtype)
