"""FLASH's mixed chunk attention with first_to_all: the variant beside ops/mixed_chunk.py, with the same contract.

first_to_all is flashgau's reading of the paper's "first-to-all" (an interpretation; docs/model_options.md): the
queries of every chunk g >= 1 also attend exactly to the C tokens of the first chunk (chunk 0, positions 0..C-1,
where a QA prompt's question sits), and chunk 0 leaves their global part. The plain op's four steps, with two more:
  2b. for queries i in chunks g >= 1, add sum over keys j of chunk 0 of relu(quad_q_i.quad_k_j / C)^2 v_j: the /C
      scale of the local part, no relative bias (the in-chunk bias spans offsets within a chunk; q and k carry
      RoPE), every key of chunk 0 (causal too: all of chunk 0 precedes chunk g), masked keys adding nothing;
  3'. the global part of chunks g >= 1 summarises chunks 1..g-1 (causal) or chunks 1..G-1 (bidirectional), its
      "average" divisor counting the real tokens of those chunks only, so chunk 0 is counted once.
Chunk 0's own queries are unchanged (causal: their own chunk only; bidirectional: their chunk and the global summary
of all chunks, as without the option), so T <= C gives the plain op's output. Cost: one more C x C block per chunk,
O(T C); the decoding state, `FlashFirstToAllState`, adds chunk 0's quad_k and v (C rows each): fixed size. parts:
"both" or "local" (the first chunk joins the local part, which parts="global" does not compute).

- `mixed_chunk_first_to_all_attention` (parallel: training and prefill) -> (o, FlashFirstToAllState or None);
- `mixed_chunk_first_to_all_attention_step` (decoding one token) -> (o, FlashFirstToAllState).

Both compose the steps of ops/mixed_chunk.py; shapes and options as there. ops/reference/mixed_chunk_first_to_all.py
holds the dense reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .autocast import cast
from .mixed_chunk import (FlashState, add_global_bidirectional, add_global_causal, add_step_global, chunk_summaries,
                          chunked, empty_flash_state, fold_chunks, local_part, row_lengths, state_after_prefill,
                          step_local, write_token)
from .state import check_final_state, check_linear_normalizer, check_parts


@dataclass
class FlashFirstToAllState(FlashState):
    """FlashState of mixed chunk attention with first_to_all: kv and count then sum the finished chunks after the
    first one only, and

    first_k, first_v: (B, H, C, s|e), the first chunk's local keys and values, written when its last slot (position
    C - 1) is filled and frozen after; zero before (so the queries of chunk 0, which must not read them, get 0)."""

    first_k: Tensor
    first_v: Tensor


def check_first_to_all_parts(parts: str) -> None:
    """Raise ValueError unless `parts` computes the local part, which first_to_all adds the first chunk's keys to."""
    check_parts(parts)
    if parts == "global":
        raise ValueError("first_to_all adds the first chunk's keys to the local part, which parts='global' does not "
                         "compute")


