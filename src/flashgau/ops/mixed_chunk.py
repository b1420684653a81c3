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
  Memory is O(T C) for the local part and O(G s e) for the summaries: never a per-token s x e state, never T x T.
  ops/reference/mixed_chunk.py holds the dense reference and a short einsum listing of the same four steps.
- `mixed_chunk_attention_step` (decoding one token) -> (o, FlashState): the same arithmetic for one query, against
  the open chunk's buffer and the running sum of finished chunks' summaries; the buffer is folded into the sum when
  its chunk completes.

Each step of both forms is a function here (`chunked`, `local_part`, `chunk_summaries`, `add_global_causal`,
`add_global_bidirectional`, `state_after_prefill`; `write_token`, `step_local`, `add_step_global`, `fold_chunks`),
which the variant beside this op, ops/mixed_chunk_first_to_all.py, composes too.

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
from .global_trim import add_trimmed_global
from .local_blocks import causal_local_attention, causal_local_attention_with_summaries, default_block
from .state import State, check_final_state, check_linear_normalizer, check_parts


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


def mixed_chunk_attention(quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor, bias: Tensor, *,
                          chunk_size: int, causal: bool, key_mask: Optional[Tensor] = None,
                          linear_normalizer: str = "average", parts: str = "both", local_block: Optional[int] = None,
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
    B, H, T, _ = quad_q.shape
    C = chunk_size
    G = -(-T // C)
    average = linear_normalizer == "average"
    km, (quad_q, quad_k, lin_q, lin_k, v) = chunked(quad_q, quad_k, lin_q, lin_k, v, key_mask, C)       # 1.
    trim = causal and not output_final_state and fast_path("global_trim")    # the last summary is never read
    out, kv_chunks = local_part(quad_q, quad_k, v, lin_k, bias, C, causal, parts, local_block,
                                rows=B * H if trim else None)                                           # 2.
    kv, count = chunk_summaries(lin_k, v, kv_chunks, km, B, H, T, C, parts)                              # 3.
    if parts != "local" and causal:
        out = add_global_causal(out, lin_q, kv, count, C, average)
    elif parts != "local":
        out = add_global_bidirectional(out.reshape(B * H, G * C, -1), lin_q.reshape(B * H, G * C, -1), kv, count,
                                       C, average)

    # 4. local + global (summed in place above), unpadded
    out = out.reshape(B, H, G * C, -1)[:, :, :T]
    if not output_final_state:
        return out, None
    return out, state_after_prefill(quad_k, lin_k, v, kv, count, row_lengths(km, B, T, out.device), C)


def chunked(quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor, key_mask: Optional[Tensor],
            C: int) -> tuple[Optional[Tensor], list[Tensor]]:
    """Step 1: (key_mask as bool or None, the five inputs cut into one (C, width) matrix per (row, head, chunk):
    (B*H*G, C, width)). Masked keys get value 0; T is padded with zeros up to G*C tokens."""
    B, H, T, _ = quad_q.shape
    G = -(-T // C)
    km = None if key_mask is None else key_mask.bool()
    if km is not None:
        v = v * km[:, None, :, None].to(v.dtype)
    return km, [to_chunks(t, C).reshape(B * H * G, C, t.shape[-1]) for t in (quad_q, quad_k, lin_q, lin_k, v)]


def local_part(quad_q: Tensor, quad_k: Tensor, v: Tensor, lin_k: Tensor, bias: Tensor, C: int, causal: bool,
               parts: str, local_block: Optional[int], rows: Optional[int] = None) -> tuple[Tensor, Optional[Tensor]]:
    """Step 2, on the chunked inputs: (the local part (B*H*G, C, e), exact relu^2 attention inside each chunk (zeros
    with parts="global"); the chunk summaries lin_k^T v (B*H*G, s, e) where the causal strips computed them in the
    same autograd node (the local_summaries fast path), else None). rows (B*H): the summaries of the last chunk of
    each row are left zero, not computed (ops/global_trim.py; for callers that never read them)."""
    if parts == "global":
        return v.new_zeros(v.shape), None
    block = local_block_for(C, causal, local_block)
    if block is not None:
        if parts == "both" and fast_path("local_summaries"):             # the summaries of step 3 from one node
            return causal_local_attention_with_summaries(quad_q, quad_k, v, bias.to(quad_q.dtype), block, lin_k,
                                                         rows)
        return causal_local_attention(quad_q, quad_k, v, bias.to(quad_q.dtype), block), None
    if causal:
        bias = bias.masked_fill(~torch.ones(C, C, dtype=torch.bool, device=bias.device).tril(), float("-inf"))
    scores = torch.baddbmm(bias.to(quad_q.dtype), quad_q, quad_k.transpose(1, 2), alpha=1.0 / C)
    return torch.relu(scores).square() @ v, None


def chunk_summaries(lin_k: Tensor, v: Tensor, kv_chunks: Optional[Tensor], km: Optional[Tensor], B: int, H: int,
                    T: int, C: int, parts: str) -> tuple[Tensor, Tensor]:
    """Step 3's summaries: (kv (B, H, G, s, e), each chunk's lin_k^T v in fp32, or fp64 for fp64 inputs (zeros with
    parts="local": the state's sum stays 0); count (B or 1, G) fp32, the real tokens of each chunk). lin_k, v: the
    chunked inputs (masked and padded tokens have v = 0); kv_chunks: the summaries when step 2 computed them."""
    G = -(-T // C)
    s, e = lin_k.shape[-1], v.shape[-1]
    acc = torch.promote_types(v.dtype, torch.float32)
    if parts == "local":
        kv = v.new_zeros(B, H, G, s, e, dtype=acc)
    else:
        if kv_chunks is None:
            kv_chunks = lin_k.transpose(1, 2) @ v
        kv = kv_chunks.to(acc).reshape(B, H, G, s, e)
    if km is None:
        count = (T - C * torch.arange(G, device=v.device)).clamp(max=C).to(torch.float32)[None]
    else:
        count = chunk_mask(km, B, T, C, km.device).sum(-1).float()
    return kv, count


def add_global_causal(out: Tensor, lin_q: Tensor, kv: Tensor, count: Tensor, C: int, average: bool) -> Tensor:
    """Step 3, causal: out (B*H*G, C, e) plus lin_q (B*H*G, C, s) times the sum of the summaries kv (B, H, G, s, e) of
    the chunks before each chunk (chunk g sees the chunks < g), divided by the real tokens they hold (count (B or 1,
    G); average) or by C."""
    B, H, G, s, e = kv.shape
    if fast_path("lean_global"):
        kv_seen = exclusive_cumsum(kv, 2)
    else:
        kv_seen = sums_before(kv[:, :, :-1], 2)
    if average:
        count_seen = sums_before(count[:, :-1], 1)
        denom = count_seen.clamp_min(1.0).expand(B, G).reshape(B, 1, G, 1, 1).expand(B, H, G, 1, 1)
        lin_q = lin_q / denom.reshape(B * H * G, 1, 1).to(lin_q.dtype)
    else:
        lin_q = lin_q / C
    kv_seen = kv_seen.to(lin_q.dtype).reshape(B * H * G, s, e)
    if fast_path("global_trim") and _same_dtypes_in_place(out, lin_q) and out.dtype == lin_q.dtype:
        return add_trimmed_global(out, lin_q, kv_seen, B * H)            # chunk 0 sees no summary: skipped
    if fast_path("lean_global") and _same_dtypes_in_place(out, lin_q):
        return out.baddbmm_(lin_q, kv_seen)                               # no copy of the local part
    return torch.baddbmm(out, lin_q, kv_seen)


def add_global_bidirectional(out: Tensor, lin_q: Tensor, kv: Tensor, count: Tensor, C: int, average: bool) -> Tensor:
    """Step 3, bidirectional: out (B*H, n, e) plus lin_q (B*H, n, s) times the sum of every chunk's summary kv (B, H,
    G, s, e), divided by the real tokens of all chunks (count (B or 1, G); average) or by C. n: any query rows."""
    B, H, _, s, e = kv.shape
    total = count.sum(1).clamp_min(1.0).expand(B).reshape(B, 1, 1, 1) if average else C
    kv_all = (kv.sum(2) / total).to(lin_q.dtype).reshape(B * H, s, e)
    return torch.baddbmm(out, lin_q, kv_all)


def _same_dtypes_in_place(out: Tensor, lin_q: Tensor) -> bool:
    """Whether out.baddbmm_(lin_q, kv) gives torch.baddbmm(out, lin_q, kv)'s dtype: always with autocast off; under
    autocast (which runs baddbmm in its dtype, but not the in-place form) when out and lin_q are in that dtype."""
    device = out.device.type
    if not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):
        return True
    return out.dtype == lin_q.dtype == torch.get_autocast_dtype(device)


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


def row_lengths(km: Optional[Tensor], B: int, T: int, device) -> Tensor:
    """(B,) the real tokens of each row (key_mask's row sum; None: T)."""
    return torch.full((B,), T, device=device) if km is None else km.sum(1)


def state_after_prefill(quad_k: Tensor, lin_k: Tensor, v: Tensor, kv: Tensor, count: Tensor, length: Tensor,
                        C: int) -> FlashState:
    """State after each row's real tokens (length (B,)): sum of its finished chunks and its open chunk as the
    buffer. quad_k, lin_k, v: the chunked inputs (B*H*G, C, width); kv (B, H, G, s, e); count (B or 1, G). The open
    chunk's values are already zero after the last real token (masked and padded values are zeroed), the step's
    invariant."""
    B, H, G = kv.shape[:3]
    quad_k, lin_k, v = (t.reshape(B, H, G, C, t.shape[-1]) for t in (quad_k, lin_k, v))
    done = length // C                                                   # finished chunks per row
    return FlashState(kv=pick_rows(sums_before(kv, 2), done), count=pick_rows(sums_before(count.expand(B, G), 1),
                                                                              done, 1),
                      quad_k=open_chunk(quad_k, length, C), lin_k=open_chunk(lin_k, length, C),
                      v=open_chunk(v, length, C))


def empty_flash_state(batch: int, heads: int, chunk_size: int, qk_dim: int, v_dim: int, *, device=None,
                      dtype=torch.float32) -> FlashState:
    """The state before any token."""
    return FlashState(
        kv=torch.zeros(batch, heads, qk_dim, v_dim, device=device, dtype=torch.promote_types(dtype, torch.float32)),
        count=torch.zeros(batch, device=device, dtype=torch.float32),
        quad_k=torch.zeros(batch, heads, chunk_size, qk_dim, device=device, dtype=dtype),
        lin_k=torch.zeros(batch, heads, chunk_size, qk_dim, device=device, dtype=dtype),
        v=torch.zeros(batch, heads, chunk_size, v_dim, device=device, dtype=dtype),
    )


def mixed_chunk_attention_step(quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor,
                               bias_row: Tensor, state: FlashState, pos: Tensor, *,
                               linear_normalizer: str = "average", parts: str = "both",
                               host_pos: Optional[list[int]] = None) -> tuple[Tensor, FlashState]:
    """One decoding step for one token per row at positions pos (B,); updates `state` in place and returns
    (o (B, H, 1, e), state).

    Inputs are (B, H, 1, s|e); bias_row (B, 1, 1, C) holds the bias of this query against each slot of its chunk.
    Invariant: the value buffer is zero in the slots after the newest token (prefill and the fold keep it so), which
    masks them. The local part reads only the slots filled so far (up to the largest slot among the rows: one read
    of pos to the host per call, which also tells whether a chunk completes; host_pos, pos as ints, spares it when
    the caller has read pos already), so its cost grows across a chunk from 1 slot to C. A FlashFirstToAllState is
    refused: ops/mixed_chunk_first_to_all.py steps it.
    """
    if type(state) is not FlashState:
        raise ValueError(f"mixed_chunk_attention_step needs a FlashState without first_to_all, got a "
                         f"{type(state).__name__}")
    C = state.quad_k.shape[2]
    n = write_token(state, quad_k, lin_k, v, pos, host_pos)
    out = step_local(quad_q, state, bias_row, n, parts)
    out = add_step_global(out, lin_q, state, linear_normalizer, parts, quad_q.dtype)
    if n == C:                                                           # a row's chunk is complete: fold it in
        full = pos % C == C - 1
        fold_chunks(state, full, full, parts)
    return out, state


def shared_slot(host_pos: list[int], C: int) -> Optional[int]:
    """The slot pos % C of the open chunk when every row sits at it (one row, or rows that started together), else
    None."""
    slots = {p % C for p in host_pos}
    return slots.pop() if len(slots) == 1 else None


def write_token(state: FlashState, quad_k: Tensor, lin_k: Tensor, v: Tensor, pos: Tensor,
                host_pos: Optional[list[int]] = None) -> int:
    """Write one token per row (B, H, 1, s|e) into slot pos % C of the open chunk's buffer. Returns n: slots [0, n)
    hold the open chunk's tokens (of the row furthest into it). host_pos: pos as ints, when the caller has read it
    (one decoding step reads it once for all layers); else one read of pos to the host here. When every row sits at
    the same slot (one row, or rows that started together) the three writes are slice copies, else scatters."""
    B, H, C, s = state.quad_k.shape
    e = state.v.shape[-1]
    host_pos = pos.tolist() if host_pos is None else host_pos
    i = shared_slot(host_pos, C)
    if i is not None:
        state.quad_k[:, :, i:i + 1].copy_(quad_k)                        # copy_ casts as .to does
        state.lin_k[:, :, i:i + 1].copy_(lin_k)
        state.v[:, :, i:i + 1].copy_(v)
        return i + 1
    at = (pos % C).reshape(B, 1, 1, 1)
    state.quad_k.scatter_(2, at.expand(B, H, 1, s), cast(quad_k, state.quad_k.dtype))
    state.lin_k.scatter_(2, at.expand(B, H, 1, s), cast(lin_k, state.lin_k.dtype))
    state.v.scatter_(2, at.expand(B, H, 1, e), cast(v, state.v.dtype))
    return max(p % C for p in host_pos) + 1


def step_local(quad_q: Tensor, state: FlashState, bias_row: Tensor, n: int, parts: str) -> Tensor:
    """The local part of one query (B, H, 1, s) per (row, head) as the parallel form computes its row: (B*H, 1, e),
    /C and the bias in one baddbmm (zeros with parts="global"). Only the n filled slots are read; in a row whose
    query sits before slot n - 1 the slots after it hold zero values (the buffer's invariant), so they add nothing:
    no mask needed."""
    B, H, C, s = state.quad_k.shape
    e = state.v.shape[-1]
    if parts == "global":
        return quad_q.new_zeros(B * H, 1, e)
    dtype = quad_q.dtype
    q = quad_q.reshape(B * H, 1, s)
    keys = cast(state.quad_k[:, :, :n].reshape(B * H, n, s).transpose(1, 2), dtype)
    bias = cast(bias_row[..., :n], dtype).expand(B, H, 1, n).reshape(B * H, 1, n)
    weights = torch.relu(torch.baddbmm(bias, q, keys, alpha=1.0 / C)).square()
    return torch.bmm(weights, cast(state.v[:, :, :n].reshape(B * H, n, e), dtype))    # bmm: no matmul dispatch


def add_step_global(out: Tensor, lin_q: Tensor, state: FlashState, linear_normalizer: str, parts: str,
                    dtype: torch.dtype) -> Tensor:
    """out (B*H, 1, e) plus one query's global part (nothing with parts="local"): lin_q (B, H, 1, s) times the running
    sum of finished chunks' summaries (cast to dtype), divided by their real tokens or by C; reshaped (B, H, 1, e)."""
    B, H, s, e = state.kv.shape
    if parts != "local":
        if linear_normalizer == "average":
            lin_q = lin_q / cast(state.count.clamp_min(1.0).reshape(B, 1, 1, 1), lin_q.dtype)
        else:
            lin_q = lin_q / state.quad_k.shape[2]
        out = torch.baddbmm(out, lin_q.reshape(B * H, 1, s), cast(state.kv.reshape(B * H, s, e), dtype))
    return out.reshape(B, H, 1, e)


def fold_chunks(state: FlashState, full: Tensor, summed: Tensor, parts: str) -> None:
    """Rows whose open chunk is complete (full (B,) bool: the token just written sits in slot C - 1): add the chunk's
    summary and count to the running sum where `summed` (B,) bool, and empty the value buffer (the next chunk starts
    empty)."""
    B, _, C, _ = state.quad_k.shape
    if parts != "local":
        acc = state.kv.dtype
        chunk_kv = state.lin_k.to(acc).transpose(-1, -2) @ state.v.to(acc)   # (B, H, s, e)
        state.kv += chunk_kv * summed.reshape(B, 1, 1, 1)
    state.count += summed.float() * C
    state.v.masked_fill_(full.reshape(B, 1, 1, 1), 0)
