"""Reference of FLASH's mixed chunk attention with first_to_all (the fast op is flashgau.ops.mixed_chunk_first_to_all):
the dense T x T form, the spec. Shapes as in reference/mixed_chunk.py: quad_q, quad_k, lin_q, lin_k (B, H, T, s);
v (B, H, T, e); bias (T, T) or broadcastable to (B, H, T, T) (entries outside the diagonal chunk blocks are never
used); key_mask (B, T) bool, True for real tokens.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .masks import dense_mask


def mixed_chunk_first_to_all_attention_reference(quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor,
                                                 v: Tensor, bias: Tensor, *, chunk_size: int, causal: bool,
                                                 key_mask: Optional[Tensor] = None,
                                                 linear_normalizer: str = "average", parts: str = "both") -> Tensor:
    """Mixed chunk attention with first_to_all written as one dense T x T operator (`parts`: "both", or "local"
    alone).

    Local: query i sees keys j of its own chunk (j <= i when causal) with weight relu(quad_q_i.quad_k_j / C + b_ij)^2,
    and a query of a chunk >= 1 also every real key j of chunk 0 with weight relu(quad_q_i.quad_k_j / C)^2 (no bias).
    Global: query i sees keys j of earlier chunks (causal) or of every chunk (bidirectional), chunk 0's keys left out
    for a query of a chunk >= 1, with weight lin_q_i.lin_k_j / N_i, N_i = number of real keys it sees globally (0
    keys: weight 0) with linear_normalizer "average", N_i = C with "sum". Chunk 0's queries are those of
    mixed_chunk_attention_reference.
    """
    T = quad_q.shape[-2]
    C = chunk_size
    chunk = torch.arange(T, device=quad_q.device) // C
    same_chunk = chunk[:, None] == chunk[None, :]
    to_first = ((chunk[:, None] >= 1) & (chunk[None, :] == 0))[None, None]        # query in chunk >= 1, key in 0
    scores = quad_q @ quad_k.transpose(-1, -2) / C
    local = torch.relu(scores + bias) ** 2 * (dense_mask(T, key_mask, causal, quad_q.device) & same_chunk)
    local = local + torch.relu(scores) ** 2 * (to_first & dense_mask(T, key_mask, False, quad_q.device))
    if causal:
        global_mask = (chunk[None, :] < chunk[:, None])[None, None]
    else:
        global_mask = torch.ones(1, 1, T, T, dtype=torch.bool, device=quad_q.device)
    global_mask = global_mask & ~to_first
    if key_mask is not None:
        global_mask = global_mask & key_mask[:, None, None, :].bool()
    count = global_mask.sum(-1, keepdim=True).clamp_min(1).to(quad_q.dtype) if linear_normalizer == "average" else C
    linear = (lin_q @ lin_k.transpose(-1, -2)) * global_mask / count
    return (local * (parts != "global") + linear * (parts != "local")) @ v
