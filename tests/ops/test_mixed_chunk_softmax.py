"""MC-TFM++'s mixed chunk attention (softmax inside chunks, FLASH's linear part across chunks) against its dense
reference, and its step form against its parallel form."""

import pytest
import torch

from flashgau.ops.mixed_chunk import mixed_chunk_attention
from flashgau.ops.mixed_chunk_softmax import (
    SoftmaxChunkState,
    empty_softmax_chunk_state,
    mixed_chunk_softmax_attention,
    mixed_chunk_softmax_attention_step,
)
from flashgau.ops.reference.mixed_chunk_softmax import mixed_chunk_softmax_attention_reference
from op_helpers import assert_forward_backward_close, random_right_padding, with_inputs

TOL = dict(atol=2e-5, rtol=2e-4)


def _fast(*xs, **kw):
    return mixed_chunk_softmax_attention(*xs, **kw)[0]


def _inputs(B=2, H=3, T=11, s=8, e=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, lin_q, lin_k = (torch.randn(B, H, T, s, generator=g) for _ in range(4))
    v = torch.randn(B, H, T, e, generator=g)
    return q, k, lin_q, lin_k, v


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T,chunk", [(1, 4), (5, 4), (8, 4), (19, 4), (33, 8), (7, 1)])
def test_forward_backward_match_reference(causal, T, chunk):
    options = dict(chunk_size=chunk, causal=causal)
    assert_forward_backward_close(lambda *a: _fast(*a, **options),
                                  lambda *a: mixed_chunk_softmax_attention_reference(*a, **options), _inputs(T=T),
                                  **TOL)


@pytest.mark.parametrize("causal", [True, False])
def test_key_mask_matches_reference(causal):
    B, T = 3, 21
    xs = _inputs(B=B, T=T)
    if causal:
        mask = random_right_padding(B, T)
    else:
        mask = torch.rand(B, T, generator=torch.Generator().manual_seed(4)) > 0.4
        mask[:, 0] = True
    out = _fast(*xs, chunk_size=4, causal=causal, key_mask=mask)
    ref = mixed_chunk_softmax_attention_reference(*xs, chunk_size=4, causal=causal, key_mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], **TOL)
    changed = [x.clone() for x in xs]
    for x in changed:
        x[~mask[:, None, :, None].expand_as(x)] = 7.0
    out2 = _fast(*changed, chunk_size=4, causal=causal, key_mask=mask)
    torch.testing.assert_close(out2[real], out[real], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_global_part_is_flash_linear_part(causal):
    """The linear part is FLASH's, term for term: compare with flashgau.ops.mixed_chunk with its local part off."""
    q, k, lin_q, lin_k, v = _inputs(T=18)
    mask = random_right_padding(2, 18)
    zero = torch.zeros_like(lin_q)
    ours = (_fast(q, k, lin_q, lin_k, v, chunk_size=4, causal=causal, key_mask=mask)
            - _fast(q, k, zero, zero, v, chunk_size=4, causal=causal, key_mask=mask))
    flash = mixed_chunk_attention(zero, zero, lin_q, lin_k, v, torch.full((4, 4), -1.0), chunk_size=4, causal=causal,
                                  key_mask=mask)[0]                      # relu(0 - 1)^2 = 0: local part off
    real = mask[:, None, :, None].expand_as(ours)
    torch.testing.assert_close(ours[real], flash[real], **TOL)


def test_one_chunk_is_softmax_attention():
    q, k, lin_q, lin_k, v = _inputs(T=6)
    out = _fast(q, k, lin_q, lin_k, v, chunk_size=8, causal=True)
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, exact, **TOL)


def test_causal_outputs_ignore_the_future():
    T, t0 = 26, 9
    xs = _inputs(T=T)
    out = _fast(*xs, chunk_size=4, causal=True)
    changed = [x.clone() for x in xs]
    for x in changed:
        x[:, :, t0:] = torch.randn_like(x[:, :, t0:]) * 5
    out2 = _fast(*changed, chunk_size=4, causal=True)
    torch.testing.assert_close(out2[:, :, :t0], out[:, :, :t0], atol=1e-6, rtol=1e-6)


def test_step_equals_parallel_with_fixed_size_state():
    B, H, T, s, e, C = 2, 3, 17, 8, 6, 4
    xs = _inputs(B=B, H=H, T=T, s=s, e=e)
    full = _fast(*xs, chunk_size=C, causal=True)
    state = empty_softmax_chunk_state(B, H, C, s, e)
    size = state.nbytes()
    outs = []
    for t in range(T):
        o, state = mixed_chunk_softmax_attention_step(*(x[:, :, t:t + 1] for x in xs), state,
                                                      torch.full((B,), t))
        outs.append(o)
        assert state.nbytes() == size
    torch.testing.assert_close(torch.cat(outs, 2), full, **TOL)
    assert isinstance(state, SoftmaxChunkState)


