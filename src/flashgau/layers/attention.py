"""Multi-head softmax attention with RoPE (Transformer+ / Transformer++), through torch SDPA."""

from __future__ import annotations

from torch import Tensor, nn

from ..config import ModelConfig
from ..ops import KVCache, softmax_attention, softmax_attention_step
from .context import Context
from .positions import apply_rope


class MultiHeadAttention(nn.Module):
    """x (B, T, d) -> (B, T, d); H heads of width dh = d / H, RoPE on q and k at absolute positions."""

    supports_cache = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def qkv_heads(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return apply_rope(q, pos), apply_rope(k, pos), v

    def merge(self, o: Tensor) -> Tensor:
        B, H, T, dh = o.shape
        return self.out(o.transpose(1, 2).reshape(B, T, H * dh))

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        q, k, v = self.qkv_heads(x, ctx.positions)
        return self.merge(softmax_attention(q, k, v, causal=ctx.causal, key_mask=ctx.key_mask))

    def prefill(self, x: Tensor, ctx: Context) -> tuple[Tensor, KVCache]:
        q, k, v = self.qkv_heads(x, ctx.positions)
        o = softmax_attention(q, k, v, causal=ctx.causal, key_mask=ctx.key_mask)
        return self.merge(o), KVCache.from_prefill(k, v, ctx.lengths(x.shape[0]))

    def step(self, x: Tensor, cache: KVCache) -> tuple[Tensor, KVCache]:
        q, k, v = self.qkv_heads(x, cache.pos[:, None].clone())
        valid = cache.append(k, v)
        return self.merge(softmax_attention_step(q, cache.k, cache.v, valid)), cache
