"""Initialisation of a model's weights (ModelConfig.init; docs/model_options.md).

Layers mark the output projection of each residual branch with `residual_output(linear)`; `init_weights` draws
every Linear weight and the embedding: N(0, init_std) ("normal", the paper's), with the marked projections at
init_std / sqrt(R) ("scaled", GPT-2's residual scaling; R = cfg.residual_branches), or N(0, 1/fan_in) for every
Linear weight ("fan_in"); the embedding N(0, cfg.embedding_std): 1.0 with an untied head, init_std tied, unless
embed_init_std sets it. Biases start at 0. Parameters a layer draws itself (GAU scale/offset, position tables) keep
their own init.
"""

from __future__ import annotations

import math

from torch import nn

from ..config import ModelConfig

_MARK = "flashgau_residual_output"


def residual_output(linear: nn.Linear) -> nn.Linear:
    """Mark `linear` as the output projection of a residual branch (what "scaled" initialises smaller)."""
    setattr(linear, _MARK, True)
    return linear


def is_residual_output(module: nn.Module) -> bool:
    return getattr(module, _MARK, False)


def linear_std(cfg: ModelConfig, linear: nn.Linear) -> float:
    """The std of `linear`'s weight under cfg.init."""
    if cfg.init == "fan_in":
        return 1.0 / math.sqrt(linear.in_features)
    if cfg.init == "scaled" and is_residual_output(linear):
        return cfg.init_std / math.sqrt(cfg.residual_branches)
    return cfg.init_std


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """Draw every Linear weight (linear_std) and Embedding weight (N(0, cfg.embedding_std)); zero every Linear
    bias."""
    embed_std = cfg.embedding_std
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, linear_std(cfg, module))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, embed_std)
