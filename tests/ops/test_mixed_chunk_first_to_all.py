"""The first_to_all variant of FLASH's mixed chunk attention (ops/mixed_chunk_first_to_all.py; flashgau's reading of
the paper's "first-to-all", docs/model_options.md): chunks >= 1 also attend exactly to chunk 0, which leaves their
global part; chunk 0 itself is unchanged. Against its dense reference, the written-out formula and the plain op (the
properties both variants share are tested on both in test_mixed_chunk.py)."""

import pytest
import torch

from flashgau.ops.mixed_chunk import mixed_chunk_attention_step
from flashgau.ops.mixed_chunk_first_to_all import (empty_flash_first_to_all_state,
                                                   mixed_chunk_first_to_all_attention_step)
from mixed_chunk_helpers import (FIRST_TO_ALL, NAMES, TOL, dense_ref, fast_op, make_inputs, paper_loop, prefill,
                                 step_inputs)
from op_helpers import assert_forward_backward_close, right_padding, with_inputs


@pytest.mark.parametrize("causal", [True, False])
def test_first_to_all_reference_and_fast_op_match_the_written_out_formula(causal):
    xs = make_inputs(B=1, T=14, C=4, dtype=torch.float64)
    want = paper_loop(*(t[0, 0] for t in xs[:5]), xs[5], 4, causal, first_to_all=True)
    for form in (dense_ref, fast_op):
        torch.testing.assert_close(form(xs, 4, causal, variant=FIRST_TO_ALL)[0, 0], want, atol=1e-10, rtol=1e-10)



FIRST_SHAPES = [(3, 4), (4, 4), (5, 4), (11, 4), (9, 8), (37, 4), (6, 1), (260, 128)]   # T < C, T = C, partial
# chunks, C = 1, and C = 128, whose causal local part runs in strips (ops/local_blocks.py)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,C", FIRST_SHAPES, ids=[f"T{t}-C{c}" for t, c in FIRST_SHAPES])
def test_first_to_all_matches_reference_with_padding(causal, T, C):
    """fast == dense reference, outputs and every gradient, with rows of different lengths (right padding; one row
    shorter than the first chunk)."""
    xs = make_inputs(B=3, H=2, T=T, C=C, seed=11)
    mask = right_padding([T, max(T - 3, 1), 1], T)
    assert_forward_backward_close(lambda *a: fast_op(a, C, causal, mask, variant=FIRST_TO_ALL),
                                  lambda *a: dense_ref(a, C, causal, mask, variant=FIRST_TO_ALL), xs, names=NAMES,
                                  real=mask[:, None, :, None], **TOL)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("options", [dict(linear_normalizer="sum"), dict(parts="local")], ids=["sum", "local"])
def test_first_to_all_with_other_options_matches_reference(causal, options):
    T, C = 14, 4
    xs = make_inputs(B=2, H=2, T=T, C=C, seed=12)
    mask = right_padding([T, 6], T)
    used = [0, 1, 4, 5] if options.get("parts") == "local" else range(6)
    kw = dict(variant=FIRST_TO_ALL, **options)
    assert_forward_backward_close(with_inputs(lambda *a: fast_op(a, C, causal, mask, **kw), xs, used),
                                  with_inputs(lambda *a: dense_ref(a, C, causal, mask, **kw), xs, used),
                                  [xs[i] for i in used], names=[NAMES[i] for i in used], real=mask[:, None, :, None],
                                  **TOL)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_first_to_all_gradcheck_fp64(causal):
    xs = [t.requires_grad_() for t in make_inputs(B=1, T=10, s=3, e=2, C=4, dtype=torch.float64)]
    mask = right_padding([9], 10)
    assert torch.autograd.gradcheck(lambda *a: fast_op(a, 4, causal, mask, variant=FIRST_TO_ALL), xs)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T", [1, 3, 4])
