"""Mixed chunk attention with a softmax local part: the attention of MC-TFM++, the paper's ablation "Transformer++
with mixed chunk attention" (reference §3.4, §8.4).

FLASH's mixed chunk attention (flashgau.ops.mixed_chunk) is exact relu^2 attention inside chunks of C tokens plus
linear attention across chunks. Transformer++ attends with multi-head softmax, so MC-TFM++ keeps softmax for the
exact part and takes FLASH's linear part unchanged:

- local (per chunk, exact): softmax over the visible keys of the query's own chunk of q_i.k_j * scale, times v;
- global (across chunks, linear): lin_q_i . (sum over the keys of visible chunks of lin_k_j^T v_j) / N_i, where the
  visible chunks are those before the query's chunk (causal; an exclusive prefix sum over one lin_k^T v summary per
  chunk) or all chunks (bidirectional) and N_i counts the real keys summarised (0 keys: 0), exactly FLASH's
  averaging normaliser (linear_normalizer="average"; "sum": N_i = C, as FLASH's);
- output = local + global.

As in FLASH, the bidirectional global part sums over all chunks, the query's own included. Two options serve FLASH
with a softmax kernel (ModelConfig.gau_attention="softmax", the paper's relu^2-vs-softmax ablation): `bias`, a
(C, C) relative position bias added to the local logits (as FLASH adds its bias before relu^2), and `parts`
("both"; "local"; "global": one part only, as flashgau.ops.mixed_chunk).
Memory: O(T C) for the local part and O(G s e) for the summaries; never a per-token s x e state or a T x T matrix.

Forms (one state type, `SoftmaxChunkState`; the contract of flashgau.ops): `mixed_chunk_softmax_attention`
(parallel: training, prefill) -> (o, state or None) and `mixed_chunk_softmax_attention_step` (decoding one token)
-> (o, state); a fixed-size state: the running sum of finished chunks' summaries and the open chunk's buffer.

Shapes: B batch, H heads, T tokens, G chunks, C chunk length, s query/key width, e value width.
q, k (local), lin_q, lin_k (global): (B, H, T, s); v: (B, H, T, e). key_mask: (B, T) bool, True for real tokens.
Summaries and counts are accumulated in fp32; the local softmax is computed in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .chunks import chunk_mask, masked_softmax, open_chunk, pick_rows, sums_before, to_chunks
from .state import State, check_final_state, check_linear_normalizer, check_parts


@dataclass
class SoftmaxChunkState(State):
    """Decoding state of one MC-TFM++ attention layer; its size does not depend on the position.

    kv:    (B, H, s, e) fp32, sum over finished chunks of lin_k^T v (real tokens only).
    count: (B,) fp32, number of tokens summarised in kv.
    k, lin_k, v: (B, H, C, s|s|e), the open chunk's local keys, global keys and values; slot = position % C.
    """

    kv: Tensor
    count: Tensor
    k: Tensor
    lin_k: Tensor
    v: Tensor


def empty_softmax_chunk_state(batch: int, heads: int, chunk_size: int, qk_dim: int, v_dim: int, *, device=None,
                              dtype=torch.float32) -> SoftmaxChunkState:
    """The state before any token."""
    return SoftmaxChunkState(
        kv=torch.zeros(batch, heads, qk_dim, v_dim, device=device, dtype=torch.float32),
        count=torch.zeros(batch, device=device, dtype=torch.float32),
        k=torch.zeros(batch, heads, chunk_size, qk_dim, device=device, dtype=dtype),
        lin_k=torch.zeros(batch, heads, chunk_size, qk_dim, device=device, dtype=dtype),
        v=torch.zeros(batch, heads, chunk_size, v_dim, device=device, dtype=dtype),
    )


def mixed_chunk_softmax_attention(q: Tensor, k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor, *, chunk_size: int,
                                  causal: bool, key_mask: Optional[Tensor] = None, scale: Optional[float] = None,
                                  linear_normalizer: str = "average", bias: Optional[Tensor] = None,
                                  parts: str = "both",
                                  output_final_state: bool = False) -> tuple[Tensor, Optional[SoftmaxChunkState]]:
    """Parallel form. Returns (o (B, H, T, e) in v's dtype, final_state): final_state is None unless
    output_final_state (causal only), then the state after each row's real tokens (key_mask must be a right padding).

    scale multiplies the local logits (default 1/sqrt(s)), bias (C, C) is added to them (query slot, key slot); the
    global part uses lin_q . lin_k as given.
    """
    check_final_state(causal, output_final_state)
    check_linear_normalizer(linear_normalizer)
    check_parts(parts)
    B, H, T, s = q.shape
    e = v.shape[-1]
    C = chunk_size
    scale = s ** -0.5 if scale is None else scale
    qg, kg, lin_q_g, lin_k_g, vg = (to_chunks(t, C) for t in (q, k, lin_q, lin_k, v))   # (B, H, G, C, .)
    G = qg.shape[2]
    real = chunk_mask(key_mask, B, T, C, q.device)[:, None]                    # (B, 1, G, C)

    # local: exact softmax attention inside each chunk
    allowed = real[..., None, :]
    if causal:
        allowed = allowed & torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    if parts == "global":
        out = vg.new_zeros(vg.shape, dtype=torch.float32)
    else:
        logits = (qg.float() @ kg.float().transpose(-1, -2)) * scale
        p = masked_softmax(logits if bias is None else logits + bias.float(), allowed)
        out = p @ vg.float()                                                   # (B, H, G, C, e)

    # global: one lin_k^T v summary per chunk, averaged over the real tokens the query may see
    lin_k_real = lin_k_g.float() * real[..., None]
    kv = lin_k_real.transpose(-1, -2) @ vg.float()                             # (B, H, G, s, e)
    count = real[:, 0].sum(-1).float()                                         # (B, G)
    if causal:
        kv_before, count_before = sums_before(kv, 2), sums_before(count, 1)    # entry g: the chunks < g
        kv_seen, count_seen = kv_before[:, :, :-1], count_before[:, :-1]
    else:
        kv_seen = kv.sum(2, keepdim=True)                                      # every chunk, as FLASH
        count_seen = count.sum(1, keepdim=True)
    denom = count_seen.clamp_min(1.0).reshape(B, 1, -1, 1, 1) if linear_normalizer == "average" else C
    if parts != "local":
        out = out + lin_q_g.float() @ (kv_seen / denom)

    out = out.reshape(B, H, G * C, e)[:, :, :T].to(v.dtype)
    if not output_final_state:
        return out, None
    length = real.sum((1, 2, 3))                                               # (B,) real tokens
    done = length // C                                                         # finished chunks per row
    state = SoftmaxChunkState(kv=pick_rows(kv_before, done), count=pick_rows(count_before, done, 1),
                              k=open_chunk(kg, length, C), lin_k=open_chunk(lin_k_g, length, C),
                              v=open_chunk(vg, length, C))
    return out, state


def mixed_chunk_softmax_attention_step(q: Tensor, k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor,
                                       state: SoftmaxChunkState, pos: Tensor, *, scale: Optional[float] = None,
                                       linear_normalizer: str = "average", bias_row: Optional[Tensor] = None,
                                       parts: str = "both") -> tuple[Tensor, SoftmaxChunkState]:
    """One decoding step, one token per row: inputs (B, H, 1, s|e) at positions pos (B,). Updates `state` in place
    and returns (o (B, H, 1, e) in v's dtype, state). A completed chunk is folded into the running summary.
    bias_row (B, 1, 1, C): the bias of this query against each slot of its chunk (the parallel form's bias row)."""
    B, H, C, s = state.k.shape
    scale = s ** -0.5 if scale is None else scale
    slot = pos % C
    rows = torch.arange(B, device=q.device)
    state.k[rows, :, slot] = k[:, :, 0].to(state.k.dtype)
    state.lin_k[rows, :, slot] = lin_k[:, :, 0].to(state.lin_k.dtype)
    state.v[rows, :, slot] = v[:, :, 0].to(state.v.dtype)

    allowed = (torch.arange(C, device=q.device)[None, :] <= slot[:, None]).reshape(B, 1, 1, C)
    if parts == "global":
        out = q.new_zeros(B, H, 1, state.v.shape[-1], dtype=torch.float32)
    else:
        logits = (q.float() @ state.k.float().transpose(-1, -2)) * scale
        p = masked_softmax(logits if bias_row is None else logits + bias_row.float(), allowed)
        out = p @ state.v.float()
    if parts != "local":
        denom = state.count.clamp_min(1.0).reshape(B, 1, 1, 1) if linear_normalizer == "average" else C
        out = out + lin_q.float() @ (state.kv / denom)

    full = slot == C - 1
    if bool(full.any()):
        chunk_kv = state.lin_k.float().transpose(-1, -2) @ state.v.float()
        state.kv += chunk_kv * full.reshape(B, 1, 1, 1)
        state.count += full.float() * C
    return out.to(v.dtype), state
