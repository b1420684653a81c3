"""GAU's quadratic attention (FLASH-Quad): o_i = sum_j relu(q_i.k_j / n + b_ij)^2 v_j, one head, no softmax.

Forms (the contract of flashgau.ops), sharing the state KVCache:
- `relu2_attention` (parallel: training, prefill) -> (o, KVCache or None);
- `relu2_attention_step` (decoding one token per row against the cache) -> (o, KVCache);
and `relu2_attention_weights`, the (B, H, T, T) weight matrix of the parallel form (what a caller inspects).

Shapes: B batch, H heads (1 in a GAU), T tokens, s query/key width, e value width.
q, k: (B, H, T, s); v: (B, H, T, e); bias: broadcastable to (B, H, T, T).
norm: n, a number, or a (B,) tensor (the paper's per-sequence length). key_mask: (B, T) bool, True = real token.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from .kv_cache import KVCache
from .state import check_final_state


def _norm(norm: Union[float, Tensor], like: Tensor) -> Union[float, Tensor]:
    return norm.to(like.dtype).reshape(-1, 1, 1, 1) if isinstance(norm, Tensor) else norm


def relu2_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, *, norm: Union[float, Tensor], causal: bool,
                    key_mask: Optional[Tensor] = None,
                    output_final_state: bool = False) -> tuple[Tensor, Optional[KVCache]]:
    """Parallel form. Returns (o (B, H, T, e), final_state): final_state is None unless output_final_state (causal
    only), then the KVCache of k and v, ready for `relu2_attention_step` at each row's next position."""
    check_final_state(causal, output_final_state)
    weights = relu2_attention_weights(q, k, bias, norm=norm, causal=causal, key_mask=key_mask)
    return weights @ v, (KVCache.from_prefill(k, v) if output_final_state else None)


def relu2_attention_weights(q: Tensor, k: Tensor, bias: Tensor, *, norm: Union[float, Tensor], causal: bool,
                            key_mask: Optional[Tensor] = None) -> Tensor:
    """The weight matrix of relu2_attention, (B, H, T, T): relu(q_i.k_j / n + b_ij)^2, 0 where key j is not
    visible to query i (later than i when causal, or padding)."""
    T = q.shape[2]
    weights = torch.relu(q @ k.transpose(-1, -2) / _norm(norm, q) + bias).square()
    keep = None
    if causal:
        keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if key_mask is not None:
        km = key_mask.bool()[:, None, None, :]
        keep = km if keep is None else keep & km
    return weights if keep is None else weights * keep


def relu2_attention_step(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, state: KVCache, pos: Tensor, *,
                         norm: Union[float, Tensor]) -> tuple[Tensor, KVCache]:
    """One token per row at positions pos (B,): q, k (B, H, 1, s), v (B, H, 1, e); bias (B, 1, 1, capacity) of the
    query against every slot of the cache. Writes k, v at slot pos (in place), attends to slots <= pos and returns
    (o (B, H, 1, e), state)."""
    valid = state.append(k, v, pos)
    weights = torch.relu(q @ state.k.transpose(-1, -2).to(q.dtype) / _norm(norm, q) + bias).square() * valid
    return weights @ state.v.to(q.dtype), state
