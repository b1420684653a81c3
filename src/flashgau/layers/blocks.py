"""Blocks (one per layer) and the registry from arch name to block.

Every block maps x (B, T, d) -> (B, T, d) and has three entry points:
    forward(x, ctx) -> y                  training / scoring
    prefill(x, ctx) -> (y, state)         the same output plus its decoding state (causal only)
    step(x_t, state, pos) -> (y, state)   one token per row (x_t: (B, 1, d)) at positions pos (B,); the state is
                                          updated in place (the ops' rule, flashgau.ops) and returned
and a `supports_cache` flag (False when the state cannot reproduce the parallel output). A block whose attention
has a (T, T) weight matrix (softmax, relu^2) says so with `has_attention_weights` and gives it with
`attention_weights(x, ctx) -> (B, H, T, T)`.
"""

from __future__ import annotations

from typing import Callable, Optional

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
from .positions import StepPositions
from .token_shift import TokenShift


class TransformerBlock(nn.Module):
    """Pre-norm: x + attn(shift(norm(x))), then x + ffn(shift(norm(x))); shift is the token shift
    (layers/token_shift.py, identity unless cfg.token_shift > 0)."""

    def __init__(self, cfg: ModelConfig, attention: nn.Module, ffn: nn.Module):
        super().__init__()
        self.norm1, self.norm2 = make_norm(cfg.norm, cfg.d_model), make_norm(cfg.norm, cfg.d_model)
        self.attn, self.ffn = attention, ffn
        self.shift = TokenShift(cfg.token_shift, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    @property
    def supports_cache(self) -> bool:
        return getattr(self.attn, "supports_cache", False)

    @property
    def has_attention_weights(self) -> bool:
        return getattr(self.attn, "has_attention_weights", False)

    def attention_weights(self, x: Tensor, ctx: Context) -> Tensor:
        """The attention weights (B, H, T, T) of forward(x, ctx) (softmax attention only: has_attention_weights)."""
        return self.attn.attention_weights(self.shift(self.norm1(x), ctx), ctx)

    def _ffn(self, x: Tensor, h: Tensor) -> Tensor:
        """x + ffn(h), h the shifted norm2(x)."""
        return x + self.dropout(self.ffn(h))

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        x = x + self.dropout(self.attn(self.shift(self.norm1(x), ctx), ctx))
        return self._ffn(x, self.shift(self.norm2(x), ctx))

    def prefill(self, x: Tensor, ctx: Context):
        h1 = self.norm1(x)
        a, state = self.attn.prefill(self.shift(h1, ctx), ctx)
        x = x + self.dropout(a)
        h2 = self.norm2(x)
        return self._ffn(x, self.shift(h2, ctx)), self.shift.wrap(state, [h1, h2], ctx)

    def step(self, x: Tensor, state, pos: Tensor, step: Optional[StepPositions] = None):
        """One token per row at positions pos (B,); step (the StepPositions of a decoding step) is not used."""
        if not self.shift.active:
            a, state = self.attn.step(self.norm1(x), state, pos)
            x = x + self.dropout(a)
            return self._ffn(x, self.norm2(x)), state
        a, state.attn = self.attn.step(self.shift.step(self.norm1(x), state.carry[:, 0]), state.attn, pos)
        x = x + self.dropout(a)
        return self._ffn(x, self.shift.step(self.norm2(x), state.carry[:, 1])), state


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
