"""Helpers shared by the tests of FLASH's mixed chunk attention and its first_to_all variant: random inputs, the
dense bias, the step inputs of one token, the paper's formula written out element by element, and the two variants
(op, step, empty state, state type, dense reference), so a property they share is tested on both.

The fast ops take a (C, C) in-chunk bias; the dense references take a (T, T) one. `dense_bias` tiles the chunk bias
onto the diagonal blocks (built from the same leaf, so bias gradients compare too); off-block entries are never used.
"""

from typing import Callable, NamedTuple

import torch

from flashgau.ops.mixed_chunk import FlashState, empty_flash_state, mixed_chunk_attention, mixed_chunk_attention_step
from flashgau.ops.mixed_chunk_first_to_all import (FlashFirstToAllState, empty_flash_first_to_all_state,
                                                   mixed_chunk_first_to_all_attention,
                                                   mixed_chunk_first_to_all_attention_step)
from flashgau.ops.reference.mixed_chunk import mixed_chunk_attention_reference
from flashgau.ops.reference.mixed_chunk_first_to_all import mixed_chunk_first_to_all_attention_reference

TOL = dict(atol=2e-5, rtol=2e-4)
NAMES = ["quad_q", "quad_k", "lin_q", "lin_k", "v", "bias"]


class Variant(NamedTuple):
    name: str
    op: Callable
    step: Callable
    empty_state: Callable
    state: type
    reference: Callable


PLAIN = Variant("plain", mixed_chunk_attention, mixed_chunk_attention_step, empty_flash_state, FlashState,
                mixed_chunk_attention_reference)
FIRST_TO_ALL = Variant("first-to-all", mixed_chunk_first_to_all_attention, mixed_chunk_first_to_all_attention_step,
                       empty_flash_first_to_all_state, FlashFirstToAllState,
                       mixed_chunk_first_to_all_attention_reference)
VARIANTS = [PLAIN, FIRST_TO_ALL]
VARIANT_IDS = [v.name for v in VARIANTS]


def make_inputs(B=2, H=1, T=11, s=8, e=6, C=4, seed=0, dtype=torch.float32):
    """[quad_q, quad_k, lin_q, lin_k, v, bias (C, C)]."""
    g = torch.Generator().manual_seed(seed)
    quad_q, quad_k, lin_q, lin_k = (torch.randn(B, H, T, s, generator=g) for _ in range(4))
    v = torch.randn(B, H, T, e, generator=g)
    bias = torch.randn(C, C, generator=g) * 0.5
    return [t.to(dtype) for t in (quad_q, quad_k, lin_q, lin_k, v, bias)]


def dense_bias(bias, T):
    C = bias.shape[0]
    slot = torch.arange(T) % C
    return bias[slot[:, None], slot[None, :]]


def fast_op(xs, C, causal, key_mask=None, variant=PLAIN, **options):
    """The fast op's output."""
    return variant.op(*xs, chunk_size=C, causal=causal, key_mask=key_mask, **options)[0]


def prefill(xs, C, key_mask=None, variant=PLAIN, **options):
    """(o, the state after each row's real tokens)."""
    return variant.op(*xs, chunk_size=C, causal=True, key_mask=key_mask, output_final_state=True, **options)


def dense_ref(xs, C, causal, key_mask=None, variant=PLAIN, **options):
    """The dense reference's output on the same inputs (the chunk bias spread over T x T)."""
    *qkv, bias = xs
    T = qkv[0].shape[-2]
    return variant.reference(*qkv, dense_bias(bias, T), chunk_size=C, causal=causal, key_mask=key_mask, **options)


def step_inputs(xs, pos, bias):
    """Token at per-row positions pos (B,) -> the step's inputs (B, H, 1, .) and its bias row (B, 1, 1, C)."""
    rows = torch.arange(pos.shape[0])
    token = [t[rows, :, pos][:, :, None] for t in xs[:5]]
    C = bias.shape[0]
    return token, bias[pos % C][:, None, None, :]


def paper_loop(quad_q, quad_k, lin_q, lin_k, v, bias, C, causal, first_to_all=False):
    """One row, one head, no padding: o_i = sum_{j in chunk(i), j<=i if causal} relu(quad_q_i.quad_k_j/C + b)^2 v_j
    + lin_q_i . (sum over visible chunks h of lin_k_h^T v_h) / (number of tokens in those chunks).
    first_to_all (flashgau's reading, docs/model_options.md): a query of chunk g >= 1 adds
    sum_{j in chunk 0} relu(quad_q_i.quad_k_j/C)^2 v_j (no bias), and its visible chunks lose chunk 0."""
    T = quad_q.shape[0]
    out = torch.zeros(T, v.shape[-1], dtype=torch.float64)
    for i in range(T):
        g = i // C
        for j in range(g * C, min((g + 1) * C, T)):
            if causal and j > i:
                continue
            w = max(float(quad_q[i] @ quad_k[j]) / C + float(bias[i % C, j % C]), 0.0) ** 2
            out[i] += w * v[j]
        if first_to_all and g >= 1:
            for j in range(C):
                out[i] += max(float(quad_q[i] @ quad_k[j]) / C, 0.0) ** 2 * v[j]
        keys = range(0, g * C) if causal else range(T)
        if first_to_all and g >= 1:
            keys = [j for j in keys if j >= C]
        if len(keys):
            S = sum(torch.outer(lin_k[j], v[j]) for j in keys)
            out[i] += (lin_q[i] @ S) / len(keys)
    return out
