"""Pre-norms: LayerNorm and the paper's ScaleNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ScaleNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * g with one learnable scalar g (init 1): RMSNorm with a scalar gain."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.g.to(x.dtype)


def make_norm(kind: str, d_model: int) -> nn.Module:
    if kind == "scalenorm":
        return ScaleNorm()
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=1e-5)
    raise ValueError(f"unknown norm {kind!r}")
