"""Dense reference of FAVOR+ attention (Performer): the full T x T matrix of random-feature kernel values.

A_ij = phi(q_i) . phi(k_j), phi the positive random features of flashgau.ops.favor (computed here in float64,
unshifted: exp of the log-features), kept where key j is real and (causal) j <= i; o_i = sum_j A_ij v_j / sum_j A_ij
(0 when the row is empty). Shapes: q, k, v (B, H, T, dh); projection (m, dh); key_mask (B, T) bool, True = real.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


def favor_features_reference(x: Tensor, projection: Tensor, *, scale: Optional[float] = None) -> Tensor:
    """phi(x)_r = exp(w_r . x' - |x'|^2 / 2) / sqrt(m), x' = x sqrt(scale), in float64. x (..., dh) -> (..., m)."""
    dh = x.shape[-1]
    m = projection.shape[0]
    scale = dh ** -0.5 if scale is None else scale
    xs = x.double() * math.sqrt(scale)
    w = projection.double()
    return torch.exp(xs @ w.T - (xs * xs).sum(-1, keepdim=True) / 2) / math.sqrt(m)


def favor_attention_matrix_reference(q: Tensor, k: Tensor, projection: Tensor, *, causal: bool,
                                     key_mask: Optional[Tensor] = None, scale: Optional[float] = None) -> Tensor:
    """The unnormalised (B, H, T, T) float64 matrix A_ij = phi(q_i) . phi(k_j) over visible pairs (else 0)."""
    T = q.shape[-2]
    a = favor_features_reference(q, projection, scale=scale) @ favor_features_reference(k, projection,
                                                                                        scale=scale).transpose(-1, -2)
    visible = torch.ones(T, T, dtype=torch.bool, device=q.device)
    if causal:
        visible = visible.tril()
    visible = visible[None, None]
    if key_mask is not None:
        visible = visible & key_mask.bool()[:, None, None, :]
    return a * visible


def favor_attention_reference(q: Tensor, k: Tensor, v: Tensor, projection: Tensor, *, causal: bool,
                              key_mask: Optional[Tensor] = None, scale: Optional[float] = None) -> Tensor:
    """o = (A v) / (A 1) row by row, A from favor_attention_matrix_reference. Returns v's dtype."""
    a = favor_attention_matrix_reference(q, k, projection, causal=causal, key_mask=key_mask, scale=scale)
    den = a.sum(-1, keepdim=True)
    out = (a @ v.double()) / torch.where(den > 0, den, torch.ones_like(den))
    return out.to(v.dtype)
