"""Softmax attention through torch.nn.functional.scaled_dot_product_attention (Transformer+ / ++).

Shapes: q, k, v (B, H, T, dh); key_mask (B, T) bool, True = real token.
"""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool,
                      key_mask: Optional[Tensor] = None) -> Tensor:
    """Parallel form. Causal models take right padding only, so padded keys never precede a real query and the
    causal mask alone keeps real outputs exact; bidirectional models mask padded keys explicitly."""
    if causal:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    mask = None if key_mask is None else key_mask.bool()[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def softmax_attention_step(q: Tensor, keys: Tensor, values: Tensor, valid: Tensor) -> Tensor:
    """One query per row against a cache: q (B, H, 1, dh), keys/values (B, H, S, dh), valid (B, 1, 1, S)."""
    return F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=valid)
