"""FLASH's mixed chunk attention: exact relu^2 attention inside chunks of C tokens, linear attention across chunks.

Two forms share one state type, `FlashState` (the contract of flashgau.ops):

- `mixed_chunk_attention` (parallel: training and prefill) -> (o, FlashState or None). Steps:
    1. zero the values of masked keys and pad T up to G*C tokens with zeros (a zero value adds nothing anywhere,
       so real outputs do not depend on padding or masked tokens);
    2. local part, per chunk: relu(quad_q quad_k^T / C + bias)^2 (lower-triangular when causal), times v; causal,
       only the row strips' blocks at or below the diagonal are computed (ops/local_blocks.py: 3/4 of the
       C x C square at C = 256), where the plain form computes the square and masks its upper half;
    3. global part: one summary lin_k^T v (s x e) per chunk and a count of its real tokens; causal: an exclusive
       cumulative sum over the chunk axis (chunk g sees chunks < g), bidirectional: the sum over all chunks;
       lin_q times the summary, divided by the number of real tokens summarised (0 tokens: 0) with
       linear_normalizer="average" (the paper's Code 8), or by C with "sum" (the per-chunk summaries / C summed,
       as lucidrains and OpenNLPLab);
    4. output = local + global, unpadded.
  `parts` ("both", the paper's FLASH; "local"; "global") computes one of the two parts only (the ablation of the
  paper's §4): the other is neither computed nor added, in the parallel and the step form alike.
  `first_to_all` (flashgau's reading of the paper's "first-to-all", an interpretation; docs/model_options.md): the
  queries of every chunk g >= 1 also attend exactly to the C tokens of the first chunk (chunk 0, positions 0..C-1,
  where a QA prompt's question sits), and chunk 0 leaves their global part:
    2b. for queries i in chunks g >= 1, add sum over keys j of chunk 0 of relu(quad_q_i.quad_k_j / C)^2 v_j: the /C
        scale of the local part, no relative bias (the in-chunk bias spans offsets within a chunk; q and k carry
        RoPE), every key of chunk 0 (causal too: all of chunk 0 precedes chunk g), masked keys adding nothing;
    3'. the global part of chunks g >= 1 summarises chunks 1..g-1 (causal) or chunks 1..G-1 (bidirectional), its
        "average" divisor counting the real tokens of those chunks only, so chunk 0 is counted once.
  Chunk 0's own queries are unchanged (causal: their own chunk only; bidirectional: their chunk and the global
  summary of all chunks, as without the option), so T <= C gives the plain op's output. Cost: one more C x C block
  per chunk, O(T C); the decoding state gains chunk 0's quad_k and v (C rows each): fixed size.
  Memory is O(T C) for the local part and O(G s e) for the summaries: never a per-token s x e state, never T x T.
  ops/reference/mixed_chunk.py holds the dense reference and a short einsum listing of the same four steps.
- `mixed_chunk_attention_step` (decoding one token) -> (o, FlashState): the same arithmetic for one query, against
  the open chunk's buffer and the running sum of finished chunks' summaries; the buffer is folded into the sum when
  its chunk completes.

Shapes: B batch, H heads (1 in FLASH), T tokens, G chunks, C chunk length, s query/key width, e value width.
quad_q, quad_k (local query/key), lin_q, lin_k (global query/key): (B, H, T, s); v: (B, H, T, e).
bias: (C, C) relative position bias for (query slot, key slot) inside a chunk.
key_mask: (B, T) bool, True for real tokens. Summaries and counts are accumulated in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .autocast import cast
from .chunks import chunk_mask, exclusive_cumsum, open_chunk, pick_rows, sums_before, to_chunks
from .fastpath import enabled as fast_path
from .local_blocks import causal_local_attention, causal_local_attention_with_summaries, default_block
from .state import State, check_final_state, check_first_to_all, check_linear_normalizer, check_parts


@dataclass
class FlashState(State):
    """Decoding state of one mixed-chunk attention layer; its size does not depend on the position.

    kv:    (B, H, s, e) fp32, sum over finished chunks of lin_k^T v (real tokens only).
    count: (B,) fp32, number of real tokens summarised in kv.
    quad_k, lin_k, v: (B, H, C, s|s|e), the open chunk's local keys, global keys and values; slot = position % C.
    """

    kv: Tensor
    count: Tensor
    quad_k: Tensor
    lin_k: Tensor
    v: Tensor


@dataclass
class FlashFirstToAllState(FlashState):
    """FlashState of mixed chunk attention with first_to_all: kv and count then sum the finished chunks after the
    first one only, and

    first_k, first_v: (B, H, C, s|e), the first chunk's local keys and values, written when its last slot (position
    C - 1) is filled and frozen after; zero before (so the queries of chunk 0, which must not read them, get 0)."""

    first_k: Tensor
    first_v: Tensor


def mixed_chunk_attention(quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor, bias: Tensor, *,
                          chunk_size: int, causal: bool, key_mask: Optional[Tensor] = None,
                          linear_normalizer: str = "average", parts: str = "both", local_block: Optional[int] = None,
                          first_to_all: bool = False,
                          output_final_state: bool = False) -> tuple[Tensor, Optional[FlashState]]:
    """Parallel mixed chunk attention. Returns (o (B, H, T, e), final_state): final_state is None unless
    output_final_state (causal only), then the state after each row's last real token (key_mask's row sum; right
    padding), ready for `mixed_chunk_attention_step` to continue from.

    local_block: rows per strip of the causal local part (a divisor of C; ops/local_blocks.py); None:
    local_blocks.default_block(C) (128 rows where C >= 256, 64 where C is 128, else the plain full square); C: one
    strip (the full square). Ignored when bidirectional, and when the causal_blocks fast path is off
    (ops/fastpath.py).

    Masking costs no pass over the attention weights: a masked key's value is zeroed (so it adds nothing to the
    local part nor to any chunk summary, and gets no gradient), padded tokens are zeros, and the causal mask is
    -inf in the bias (relu(-inf)^2 = 0, gradient 0). The /C scale and the bias ride in one baddbmm, and the global
    term is accumulated into the local output by another.
    """
    check_final_state(causal, output_final_state)
    check_linear_normalizer(linear_normalizer)
    check_parts(parts)
    check_first_to_all(first_to_all, parts)
    B, H, T, s = quad_q.shape
    e = v.shape[-1]
    C = chunk_size
    average = linear_normalizer == "average"
    G = -(-T // C)

    # 1. masked keys get value 0; pad to G*C tokens and cut into chunks, one (C, width) matrix per (row, head, chunk)
    km = None if key_mask is None else key_mask.bool()
    if km is not None:
        v = v * km[:, None, :, None].to(v.dtype)
    quad_q, quad_k, lin_q, lin_k, v = (to_chunks(t, C).reshape(B * H * G, C, t.shape[-1])
                                       for t in (quad_q, quad_k, lin_q, lin_k, v))

    # 2. local: exact relu^2 attention inside each chunk
    kv_chunks = None
    if parts == "global":
        out = v.new_zeros(B * H * G, C, e)
    elif (block := local_block_for(C, causal, local_block)) is not None:
        if parts == "both" and fast_path("local_summaries"):           # the summaries of step 3 from one node
            out, kv_chunks = causal_local_attention_with_summaries(quad_q, quad_k, v, bias.to(quad_q.dtype), block,
                                                                   lin_k)
        else:
            out = causal_local_attention(quad_q, quad_k, v, bias.to(quad_q.dtype), block)   # (B*H*G, C, e)
    else:
        if causal:
            bias = bias.masked_fill(~torch.ones(C, C, dtype=torch.bool, device=bias.device).tril(), float("-inf"))
        scores = torch.baddbmm(bias.to(quad_q.dtype), quad_q, quad_k.transpose(1, 2), alpha=1.0 / C)
        out = torch.relu(scores).square() @ v                            # (B*H*G, C, e)
    if first_to_all and G > 1:                                            # 2b. chunks >= 1 also see chunk 0
        out = _add_first_chunk(out, quad_q, quad_k, v, B * H, G, C)

    # 3. global: one summary per chunk, averaged over the real tokens it holds
    acc = torch.promote_types(v.dtype, torch.float32)                     # fp32, or fp64 for fp64 inputs
    if parts == "local":                                                  # no summaries (the state's sum stays 0)
        kv = v.new_zeros(B, H, G, s, e, dtype=acc)
    else:
        if kv_chunks is None:
            kv_chunks = lin_k.transpose(1, 2) @ v                         # masked/padded tokens have v = 0
        kv = kv_chunks.to(acc).reshape(B, H, G, s, e)
    if km is None:                                                        # real tokens per chunk: (B or 1, G)
        count = (T - C * torch.arange(G, device=quad_q.device)).clamp(max=C).to(torch.float32)[None]
    else:
        count = chunk_mask(km, B, T, C, km.device).sum(-1).float()
    if first_to_all:                                                      # 3'. chunks >= 1 do not see chunk 0 here
        kv_with_first, count_with_first = kv, count
        kv = torch.cat([torch.zeros_like(kv[:, :, :1]), kv[:, :, 1:]], 2)
        count = torch.cat([torch.zeros_like(count[:, :1]), count[:, 1:]], 1)
    if parts != "local" and causal:
        if fast_path("lean_global"):
            kv_seen = exclusive_cumsum(kv, 2)                            # chunk g sees the chunks < g
        else:
            kv_seen = sums_before(kv[:, :, :-1], 2)
        if average:
            count_seen = sums_before(count[:, :-1], 1)
            denom = count_seen.clamp_min(1.0).expand(B, G).reshape(B, 1, G, 1, 1).expand(B, H, G, 1, 1)
            lin_q = lin_q / denom.reshape(B * H * G, 1, 1).to(lin_q.dtype)
        else:
            lin_q = lin_q / C
        kv_seen = kv_seen.to(lin_q.dtype).reshape(B * H * G, s, e)
        if fast_path("lean_global") and _same_dtypes_in_place(out, lin_q):
            out = out.baddbmm_(lin_q, kv_seen)                           # no copy of the local part
        else:
            out = torch.baddbmm(out, lin_q, kv_seen)
    elif parts != "local":
        total = count.sum(1).clamp_min(1.0).expand(B).reshape(B, 1, 1, 1) if average else C
        kv_all = (kv.sum(2) / total).to(lin_q.dtype).reshape(B * H, s, e)
        out, lin_q = out.reshape(B * H, G * C, e), lin_q.reshape(B * H, G * C, s)
        if first_to_all:                                                  # chunk 0's queries: every chunk, as before
            total = count_with_first.sum(1).clamp_min(1.0).expand(B).reshape(B, 1, 1, 1) if average else C
            kv_first = (kv_with_first.sum(2) / total).to(lin_q.dtype).reshape(B * H, s, e)
            head = torch.baddbmm(out[:, :C], lin_q[:, :C], kv_first)
            out = torch.cat([head, torch.baddbmm(out[:, C:], lin_q[:, C:], kv_all)], 1) if G > 1 else head
        else:
            out = torch.baddbmm(out, lin_q, kv_all)

    # 4. local + global (summed in place above), unpadded
    out = out.reshape(B, H, G * C, e)[:, :, :T]
    if not output_final_state:
        return out, None
    length = torch.full((B,), T, device=quad_q.device) if km is None else km.sum(1)
    shape = (B, H, G, C)
    state = _state_after_prefill(quad_k.reshape(*shape, s), lin_k.reshape(*shape, s), v.reshape(*shape, e), kv,
                                 count.expand(B, G), length, C)
    if first_to_all:                                                      # chunk 0, once each row has filled it
        ready = (length >= C).reshape(B, 1, 1, 1)
        first_k, first_v = quad_k.reshape(*shape, s)[:, :, 0], v.reshape(*shape, e)[:, :, 0]
        state = FlashFirstToAllState(**vars(state), first_k=first_k * ready.to(first_k.dtype),
                                     first_v=first_v * ready.to(first_v.dtype))
    return out, state


def _same_dtypes_in_place(out: Tensor, lin_q: Tensor) -> bool:
    """Whether out.baddbmm_(lin_q, kv) gives torch.baddbmm(out, lin_q, kv)'s dtype: always with autocast off; under
    autocast (which runs baddbmm in its dtype, but not the in-place form) when out and lin_q are in that dtype."""
    device = out.device.type
    if not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):
        return True
    return out.dtype == lin_q.dtype == torch.get_autocast_dtype(device)


def _add_first_chunk(out: Tensor, quad_q: Tensor, quad_k: Tensor, v: Tensor, BH: int, G: int, C: int) -> Tensor:
    """Step 2b of first_to_all: out (BH*G, C, e) plus, for the queries of chunks 1..G-1, relu(quad_q quad_k0^T / C)^2
    v0 over the C keys of chunk 0 (masked ones have v = 0). quad_q, quad_k (BH*G, C, s), v (BH*G, C, e)."""
    s, e = quad_q.shape[-1], v.shape[-1]
    q_rest = quad_q.reshape(BH, G * C, s)[:, C:]                          # (BH, (G-1) C, s)
    k0 = quad_k.reshape(BH, G, C, s)[:, 0]                                # (BH, C, s)
    v0 = v.reshape(BH, G, C, e)[:, 0]                                     # (BH, C, e)
    first = torch.relu(q_rest @ k0.transpose(1, 2) / C).square() @ v0    # (BH, (G-1) C, e)
    out = out.reshape(BH, G * C, e)
    return torch.cat([out[:, :C], out[:, C:] + first], 1).reshape(BH * G, C, e)


def local_block_for(C: int, causal: bool, local_block: Optional[int] = None) -> Optional[int]:
    """The strip height the causal local part runs with (None: the plain full square): local_block, or
    local_blocks.default_block(C); None when bidirectional or with the causal_blocks fast path off."""
    if not causal or not fast_path("causal_blocks"):
        return None
    if local_block is None:
        return default_block(C)
    if local_block < 1 or C % local_block:
        raise ValueError(f"local_block must divide the chunk length {C}, got {local_block}")
    return local_block


def _state_after_prefill(quad_k, lin_k, v, kv, count, length, C) -> FlashState:
    """State after each row's real tokens (length (B,)): sum of its finished chunks and its open chunk as the
    buffer. quad_k, lin_k, v: (B, H, G, C, width); kv (B, H, G, s, e); count (B, G). The open chunk's values are
    already zero after the last real token (masked and padded values are zeroed), the step's invariant."""
    done = length // C                                                   # finished chunks per row
    return FlashState(kv=pick_rows(sums_before(kv, 2), done), count=pick_rows(sums_before(count, 1), done, 1),
                      quad_k=open_chunk(quad_k, length, C), lin_k=open_chunk(lin_k, length, C),
                      v=open_chunk(v, length, C))


