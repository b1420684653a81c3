"""The FLASH layer: a GAU whose attention is mixed chunk attention (paper Code 8).

Four scale/offset maps of the shared z give the local query/key quad_q, quad_k (exact relu^2 attention inside chunks
of C tokens, /C) and the global query/key lin_q, lin_k (linear attention across chunks, averaged over the real tokens
of the visible chunks: earlier chunks when causal, all chunks when bidirectional; or by C with
cfg.linear_normalizer="sum"). v is shared by both parts. The math is in ops/mixed_chunk.py.

The paper's ablations: cfg.mixed_chunk_parts "local" or "global" runs one part only (two maps of z, and for "global"
no relative bias); cfg.gau_attention "softmax" makes the local part softmax(quad_q.quad_k / sqrt(s/h) + b) over the
chunk's visible keys (ops/mixed_chunk_softmax.py, MC-TFM++'s op, with the bias); cfg.gau_heads as in GAU.
cfg.first_to_all (flashgau's reading of the paper's "first-to-all"): the chunks after the first also attend exactly
to the first chunk, which leaves their global part (the op beside the plain one, ops/mixed_chunk_first_to_all.py;
relu^2 only, the config says so).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..config import ModelConfig
from ..ops import (FlashState, SoftmaxChunkState, mixed_chunk_attention, mixed_chunk_attention_step,
                   mixed_chunk_first_to_all_attention, mixed_chunk_first_to_all_attention_step,
                   mixed_chunk_softmax_attention, mixed_chunk_softmax_attention_step)
from ..ops.autocast import cast
from ..ops.mixed_chunk import shared_slot
from .context import Context
from .gau import GAUBase
from .positions import StepPositions


class FlashLayer(GAUBase):
    supports_cache = True

    def __init__(self, cfg: ModelConfig):
        parts = cfg.mixed_chunk_parts
        super().__init__(cfg, bias_span=cfg.chunk_size, n_maps=4 if parts == "both" else 2,
                         rel_pos="none" if parts == "global" else None)
        self.chunk_size = cfg.chunk_size
        self.linear_normalizer = cfg.linear_normalizer
        self.parts = parts
        # the relu^2 op and its step, plain or first-to-all, picked once (the softmax local part has its own op)
        if cfg.first_to_all:
            self.relu2_op, self.relu2_op_step = (mixed_chunk_first_to_all_attention,
                                                 mixed_chunk_first_to_all_attention_step)
        else:
            self.relu2_op, self.relu2_op_step = mixed_chunk_attention, mixed_chunk_attention_step

    def _maps(self, h: Tensor, pos: Tensor,
              step: Optional[StepPositions] = None) -> tuple[Tensor, Tensor, list[Tensor]]:
        """u, v and the four maps quad_q, quad_k, lin_q, lin_k; with one part only, the two it uses stand in for the
        two it does not (the op never reads them)."""
        u, v, maps = self.project(h, pos, step)
        return u, v, maps if len(maps) == 4 else maps * 2

    def _options(self) -> dict:
        options = dict(linear_normalizer=self.linear_normalizer, parts=self.parts)
        return dict(options, scale=self.softmax_scale) if self.softmax else options

    def _attend(self, x: Tensor, h: Tensor, ctx: Context,
                want_state: bool) -> tuple[Tensor, Optional[FlashState | SoftmaxChunkState]]:
        u, v, (quad_q, quad_k, lin_q, lin_k) = self._maps(h, ctx.positions)
        slots = torch.arange(self.chunk_size, device=x.device)
        bias = self.rel(slots, slots).to(quad_q.dtype)                    # (C, C)
        with self.attention_context(x.device):
            if self.softmax:
                o, state = mixed_chunk_softmax_attention(quad_q, quad_k, lin_q, lin_k, v, bias=bias,
                                                         chunk_size=self.chunk_size, causal=ctx.causal,
                                                         key_mask=ctx.key_mask, output_final_state=want_state,
                                                         **self._options())
            else:
                o, state = self.relu2_op(quad_q, quad_k, lin_q, lin_k, v, bias, chunk_size=self.chunk_size,
                                         causal=ctx.causal, key_mask=ctx.key_mask, output_final_state=want_state,
                                         **self._options())
        return self.finish(x, u, o), state

    def _step(self, x: Tensor, h: Tensor, state: FlashState | SoftmaxChunkState,
              step: StepPositions) -> tuple[Tensor, FlashState | SoftmaxChunkState]:
        """x, h (B, 1, d): one token per row at positions pos = step.pos (B,); the state is updated in place and
        returned."""
        pos = step.pos
        u, v, (quad_q, quad_k, lin_q, lin_k) = self._maps(h, pos[:, None], step)
        C = self.chunk_size
        slot = shared_slot(step.host(), C)
        slot = pos % C if slot is None else slot                         # an int: one row of the table, a view
        bias_row = cast(self.rel.chunk_row(slot, C, device=x.device), quad_q.dtype)     # (B or 1, 1, 1, C)
        with self.attention_context(x.device):
            if self.softmax:
                o, state = mixed_chunk_softmax_attention_step(quad_q, quad_k, lin_q, lin_k, v, state, pos,
                                                              bias_row=bias_row, **self._options())
            else:
                o, state = self.relu2_op_step(quad_q, quad_k, lin_q, lin_k, v, bias_row, state, pos,
                                              host_pos=step.host(), **self._options())
        return self.finish(x, u, o), state
