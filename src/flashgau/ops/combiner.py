"""Combiner attention (Ren et al., NeurIPS 2021, "Combiner: Full Attention Transformer with Sparse Computation
Cost"), the Combiner-Fixed factorisation: every query attends to every visible key, directly inside its own
chunk and through one summary per other chunk.

Combiner reads attention as a conditional expectation, o_i = E_{p(j|i)}[v_j], and factorises p(j|i). The sequence is
cut into chunks of C tokens. Query i in chunk g:

- direct part (the support Omega_i^0): keys j of chunk g (j <= i when causal), with logit q_i.k_j * scale;
- summarised part: every other visible chunk r (r < g when causal, r != g when bidirectional) is one "abstraction"
  with logit q_i.kbar_r * scale and value vbar_r = sum_{j in r} q(j|r) v_j, where
      kbar_r = max over j in r of k_j                (elementwise max-pooling of the chunk's keys)
      q(j|r) = softmax over j in r of qbar_r.k_j * scale, qbar_r = max over j in r of q_j (max-pooled queries);
- one softmax over the direct logits and the abstraction logits together; the output is
      o_i = sum_{j direct} p_ij v_j + sum_r p_ir vbar_r,
  i.e. key j in chunk r gets weight p(r|i) q(j|r) > 0: full attention, every visible key reaches every query.

This is the paper's Combiner-Fixed (the "sqrt_fixed_full" / `_SelfAttSqrtn` layer of the authors' code, with max
pooling, its default). Why this variant for flashgau's baseline row:

- FLASH's own account of Combiner (reference §3.4) is "an O(d) summary per chunk", which is exactly Combiner-Fixed:
  one (kbar, vbar) pair per chunk. Combiner-Axial keeps C summaries per chunk (one per column), and
  Combiner-Mixture mixes two overlapping axial partitions (five logit groups).
- It chunks the sequence like FLASH, with the same C (the config's chunk_size): the comparison FLASH vs Combiner
  then differs only in how distant chunks are summarised (s x e linear-attention state vs one softmax abstraction).
- Its causal form has a clean decoding state: the open chunk's keys and values plus one (kbar, vbar) per finished
  chunk, growing by 2 dh per C tokens (Axial's state would grow as fast as a full KV cache).
The variant FLASH's authors used is not confirmed by the paper text (reference §6); see docs/baselines.md.

Deviations from the authors' code: any T (the last chunk is padded and padded keys masked; their code needs T a
multiple of C); key padding masks (padded tokens join no summary, direct attention or pooled query); the
bidirectional form leaves a query's own chunk out of the abstractions (its keys are already attended directly: the
regions then partition the sequence, as in the paper's formulation, where their TF code would count them twice).

Cost: O(T (C + G) dh) time, O(T (C + G)) memory, G = ceil(T / C); O(T^1.5) at C = sqrt(T).

Summary inputs (`summary_q`, `summary_k`, optional): the queries and keys the chunk summaries are pooled from and
read with: kbar_r, qbar_r and q(j|r) use summary_k, summary_q, and the abstraction logit of query i is
summary_q_i.kbar_r. The model passes the un-rotated q and k there (ModelConfig.combiner_pooling="unrotated"): max-
pooling RoPE-rotated keys mixes the positions of the chunk's keys into kbar, while the authors' model has no RoPE;
the direct part keeps the rotated q, k. Default: the same q and k as the direct part.

Forms (one state type, `CombinerState`; the contract of flashgau.ops): `combiner_attention` (parallel; training and
prefill) -> (o, state or None) and `combiner_attention_step` (decoding one token) -> (o, state). Logits, softmax and
summaries are computed in fp32.

Shapes: B batch, H heads, T tokens, G chunks, C chunk length, dh head width. q, k: (B, H, T, dh); v: (B, H, T, dv);
key_mask: (B, T) bool, True for real tokens (a token's mask also excludes it from its chunk's pooled query).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .chunks import chunk_mask, masked_softmax, open_chunk, to_chunks
from .state import State, check_final_state

_NEG_INF = float("-inf")


@dataclass
class CombinerState(State):
    """Decoding state of one causal Combiner attention layer.

    k, v:   (B, H, C, dh|dv), the open chunk's keys and values; slot = position % C.
    q_max:  (B, H, dh) fp32, running elementwise max of the open chunk's (summary) queries (-inf when it is empty).
    sum_k:  (B, H, N, dh) fp32, kbar of each finished chunk (N >= finished chunks, see reserve); a row at position
            pos has pos // C finished chunks.
    sum_v:  (B, H, N, dv) fp32, vbar of each finished chunk.
    """

    k: Tensor
    v: Tensor
    q_max: Tensor
    sum_k: Tensor
    sum_v: Tensor

    @property
    def chunk_size(self) -> int:
        return self.k.shape[2]

    @property
    def pooled_keys(self) -> Tensor:
        """The keys the open chunk's summary is pooled from: its keys k."""
        return self.k

    def reserve(self, positions: int, *, exact: bool = True) -> None:
        """Grow the summary axis so that the summaries of `positions` tokens fit (one per C tokens): to exactly that
        many, or (exact=False, growth one token at a time) to at least twice the current number."""
        count = -(-positions // self.chunk_size)
        have = self.sum_k.shape[2]
        if count <= have:
            return
        grow = (count if exact else max(count, 2 * have, 4)) - have
        self.sum_k = torch.cat([self.sum_k, self.sum_k.new_zeros(*self.sum_k.shape[:2], grow,
                                                                  self.sum_k.shape[-1])], dim=2)
        self.sum_v = torch.cat([self.sum_v, self.sum_v.new_zeros(*self.sum_v.shape[:2], grow,
                                                                  self.sum_v.shape[-1])], dim=2)


@dataclass
class CombinerPoolState(CombinerState):
    """The state of Combiner attention whose summaries are pooled from separate keys (summary_q, summary_k given).

    pool_k: (B, H, C, dh), the open chunk's summary keys; slot = position % C.
    """

    pool_k: Tensor

    @property
    def pooled_keys(self) -> Tensor:
        return self.pool_k


def empty_combiner_state(batch: int, heads: int, chunk_size: int, head_dim: int, v_dim: Optional[int] = None, *,
                         device=None, dtype=torch.float32, summary_keys: bool = False) -> CombinerState:
    """The state before any token (summary_keys: a CombinerPoolState, for steps that pass summary_q, summary_k)."""
    v_dim = head_dim if v_dim is None else v_dim
    extra = {}
    if summary_keys:
        extra["pool_k"] = torch.zeros(batch, heads, chunk_size, head_dim, device=device, dtype=dtype)
    return (CombinerPoolState if summary_keys else CombinerState)(
        **extra,
        k=torch.zeros(batch, heads, chunk_size, head_dim, device=device, dtype=dtype),
        v=torch.zeros(batch, heads, chunk_size, v_dim, device=device, dtype=dtype),
        q_max=torch.full((batch, heads, head_dim), _NEG_INF, device=device, dtype=torch.float32),
        sum_k=torch.zeros(batch, heads, 0, head_dim, device=device, dtype=torch.float32),
        sum_v=torch.zeros(batch, heads, 0, v_dim, device=device, dtype=torch.float32),
    )


def _pool_max(x: Tensor, real: Tensor) -> Tensor:
    """Elementwise max over axis -2 of the rows where `real` (broadcastable to x[..., 0]); -inf if none."""
    return x.masked_fill(~real[..., None], _NEG_INF).amax(-2)


def chunk_summaries(q: Tensor, k: Tensor, v: Tensor, real: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Abstractions of chunks: q, k (..., C, dh), v (..., C, dv) fp32, real (..., C) bool.
    Returns kbar (..., dh) and vbar (..., dv); a chunk with no real token gives zeros (it is never attended)."""
    any_real = real.any(-1, keepdim=True)
    q_bar = torch.where(any_real, _pool_max(q, real), torch.zeros(()))
    k_bar = torch.where(any_real, _pool_max(k, real), torch.zeros(()))
    weights = masked_softmax((k @ q_bar[..., None])[..., 0] * scale, real)       # q(j|r): (..., C)
    v_bar = (weights[..., None, :] @ v)[..., 0, :]
    return k_bar, v_bar


def combiner_attention(q: Tensor, k: Tensor, v: Tensor, *, chunk_size: int, causal: bool,
                       key_mask: Optional[Tensor] = None, scale: Optional[float] = None,
                       summary_q: Optional[Tensor] = None, summary_k: Optional[Tensor] = None,
                       output_final_state: bool = False) -> tuple[Tensor, Optional[CombinerState]]:
    """Parallel Combiner-Fixed attention. Returns (o (B, H, T, dv) in v's dtype, final_state): final_state is None
    unless output_final_state (causal only), then the state after each row's real tokens (key_mask must be a right
    padding), ready for `combiner_attention_step` to continue from. summary_q, summary_k (B, H, T, dh), both or
    neither: what the summaries are pooled from and read with (module docstring).
    """
    check_final_state(causal, output_final_state)
    separate = _check_summary_inputs(summary_q, summary_k)
    B, H, T, dh = q.shape
    C = chunk_size
    scale = dh ** -0.5 if scale is None else scale
    qg, kg, vg = (to_chunks(t.float(), C) for t in (q, k, v))                # (B, H, G, C, dh|dv)
    sqg, skg = (to_chunks(t.float(), C) for t in (summary_q, summary_k)) if separate else (qg, kg)
    G = qg.shape[2]
    real = chunk_mask(key_mask, B, T, C, q.device)[:, None]                    # (B, 1, G, C)

    k_bar, v_bar = chunk_summaries(sqg, skg, vg, real, scale)                  # (B, H, G, dh|dv)
    chunk_real = real.any(-1)                                                  # (B, 1, G)

    local = (qg @ kg.transpose(-1, -2)) * scale                               # (B, H, G, C, C)
    local_ok = real[..., None, :]
    if causal:
        local_ok = local_ok & torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    region = torch.einsum("bhgcd,bhrd->bhgcr", sqg, k_bar) * scale             # (B, H, G, C, G)
    g_idx = torch.arange(G, device=q.device)
    other = (g_idx[None, :] < g_idx[:, None]) if causal else (g_idx[None, :] != g_idx[:, None])   # [g, r]
    region_ok = chunk_real[:, :, None, None, :] & other[None, None, :, None, :]

    p = masked_softmax(torch.cat([local, region], -1),
                       torch.cat([local_ok.expand(B, 1, G, C, C), region_ok.expand(B, 1, G, C, G)], -1))
    out = p[..., :C] @ vg + torch.einsum("bhgcr,bhrd->bhgcd", p[..., C:], v_bar)
    out = out.reshape(B, H, G * C, -1)[:, :, :T].to(v.dtype)
    if not output_final_state:
        return out, None

    length = real.sum((1, 2, 3))                                              # (B,) real tokens per row
    extra = {"pool_k": open_chunk(skg, length, C).to(k.dtype)} if separate else {}
    state = (CombinerPoolState if separate else CombinerState)(
        **extra, k=open_chunk(kg, length, C).to(k.dtype), v=open_chunk(vg, length, C).to(v.dtype),
        q_max=open_chunk(_pool_max(sqg, real), length, C, fill=_NEG_INF), sum_k=k_bar.contiguous(),
        sum_v=v_bar.contiguous())
    return out, state


def _check_summary_inputs(summary_q: Optional[Tensor], summary_k: Optional[Tensor]) -> bool:
    """Whether separate summary inputs are given (both or neither: a ValueError otherwise)."""
    if (summary_q is None) != (summary_k is None):
        raise ValueError("give both summary_q and summary_k, or neither")
    return summary_q is not None


def combiner_attention_step(q: Tensor, k: Tensor, v: Tensor, state: CombinerState, pos: Tensor, *,
                            scale: Optional[float] = None, summary_q: Optional[Tensor] = None,
                            summary_k: Optional[Tensor] = None) -> tuple[Tensor, CombinerState]:
    """One decoding step, one token per row: q, k (B, H, 1, dh), v (B, H, 1, dv), at positions pos (B,); summary_q,
    summary_k (B, H, 1, dh) when the state was made with them.

    Updates `state` in place and returns (o (B, H, 1, dv) in v's dtype, state). When the token completes its chunk,
    the chunk is folded into one (kbar, vbar) summary and the buffer starts over; the state must have room for that
    summary (`state.reserve(pos + 1)`)."""
    separate = _check_summary_inputs(summary_q, summary_k)
    if separate != isinstance(state, CombinerPoolState):
        raise ValueError("the state was made " + ("without" if separate else "with") + " summary inputs; step it "
                         "the same way")
    B, H, C, dh = state.k.shape
    scale = dh ** -0.5 if scale is None else scale
    slot = pos % C
    done = pos // C                                                           # finished chunks per row
    rows = torch.arange(B, device=q.device)
    state.k[rows, :, slot] = k[:, :, 0].to(state.k.dtype)
    state.v[rows, :, slot] = v[:, :, 0].to(state.v.dtype)
    if separate:
        state.pool_k[rows, :, slot] = summary_k[:, :, 0].to(state.pool_k.dtype)
    qf = q.float()
    sqf = summary_q.float() if separate else qf
    fresh = (slot == 0).reshape(B, 1, 1)
    state.q_max.copy_(torch.where(fresh, sqf[:, :, 0], torch.maximum(state.q_max, sqf[:, :, 0])))

    N = state.sum_k.shape[2]
    local = (qf @ state.k.float().transpose(-1, -2)) * scale                 # (B, H, 1, C)
    local_ok = (torch.arange(C, device=q.device)[None, :] <= slot[:, None]).reshape(B, 1, 1, C)
    region = (sqf @ state.sum_k.transpose(-1, -2)) * scale                   # (B, H, 1, N)
    region_ok = (torch.arange(N, device=q.device)[None, :] < done[:, None]).reshape(B, 1, 1, N)
    p = masked_softmax(torch.cat([local, region], -1), torch.cat([local_ok, region_ok], -1))
    out = p[..., :C] @ state.v.float() + p[..., C:] @ state.sum_v

    full = slot == C - 1
    if bool(full.any()):
        k_bar, v_bar = _fold(state, scale)
        idx = rows[full]
        state.sum_k[idx, :, done[idx]] = k_bar[idx]
        state.sum_v[idx, :, done[idx]] = v_bar[idx]
        state.q_max.masked_fill_(full.reshape(B, 1, 1), _NEG_INF)     # the next chunk starts empty
    return out.to(v.dtype), state


def _fold(state: CombinerState, scale: float) -> tuple[Tensor, Tensor]:
    """(kbar, vbar) of each row's complete open chunk: (B, H, dh), (B, H, dv)."""
    kf, vf = state.pooled_keys.float(), state.v.float()
    k_bar = kf.amax(-2)
    weights = torch.softmax((kf @ state.q_max[..., None])[..., 0] * scale, dim=-1)   # (B, H, C)
    v_bar = (weights[..., None, :] @ vf)[..., 0, :]
    return k_bar, v_bar