def test_first_to_all_on_the_first_chunk_alone_is_the_plain_op(causal, T):
    """T <= C: there is no chunk >= 1, so the option changes nothing."""
    xs = make_inputs(B=2, H=2, T=T, C=4)
    torch.testing.assert_close(fast_op(xs, 4, causal, variant=FIRST_TO_ALL), fast_op(xs, 4, causal), atol=0, rtol=0)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_first_to_all_reaches_chunk_0_exactly_and_not_globally(causal):
    """Moving a local key of chunk 0 changes every later chunk (it is an exact key of their queries); moving a global
    key of chunk 0 changes no later chunk (chunk 0 left their global part) and, bidirectional, still changes chunk 0
    (its queries keep the global summary of every chunk)."""
    C, T = 4, 16
    xs = make_inputs(T=T, C=C, seed=13)
    base = fast_op(xs, C, causal, variant=FIRST_TO_ALL)
    moved = [t.clone() for t in xs]
    moved[1][:, :, 2] += 3.0                                     # quad_k of token 2 (chunk 0)
    out = fast_op(moved, C, causal, variant=FIRST_TO_ALL)
    changed = (out - base).abs().reshape(2, 1, T // C, C * 6).amax(-1)   # per chunk (relu^2 zeroes some queries)
    assert changed[:, :, 1:].min() > 0
    moved = [t.clone() for t in xs]
    moved[3][:, :, 2] += 3.0                                     # lin_k of token 2
    out = fast_op(moved, C, causal, variant=FIRST_TO_ALL)
    assert torch.equal(out[:, :, C:], base[:, :, C:])
    assert torch.equal(out[:, :, :C], base[:, :, :C]) == causal


def test_first_to_all_masked_keys_of_chunk_0_add_nothing():
    """A masked key inside chunk 0 (a hole, not only right padding) adds nothing to any chunk: its inputs get no
    gradient and garbage there changes no output; fast == reference."""
    C, T = 4, 13
    xs = make_inputs(B=2, T=T, C=C, seed=14)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[:, 1] = False
    for causal in (True, False):
        assert_forward_backward_close(lambda *a: fast_op(a, C, causal, mask, variant=FIRST_TO_ALL),
                                      lambda *a: dense_ref(a, C, causal, mask, variant=FIRST_TO_ALL), xs, names=NAMES,
                                      real=mask[:, None, :, None], **TOL)
        garbage = [t.clone() for t in xs]
        for t in garbage[:5]:
            t[:, :, 1] = 40.0
        keep = mask[:, None, :, None]
        torch.testing.assert_close(fast_op(garbage, C, causal, mask, variant=FIRST_TO_ALL) * keep,
                                   fast_op(xs, C, causal, mask, variant=FIRST_TO_ALL) * keep, atol=1e-5, rtol=1e-5)


def test_first_to_all_prefix_consistency():
    C, T = 4, 19
    xs = make_inputs(B=2, H=2, T=T, C=C, seed=15)
    full = fast_op(xs, C, True, variant=FIRST_TO_ALL)
    for n in (1, 4, 5, 8, 13):
        torch.testing.assert_close(fast_op([t[:, :, :n] for t in xs[:5]] + [xs[5]], C, True, variant=FIRST_TO_ALL),
                                   full[:, :, :n], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("normalizer", ["average", "sum"])
def test_first_to_all_steps_from_empty_reproduce_parallel(normalizer):
    """From the empty state, token by token across several chunks (chunk 0 is frozen at position C - 1); the state
    after n steps equals the prefill's after n tokens (first chunk, running sum without chunk 0, count)."""
    C, T = 4, 14
    xs = make_inputs(B=2, H=2, T=T, C=C, seed=16)
    kw = dict(variant=FIRST_TO_ALL, linear_normalizer=normalizer)
    want = fast_op(xs, C, True, **kw)
    state = empty_flash_first_to_all_state(2, 2, C, 8, 6)
    for t in range(T):
        pos = torch.full((2,), t)
        token, bias_row = step_inputs(xs, pos, xs[5])
        o, state = mixed_chunk_first_to_all_attention_step(*token, bias_row, state, pos, linear_normalizer=normalizer)
        torch.testing.assert_close(o[:, :, 0], want[:, :, t], **TOL, msg=lambda m, t=t: f"position {t}: {m}")
        _, pre = prefill([x[:, :, :t + 1] for x in xs[:5]] + [xs[5]], C, **kw)
        for name in ("kv", "count", "first_k", "first_v"):
            torch.testing.assert_close(getattr(state, name), getattr(pre, name), **TOL)
    assert state.count.tolist() == [8.0, 8.0]                          # chunks 1 and 2; chunk 0 is not counted


def test_first_to_all_needs_the_local_part_and_a_matching_state():
    xs = make_inputs(T=9, C=4)
    with pytest.raises(ValueError, match="parts='global' does not compute"):
        fast_op(xs, 4, True, parts="global", variant=FIRST_TO_ALL)
    _, plain = prefill(xs, 4)
    _, first = prefill(xs, 4, variant=FIRST_TO_ALL)
    token, bias_row = step_inputs(xs, torch.full((2,), 8), xs[5])
    with pytest.raises(ValueError, match="needs a FlashFirstToAllState"):
        mixed_chunk_first_to_all_attention_step(*token, bias_row, plain, torch.full((2,), 9))
    with pytest.raises(ValueError, match="needs a FlashState without first_to_all"):
        mixed_chunk_attention_step(*token, bias_row, first, torch.full((2,), 9))
