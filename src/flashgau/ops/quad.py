"""GAU's quadratic attention (FLASH-Quad): o_i = sum_j relu(q_i.k_j / n + b_ij)^2 v_j, one head, no softmax.

Shapes: B batch, H heads (1 in a GAU), T tokens, s query/key width, e value width.
q, k: (B, H, T, s); v: (B, H, T, e); bias: broadcastable to (B, H, T, T).
norm: n, a number, or a (B,) tensor (the paper's per-sequence length). key_mask: (B, T) bool, True = real token.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor


def relu2_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, *, norm: Union[float, Tensor], causal: bool,
                    key_mask: Optional[Tensor] = None) -> Tensor:
    """Parallel form (training, prefill). Returns (B, H, T, e)."""
    B, H, T, _ = q.shape
    if isinstance(norm, Tensor):
        norm = norm.to(q.dtype).reshape(-1, 1, 1, 1)
    weights = torch.relu(q @ k.transpose(-1, -2) / norm + bias).square()
    keep = None
    if causal:
        keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if key_mask is not None:
        km = key_mask.bool()[:, None, None, :]
        keep = km if keep is None else keep & km
    if keep is not None:
        weights = weights * keep
    return weights @ v


def relu2_attention_step(q: Tensor, keys: Tensor, values: Tensor, bias: Tensor, valid: Tensor, *,
                         norm: Union[float, Tensor]) -> Tensor:
    """One query per row against a cache: q (B, H, 1, s), keys (B, H, S, s), values (B, H, S, e),
    bias (B, 1, 1, S), valid (B, 1, 1, S) bool. Returns (B, H, 1, e)."""
    if isinstance(norm, Tensor):
        norm = norm.to(q.dtype).reshape(-1, 1, 1, 1)
    weights = torch.relu(q @ keys.transpose(-1, -2).to(q.dtype) / norm + bias).square() * valid
    return weights @ values.to(q.dtype)
