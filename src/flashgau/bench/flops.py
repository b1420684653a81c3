"""Model FLOPs of a training step, counted two ways.

1. `analytic_flops(cfg, batch, context)`: matrix-multiply FLOPs (2 per multiply-add) of one training step =
   3 x the forward pass (backward = 2 x forward), for the archs whose math is written out here. Convention:
   FLOPs the plain forms execute in matmuls (FLASH's causal_blocks and global_trim fast paths skip part of its
   local square and of its global part: bench/speed/memory.py counts with them off to check these formulas).
   Causal softmax attention (torch SDPA's fused CPU kernel skips the blocks above the diagonal) counts half of the
   T x T products; relu^2 attention (FLASH-Quad, FLASH's local part) in its plain form computes the full square and
   masks it, so it counts the full square. Elementwise work (norms, activations,
   relu^2, masks, RoPE, softmax, optimizer) is not counted: it is the part MFU charges for.

   Per token and layer (d width, e = 2d, s query/key width, C chunk, T context, h GLU hidden, f MLP hidden,
   V vocabulary):
     Transformer+   8d^2 (q, k, v, out) + 4 d f (MLP)   + 2 T d (causal q k^T and a v, half of 4 T d)
     Transformer++  8d^2                + 6 d h (GLU)   + 2 T d
     FLASH-Quad     2 d (2e + s) + 2 e d                + 2 T (s + e)
     FLASH          2 d (2e + s) + 2 e d                + 2 C (s + e) (local) + 4 s e (chunk summaries, global)
   plus the output head 2 d V per token.

2. `flop_counter()`: a torch.utils.flop_counter.FlopCounterMode to run around one real training step (the speed
   benchmark's memory measurement does), for every arch (including those without a formula here). The CPU SDPA
   kernel has no formula in torch, so one is registered here with the same causal-half convention.
"""

from __future__ import annotations

from typing import Optional

from ..config import ModelConfig

FORMULA_ARCHS = ("transformer+", "transformer++", "flash-quad", "flash")


def forward_flops_per_token(cfg: ModelConfig, context: int) -> Optional[dict]:
    """Forward matmul FLOPs per token, split into "dense" (projections, FFN, head) and "attention"; None when the
    arch has no formula here."""
    d, T, V = cfg.d_model, context, cfg.vocab_size
    head = 2 * d * V
    if cfg.arch in ("transformer+", "transformer++"):
        ffn = 4 * d * cfg.mlp_hidden if cfg.arch == "transformer+" else 6 * d * cfg.glu_hidden
        dense = 8 * d * d + ffn
        attn = 2 * T * d if cfg.causal else 4 * T * d
    elif cfg.arch in ("flash-quad", "flash"):
        e, s = cfg.expanded_dim, cfg.qk_dim
        dense = 2 * d * (2 * e + s) + 2 * e * d
        if cfg.arch == "flash-quad":
            attn = 2 * T * (s + e)
        else:
            C = min(cfg.chunk_size, T)
            attn = 2 * C * (s + e) + 4 * s * e
    else:
        return None
    return {"dense": cfg.n_layers * dense + head, "attention": cfg.n_layers * attn}


def analytic_flops(cfg: ModelConfig, batch: int, context: int) -> Optional[dict]:
    """FLOPs of one training step (forward + backward = 3 x forward) on batch x context tokens; None if unknown."""
    per = forward_flops_per_token(cfg, context)
    if per is None:
        return None
    tokens = batch * context
    return {"dense": 3 * tokens * per["dense"], "attention": 3 * tokens * per["attention"],
            "total": 3 * tokens * (per["dense"] + per["attention"])}


_REGISTERED = False


def _register_missing_formulas() -> None:
    """FlopCounterMode formulas it lacks: torch's fused CPU attention kernel (forward and backward; causal = half),
    and the in-place baddbmm_ and addmm_ (mixed_chunk's global part adds into the local output in place; the GAU
    projection's backward accumulates h's gradient over its three parts)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import torch
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and fwd not in fc.flop_registry:
        @fc.register_flop_formula(fwd)
        def _fwd(q, k, v, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs):
            flops = fc.sdpa_flop_count(q, k, v)
            return flops // 2 if is_causal else flops
    if bwd is not None and bwd not in fc.flop_registry:
        @fc.register_flop_formula(bwd)
        def _bwd(grad_out, q, k, v, out, lse, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs):
            flops = fc.sdpa_backward_flop_count(grad_out, q, k, v)
            return flops // 2 if is_causal else flops
    for in_place, op in ((aten.baddbmm_, aten.baddbmm), (aten.addmm_, aten.addmm)):
        if in_place not in fc.flop_registry:
            fc.flop_registry[in_place] = fc.flop_registry[op]
    _REGISTERED = True


def flop_counter():
    """A FlopCounterMode (quiet) that also knows the CPU SDPA kernel and baddbmm_."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_missing_formulas()
    return FlopCounterMode(display=False)