def mixed_chunk_first_to_all_attention(quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor,
                                       bias: Tensor, *, chunk_size: int, causal: bool,
                                       key_mask: Optional[Tensor] = None, linear_normalizer: str = "average",
                                       parts: str = "both", local_block: Optional[int] = None,
                                       output_final_state: bool = False
                                       ) -> tuple[Tensor, Optional[FlashFirstToAllState]]:
    """Parallel mixed chunk attention with first_to_all. Returns (o (B, H, T, e), final_state), as
    `mixed_chunk_attention` (options, masking and local_block too); the final state is a FlashFirstToAllState, ready
    for `mixed_chunk_first_to_all_attention_step`, its first chunk zero in rows shorter than C."""
    check_final_state(causal, output_final_state)
    check_linear_normalizer(linear_normalizer)
    check_first_to_all_parts(parts)
    B, H, T, _ = quad_q.shape
    C = chunk_size
    G = -(-T // C)
    average = linear_normalizer == "average"
    km, (quad_q, quad_k, lin_q, lin_k, v) = chunked(quad_q, quad_k, lin_q, lin_k, v, key_mask, C)       # 1.
    out, kv_chunks = local_part(quad_q, quad_k, v, lin_k, bias, C, causal, parts, local_block)          # 2.
    if G > 1:
        out = _add_first_chunk(out, quad_q, quad_k, v, B * H, G, C)                                     # 2b.
    kv_all, count_all = chunk_summaries(lin_k, v, kv_chunks, km, B, H, T, C, parts)                      # 3.
    kv = torch.cat([torch.zeros_like(kv_all[:, :, :1]), kv_all[:, :, 1:]], 2)                           # 3'.
    count = torch.cat([torch.zeros_like(count_all[:, :1]), count_all[:, 1:]], 1)
    if parts != "local" and causal:
        out = add_global_causal(out, lin_q, kv, count, C, average)
    elif parts != "local":                  # chunk 0's queries: every chunk, as the plain op; later ones: chunks >= 1
        out, lin_q = out.reshape(B * H, G * C, -1), lin_q.reshape(B * H, G * C, -1)
        out_first = add_global_bidirectional(out[:, :C], lin_q[:, :C], kv_all, count_all, C, average)
        if G > 1:
            out = torch.cat([out_first, add_global_bidirectional(out[:, C:], lin_q[:, C:], kv, count, C, average)], 1)
        else:
            out = out_first

    # 4. local + global, unpadded
    out = out.reshape(B, H, G * C, -1)[:, :, :T]
    if not output_final_state:
        return out, None
    length = row_lengths(km, B, T, out.device)
    state = state_after_prefill(quad_k, lin_k, v, kv, count, length, C)
    ready = (length >= C).reshape(B, 1, 1, 1)                             # chunk 0, once each row has filled it
    first_k, first_v = (t.reshape(B, H, G, C, t.shape[-1])[:, :, 0] for t in (quad_k, v))
    return out, FlashFirstToAllState(**vars(state), first_k=first_k * ready.to(first_k.dtype),
                                     first_v=first_v * ready.to(first_v.dtype))


def _add_first_chunk(out: Tensor, quad_q: Tensor, quad_k: Tensor, v: Tensor, BH: int, G: int, C: int) -> Tensor:
    """Step 2b: out (BH*G, C, e) plus, for the queries of chunks 1..G-1, relu(quad_q quad_k0^T / C)^2 v0 over the C
    keys of chunk 0 (masked ones have v = 0). quad_q, quad_k (BH*G, C, s), v (BH*G, C, e)."""
    s, e = quad_q.shape[-1], v.shape[-1]
    q_rest = quad_q.reshape(BH, G * C, s)[:, C:]                          # (BH, (G-1) C, s)
    k0 = quad_k.reshape(BH, G, C, s)[:, 0]                                # (BH, C, s)
    v0 = v.reshape(BH, G, C, e)[:, 0]                                     # (BH, C, e)
    first = torch.relu(q_rest @ k0.transpose(1, 2) / C).square() @ v0    # (BH, (G-1) C, e)
    out = out.reshape(BH, G * C, e)
    return torch.cat([out[:, :C], out[:, C:] + first], 1).reshape(BH * G, C, e)


def empty_flash_first_to_all_state(batch: int, heads: int, chunk_size: int, qk_dim: int, v_dim: int, *, device=None,
                                   dtype=torch.float32) -> FlashFirstToAllState:
    """The state before any token."""
    state = empty_flash_state(batch, heads, chunk_size, qk_dim, v_dim, device=device, dtype=dtype)
    return FlashFirstToAllState(**vars(state), first_k=torch.zeros_like(state.quad_k),
                                first_v=torch.zeros_like(state.v))


def mixed_chunk_first_to_all_attention_step(quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor,
                                            bias_row: Tensor, state: FlashFirstToAllState, pos: Tensor, *,
                                            linear_normalizer: str = "average", parts: str = "both",
                                            host_pos: Optional[list[int]] = None
                                            ) -> tuple[Tensor, FlashFirstToAllState]:
    """One decoding step, as `mixed_chunk_attention_step`, plus the first chunk: its first_v is zero until chunk 0
    is complete, so the first-chunk term needs no mask either; the fold at position C - 1 freezes chunk 0 there
    instead of adding it to the running sum."""
    check_first_to_all_parts(parts)
    if not isinstance(state, FlashFirstToAllState):
        raise ValueError(f"mixed_chunk_first_to_all_attention_step needs a FlashFirstToAllState, got a "
                         f"{type(state).__name__}")
    B, H, C, s = state.quad_k.shape
    e = state.v.shape[-1]
    dtype = quad_q.dtype
    n = write_token(state, quad_k, lin_k, v, pos, host_pos)
    out = step_local(quad_q, state, bias_row, n, parts)
    first = torch.relu(quad_q.reshape(B * H, 1, s) @ cast(state.first_k.reshape(B * H, C, s).transpose(1, 2), dtype)
                       / C).square()
    out = torch.baddbmm(out, first, cast(state.first_v.reshape(B * H, C, e), dtype))
    out = add_step_global(out, lin_q, state, linear_normalizer, parts, dtype)
    if n == C:                                                           # a row's chunk is complete
        full = pos % C == C - 1
        first = (full & (pos < C)).reshape(B, 1, 1, 1)                   # chunk 0: freeze it, do not sum it
        state.first_k.copy_(torch.where(first, state.quad_k, state.first_k))
        state.first_v.copy_(torch.where(first, state.v, state.first_v))
        fold_chunks(state, full, full & (pos >= C), parts)
    return out, state
