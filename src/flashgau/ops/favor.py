"""FAVOR+ (Choromanski et al., ICLR 2021, "Rethinking Attention with Performers"): softmax attention estimated
with positive orthogonal random features, in linear time and memory.

The estimator. With x' = x * sqrt(scale) (scale = 1/sqrt(dh) by default, so q'.k' = q.k * scale) and m random
directions w_r (rows of `projection`), the positive random features

    phi(x)_r = exp(w_r . x' - |x'|^2 / 2) / sqrt(m)

satisfy E[phi(q) . phi(k)] = exp(q.k * scale) when each w_r ~ N(0, I). Softmax attention
o_i = sum_j exp(q_i.k_j * scale) v_j / sum_j exp(q_i.k_j * scale) is estimated by putting phi(q_i) . phi(k_j) in
place of the exponential; by associativity, o_i = phi(q_i) S / phi(q_i) . z with S = sum_j phi(k_j)^T v_j (m x dh)
and z = sum_j phi(k_j) (m): linear in T. Orthogonal directions (blocks of dh mutually orthogonal rows, each row
rescaled to a chi-distributed norm so it is marginally Gaussian) lower the variance (the paper's "+ORF").

Forms (one state type, `FavorState`; the contract of flashgau.ops):

- `favor_attention` (parallel: training and prefill) -> (o, state or None). Bidirectional: one S and z over all
  real keys. Causal, chunk-wise (chunks of C tokens):
    1. features of every query and key (B, H, T, m);
    2. inside a chunk: the masked C x C matrix phi(Q_g) phi(K_g)^T, times V_g (exact prefix sums within the chunk);
    3. across chunks: one summary phi(K_h)^T V_h (m x dh) and sum phi(K_h) per chunk, combined for chunk g over
       the chunks h < g by one (G x G) lower-triangular matrix product (an exclusive prefix sum);
    4. o = (intra + inter numerator) / (intra + inter denominator).
  Memory O(T m + T C + G m dh): never a per-token (B, H, T, m, dh) prefix-sum tensor.
- `favor_attention_step` (decoding one token) -> (o, state): the running sums S and z, updated and read; fixed
  size. It needs no position, so it takes none.

Numerical stability. phi(x) can overflow fp32 (the exponent reaches |w|^2 / 2, about dh / 2 and more). Every
exponent is shifted by a constant that cancels between numerator and denominator, and the sums are kept in fp32:
a query by the largest of its own m exponents (as the paper's reference code does); a key by the largest exponent
among the keys its query can see (bidirectional: all real keys, as the reference; causal: the running maximum up
to the query, so no future key can change a past output, not even through rounding or underflow). The decoding
state stores its sums at the scale of the running maximum (`FavorState.shift`) and rescales when it grows. The
shifts are detached: they cancel exactly, so gradients are exact. Unlike the reference code, no epsilon is added to
the features by default; a denominator of exactly 0 (no visible real key) gives an output of 0.

The reference's epsilon floor (`epsilon`, default 0; the reference code adds 1e-4). The reference computes its
features as (exp(a - shift) + eps) / sqrt(m), with shift a query's own maximum and the keys' maximum over the
whole sequence; the floor does not cancel, so the shift defines the model. flashgau's key shift for query i is
r_i, the running maximum of the keys it can see (all real keys when bidirectional, as the reference), so with a
floor query i weighs key j by (phi(q_i) + eps) . (exp(a(k_j) - r_i) + eps). The floor's part does not rescale when
r_i grows: it adds eps * sum_r(phi(q_i) + eps) * (sum of the visible values) to the numerator and the same times the
number of visible keys to the denominator; the decoding state keeps those two sums (`v_sum`, `count`), so the step
form stays exact, and an output still depends only on the keys its query sees. The shifts stay detached: with a
floor the gradient treats them as constants (as lucidrains' performer-pytorch does).

Precision: one policy, fp32. Inputs are cast to fp32 and the whole op (features, sums and every matmul) runs with
autocast off; the output is cast back to v's dtype.

Shapes: B batch, H heads, T tokens, G chunks, C chunk length, dh head width, m random features.
q, k, v: (B, H, T, dh); projection: (m, dh), shared by the heads (as in the reference implementation);
key_mask: (B, T) bool, True for real tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .autocast import autocast_off
from .chunks import sums_before, to_chunks
from .state import State, check_final_state

_NEG_INF = float("-inf")


@dataclass
class FavorState(State):
    """Decoding state of one FAVOR+ attention layer; its size does not depend on the position.

    kv:    (B, H, m, dh) fp32, sum over seen keys of exp(a(k_j) - shift) (x) v_j, a(k) the key's log-features.
    z:     (B, H, m) fp32, sum over seen keys of exp(a(k_j) - shift).
    shift: (B, H) fp32, the largest key log-feature seen so far (-inf before any key); the scale of kv and z.
    v_sum: (B, H, dh) fp32, sum over seen keys of v_j (what the epsilon floor adds; unscaled).
    count: (B,) fp32, number of keys seen.
    """

    kv: Tensor
    z: Tensor
    shift: Tensor
    v_sum: Tensor
    count: Tensor


def empty_favor_state(batch: int, heads: int, num_features: int, head_dim: int, *, device=None) -> FavorState:
    """The state before any token."""
    return FavorState(
        kv=torch.zeros(batch, heads, num_features, head_dim, device=device, dtype=torch.float32),
        z=torch.zeros(batch, heads, num_features, device=device, dtype=torch.float32),
        shift=torch.full((batch, heads), _NEG_INF, device=device, dtype=torch.float32),
        v_sum=torch.zeros(batch, heads, head_dim, device=device, dtype=torch.float32),
        count=torch.zeros(batch, device=device, dtype=torch.float32),
    )


def draw_orthogonal_features(num_features: int, head_dim: int, *, generator: Optional[torch.Generator] = None,
                             scaling: str = "chi", device=None, dtype=torch.float32) -> Tensor:
    """Draw an (m, dh) matrix of random directions for FAVOR+: blocks of dh mutually orthogonal rows.

    Each block is the orthogonal factor of a dh x dh Gaussian matrix (sign-corrected, so it is Haar distributed);
    the last block is cut to the rows still needed. scaling "chi": each row is rescaled to the norm of an
    independent dh-dimensional Gaussian vector, so every row is marginally N(0, I) and the estimator is unbiased
    (the reference's default, scaling=0); "sqrt": every row has norm sqrt(dh) (the reference's scaling=1).
    Randomness comes only from `generator` (a CPU generator; the draw happens on the CPU whatever the default
    device), so a seed fixes the matrix.
    """
    if num_features < 1 or head_dim < 1:
        raise ValueError(f"num_features and head_dim must be >= 1, got {num_features} and {head_dim}")
    if scaling not in ("chi", "sqrt"):
        raise ValueError(f"scaling must be 'chi' or 'sqrt', got {scaling!r}")
    blocks = []
    for _ in range(-(-num_features // head_dim)):
        gaussian = torch.randn(head_dim, head_dim, generator=generator, dtype=torch.float64, device="cpu")
        q, r = torch.linalg.qr(gaussian)
        q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones((), dtype=q.dtype,
                                                                                      device="cpu"))[None, :]
        blocks.append(q.T)                                                   # rows orthonormal
    directions = torch.cat(blocks, dim=0)[:num_features]
    if scaling == "chi":
        norms = torch.randn(num_features, head_dim, generator=generator, dtype=torch.float64,
                            device="cpu").norm(dim=1)
    else:
        norms = torch.full((num_features,), math.sqrt(head_dim), dtype=torch.float64, device="cpu")
    return (directions * norms[:, None]).to(device=device, dtype=dtype)


def favor_logits(x: Tensor, projection: Tensor, *, scale: Optional[float] = None) -> Tensor:
    """Log of the positive random features, fp32: a(x)_r = w_r . x' - |x'|^2 / 2 - log(m) / 2, x' = x sqrt(scale).

    exp(a(x)) are the unbiased FAVOR+ features: E[exp(a(q)) . exp(a(k))] = exp(q.k * scale).
    x: (..., dh); projection: (m, dh). Returns (..., m).
    """
    dh = x.shape[-1]
    m = projection.shape[0]
    if projection.shape[-1] != dh:
        raise ValueError(f"projection has width {projection.shape[-1]}, inputs have width {dh}")
    scale = dh ** -0.5 if scale is None else scale
    xs = x.float() * math.sqrt(scale)
    return xs @ projection.float().T - 0.5 * xs.square().sum(-1, keepdim=True) - 0.5 * math.log(m)


def favor_features(x: Tensor, projection: Tensor, *, scale: Optional[float] = None) -> Tensor:
    """The raw (unstabilised) positive random features exp(a(x)), fp32. For tests and analysis: may overflow."""
    return favor_logits(x, projection, scale=scale).exp()


def _query_features(aq: Tensor) -> Tensor:
    """exp(a(q) - max_r a(q)_r): the query's features up to a per-query factor that cancels."""
    return (aq - aq.detach().amax(-1, keepdim=True)).exp()


