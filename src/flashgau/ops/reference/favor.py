"""Dense reference of FAVOR+ attention (Performer): the full T x T matrix of random-feature kernel values.

A_ij = phi(q_i) . phi(k_j), phi the positive random features of flashgau.ops.favor (computed here in float64,
unshifted: exp of the log-features), kept where key j is real and (causal) j <= i; o_i = sum_j A_ij v_j / sum_j A_ij
(0 when the row is empty). Shapes: q, k, v (B, H, T, dh); projection (m, dh); key_mask (B, T) bool, True = real.

With the epsilon floor (epsilon > 0) the features are those of the reference code, (exp(a - shift) + eps) up to a
factor that cancels: a query shifted by its own largest log-feature, the keys seen by query i by r_i, the largest
log-feature among them (every real key when bidirectional, keys j <= i when causal), so
A_ij = (phi(q_i) + eps) . (exp(a(k_j) - r_i) + eps) (module docstring of flashgau.ops.favor). The shifts are
constants to the gradient (detached), as in lucidrains' performer-pytorch.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .masks import dense_mask


def _log_features_reference(x: Tensor, projection: Tensor, scale: Optional[float]) -> Tensor:
    """log phi(x)_r = w_r . x' - |x'|^2 / 2 - log(m) / 2, x' = x sqrt(scale), in float64."""
    dh = x.shape[-1]
    m = projection.shape[0]
    scale = dh ** -0.5 if scale is None else scale
    xs = x.double() * math.sqrt(scale)
    return xs @ projection.double().T - (xs * xs).sum(-1, keepdim=True) / 2 - math.log(m) / 2


def favor_features_reference(x: Tensor, projection: Tensor, *, scale: Optional[float] = None) -> Tensor:
    """phi(x)_r = exp(w_r . x' - |x'|^2 / 2) / sqrt(m), x' = x sqrt(scale), in float64. x (..., dh) -> (..., m)."""
    return torch.exp(_log_features_reference(x, projection, scale))


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


def _floored_matrix_reference(q: Tensor, k: Tensor, projection: Tensor, *, causal: bool, key_mask: Optional[Tensor],
                              scale: Optional[float], epsilon: float) -> Tensor:
    """A_ij = (phi(q_i) + eps) . (exp(a(k_j) - r_i) + eps) over visible pairs, float64 (module docstring)."""
    T = q.shape[-2]
    aq = _log_features_reference(q, projection, scale)                             # (B, H, T, m) log-features
    ak = _log_features_reference(k, projection, scale)
    visible = dense_mask(T, key_mask, causal, q.device)                            # (B or 1, 1, T, T)
    key_max = ak.detach().amax(-1)[..., None, :].masked_fill(~visible, float("-inf"))   # (B, H, T, T): c_j
    r = key_max.amax(-1)                                                            # (B, H, T)
    r = torch.where(torch.isfinite(r), r, torch.zeros_like(r))
    phq = torch.exp(aq - aq.detach().amax(-1, keepdim=True)) + epsilon             # (B, H, T, m)
    phk = torch.exp(ak[..., None, :, :] - r[..., :, None, None]) + epsilon         # (B, H, T, T, m): [i, j]
    return (phq[..., :, None, :] * phk).sum(-1) * visible


def favor_attention_reference(q: Tensor, k: Tensor, v: Tensor, projection: Tensor, *, causal: bool,
                              key_mask: Optional[Tensor] = None, scale: Optional[float] = None,
                              epsilon: float = 0.0) -> Tensor:
    """o = (A v) / (A 1) row by row, A from favor_attention_matrix_reference (or, with an epsilon floor, the
    floored matrix of the module docstring). Returns v's dtype."""
    if epsilon:
        a = _floored_matrix_reference(q, k, projection, causal=causal, key_mask=key_mask, scale=scale,
                                      epsilon=epsilon)
    else:
        a = favor_attention_matrix_reference(q, k, projection, causal=causal, key_mask=key_mask, scale=scale)
    den = a.sum(-1, keepdim=True)
    out = (a @ v.double()) / torch.where(den > 0, den, torch.ones_like(den))
    return out.to(v.dtype)
