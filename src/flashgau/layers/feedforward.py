"""Feed-forward sublayers: the MLP of Transformer+ and the GLU of Transformer++."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .init import residual_output


class MLP(nn.Module):
    """W_2 gelu(W_1 x), hidden width cfg.mlp_hidden (4d by default)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_hidden
        self.fc1 = nn.Linear(cfg.d_model, hidden)
        self.fc2 = residual_output(nn.Linear(hidden, cfg.d_model))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class GLU(nn.Module):
    """W_o (silu(W_u x) * W_v x) (SwiGLU), hidden width cfg.glu_hidden (8d/3 by default); u and v in one fused
    projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.hidden = cfg.glu_hidden
        self.fc_uv = nn.Linear(cfg.d_model, 2 * self.hidden)
        self.fc_out = residual_output(nn.Linear(self.hidden, cfg.d_model))

    def forward(self, x: Tensor) -> Tensor:
        u, v = self.fc_uv(x).split(self.hidden, dim=-1)
        return self.fc_out(F.silu(u) * v)
