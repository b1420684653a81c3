"""Dense references of GAU (relu^2) attention, mixed chunk attention and softmax attention.

Shapes: B batch, H heads (1 for a GAU), T tokens, s query/key width, e value width.
key_mask: (B, T) bool, True for real tokens. bias: (T, T) or broadcastable to (B, H, T, T), added to the scaled
scores before relu^2. Each function materialises the full T x T weight matrix.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor


def _dense_mask(T: int, key_mask: Optional[Tensor], causal: bool, device) -> Tensor:
    """(B or 1, 1, T, T) bool: may query i look at key j."""
    i = torch.arange(T, device=device)
    allowed = (i[None, :] <= i[:, None]) if causal else torch.ones(T, T, dtype=torch.bool, device=device)
    allowed = allowed[None, None]
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :].bool()
    return allowed


def relu2_attention_reference(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, *, norm: Union[float, Tensor],
                              causal: bool, key_mask: Optional[Tensor] = None) -> Tensor:
    """o_i = sum_j relu(q_i.k_j / n + b_ij)^2 v_j over visible j. norm: n, a number or a (B,) tensor."""
    T = q.shape[-2]
    n = torch.as_tensor(norm, dtype=q.dtype, device=q.device).reshape(-1, 1, 1, 1)
    scores = q @ k.transpose(-1, -2) / n + bias
    weights = torch.relu(scores) ** 2
    weights = weights * _dense_mask(T, key_mask, causal, q.device)
    return weights @ v


def mixed_chunk_attention_reference(qq: Tensor, qk: Tensor, lq: Tensor, lk: Tensor, v: Tensor, bias: Tensor, *,
                                    chunk_size: int, causal: bool, key_mask: Optional[Tensor] = None) -> Tensor:
    """FLASH's mixed chunk attention written as one dense T x T operator.

    Local: query i sees keys j of its own chunk (j <= i when causal) with weight relu(qq_i.qk_j / C + b_ij)^2.
    Global: query i sees keys j of earlier chunks (causal) or of every chunk (bidirectional) with weight
    lq_i.lk_j / N_i, N_i = number of real keys it sees globally (0 keys: weight 0).
    """
    T = qq.shape[-2]
    C = chunk_size
    pos = torch.arange(T, device=qq.device)
    chunk = pos // C
    same_chunk = chunk[:, None] == chunk[None, :]
    visible = _dense_mask(T, key_mask, causal, qq.device)
    local = torch.relu(qq @ qk.transpose(-1, -2) / C + bias) ** 2 * (visible & same_chunk)
    if causal:
        global_mask = (chunk[None, :] < chunk[:, None])[None, None]
    else:
        global_mask = torch.ones(1, 1, T, T, dtype=torch.bool, device=qq.device)
    if key_mask is not None:
        global_mask = global_mask & key_mask[:, None, None, :].bool()
    count = global_mask.sum(-1, keepdim=True).clamp_min(1).to(qq.dtype)
    linear = (lq @ lk.transpose(-1, -2)) * global_mask / count
    return (local + linear) @ v


def softmax_attention_reference(q: Tensor, k: Tensor, v: Tensor, *, causal: bool,
                                key_mask: Optional[Tensor] = None, scale: Optional[float] = None) -> Tensor:
    """Plain softmax attention, softmax(q k^T * scale) v, scale = 1/sqrt(head width) by default."""
    T = q.shape[-2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~_dense_mask(T, key_mask, causal, q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