def empty_flash_state(batch: int, heads: int, chunk_size: int, qk_dim: int, v_dim: int, *, device=None,
                      dtype=torch.float32, first_to_all: bool = False) -> FlashState:
    """The state before any token (a FlashFirstToAllState with first_to_all)."""
    state = FlashState(
        kv=torch.zeros(batch, heads, qk_dim, v_dim, device=device, dtype=torch.promote_types(dtype, torch.float32)),
        count=torch.zeros(batch, device=device, dtype=torch.float32),
        quad_k=torch.zeros(batch, heads, chunk_size, qk_dim, device=device, dtype=dtype),
        lin_k=torch.zeros(batch, heads, chunk_size, qk_dim, device=device, dtype=dtype),
        v=torch.zeros(batch, heads, chunk_size, v_dim, device=device, dtype=dtype),
    )
    if not first_to_all:
        return state
    return FlashFirstToAllState(**vars(state), first_k=torch.zeros_like(state.quad_k),
                                first_v=torch.zeros_like(state.v))


def mixed_chunk_attention_step(quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor,
                               bias_row: Tensor, state: FlashState, pos: Tensor, *,
                               linear_normalizer: str = "average", parts: str = "both",
                               first_to_all: bool = False) -> tuple[Tensor, FlashState]:
    """One decoding step for one token per row at positions pos (B,); updates `state` in place and returns
    (o (B, H, 1, e), state).

    Inputs are (B, H, 1, s|e); bias_row (B, 1, 1, C) holds the bias of this query against each slot of its chunk.
    Invariant: the value buffer is zero in the slots after the newest token (prefill and the fold keep it so), which
    masks them. The local part reads only the slots filled so far (up to the largest slot among the rows: one read
    of pos to the host per call, which also tells whether a chunk completes), so its cost grows across a chunk
    from 1 slot to C. first_to_all needs a FlashFirstToAllState (and only it takes one): its first_v is zero until chunk 0
    is complete, so the first-chunk term needs no mask either; the fold at position C - 1 freezes chunk 0 there
    instead of adding it to the running sum.
    """
    check_first_to_all(first_to_all, parts)
    if first_to_all != isinstance(state, FlashFirstToAllState):
        raise ValueError(f"first_to_all={first_to_all} needs "
                         f"{'a FlashFirstToAllState' if first_to_all else 'a FlashState without first_to_all'}, "
                         f"got a {type(state).__name__}")
    B, H, C, s = state.quad_k.shape
    e = state.v.shape[-1]
    slot = pos % C                                                       # (B,)
    at = slot.reshape(B, 1, 1, 1)                                        # write this token into its slot
    state.quad_k.scatter_(2, at.expand(B, H, 1, s), cast(quad_k, state.quad_k.dtype))
    state.lin_k.scatter_(2, at.expand(B, H, 1, s), cast(lin_k, state.lin_k.dtype))
    state.v.scatter_(2, at.expand(B, H, 1, e), cast(v, state.v.dtype))
    n = max(slot.tolist()) + 1           # slots [0, n) hold the open chunk's tokens (of the row furthest into it)

    # as the parallel form computes a query's row: one (1, n) row per (row, head), /C and the bias in one baddbmm,
    # the global term accumulated into the local output by another. Only the n filled slots are read; in a row
    # whose query sits before slot n - 1 the slots after it hold zero values (the buffer's invariant), so they
    # add nothing: no mask needed
    dtype = quad_q.dtype
    if parts == "global":
        out = quad_q.new_zeros(B * H, 1, e)
    else:
        q = quad_q.reshape(B * H, 1, s)
        keys = cast(state.quad_k[:, :, :n].reshape(B * H, n, s).transpose(1, 2), dtype)
        bias = cast(bias_row[..., :n], dtype).expand(B, H, 1, n).reshape(B * H, 1, n)
        weights = torch.relu(torch.baddbmm(bias, q, keys, alpha=1.0 / C)).square()
        out = weights @ cast(state.v[:, :, :n].reshape(B * H, n, e), dtype)              # (B*H, 1, e)
        if first_to_all:
            first = torch.relu(q @ cast(state.first_k.reshape(B * H, C, s).transpose(1, 2), dtype) / C).square()
            out = torch.baddbmm(out, first, cast(state.first_v.reshape(B * H, C, e), dtype))
    if parts != "local":
        if linear_normalizer == "average":
            lin_q = lin_q / cast(state.count.clamp_min(1.0).reshape(B, 1, 1, 1), lin_q.dtype)
        else:
            lin_q = lin_q / C
        out = torch.baddbmm(out, lin_q.reshape(B * H, 1, s), cast(state.kv.reshape(B * H, s, e), dtype))
    out = out.reshape(B, H, 1, e)

    if n == C:                                                           # a row's chunk is complete: fold it in
        full = slot == C - 1
        summed = full
        if first_to_all:                                                 # chunk 0 complete: freeze it, do not sum it
            first = (full & (pos < C)).reshape(B, 1, 1, 1)
            state.first_k.copy_(torch.where(first, state.quad_k, state.first_k))
            state.first_v.copy_(torch.where(first, state.v, state.first_v))
            summed = full & (pos >= C)
        if parts != "local":
            acc = state.kv.dtype
            chunk_kv = state.lin_k.to(acc).transpose(-1, -2) @ state.v.to(acc)   # (B, H, s, e)
            state.kv += chunk_kv * summed.reshape(B, 1, 1, 1)
        state.count += summed.float() * C
        state.v.masked_fill_(full.reshape(B, 1, 1, 1), 0)                # the next chunk starts empty
    return out, state
