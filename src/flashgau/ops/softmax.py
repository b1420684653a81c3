"""Softmax attention through torch.nn.functional.scaled_dot_product_attention (Transformer+ / ++).

Forms (the contract of flashgau.ops), sharing the state KVCache:
- `softmax_attention` (parallel: training, prefill) -> (o, KVCache or None);
- `softmax_attention_step` (decoding one token per row against the cache) -> (o, KVCache);
and `softmax_attention_weights`, the (B, H, T, T) weight matrix of the parallel form (SDPA does not return it).

Shapes: q, k, v (B, H, T, dh); key_mask (B, T) bool, True = real token. Options for a GAU with a softmax kernel
(ModelConfig.gau_attention="softmax"): `bias`, an additive bias of the logits broadcastable to (B, H, T, T) (the
GAU's relative position bias), and `scale` (default 1/sqrt(dh)).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .kv_cache import KVCache
from .state import check_final_state


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, key_mask: Optional[Tensor] = None,
                      bias: Optional[Tensor] = None, scale: Optional[float] = None,
                      output_final_state: bool = False) -> tuple[Tensor, Optional[KVCache]]:
    """Parallel form; returns (o (B, H, T, dh), final_state: the KVCache of k and v when output_final_state, causal
    only, else None). Causal models take right padding only, so padded keys never precede a real query and the
    causal mask alone keeps real outputs exact; bidirectional models mask padded keys explicitly."""
    check_final_state(causal, output_final_state)
    mask = None if key_mask is None or causal else key_mask.bool()[:, None, None, :]
    if bias is not None:                    # an additive float mask: the bias, -inf where a key is not visible
        T = q.shape[-2]
        hidden = ~torch.ones(T, T, dtype=torch.bool, device=q.device).tril() if causal else None
        if mask is not None:
            hidden = ~mask
        mask = bias.to(q.dtype) if hidden is None else bias.to(q.dtype).masked_fill(hidden, float("-inf"))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    elif causal:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    else:
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return o, (KVCache.from_prefill(k, v) if output_final_state else None)


def softmax_attention_weights(q: Tensor, k: Tensor, *, causal: bool, key_mask: Optional[Tensor] = None,
                              bias: Optional[Tensor] = None, scale: Optional[float] = None) -> Tensor:
    """The weight matrix of softmax_attention, (B, H, T, T): softmax over the visible keys of q.k * scale + bias
    (0 for keys that are not visible: later than the query when causal, or padding when bidirectional; a causal
    model's padded keys come after every real query)."""
    T = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    visible = torch.ones(T, T, dtype=torch.bool, device=q.device)
    visible = visible.tril() if causal else visible
    if key_mask is not None and not causal:
        visible = visible & key_mask.bool()[:, None, None, :]
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)


def softmax_attention_step(q: Tensor, k: Tensor, v: Tensor, state: KVCache, pos: Tensor, *,
                           bias: Optional[Tensor] = None, scale: Optional[float] = None) -> tuple[Tensor, KVCache]:
    """One token per row at positions pos (B,): q, k, v (B, H, 1, dh); bias (B, 1, 1, capacity) of the query
    against every slot. Writes k, v at slot pos (in place), attends to slots <= pos and returns
    (o (B, H, 1, dh), state)."""
    valid = state.append(k, v, pos)
    mask = valid if bias is None else bias.to(q.dtype).masked_fill(~valid, float("-inf"))
    return F.scaled_dot_product_attention(q, state.k.to(q.dtype), state.v.to(q.dtype), attn_mask=mask,
                                          scale=scale), state
