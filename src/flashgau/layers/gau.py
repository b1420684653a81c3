"""The Gated Attention Unit (GAU), the FLASH-Quad layer (paper Code 1):

    h = norm(x);  u, v, z = silu(h W_uvz)              u, v: (B, T, e), z: (B, T, s), one fused projection
    q, k = rope(z * gamma_i + beta_i)                  cheap per-dimension scale and offset of the shared z
    A = relu(q k^T / n + b)^2                          one head, no softmax, b = relative position bias
    out = x + (u * (A v)) W_o

Normaliser n (see docs/normalisers.md): "fixed" uses the constant cfg.quad_norm_len, so a causal output at t depends
only on tokens <= t; "paper" uses each row's real length (Code 1 uses the padded length T: the same on unpadded rows).

cfg.attention_precision "fp32": `project` hands the op fp32 maps and values, and the op runs with autocast off
(`attention_context`), so the relu^2 scores, weights and A.v are fp32 under bf16 autocast too.

The paper's ablations (ModelConfig, docs/model_options.md): cfg.gau_heads h splits every map and v into h heads of
s/h and e/h channels (RoPE within each head), the op's H axis; cfg.gau_attention "softmax" replaces relu^2(qk/n + b)
by softmax(qk / sqrt(s/h) + b) over the visible keys (ops.softmax with the bias; the normaliser does not apply).
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from ..ops import (KVCache, relu2_attention, relu2_attention_step, relu2_attention_weights, softmax_attention,
                   softmax_attention_step, softmax_attention_weights)
from ..ops import fastpath
from ..ops.autocast import autocast_off, cast
from ..ops.projection import gau_projection, gau_projection_inference, product_dtype
from .context import Context
from .init import residual_output
from .norms import make_norm
from .positions import RelPosBias, StepPositions, apply_rope, rope_tables
from .token_shift import TokenShift


class GAUBase(nn.Module):
    """Projection, output and entry points shared by FLASH-Quad and FLASH, which are whole blocks (the residual is
    in `finish`). A subclass chooses the attention: `_attend(x, h, ctx, want_state) -> (y, state or None)` through
    the op's parallel form, and `_step(x_t, h_t, state, step) -> (y, state)` through its step form (step: the
    StepPositions of the token's positions), h being the block's input after the pre-norm and the token shift
    (layers/token_shift.py), which forward, prefill and step prepare here."""

    def __init__(self, cfg: ModelConfig, bias_span: int, *, n_maps: int = 2, rel_pos: Optional[str] = None):
        """n_maps scale/offset maps of z; rel_pos: the relative bias kind (default: cfg's, resolved)."""
        super().__init__()
        d, e, s = cfg.d_model, cfg.expanded_dim, cfg.qk_dim
        self.e, self.s, self.n_maps, self.heads = e, s, n_maps, cfg.gau_heads
        self.norm = make_norm(cfg.norm, d)
        self.to_uvz = nn.Linear(d, 2 * e + s)
        self.gamma = nn.Parameter(torch.randn(n_maps, s) * cfg.init_std)
        self.beta = nn.Parameter(torch.zeros(n_maps, s))
        self.rel = RelPosBias(rel_pos or cfg.resolved_rel_pos(), bias_span, s, cfg.init_std)
        self.to_out = residual_output(nn.Linear(e, d))
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.fp32_attention = cfg.attention_precision == "fp32"
        self.softmax = cfg.gau_attention == "softmax"
        self.softmax_scale = (s // self.heads) ** -0.5
        self.rope_dims = cfg.rope_dims(s // self.heads)
        self.shift = TokenShift(cfg.token_shift, d)

    def attention_context(self, device: torch.device):
        """Where the attention op runs: autocast off for attention_precision="fp32", else as the caller set it."""
        return autocast_off(device) if self.fp32_attention else contextlib.nullcontext()

    def project(self, h: Tensor, pos: Tensor,
                step: Optional[StepPositions] = None) -> tuple[Tensor, Tensor, list[Tensor]]:
        """h (B, T, d) the normalised (and shifted) input, pos (T,) or (B, T) -> u (B, T, e), v (B, h, T, e/h), n_maps
        tensors (B, h, T, s/h) (h = gau_heads). With one head and the fused_projection fast path, the uvz product
        and its epilogue are one autograd function (ops/projection.py), or without gradients (decoding) its forward
        alone; the plain form below is their reference. step (decoding, pos = step.pos[:, None]): the RoPE tables
        come from it, computed once for all layers."""
        if self.heads == 1 and fastpath.enabled("fused_projection"):
            dtype = product_dtype(h)
            if not self.rope_dims:
                cos, sin = h, h
            elif step is not None:
                cos, sin = step.rope_tables(self.rope_dims, dtype)       # (B, 1, half)
            else:
                cos, sin = rope_tables(pos, self.rope_dims, dtype)
                if pos.dim() == 2:                                       # (B, 1, T, half) -> (B, T, half)
                    cos, sin = cos[:, 0], sin[:, 0]
            fused = gau_projection if torch.is_grad_enabled() else gau_projection_inference
            u, v, *maps = fused(h, self.to_uvz.weight, self.to_uvz.bias, self.gamma, self.beta, cos, sin, e=self.e,
                                s=self.s, dims=self.rope_dims)
            if self.fp32_attention:
                v, maps = v.float(), [m.float() for m in maps]
            return u, v[:, None], [m[:, None] for m in maps]
        u, v, z = F.silu(self.to_uvz(h)).split([self.e, self.e, self.s], dim=-1)
        gamma, beta = (p.to(z.dtype)[:, None, None] for p in (self.gamma, self.beta))
        zs = torch.addcmul(beta, z[None], gamma)                        # (n_maps, B, T, s): each map contiguous
        if self.heads > 1:                                               # (n_maps, B, h, T, s/h), (B, h, T, e/h)
            zs = zs.unflatten(-1, (self.heads, -1)).transpose(2, 3)
            v = v.unflatten(-1, (self.heads, -1)).transpose(1, 2)
            maps = apply_rope(zs, pos, self.rope_dims)                   # (T, half) and (B, 1, T, half) angles fit
        elif pos.dim() == 1:
            maps = apply_rope(zs, pos, self.rope_dims)[:, :, None]       # all maps in one rotation
        else:                                                            # per-row positions (decoding)
            maps = apply_rope(zs.transpose(0, 1), pos, self.rope_dims).transpose(0, 1)[:, :, None]
        v = v if self.heads > 1 else v[:, None]
        if self.fp32_attention:
            v, maps = v.float(), maps.float()
        return u, v, list(maps.unbind(0))

    def finish(self, x: Tensor, u: Tensor, o: Tensor) -> Tensor:
        """x + W_o(u * o), o (B, h, T, e/h). One head: squeeze, not o[:, 0], whose backward would zero-fill a buffer
        of o's shape and copy the gradient into it."""
        o = o.squeeze(1) if self.heads == 1 else o.transpose(1, 2).flatten(2)
        return x + self.dropout(self.to_out(u * cast(o, u.dtype)))

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        return self._attend(x, self.shift(self.norm(x), ctx), ctx, want_state=False)[0]

    def prefill(self, x: Tensor, ctx: Context) -> tuple[Tensor, Any]:
        """Causal only: the output and the decoding state after each row's real tokens (right padding)."""
        h = self.norm(x)
        y, state = self._attend(x, self.shift(h, ctx), ctx, want_state=True)
        return y, self.shift.wrap(state, [h], ctx)

    def step(self, x: Tensor, state: Any, pos: Tensor,
             step: Optional[StepPositions] = None) -> tuple[Tensor, Any]:
        """x (B, 1, d): one token per row at positions pos (B,); the state is updated in place and returned. step:
        the StepPositions of pos, shared by the layers of a decoding step (None: this layer makes its own)."""
        step = StepPositions(pos) if step is None else step
        h = self.norm(x)
        if not self.shift.active:
            return self._step(x, h, state, step)
        y, state.attn = self._step(x, self.shift.step(h, state.carry[:, 0]), state.attn, step)
        return y, state


class GAU(GAUBase):
    """FLASH-Quad layer: quadratic relu^2 attention over the whole sequence."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, bias_span=min(cfg.max_seq_len, cfg.quad_norm_len))   # the paper's w: 2n - 1 weights
        self.normalizer = cfg.normalizer
        self.norm_len = cfg.quad_norm_len

    @property
    def supports_cache(self) -> bool:
        """The paper's length normaliser changes every past output as the sequence grows: no cache for it (the
        softmax kernel has no length normaliser)."""
        return self.normalizer == "fixed" or self.softmax

    def _norm(self, ctx: Context, batch: int) -> Union[float, Tensor]:
        if self.normalizer == "fixed":
            return float(self.norm_len)
        return ctx.lengths(batch).clamp_min(1)

    has_attention_weights = True

    def attention_weights(self, x: Tensor, ctx: Context) -> Tensor:
        """The weights (B, h, T, T) that forward(x, ctx) applies to v (h = gau_heads)."""
        _, _, (q, k) = self.project(self.shift(self.norm(x), ctx), ctx.positions)
        bias = self.rel(ctx.positions, ctx.positions).to(q.dtype)
        with self.attention_context(x.device):
            if self.softmax:
                return softmax_attention_weights(q, k, causal=ctx.causal, key_mask=ctx.key_mask, bias=bias,
                                                 scale=self.softmax_scale)
            return relu2_attention_weights(q, k, bias, norm=self._norm(ctx, x.shape[0]), causal=ctx.causal,
                                           key_mask=ctx.key_mask)

    def _attend(self, x: Tensor, h: Tensor, ctx: Context, want_state: bool) -> tuple[Tensor, Optional[KVCache]]:
        u, v, (q, k) = self.project(h, ctx.positions)
        bias = self.rel(ctx.positions, ctx.positions).to(q.dtype)
        with self.attention_context(x.device):
            if self.softmax:
                o, cache = softmax_attention(q, k, v, causal=ctx.causal, key_mask=ctx.key_mask, bias=bias,
                                             scale=self.softmax_scale, output_final_state=want_state)
            else:
                o, cache = relu2_attention(q, k, v, bias, norm=self._norm(ctx, x.shape[0]), causal=ctx.causal,
                                           key_mask=ctx.key_mask, output_final_state=want_state)
        return self.finish(x, u, o), cache

    def _step(self, x: Tensor, h: Tensor, cache: KVCache, step: StepPositions) -> tuple[Tensor, KVCache]:
        """x, h (B, 1, d): one token per row at positions pos = step.pos (B,); the cache (with room for pos) is
        written in place and returned."""
        pos = step.pos
        u, v, (q, k) = self.project(h, pos[:, None], step)
        bias = self.rel(pos[:, None], torch.arange(cache.capacity, device=x.device)).to(q.dtype)   # (B, 1, 1, S)
        with self.attention_context(x.device):
            if self.softmax:
                o, cache = softmax_attention_step(q, k, v, cache, pos, bias=bias, scale=self.softmax_scale)
            else:
                o, cache = relu2_attention_step(q, k, v, bias, cache, pos, norm=float(self.norm_len))
        return self.finish(x, u, o), cache
