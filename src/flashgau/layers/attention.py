"""Multi-head softmax attention with RoPE (Transformer+ / Transformer++), through torch SDPA; the base of the
baselines' attention layers (Performer, Combiner, MC-TFM++), which change only the op.

One path for the three entry points: `heads` projects and rotates, `attend` runs the op's parallel form
(returning the decoding state when asked) and `attend_step` its step form; forward, prefill and step wrap them.
A subclass overrides `attend` and `attend_step` (and `heads` when its op takes other inputs).
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

from ..config import ModelConfig
from ..ops import KVCache, softmax_attention, softmax_attention_step, softmax_attention_weights
from .context import Context
from .init import residual_output
from .positions import apply_rope


class MultiHeadAttention(nn.Module):
    """x (B, T, d) -> (B, T, d); H heads of width dh = d / H, RoPE on q and k at absolute positions."""

    supports_cache = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.rope_dims = cfg.rope_dims(cfg.head_dim)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = residual_output(nn.Linear(cfg.d_model, cfg.d_model))

    def rope(self, x: Tensor, pos: Tensor) -> Tensor:
        """RoPE on the first rope_dims channels of each head (all of them unless cfg.rope_fraction < 1)."""
        return apply_rope(x, pos, self.rope_dims)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d) -> q, k, v (B, H, T, dh), before RoPE."""
        B, T, _ = x.shape
        return self.qkv(x).reshape(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def heads(self, x: Tensor, pos: Tensor) -> tuple[Tensor, ...]:
        """x (B, T, d), pos (T,) or (B, T) -> the op's inputs: q, k (rotated), v (B, H, T, dh)."""
        q, k, v = self.project(x)
        return self.rope(q, pos), self.rope(k, pos), v

    def attend(self, heads: tuple[Tensor, ...], ctx: Context, want_state: bool) -> tuple[Tensor, Optional[KVCache]]:
        return softmax_attention(*heads, causal=ctx.causal, key_mask=ctx.key_mask, output_final_state=want_state)

    def attend_step(self, heads: tuple[Tensor, ...], state: KVCache, pos: Tensor) -> tuple[Tensor, KVCache]:
        return softmax_attention_step(*heads, state, pos)

    def merge(self, o: Tensor) -> Tensor:
        B, H, T, dh = o.shape
        return self.out(o.transpose(1, 2).reshape(B, T, H * dh))

    def _attend(self, x: Tensor, ctx: Context, want_state: bool) -> tuple[Tensor, Any]:
        o, state = self.attend(self.heads(x, ctx.positions), ctx, want_state)
        return self.merge(o), state

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        return self._attend(x, ctx, want_state=False)[0]

    def prefill(self, x: Tensor, ctx: Context) -> tuple[Tensor, Any]:
        """Causal only: the output and the decoding state after each row's real tokens (right padding)."""
        return self._attend(x, ctx, want_state=True)

    def step(self, x: Tensor, state: Any, pos: Tensor) -> tuple[Tensor, Any]:
        """x (B, 1, d): one token per row at positions pos (B,); the state is updated in place and returned."""
        o, state = self.attend_step(self.heads(x, pos[:, None]), state, pos)
        return self.merge(o), state

    @property
    def has_attention_weights(self) -> bool:
        """Softmax attention has a (T, T) weight matrix; a subclass with another op (Performer, Combiner,
        mixed chunks) has none."""
        return type(self).attend is MultiHeadAttention.attend

    def attention_weights(self, x: Tensor, ctx: Context) -> Tensor:
        """The weights (B, H, T, T) that forward(x, ctx) applies to the values."""
        if not self.has_attention_weights:
            raise NotImplementedError(f"{type(self).__name__} has no (T, T) attention weight matrix")
        q, k, _ = self.heads(x, ctx.positions)
        return softmax_attention_weights(q, k, causal=ctx.causal, key_mask=ctx.key_mask)
