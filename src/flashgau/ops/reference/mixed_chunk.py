"""References of FLASH's mixed chunk attention (the fast op is flashgau.ops.mixed_chunk): the dense T x T form, the
spec, and a short chunked form of the same algorithm, the fast op's four steps in plain einsums.

Shapes: B batch, H heads (1 in FLASH), T tokens, s query/key width, e value width. quad_q, quad_k (local
query/key), lin_q, lin_k (global query/key): (B, H, T, s); v: (B, H, T, e). bias: the in-chunk bias, (T, T) or
broadcastable to (B, H, T, T) for the dense form (entries outside the diagonal chunk blocks are never used), (C, C)
for the chunked one. key_mask: (B, T) bool, True for real tokens.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .masks import dense_mask


def mixed_chunk_attention_reference(quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor,
                                    bias: Tensor, *, chunk_size: int, causal: bool,
                                    key_mask: Optional[Tensor] = None, linear_normalizer: str = "average",
                                    parts: str = "both") -> Tensor:
    """FLASH's mixed chunk attention written as one dense T x T operator (`parts`: "both", or "local" / "global"
    alone).

    Local: query i sees keys j of its own chunk (j <= i when causal) with weight relu(quad_q_i.quad_k_j / C + b_ij)^2.
    Global: query i sees keys j of earlier chunks (causal) or of every chunk (bidirectional) with weight
    lin_q_i.lin_k_j / N_i, N_i = number of real keys it sees globally (0 keys: weight 0) with linear_normalizer
    "average", N_i = C with "sum".
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
    count = global_mask.sum(-1, keepdim=True).clamp_min(1).to(quad_q.dtype) if linear_normalizer == "average" else C
    linear = (lin_q @ lin_k.transpose(-1, -2)) * global_mask / count
    return (local * (parts != "global") + linear * (parts != "local")) @ v


def mixed_chunk_attention_minimal(quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor,
                                  bias: Tensor, *, chunk_size: int, causal: bool,
                                  key_mask: Optional[Tensor] = None, linear_normalizer: str = "average") -> Tensor:
    """The chunked algorithm of flashgau.ops.mixed_chunk in plain einsums over (G chunks, C slots), its four steps
    numbered as there, in the manner of mamba's ssd_minimal.py. bias: (C, C), as the fast op takes it."""
    B, H, T, _ = quad_q.shape
    C = chunk_size
    G = -(-T // C)
    real = torch.ones(B, T, dtype=torch.bool, device=v.device) if key_mask is None else key_mask.bool()

    # 1. masked keys get value 0 (they add nothing anywhere); pad T to G*C and cut into chunks
    def chunks(x: Tensor) -> Tensor:
        return F.pad(x, (0, 0, 0, G * C - T)).reshape(*x.shape[:-2], G, C, x.shape[-1])
    qq, qk, lq, lk, vv = map(chunks, (quad_q, quad_k, lin_q, lin_k, v * real[:, None, :, None]))
    n = chunks(real[..., None].to(v.dtype))[..., 0].sum(-1)                  # (B, G) real tokens per chunk

    # 2. local: relu^2 attention inside each chunk (causal: keys at or before the query's slot)
    w = torch.relu(torch.einsum("bhgis,bhgjs->bhgij", qq, qk) / C + bias) ** 2
    local = torch.einsum("bhgij,bhgje->bhgie", w.tril() if causal else w, vv)

    # 3. global: one lin_k^T v summary per chunk; chunk g sees the chunks r < g (causal) or all of them, averaged
    #    over the real tokens they hold (none: 0), or ("sum") divided by C
    kv = torch.einsum("bhrcs,bhrce->bhrse", lk, vv)
    sees = torch.ones(G, G, dtype=v.dtype, device=v.device)
    sees = sees.tril(-1) if causal else sees                                  # [g, r]
    count = torch.einsum("gr,br->bg", sees, n).clamp_min(1)
    if linear_normalizer == "sum":
        count = torch.full_like(count, C)
    linear = torch.einsum("bhgcs,gr,bhrse->bhgce", lq, sees, kv) / count[:, None, :, None, None]

    # 4. output = local + global, unpadded
    return (local + linear).reshape(B, H, G * C, -1)[:, :, :T]
