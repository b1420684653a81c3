"""Dense reference of MC-TFM++'s mixed chunk attention (softmax inside chunks, linear across chunks).

Chunks are position // C. For query i in chunk g:
    L_ij = softmax over the visible keys of chunk g (real, and j <= i when causal) of q_i.k_j * scale + b_ij
    N_ij = lin_q_i.lin_k_j / N_i for real keys j of chunks before g (causal) or of every chunk (bidirectional),
           N_i = the number of those keys (no key: 0), or C with linear_normalizer="sum"
and o = (L + N) v (or L v, N v alone with parts "local", "global"), with both T x T matrices built in float64.
bias: (T, T), or broadcastable to (B, H, T, T) (entries outside the diagonal chunk blocks are never used).
Shapes: q, k, lin_q, lin_k (B, H, T, s); v (B, H, T, e); key_mask (B, T) bool, True = real token.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def mixed_chunk_softmax_attention_reference(q: Tensor, k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor, *,
                                            chunk_size: int, causal: bool, key_mask: Optional[Tensor] = None,
                                            scale: Optional[float] = None, linear_normalizer: str = "average",
                                            bias: Optional[Tensor] = None, parts: str = "both") -> Tensor:
    B, H, T, s = q.shape
    scale = s ** -0.5 if scale is None else scale
    pos = torch.arange(T, device=q.device)
    chunk = pos // chunk_size
    real = torch.ones(B, T, dtype=torch.bool, device=q.device) if key_mask is None else key_mask.bool()
    real = real[:, None, None, :]                                                   # (B, 1, 1, T)

    local_ok = (chunk[:, None] == chunk[None, :])[None, None] & real
    if causal:
        local_ok = local_ok & (pos[None, :] <= pos[:, None])
    scores = (q.double() @ k.double().transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias.double()
    scores = scores.masked_fill(~local_ok, float("-inf"))
    empty = ~local_ok.any(-1, keepdim=True)
    local = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1) * ~empty

    if causal:
        global_ok = (chunk[None, :] < chunk[:, None])[None, None] & real
    else:
        global_ok = torch.ones(T, T, dtype=torch.bool, device=q.device)[None, None] & real
    count = global_ok.sum(-1, keepdim=True).clamp_min(1).double() if linear_normalizer == "average" else chunk_size
    linear = (lin_q.double() @ lin_k.double().transpose(-1, -2)) * global_ok / count
    return ((local * (parts != "global") + linear * (parts != "local")) @ v.double()).to(v.dtype)