def test_prefill_state_then_steps_equal_parallel():
    B, H, T, extra, C = 3, 2, 13, 6, 4
    xs = _inputs(B=B, H=H, T=T + extra)
    mask = random_right_padding(B, T)
    mask[1] = torch.arange(T) < 8                                         # ends on a chunk boundary
    lengths = mask.sum(1)
    _, state = mixed_chunk_softmax_attention(*(x[:, :, :T] for x in xs), chunk_size=C, causal=True,
                                             key_mask=mask, output_final_state=True)
    idx = lengths[:, None] + torch.arange(extra)[None, :]
    for j in range(extra):
        pick = lambda x: x.gather(2, idx[:, j].reshape(B, 1, 1, 1).expand(B, H, 1, x.shape[-1]))
        o, state = mixed_chunk_softmax_attention_step(*(pick(x) for x in xs), state, idx[:, j])
        for b in range(B):
            n = int(idx[b, j]) + 1
            row = _fast(*(x[b:b + 1, :, :n] for x in xs), chunk_size=C, causal=True)
            torch.testing.assert_close(o[b:b + 1], row[:, :, -1:], **TOL)


@pytest.mark.parametrize("causal", [True, False])
def test_sum_normaliser_matches_reference_and_flash_and_decodes(causal):
    """linear_normalizer="sum" (the visible summaries / C): fast == dense reference, the global part is FLASH's
    with the same option, and (causal) prefill + steps equal the parallel form."""
    B, T, C = 2, 18, 4
    xs = _inputs(B=B, T=T)
    mask = random_right_padding(B, T)
    kw = dict(chunk_size=C, causal=causal, key_mask=mask, linear_normalizer="sum")
    out = _fast(*xs, **kw)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], mixed_chunk_softmax_attention_reference(*xs, **kw)[real], **TOL)
    q, k, lin_q, lin_k, v = xs
    zero = torch.zeros_like(lin_q)
    ours = out - _fast(q, k, zero, zero, v, **kw)
    flash = mixed_chunk_attention(zero, zero, lin_q, lin_k, v, torch.full((C, C), -1.0), **kw)[0]
    torch.testing.assert_close(ours[real], flash[real], **TOL)
    if causal:
        full = _fast(*xs, chunk_size=C, causal=True, linear_normalizer="sum")
        _, state = mixed_chunk_softmax_attention(*(x[:, :, :5] for x in xs), chunk_size=C, causal=True,
                                                 linear_normalizer="sum", output_final_state=True)
        for t in range(5, T):
            o, state = mixed_chunk_softmax_attention_step(*(x[:, :, t:t + 1] for x in xs), state,
                                                          torch.full((B,), t), linear_normalizer="sum")
            torch.testing.assert_close(o[:, :, 0], full[:, :, t], **TOL)


@pytest.mark.parametrize("parts", ["both", "local", "global"])
@pytest.mark.parametrize("causal", [True, False])
def test_bias_and_parts_match_reference_and_decode(causal, parts):
    """FLASH with a softmax kernel: a (C, C) bias added to the local logits, and one part alone; fast == dense
    reference (forward and backward, the bias's gradient included), and (causal) prefill + steps with the bias row
    equal the parallel form."""
    B, T, C = 2, 14, 4
    xs = _inputs(B=B, T=T)
    bias = torch.randn(C, C, generator=torch.Generator().manual_seed(5))
    slot = torch.arange(T) % C
    kw = dict(chunk_size=C, causal=causal, parts=parts)
    inputs = [*xs, bias]
    used = {"both": range(6), "local": [0, 1, 4, 5], "global": [2, 3, 4]}[parts]     # the inputs the part reads
    assert_forward_backward_close(
        with_inputs(lambda *a: _fast(*a[:5], bias=a[5], **kw), inputs, used),
        with_inputs(lambda *a: mixed_chunk_softmax_attention_reference(*a[:5], bias=a[5][slot[:, None], slot[None, :]],
                                                                       **kw), inputs, used),
        [inputs[i] for i in used], **TOL)
    if not causal:
        return
    full = _fast(*xs, bias=bias, **kw)
    _, state = mixed_chunk_softmax_attention(*(x[:, :, :5] for x in xs), bias=bias, output_final_state=True, **kw)
    for t in range(5, T):
        pos = torch.full((B,), t)
        o, state = mixed_chunk_softmax_attention_step(*(x[:, :, t:t + 1] for x in xs), state, pos,
                                                      bias_row=bias[t % C].expand(B, 1, 1, C), parts=parts)
        torch.testing.assert_close(o, full[:, :, t:t + 1], **TOL)
