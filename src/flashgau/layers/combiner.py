"""Combiner attention (Ren et al., NeurIPS 2021), the Combiner-Fixed factorisation, in a Transformer++ block.

The projections and RoPE are those of MultiHeadAttention (same parameters, same names); the attention is
flashgau.ops.combiner: exact softmax attention inside the query's chunk of C = chunk_size tokens, one max-pooled
(kbar, vbar) abstraction per other visible chunk, one softmax over both. Keys are rotated (RoPE) before pooling, so
kbar is the elementwise max of the chunk's rotated keys. Why Combiner-Fixed: docs/baselines.md.

Decoding state: CombinerState, the open chunk's keys/values and one (kbar, vbar) per finished chunk (2 dh numbers
per head per C tokens; generate() reserves room for the final length once).

Shapes: B batch, H heads, T tokens, C chunk length, dh head width.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..config import ModelConfig
from ..ops.combiner import CombinerState, combiner_attention, combiner_attention_step
from .attention import MultiHeadAttention
from .context import Context


class CombinerAttention(MultiHeadAttention):
    """x (B, T, d) -> (B, T, d): H heads of Combiner-Fixed attention over chunks of chunk_size tokens."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.chunk_size = cfg.chunk_size

    def attend(self, heads: tuple[Tensor, ...], ctx: Context,
               want_state: bool) -> tuple[Tensor, Optional[CombinerState]]:
        return combiner_attention(*heads, chunk_size=self.chunk_size, causal=ctx.causal, key_mask=ctx.key_mask,
                                  output_final_state=want_state)

    def attend_step(self, heads: tuple[Tensor, ...], state: CombinerState,
                    pos: Tensor) -> tuple[Tensor, CombinerState]:
        return combiner_attention_step(*heads, state, pos)
