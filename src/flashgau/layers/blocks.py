"""Blocks (one per layer) and the registry from arch name to block.

Every block maps x (B, T, d) -> (B, T, d) and has three entry points:
    forward(x, ctx) -> y                  training / scoring
    prefill(x, ctx) -> (y, state)         the same output plus its decoding state (causal only)
    step(x_t, state, pos) -> (y, state)   one token per row (x_t: (B, 1, d)) at positions pos (B,); the state is
                                          updated in place (the ops' rule, flashgau.ops) and returned
and a `supports_cache` flag (False when the state cannot reproduce the parallel output).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from ..config import ModelConfig
from .attention import MultiHeadAttention
from .combiner import CombinerAttention
from .context import Context
from .feedforward import GLU, MLP
from .flash import FlashLayer
from .gau import GAU
from .mixed_chunk_softmax import MixedChunkSoftmaxAttention
from .norms import make_norm
from .performer import PerformerAttention


class TransformerBlock(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, cfg: ModelConfig, attention: nn.Module, ffn: nn.Module):
        super().__init__()
        self.norm1, self.norm2 = make_norm(cfg.norm, cfg.d_model), make_norm(cfg.norm, cfg.d_model)
        self.attn, self.ffn = attention, ffn
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    @property
    def supports_cache(self) -> bool:
        return getattr(self.attn, "supports_cache", False)

    def _ffn(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.ffn(self.norm2(x)))

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        return self._ffn(x + self.dropout(self.attn(self.norm1(x), ctx)))

    def prefill(self, x: Tensor, ctx: Context):
        a, state = self.attn.prefill(self.norm1(x), ctx)
        return self._ffn(x + self.dropout(a)), state

    def step(self, x: Tensor, state, pos: Tensor):
        a, state = self.attn.step(self.norm1(x), state, pos)
        return self._ffn(x + self.dropout(a)), state


BLOCKS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "transformer+": lambda cfg: TransformerBlock(cfg, MultiHeadAttention(cfg), MLP(cfg)),
    "transformer++": lambda cfg: TransformerBlock(cfg, MultiHeadAttention(cfg), GLU(cfg)),
    "flash-quad": GAU,
    "flash": FlashLayer,
    "performer": lambda cfg: TransformerBlock(cfg, PerformerAttention(cfg), GLU(cfg)),
    "combiner": lambda cfg: TransformerBlock(cfg, CombinerAttention(cfg), GLU(cfg)),
    "mc-transformer++": lambda cfg: TransformerBlock(cfg, MixedChunkSoftmaxAttention(cfg), GLU(cfg)),
}


def make_block(cfg: ModelConfig) -> nn.Module:
    if cfg.arch not in BLOCKS:
        raise ValueError(f"no block registered for arch {cfg.arch!r}")
    return BLOCKS[cfg.arch](cfg)
