"""The FLASH layer: a GAU whose attention is mixed chunk attention (paper Code 8).

Four scale/offset maps of the shared z give the local query/key quad_q, quad_k (exact relu^2 attention inside chunks
of C tokens, /C) and the global query/key lin_q, lin_k (linear attention across chunks, averaged over the real tokens
of the visible chunks: earlier chunks when causal, all chunks when bidirectional; or by C with
cfg.linear_normalizer="sum"). v is shared by both parts. The math is in ops/mixed_chunk.py.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..config import ModelConfig
from ..ops import FlashState, mixed_chunk_attention, mixed_chunk_attention_step
from .context import Context
from .gau import GAUBase


class FlashLayer(GAUBase):
    n_maps = 4
    supports_cache = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, bias_span=cfg.chunk_size)
        self.chunk_size = cfg.chunk_size
        self.linear_normalizer = cfg.linear_normalizer

    def _attend(self, x: Tensor, h: Tensor, ctx: Context, want_state: bool) -> tuple[Tensor, Optional[FlashState]]:
        u, v, (quad_q, quad_k, lin_q, lin_k) = self.project(h, ctx.positions)
        slots = torch.arange(self.chunk_size, device=x.device)
        bias = self.rel(slots, slots).to(quad_q.dtype)                    # (C, C)
        with self.attention_context(x.device):
            o, state = mixed_chunk_attention(quad_q, quad_k, lin_q, lin_k, v, bias, chunk_size=self.chunk_size,
                                             causal=ctx.causal, key_mask=ctx.key_mask,
                                             linear_normalizer=self.linear_normalizer,
                                             output_final_state=want_state)
        return self.finish(x, u, o), state

    def _step(self, x: Tensor, h: Tensor, state: FlashState, pos: Tensor) -> tuple[Tensor, FlashState]:
        """x, h (B, 1, d): one token per row at positions pos (B,); the state is updated in place and returned."""
        u, v, (quad_q, quad_k, lin_q, lin_k) = self.project(h, pos[:, None])
        slots = torch.arange(self.chunk_size, device=x.device)
        bias_row = self.rel((pos % self.chunk_size)[:, None], slots).to(quad_q.dtype)   # (B, 1, 1, C)
        with self.attention_context(x.device):
            o, state = mixed_chunk_attention_step(quad_q, quad_k, lin_q, lin_k, v, bias_row, state, pos,
                                                  linear_normalizer=self.linear_normalizer)
        return self.finish(x, u, o), state
