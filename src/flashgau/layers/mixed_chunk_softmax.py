"""MC-TFM++ attention: Transformer++'s multi-head attention with mixed chunk attention (the paper's ablation).

The q, k, v projection is MultiHeadAttention's (same parameters, same names). Mixed chunk attention needs a second
query/key pair for its linear part; as FLASH derives its four query/key maps from one z by cheap per-dimension
scale/offset, MC-TFM++ derives the linear ones from q and k the same way:

    lin_q = q * (1 + gamma_q) + beta_q,   lin_k = k * (1 + gamma_k) + beta_k      (per head and dimension)

(`lin.weight` = gamma, (2, H, dh), starts at 0 so lin_q = q, lin_k = k at init and weight decay pulls towards that;
`lin.bias` = beta, zero-initialised). All four are rotated by RoPE at their absolute positions, as in FLASH. The
attention is flashgau.ops.mixed_chunk_softmax: exact softmax inside chunks of C = chunk_size tokens, FLASH's linear
attention across chunks (exclusive chunk prefix sum when causal, averaged over the real tokens summarised).
4 d extra parameters per layer over Transformer++.

Decoding state: SoftmaxChunkState (an s x e running sum per head and the open chunk's buffer; fixed size).
Shapes: B batch, H heads, T tokens, C chunk length, dh head width.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..ops.mixed_chunk_softmax import (SoftmaxChunkState, mixed_chunk_softmax_attention,
                                       mixed_chunk_softmax_attention_step)
from .attention import MultiHeadAttention
from .context import Context


class ScaleOffset(nn.Module):
    """x * (1 + weight[i]) + bias[i] for i in 0..n-1: n cheap per-head, per-dimension maps of (B, H, T, dh)."""

    def __init__(self, n: int, heads: int, head_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n, heads, head_dim))
        self.bias = nn.Parameter(torch.zeros(n, heads, head_dim))

    def forward(self, x: Tensor, i: int) -> Tensor:
        return x * (1 + self.weight[i, :, None].to(x.dtype)) + self.bias[i, :, None].to(x.dtype)


class MixedChunkSoftmaxAttention(MultiHeadAttention):
    """x (B, T, d) -> (B, T, d): H heads of mixed chunk attention with a softmax local part."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.chunk_size = cfg.chunk_size
        self.linear_normalizer = cfg.linear_normalizer
        self.lin = ScaleOffset(2, self.n_heads, self.head_dim)

    def heads(self, x: Tensor, pos: Tensor) -> tuple[Tensor, ...]:
        """x (B, T, d), pos (T,) or (B, T) -> q, k, lin_q, lin_k, v (B, H, T, dh), the first four rotated."""
        q, k, v = self.project(x)
        lin_q, lin_k = self.lin(q, 0), self.lin(k, 1)
        return (*(self.rope(t, pos) for t in (q, k, lin_q, lin_k)), v)

    def attend(self, heads: tuple[Tensor, ...], ctx: Context,
               want_state: bool) -> tuple[Tensor, Optional[SoftmaxChunkState]]:
        return mixed_chunk_softmax_attention(*heads, chunk_size=self.chunk_size, causal=ctx.causal,
                                             key_mask=ctx.key_mask, linear_normalizer=self.linear_normalizer,
                                             output_final_state=want_state)

    def attend_step(self, heads: tuple[Tensor, ...], state: SoftmaxChunkState,
                    pos: Tensor) -> tuple[Tensor, SoftmaxChunkState]:
        return mixed_chunk_softmax_attention_step(*heads, state, pos, linear_normalizer=self.linear_normalizer)