def _safe_divide(num: Tensor, den: Tensor) -> Tensor:
    return num / torch.where(den > 0, den, torch.ones_like(den))[..., None]


def favor_attention(q: Tensor, k: Tensor, v: Tensor, projection: Tensor, *, causal: bool,
                    key_mask: Optional[Tensor] = None, chunk_size: int = 64, scale: Optional[float] = None,
                    epsilon: float = 0.0, output_final_state: bool = False) -> tuple[Tensor, Optional[FavorState]]:
    """Parallel FAVOR+ attention. Returns (o (B, H, T, dh) in v's dtype, final_state): final_state is None unless
    output_final_state (causal only), then the state after each row's real tokens (key_mask must then be a right
    padding: real tokens first), ready for `favor_attention_step` to continue from. epsilon: the feature floor
    (module docstring; 0 = none).
    """
    check_final_state(causal, output_final_state)
    with autocast_off(q.device):
        out, state = _favor_attention(q, k, v, projection, causal, key_mask, chunk_size, scale, epsilon,
                                      output_final_state)
    return out.to(v.dtype), state


def _favor_attention(q, k, v, projection, causal, key_mask, chunk_size, scale, epsilon, output_final_state):
    B, H, T, _ = q.shape
    km = torch.ones(B, T, dtype=torch.bool, device=q.device) if key_mask is None else key_mask.bool()
    aq = favor_logits(q, projection, scale=scale)                       # (B, H, T, m)
    ak = favor_logits(k, projection, scale=scale)
    ak = ak.masked_fill(~km[:, None, :, None], _NEG_INF)                # padded keys: features exactly 0
    real = km[:, None, :, None].float()                                 # (B, 1, T, 1)
    vf = v.float() * real                                               # padded keys: no value for the floor
    phq = _query_features(aq) + epsilon
    if causal:
        out = _causal_chunked(phq, ak, vf, real, chunk_size, epsilon)
    else:
        shift = ak.detach().amax(dim=(-1, -2))                          # (B, H): largest real key exponent
        phk = (ak - _finite_or_zero(shift)[..., None, None]).exp() + epsilon * real
        num = phq @ (phk.transpose(-1, -2) @ vf)
        den = phq @ phk.sum(-2)[..., None]
        out = _safe_divide(num, den[..., 0])
    if not output_final_state:
        return out, None
    shift = ak.detach().amax(dim=(-1, -2))
    phk = (ak - _finite_or_zero(shift)[..., None, None]).exp()
    return out, FavorState(kv=phk.transpose(-1, -2) @ vf, z=phk.sum(-2), shift=shift, v_sum=vf.sum(-2),
                           count=km.sum(1).float())


