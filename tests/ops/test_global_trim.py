"""The global_trim fast path (ops/global_trim.py) against the plain global part: the causal op with it on and off,
forward and every input's gradient, fp32 to rounding, bf16 loosely, gradcheck in fp64; and the chunk views it runs
its products on."""

import pytest
import torch

from flashgau.ops import fastpath, mixed_chunk_attention, mixed_chunk_first_to_all_attention
from flashgau.ops.global_trim import add_trimmed_global, chunk_batches, trimmed_summaries

from op_helpers import assert_forward_backward_close, random_right_padding

BF16 = dict(atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("rows,G,lo,hi", [(1, 5, 0, 4), (3, 2, 0, 1), (3, 2, 1, 2), (2, 6, 1, 6), (5, 3, 0, 2),
                                          (4, 1, 0, 0), (4, 1, 1, 1)])
def test_chunk_batches_cover_the_asked_chunks_once(rows, G, lo, hi):
    x = torch.zeros(rows * G, 2, 3)
    for view in chunk_batches(x, rows, lo, hi):
        assert view.dim() == 3
        view += 1
    want = torch.zeros(rows, G, 2, 3)
    want[:, lo:hi] = 1
    assert torch.equal(x.view(rows, G, 2, 3), want)


def test_trimmed_summaries_leave_the_last_chunk_of_each_row_zero():
    rows, G, C = 3, 4, 5
    lin_k, v = torch.randn(rows * G, C, 2), torch.randn(rows * G, C, 3)
    kv = trimmed_summaries(lin_k, v, rows).view(rows, G, 2, 3)
    full = (lin_k.transpose(1, 2) @ v).view(rows, G, 2, 3)
    torch.testing.assert_close(kv[:, :-1], full[:, :-1])
    assert not kv[:, -1].any()


def test_trimmed_global_adds_nothing_to_chunk_zero():
    rows, G, C = 2, 3, 4
    out, lin_q, kv = torch.randn(rows * G, C, 5), torch.randn(rows * G, C, 2), torch.randn(rows * G, 2, 5)
    got = add_trimmed_global(out.clone(), lin_q, kv, rows).view(rows, G, C, 5)
    want = torch.baddbmm(out, lin_q, kv).view(rows, G, C, 5)
    assert torch.equal(got[:, 0], out.view(rows, G, C, 5)[:, 0])
    torch.testing.assert_close(got[:, 1:], want[:, 1:])


def _inputs(B, T, s, e, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 1, T, w, generator=g).to(dtype) for w in (s, s, s, s, e)]


def _op(first_to_all, trimmed, **options):
    op = mixed_chunk_first_to_all_attention if first_to_all else mixed_chunk_attention

    def run(qq, qk, lq, lk, v, bias):
        with fastpath.plain() if not trimmed else fastpath.plain("lean_global"):
            o = op(qq, qk, lq, lk, v, bias, causal=True, **options)[0]
            return o if o.dtype == torch.float64 else o.float()
    return run


@pytest.mark.parametrize("dtype,tol", [(torch.float32, dict(atol=1e-6, rtol=1e-5)), (torch.bfloat16, BF16)])
@pytest.mark.parametrize("B,T,C,block", [(1, 40, 8, 4), (3, 16, 8, 4), (3, 40, 8, 2), (2, 37, 8, None),
                                         (4, 7, 8, 4), (2, 64, 16, 8)])
@pytest.mark.parametrize("first_to_all", [False, True])
def test_trimmed_global_part_matches_the_plain_one(B, T, C, block, first_to_all, dtype, tol):
    """Every chunk count (1, 2, several) and row count (1, several), the local strips (which compute the
    summaries) or the full square, right padding, the plain op and first-to-all."""
    inputs = [*_inputs(B, T, 4, 6, dtype), (torch.randn(C, C, generator=torch.Generator().manual_seed(1)) * 0.1)
              .to(dtype)]
    km = random_right_padding(B, T)
    options = dict(chunk_size=C, key_mask=km, local_block=block)
    assert_forward_backward_close(_op(first_to_all, True, **options), _op(first_to_all, False, **options), inputs,
                                  names=["quad_q", "quad_k", "lin_q", "lin_k", "v", "bias"],
                                  real=km[:, None, :, None], **tol)


@pytest.mark.parametrize("B,T,block", [(1, 12, 2), (2, 12, 2), (2, 9, None)])
def test_trimmed_global_part_gradcheck_fp64(B, T, block):
    inputs = [t.requires_grad_() for t in _inputs(B, T, 3, 4, torch.float64)]
    bias = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    fn = _op(False, True, chunk_size=4, local_block=block)
    assert torch.autograd.gradcheck(fn, [*inputs, bias])


def test_the_decoding_state_keeps_every_summary():
    """Asked for the final state, the op computes the last chunk's summary too: the state equals the plain op's."""
    B, T, C = 2, 40, 8
    inputs, bias = _inputs(B, T, 4, 6, torch.float32), torch.randn(C, C) * 0.1
    km = random_right_padding(B, T)
    args = dict(chunk_size=C, causal=True, key_mask=km, output_final_state=True, local_block=4)
    _, state = mixed_chunk_attention(*inputs, bias, **args)
    with fastpath.plain("global_trim"):
        _, want = mixed_chunk_attention(*inputs, bias, **args)
    for name in ("kv", "count", "quad_k", "lin_k", "v"):
        torch.testing.assert_close(getattr(state, name), getattr(want, name), msg=name)
