"""Dense reference of softmax attention (Transformer+ / ++; the fast op is flashgau.ops.softmax, torch SDPA).

Shapes: q, k, v (B, H, T, dh); key_mask (B, T) bool, True for real tokens.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .masks import dense_mask


def softmax_attention_reference(q: Tensor, k: Tensor, v: Tensor, *, causal: bool,
                                key_mask: Optional[Tensor] = None, scale: Optional[float] = None,
                                bias: Optional[Tensor] = None) -> Tensor:
    """Plain softmax attention, softmax(q k^T * scale + bias) v, scale = 1/sqrt(head width) by default."""
    T = q.shape[-2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(~dense_mask(T, key_mask, causal, q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