def _finite_or_zero(x: Tensor) -> Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _causal_chunked(phq: Tensor, ak: Tensor, v: Tensor, real: Tensor, C: int, epsilon: float) -> Tensor:
    """Causal linear attention, chunk by chunk. phq (B, H, T, m) query features (floor included); ak (B, H, T, m)
    key log-features (-inf for padded keys); v (B, H, T, dh) fp32, 0 for padded keys; real (B, 1, T, 1) 1 for real
    keys. Returns (B, H, T, dh) fp32."""
    B, H, T, m = phq.shape
    dh = v.shape[-1]
    phq, ak, v = to_chunks(phq, C), to_chunks(ak, C, value=_NEG_INF), to_chunks(v, C)   # (B, H, G, C, .)
    real = to_chunks(real, C)[..., 0]                                   # (B, 1, G, C)
    G = phq.shape[2]

    # Shifts (all detached; they cancel between numerator and denominator):
    #   c_j     the largest log-feature of key j;             c_h = max_j in h c_j  (chunk h)
    #   R_g     max over chunks h < g of c_h;                 r_i = max(R_g, c_j for j <= i in i's chunk)
    # Key j contributes exp(a(k_j) - r_i) to query i: every factor below is <= 1, and r_i depends on keys <= i.
    ck = ak.detach().amax(-1)                                           # (B, H, G, C)
    c_chunk = ck.amax(-1)                                               # (B, H, G)
    r_prev = torch.cat([c_chunk.new_full((B, H, 1), _NEG_INF), c_chunk.cummax(-1).values[..., :-1]], dim=-1)
    r = torch.maximum(r_prev[..., None], ck.cummax(-1).values)         # (B, H, G, C)
    phk = (ak - _finite_or_zero(ck)[..., None]).exp()                   # (B, H, G, C, m), max feature 1

    # 2. intra-chunk: weights phq_i . phk_j * exp(c_j - r_i) for j <= i
    tril = torch.ones(C, C, dtype=torch.bool, device=phq.device).tril()
    log_rescale = (ck[..., None, :] - _finite_or_zero(r)[..., :, None]).masked_fill(~tril, _NEG_INF)
    weights = (phq @ phk.transpose(-1, -2)) * log_rescale.exp()        # (B, H, G, C, C)
    if epsilon:                                                         # the floor: eps * sum(phq_i) per real j <= i
        weights = weights + epsilon * phq.sum(-1, keepdim=True) * (tril & real[..., None, :].bool())
    num = weights @ v
    den = weights.sum(-1)

    # 3. inter-chunk: per-chunk summaries at scale c_h, combined at scale R_g over h < g, read at scale r_i
    own = (ck - _finite_or_zero(c_chunk)[..., None]).exp()              # exp(c_j - c_h) <= 1, 0 for padded keys
    phk_own = phk * own[..., None]
    kv = phk_own.transpose(-1, -2) @ v                                  # (B, H, G, m, dh)
    ksum = phk_own.sum(-2)                                              # (B, H, G, m)
    earlier = torch.ones(G, G, dtype=torch.bool, device=phq.device).tril(-1)   # [g, h]: h < g
    log_w = (c_chunk[..., None, :] - _finite_or_zero(r_prev)[..., :, None]).masked_fill(~earlier, _NEG_INF)
    w = log_w.exp()                                                     # (B, H, G, G), 0 where h >= g
    kv_seen = torch.einsum("bhgk,bhkmd->bhgmd", w, kv)                   # (B, H, G, m, dh)
    ksum_seen = torch.einsum("bhgk,bhkm->bhgm", w, ksum)                 # (B, H, G, m)
    read = (r_prev[..., None] - _finite_or_zero(r)).exp()               # exp(R_g - r_i) <= 1, 0 when R_g = -inf
    num = num + read[..., None] * (phq @ kv_seen)
    den = den + read * (phq @ ksum_seen[..., None])[..., 0]
    if epsilon:                                                         # the floor over the earlier chunks' keys
        v_before = sums_before(v.sum(-2), 2)[:, :, :-1]                 # (B, H, G, dh)
        n_before = sums_before(real.sum(-1), 2)[:, :, :-1]              # (B, 1, G)
        floor = epsilon * phq.sum(-1)                                   # (B, H, G, C)
        num = num + floor[..., None] * v_before[:, :, :, None]
        den = den + floor * n_before[..., None]

    out = _safe_divide(num, den)
    return out.reshape(B, H, G * C, dh)[:, :, :T]


