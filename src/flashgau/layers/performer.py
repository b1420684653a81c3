"""Performer attention: multi-head FAVOR+ (Choromanski et al., ICLR 2021) in a Transformer++ block.

The projections and RoPE are those of MultiHeadAttention (same parameters, same names); only the softmax is replaced
by its FAVOR+ estimate (flashgau.ops.favor): o_i = phi(q_i) S / phi(q_i) . z, with positive orthogonal random
features phi. RoPE rotates q and k before the feature map, so phi(q_i) . phi(k_j) estimates exp(q_i . k_j / sqrt(dh))
of the rotated (relative-position) scores, as softmax attention does.

Random features. One (m, dh) matrix per layer, shared by its heads, held in the buffer `projection`: drawn at init
from a per-layer seed (itself drawn from torch's global generator, so torch.manual_seed fixes the model), saved in
the state_dict, and the same for forward, prefill and every decoding step. Redrawing (the Performer paper's
"feature redrawing", lucidrains' feature_redraw_interval): in training mode the matrix is redrawn every
`feature_redraw_interval` forward passes, the k-th redraw from seed + k, so a resumed run redraws exactly as an
uninterrupted one; eval mode, prefill, step and the recompute of an activation-checkpointed block
(layers/recompute.py) never redraw.

Shapes: B batch, H heads, T tokens, dh head width, m random features.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..config import ModelConfig
from ..ops.favor import FavorState, draw_orthogonal_features, favor_attention, favor_attention_step
from .attention import MultiHeadAttention
from .context import Context
from .recompute import recomputing


class PerformerAttention(MultiHeadAttention):
    """x (B, T, d) -> (B, T, d): H heads of FAVOR+ attention, causal chunk-wise (cfg.performer_chunk) or
    bidirectional; fp32 inside (the op's one precision policy), with cfg.performer_epsilon's feature floor."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.num_features = cfg.random_features
        self.redraw_interval = cfg.feature_redraw_interval
        self.chunk_size = cfg.performer_chunk
        self.epsilon = cfg.performer_epsilon
        seed = int(torch.randint(0, 2 ** 62, (), device="cpu"))                   # from the global generator
        self.register_buffer("feature_seed", torch.tensor(seed))
        self.register_buffer("redraws", torch.tensor(0))                         # redraws done so far
        self.register_buffer("calls_since_redraw", torch.tensor(0))
        self.register_buffer("projection", self._draw(seed, 0))

    def _draw(self, seed: int, index: int) -> Tensor:
        """The index-th (m, dh) matrix of the sequence that `seed` starts (drawn on the CPU)."""
        gen = torch.Generator(device="cpu").manual_seed(seed + index)
        return draw_orthogonal_features(self.num_features, self.head_dim, generator=gen)

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Replace the random features by the next draw of this layer's sequence."""
        self.redraws += 1
        self.projection.copy_(self._draw(int(self.feature_seed), int(self.redraws)))
        self.calls_since_redraw.zero_()

    def _maybe_redraw(self) -> None:
        if not self.training or self.redraw_interval == 0 or recomputing():   # once per step, not in a recompute
            return
        if int(self.calls_since_redraw) >= self.redraw_interval:
            self.redraw_features()
        self.calls_since_redraw += 1

    def attend(self, heads: tuple[Tensor, ...], ctx: Context,
               want_state: bool) -> tuple[Tensor, Optional[FavorState]]:
        return favor_attention(*heads, self.projection, causal=ctx.causal, key_mask=ctx.key_mask,
                               chunk_size=self.chunk_size, epsilon=self.epsilon, output_final_state=want_state)

    def attend_step(self, heads: tuple[Tensor, ...], state: FavorState, pos: Tensor) -> tuple[Tensor, FavorState]:
        return favor_attention_step(*heads, self.projection, state, epsilon=self.epsilon)

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        """Training-mode calls count towards the redraw schedule; prefill and step never redraw."""
        self._maybe_redraw()
        return super().forward(x, ctx)
