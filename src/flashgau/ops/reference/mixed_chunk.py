"""Dense reference of FLASH's mixed chunk attention (the fast op is flashgau.ops.mixed_chunk).

Shapes: B batch, H heads (1 in FLASH), T tokens, s query/key width, e value width. quad_q, quad_k (local
query/key), lin_q, lin_k (global query/key): (B, H, T, s); v: (B, H, T, e); bias: (T, T) or broadcastable to
(B, H, T, T), the in-chunk bias (entries outside the diagonal chunk blocks are never used). key_mask: (B, T) bool,
True for real tokens.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .masks import dense_mask


def mixed_chunk_attention_reference(quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor,
                                    bias: Tensor, *, chunk_size: int, causal: bool,
                                    key_mask: Optional[Tensor] = None) -> Tensor:
    """FLASH's mixed chunk attention written as one dense T x T operator.

    Local: query i sees keys j of its own chunk (j <= i when causal) with weight relu(quad_q_i.quad_k_j / C + b_ij)^2.
    Global: query i sees keys j of earlier chunks (causal) or of every chunk (bidirectional) with weight
    lin_q_i.lin_k_j / N_i, N_i = number of real keys it sees globally (0 keys: weight 0).
    """
    T = quad_q.shape[-2]
    C = chunk_size
    pos = torch.arange(T, device=quad_q.device)
    chunk = pos // C
    same_chunk = chunk[:, None] == chunk[None, :]
    visible = dense_mask(T, key_mask, causal, quad_q.device)
    local = torch.relu(quad_q @ quad_k.transpose(-1, -2) / C + bias) ** 2 * (visible & same_chunk)
    if causal:
        global_mask = (chunk[None, :] < chunk[:, None])[None, None]
    else:
        global_mask = torch.ones(1, 1, T, T, dtype=torch.bool, device=quad_q.device)
    if key_mask is not None:
        global_mask = global_mask & key_mask[:, None, None, :].bool()
    count = global_mask.sum(-1, keepdim=True).clamp_min(1).to(quad_q.dtype)
    linear = (lin_q @ lin_k.transpose(-1, -2)) * global_mask / count
    return (local + linear) @ v