def favor_attention_step(q: Tensor, k: Tensor, v: Tensor, projection: Tensor, state: FavorState, *,
                         scale: Optional[float] = None, epsilon: float = 0.0) -> tuple[Tensor, FavorState]:
    """One decoding step, one token per row: q, k, v (B, H, 1, dh). The token attends to itself and every earlier
    token. Updates `state` in place and returns (o (B, H, 1, dh) in v's dtype, state)."""
    with autocast_off(q.device):
        aq = favor_logits(q, projection, scale=scale)                   # (B, H, 1, m)
        ak = favor_logits(k, projection, scale=scale)
        vf = v.float()
        c_new = ak.amax(-1)[..., 0]                                     # (B, H)
        shift = torch.maximum(state.shift, c_new)
        decay = (state.shift - shift).exp()                             # 0 for an empty state
        phk = (ak - shift[..., None, None]).exp()                       # (B, H, 1, m)
        state.kv.mul_(decay[..., None, None]).add_(phk.transpose(-1, -2) @ vf)
        state.z.mul_(decay[..., None]).add_(phk[:, :, 0])
        state.shift.copy_(shift)
        state.v_sum.add_(vf[:, :, 0])
        state.count.add_(1.0)
        phq = _query_features(aq) + epsilon
        num = phq @ state.kv
        den = (phq[:, :, 0] * state.z).sum(-1)[..., None]
        if epsilon:
            floor = epsilon * phq.sum(-1)                               # (B, H, 1)
            num = num + floor[..., None] * state.v_sum[:, :, None]
            den = den + floor * state.count[:, None, None]
        return _safe_divide(num, den).to(v.dtype), state
