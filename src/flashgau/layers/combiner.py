"""Combiner attention (Ren et al., NeurIPS 2021), the Combiner-Fixed factorisation, in a Transformer++ block.

The projections and RoPE are those of MultiHeadAttention (same parameters, same names); the attention is
flashgau.ops.combiner: exact softmax attention inside the query's chunk of C = cfg.combiner_chunk tokens, one
max-pooled (kbar, vbar) abstraction per other visible chunk, one softmax over both. cfg.combiner_pooling "rotated":
the summaries are pooled from the RoPE-rotated keys (kbar is the elementwise max of the chunk's rotated keys) and
read with rotated queries; "unrotated": from, and with, q and k before RoPE (content-only summaries, as the
authors' model, which has no RoPE), the direct part still rotated. Why Combiner-Fixed: docs/baselines.md.

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
        self.chunk_size = cfg.combiner_chunk
        self.unrotated_pooling = cfg.combiner_pooling == "unrotated"

    def heads(self, x: Tensor, pos: Tensor) -> tuple[Tensor, ...]:
        """q, k (rotated), v, and with unrotated pooling the summary inputs: q, k before RoPE (B, H, T, dh)."""
        if not self.unrotated_pooling:
            return super().heads(x, pos)
        q, k, v = self.project(x)
        return self.rope(q, pos), self.rope(k, pos), v, q, k

    def attend(self, heads: tuple[Tensor, ...], ctx: Context,
               want_state: bool) -> tuple[Tensor, Optional[CombinerState]]:
        q, k, v, *summary = heads
        return combiner_attention(q, k, v, chunk_size=self.chunk_size, causal=ctx.causal, key_mask=ctx.key_mask,
                                  **self._summary(summary), output_final_state=want_state)

    def attend_step(self, heads: tuple[Tensor, ...], state: CombinerState,
                    pos: Tensor) -> tuple[Tensor, CombinerState]:
        q, k, v, *summary = heads
        return combiner_attention_step(q, k, v, state, pos, **self._summary(summary))

    @staticmethod
    def _summary(summary: list) -> dict:
        return dict(summary_q=summary[0], summary_k=summary[1]) if summary else {}
