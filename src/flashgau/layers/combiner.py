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

from torch import Tensor

from ..config import ModelConfig
from ..ops.combiner import CombinerState, combiner_attention, combiner_attention_step
from .attention import MultiHeadAttention
from .context import Context


class CombinerAttention(MultiHeadAttention):
    """x (B, T, d) -> (B, T, d): H heads of Combiner-Fixed attention over chunks of chunk_size tokens."""

    supports_cache = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.chunk_size = cfg.chunk_size

    def _attend(self, x: Tensor, ctx: Context, return_state: bool):
        q, k, v = self.qkv_heads(x, ctx.positions)
        return combiner_attention(q, k, v, chunk_size=self.chunk_size, causal=ctx.causal, key_mask=ctx.key_mask,
                                  return_state=return_state)

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        return self.merge(self._attend(x, ctx, return_state=False))

    def prefill(self, x: Tensor, ctx: Context) -> tuple[Tensor, CombinerState]:
        """Causal only: the output and the state after each row's real tokens (right padding)."""
        o, state = self._attend(x, ctx, return_state=True)
        return self.merge(o), state

    def step(self, x: Tensor, state: CombinerState) -> tuple[Tensor, CombinerState]:
        """x (B, 1, d): one token per row at position state.pos."""
        q, k, v = self.qkv_heads(x, state.pos[:, None].clone())
        o, state = combiner_attention_step(q, k, v, state)
        return self.merge(o), state
