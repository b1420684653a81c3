"""Dense reference of GAU's relu^2 attention (FLASH-Quad; the fast op is flashgau.ops.quad).

Shapes: B batch, H heads (1 for a GAU), T tokens, s query/key width, e value width. key_mask: (B, T) bool, True
for real tokens. bias: (T, T) or broadcastable to (B, H, T, T), added to the scaled scores before relu^2.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from .masks import dense_mask


def relu2_attention_reference(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, *, norm: Union[float, Tensor],
                              causal: bool, key_mask: Optional[Tensor] = None) -> Tensor:
    """o_i = sum_j relu(q_i.k_j / n + b_ij)^2 v_j over visible j. norm: n, a number or a (B,) tensor."""
    T = q.shape[-2]
    n = torch.as_tensor(norm, dtype=q.dtype, device=q.device).reshape(-1, 1, 1, 1)
    scores = q @ k.transpose(-1, -2) / n + bias
    weights = torch.relu(scores) ** 2
    weights = weights * dense_mask(T, key_mask, causal, q.device)
    return weights @ v
