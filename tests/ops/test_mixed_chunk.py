"""FLASH's mixed chunk attention (ops/mixed_chunk.py) against its dense reference and the paper (§3, §4, P6-P8); the
properties it shares with its first_to_all variant (ops/mixed_chunk_first_to_all.py) are tested on both variants
(the variant's own tests: test_mixed_chunk_first_to_all.py)."""


import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from flashgau.ops.mixed_chunk import empty_flash_state, mixed_chunk_attention, mixed_chunk_attention_step
from flashgau.ops.reference.mixed_chunk import mixed_chunk_attention_minimal, mixed_chunk_attention_reference
from mixed_chunk_helpers import (FIRST_TO_ALL, NAMES, TOL, VARIANT_IDS, VARIANTS, dense_bias, dense_ref, fast_op,
                                 make_inputs, paper_loop, prefill, step_inputs)
from op_helpers import assert_forward_backward_close, right_padding, with_inputs


def _minimal(xs, C, causal, key_mask=None):
    return mixed_chunk_attention_minimal(*xs, chunk_size=C, causal=causal, key_mask=key_mask)


# ---------------------------------------------------------------------------------------------------------------
# The reference itself, against the paper's formulas written out element by element (§3.1, §3.3 net normalisation)


@pytest.mark.parametrize("causal", [True, False])
def test_reference_matches_paper_formula(causal):
    quad_q, quad_k, lin_q, lin_k, v, bias = make_inputs(B=1, T=10, C=4, dtype=torch.float64)
    want = paper_loop(quad_q[0, 0], quad_k[0, 0], lin_q[0, 0], lin_k[0, 0], v[0, 0], bias, 4, causal)
    got = dense_ref([quad_q, quad_k, lin_q, lin_k, v, bias], 4, causal)[0, 0]
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    fast = fast_op([quad_q, quad_k, lin_q, lin_k, v, bias], 4, causal)[0, 0]
    torch.testing.assert_close(fast, want, atol=1e-10, rtol=1e-10)
    minimal = mixed_chunk_attention_minimal(quad_q, quad_k, lin_q, lin_k, v, bias, chunk_size=4, causal=causal)[0, 0]
    torch.testing.assert_close(minimal, want, atol=1e-10, rtol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# Fast vs dense reference, forward and backward

SHAPES = [  # (T, C): T = 1, T < C, T = C, T not a multiple of C, many chunks, C = 1
    (1, 4), (3, 4), (4, 4), (11, 4), (9, 8), (37, 4), (64, 4), (6, 1),
]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,C", SHAPES, ids=[f"T{t}-C{c}" for t, c in SHAPES])
def test_forward_backward_match_reference_fp32(causal, T, C):
    xs = make_inputs(B=2, H=2, T=T, C=C)
    assert fast_op(xs, C, causal).shape == (2, 2, T, 6)
    assert_forward_backward_close(lambda *a: fast_op(a, C, causal), lambda *a: dense_ref(a, C, causal), xs, names=NAMES,
                                  **TOL)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,C", [(1, 4), (4, 4), (11, 4), (9, 8), (6, 1)], ids=lambda x: str(x))
def test_minimal_chunked_form_matches_reference_and_fast_op(causal, T, C):
    """The einsum listing of the four steps (reference/mixed_chunk.py) equals the dense reference and the fast op,
    outputs and every gradient, with rows of different lengths (right padding)."""
    xs = make_inputs(B=3, H=2, T=T, C=C, seed=6)
    mask = right_padding([T, max(T - 3, 1), 1], T)
    for other in (dense_ref, fast_op):
        assert_forward_backward_close(lambda *a: _minimal(a, C, causal, mask), lambda *a: other(a, C, causal, mask),
                                      xs, names=NAMES, real=mask[:, None, :, None], **TOL)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_gradcheck_fp64(causal):
    xs = [t.requires_grad_() for t in make_inputs(B=1, T=6, s=3, e=2, C=4, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: fast_op(a, 4, causal), xs)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,C", [(5, 8), (19, 4), (48, 8)])
def test_bf16_close_to_fp32_reference(causal, T, C):
    xs = make_inputs(B=2, T=T, C=C)
    ref = dense_ref([t.bfloat16().double() for t in xs], C, causal)      # same rounded inputs, exact arithmetic
    out = fast_op([t.bfloat16() for t in xs], C, causal)
    assert out.dtype == torch.bfloat16
    err = (out.double() - ref).norm() / ref.norm()
    assert err < 2e-2, f"relative error {err:.3g}"
    grad_out = [t.bfloat16().requires_grad_() for t in xs]
    fast_op(grad_out, C, causal).float().square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in grad_out)


# ---------------------------------------------------------------------------------------------------------------
# Padding


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("C", [1, 4, 5])
def test_key_mask_matches_reference_on_real_tokens(causal, C):
    T = 17
    lengths = [17, 1, 4, 9, 13]
    xs = make_inputs(B=5, H=2, T=T, C=C)
    mask = right_padding(lengths, T)
    assert_forward_backward_close(lambda *a: fast_op(a, C, causal, mask), lambda *a: dense_ref(a, C, causal, mask), xs,
                                  names=NAMES, real=mask[:, None, :, None], **TOL)   # padded outputs are ignored


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,extra", [(1, 3), (3, 1), (4, 4), (6, 11), (13, 7)])
def test_padding_invariance(causal, T, extra, variant):
    """Appending padded tokens (with garbage values) changes no real output, and the padded inputs get no gradient
    from real outputs (P6: padded keys are zeroed before lin_k^T v and not counted in the normaliser)."""
    C = 4
    xs = make_inputs(B=2, T=T, C=C)
    base = fast_op(xs, C, causal, variant=variant)
    g = torch.Generator().manual_seed(9)
    padded = [torch.cat([t, 50 * torch.randn(*t.shape[:2], extra, t.shape[-1], generator=g)], dim=2)
              for t in xs[:5]] + [xs[5]]
    padded = [t.requires_grad_() for t in padded]
    mask = right_padding([T, T], T + extra)
    out = fast_op(padded, C, causal, mask, variant=variant)
    torch.testing.assert_close(out[:, :, :T], base, atol=1e-5, rtol=1e-5)
    out[:, :, :T].sum().backward()
    for t in padded[:5]:
        assert t.grad[:, :, T:].abs().max() == 0


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_rows_of_different_lengths_equal_separate_runs(variant):
    C, T = 4, 14
    lengths = [14, 2, 8, 11]
    xs = make_inputs(B=4, T=T, C=C, seed=5)
    mask = right_padding(lengths, T)
    for causal in (True, False):
        out = fast_op(xs, C, causal, mask, variant=variant)
        for r, n in enumerate(lengths):
            alone = fast_op([t[r:r + 1, :, :n] for t in xs[:5]] + [xs[5]], C, causal, variant=variant)
            torch.testing.assert_close(out[r:r + 1, :, :n], alone, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Causality and the exclusive global part


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("j", [0, 3, 4, 5, 9, 15])
def test_causal_no_leakage(j, variant):
    """Perturb every input at token j: outputs before j are bit-identical, outputs from j on change."""
    C, T = 4, 16
    xs = make_inputs(T=T, C=C)
    base = fast_op(xs, C, True, variant=variant)
    moved = [t.clone() for t in xs]
    for t in moved[:5]:
        t[:, :, j] += 3.0
    out = fast_op(moved, C, True, variant=variant)
    assert torch.equal(out[:, :, :j], base[:, :, :j])
    assert (out[:, :, j] - base[:, :, j]).abs().max() > 1e-3


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_causal_jacobian_is_lower_triangular(variant):
    C, T = 4, 10
    xs = [t.double() for t in make_inputs(B=1, T=T, s=3, e=2, C=C)]
    for idx in range(5):
        def f(x, idx=idx):
            args = list(xs)
            args[idx] = x
            return fast_op(args, C, True, variant=variant)[0, 0].sum(-1)           # (T,)
        jac = torch.autograd.functional.jacobian(f, xs[idx])[:, 0, 0].abs().sum(-1)   # (T out, T in)
        assert jac.triu(1).max() == 0, f"input {idx} leaks from the future"
        assert jac.tril().max() > 0


@pytest.mark.parametrize("g", [0, 1, 2, 3])
def test_causal_global_part_uses_only_earlier_chunks(g):
    """Perturb only the global key of a token in chunk g. Chunk g itself must not change at all (the current chunk
    reaches its tokens through the local part only: exclusive cumsum); chunks < g unchanged; chunk g+1 changes."""
    C, T = 4, 16
    xs = make_inputs(T=T, C=C)
    base = fast_op(xs, C, True)
    for j in (g * C, g * C + 2, g * C + C - 1):
        moved = [t.clone() for t in xs]
        moved[3][:, :, j] += 5.0                               # lin_k only
        out = fast_op(moved, C, True)
        end = (g + 1) * C
        assert torch.equal(out[:, :, :end], base[:, :, :end]), f"token {j} reaches its own chunk globally"
        if end < T:
            assert (out[:, :, end:] - base[:, :, end:]).abs().min() > 0


def test_bidirectional_global_part_sees_every_chunk():
    """P5: the non-causal global part reduces over ALL chunks, including later and the query's own."""
    C, T = 4, 12
    xs = make_inputs(T=T, C=C)
    base = fast_op(xs, C, False)
    moved = [t.clone() for t in xs]
    moved[3][:, :, T - 1] += 5.0
    out = fast_op(moved, C, False)
    assert ((out - base).abs().amax(-1) > 0).all()


def test_first_causal_chunk_global_term_is_exactly_zero():
    """P8: chunk 0 sees no earlier chunk; 0/0 := 0, not NaN, whatever lin_q is."""
    C, T = 4, 10
    quad_q, quad_k, lin_q, lin_k, v, bias = make_inputs(T=T, C=C)
    lin_q = lin_q * 1e6
    local_off = torch.full((C, C), -1.0)                      # relu(0 - 1)^2 = 0
    xs = [torch.zeros_like(quad_q).requires_grad_(), torch.zeros_like(quad_k), lin_q.requires_grad_(), lin_k, v,
          local_off]
    out = fast_op(xs, C, True)
    assert torch.equal(out[:, :, :C], torch.zeros_like(out[:, :, :C]))
    assert out[:, :, C:].abs().min() > 0
    out.sum().backward()
    assert torch.isfinite(xs[2].grad).all() and xs[2].grad[:, :, :C].abs().max() == 0
    # bidirectional, a row with no real key at all: 0, not NaN
    mask = right_padding([T, 0], T)
    out = fast_op([x.detach() for x in xs[:5]] + [local_off], C, False, mask)
    assert torch.isfinite(out).all() and out[1].abs().max() == 0


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_global_normaliser_counts_real_tokens(causal):
    """With the local part off and lin_k^T v the same for every token, the global term is lin_q . S exactly: an
    average (paper §3.3), not a sum and not a per-padded-length mean."""
    C, T, s, e = 4, 11, 3, 2
    lin_k = torch.zeros(1, 1, T, s)
    lin_k[..., 0] = 1.0
    v = torch.zeros(1, 1, T, e)
    v[..., 1] = 1.0
    lin_q = torch.ones(1, 1, T, s)
    zeros = torch.zeros(1, 1, T, s)
    for n in (T, 7):
        mask = right_padding([n], T)
        lin_k_n, v_n = lin_k.clone(), v.clone()
        lin_k_n[:, :, n:] = 30.0                                   # garbage in the padding
        v_n[:, :, n:] = -70.0
        out = fast_op([zeros, zeros, lin_q, lin_k_n, v_n, torch.full((C, C), -1.0)], C, causal, mask)[0, 0]
        want = torch.zeros(T, e)
        want[:, 1] = 1.0
        if causal:
            want[:C] = 0.0
        torch.testing.assert_close(out[:n], want[:n], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Memory: no T x T tensor, no per-token s x e state (P7)


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0
        self.shape = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > self.largest:
                self.largest, self.shape = t.numel(), tuple(t.shape)
        return out


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_no_quadratic_or_per_token_state_tensor(causal, variant):
    """Every intermediate of forward and backward is at most max(T*max(C, s, e), G*s*e) elements (B = H = 1), while a
    T x T matrix would hold 16384 and a per-token cumsum of lin_k^T v T*s*e = 8192."""
    T, C, s, e = 128, 4, 8, 8
    G = T // C
    xs = [t.requires_grad_() for t in make_inputs(B=1, H=1, T=T, s=s, e=e, C=C)]
    mask = right_padding([T - 3], T)
    bound = max(T * max(C, s, e), G * s * e)
    assert bound < min(T * T, T * s * e)
    with _LargestTensor() as probe:
        out = fast_op(xs, C, causal, mask, variant=variant)
        out.sum().backward()
    assert probe.largest <= bound, f"intermediate of shape {probe.shape}"
    with _LargestTensor() as probe_ref:                      # the probe does see a T x T tensor when one exists
        dense_ref([x.detach() for x in xs], C, causal, mask, variant=variant)
    assert probe_ref.largest >= T * T


# ---------------------------------------------------------------------------------------------------------------
# Step form: prefill state + token-by-token decoding == parallel form


def test_step_from_empty_state_reproduces_parallel():
    C, T = 4, 14
    xs = make_inputs(B=2, H=2, T=T, C=C, seed=2)
    want = fast_op(xs, C, True)
    state = empty_flash_state(2, 2, C, 8, 6)
    for t in range(T):
        token, bias_row = step_inputs(xs, torch.full((2,), t), xs[5])
        o, state = mixed_chunk_attention_step(*token, bias_row, state, torch.full((2,), t))
        assert o.shape == (2, 2, 1, 6)
        torch.testing.assert_close(o[:, :, 0], want[:, :, t], **TOL, msg=lambda m, t=t: f"position {t}: {m}")
    assert state.count.tolist() == [12.0, 12.0]


def test_fp64_stays_fp64():
    """Summaries are accumulated in at least fp32: fp64 inputs must not be rounded to fp32 in the parallel form, the
    prefill state or the step form (gradcheck and exact comparisons rely on it)."""
    C, T = 4, 13
    xs = make_inputs(B=2, T=T, C=C, dtype=torch.float64)
    want = dense_ref(xs, C, True)
    torch.testing.assert_close(fast_op(xs, C, True), want, atol=1e-12, rtol=1e-12)
    _, pre = prefill([t[:, :, :5] for t in xs[:5]] + [xs[5]], C)
    state = empty_flash_state(2, 1, C, 8, 6, dtype=torch.float64)
    assert pre.kv.dtype == state.kv.dtype == torch.float64
    for t in range(T):
        pos = torch.full((2,), t)
        token, bias_row = step_inputs(xs, pos, xs[5])
        o, state = mixed_chunk_attention_step(*token, bias_row, state, pos)
        torch.testing.assert_close(o[:, :, 0], want[:, :, t], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("C", [1, 4, 5])
def test_prefill_then_steps_rows_of_different_lengths(C, variant):
    """Rows prefilled with 1, C-1, C, C+1, 2C+3 tokens (right padding), then stepped together across >= 2 chunk
    boundaries; every step equals the parallel output at that row's position."""
    lengths = torch.tensor([1, max(C - 1, 1), C, C + 1, 2 * C + 3])
    steps = 2 * C + 3
    T = int(lengths.max()) + steps
    xs = make_inputs(B=5, H=2, T=T, C=C, seed=1)
    want = fast_op(xs, C, True, variant=variant)
    mask = right_padding(lengths, T)
    pre, state = prefill(xs, C, mask, variant=variant)
    assert isinstance(state, variant.state)
    real = mask[:, None, :, None].expand_as(pre)
    torch.testing.assert_close(pre[real], want[real], **TOL)
    size = state.nbytes()
    for k in range(steps):
        pos = lengths + k
        token, bias_row = step_inputs(xs, pos, xs[5])
        o, state = variant.step(*token, bias_row, state, pos)
        rows = torch.arange(5)
        torch.testing.assert_close(o[:, :, 0], want[rows, :, pos], **TOL, msg=lambda m, k=k: f"step {k}: {m}")
        assert state.nbytes() == size


def test_step_reads_only_the_filled_slots():
    """The step's local part reads the open chunk's slots up to the furthest row's token only: the keys after it
    (stale, from the previous chunk) are never read, so NaN there leaves every output equal to the parallel one.
    Rows at different slots (one at a chunk's first slot while the other is further in), across two boundaries."""
    C, T = 5, 19
    xs = make_inputs(B=2, H=2, T=T, C=C, seed=6)
    want = fast_op(xs, C, True)
    lengths = torch.tensor([7, 5])
    _, state = prefill(xs, C, right_padding(lengths, T))
    rows = torch.arange(2)
    for k in range(12):
        pos = lengths + k
        n = int((pos % C).max()) + 1
        stale = state.quad_k[:, :, n:].clone()
        state.quad_k[:, :, n:] = float("nan")
        token, bias_row = step_inputs(xs, pos, xs[5])
        o, state = mixed_chunk_attention_step(*token, bias_row, state, pos)
        state.quad_k[:, :, n:] = stale        # a later step with a larger n reads these (finite stale keys, v = 0)
        torch.testing.assert_close(o[:, :, 0], want[rows, :, pos], **TOL, msg=lambda m, k=k: f"step {k}: {m}")


def test_a_step_given_the_host_positions_equals_one_that_reads_them():
    """host_pos (pos as ints, read once by a decoding step for all layers) changes nothing: rows at one slot and at
    different slots, across a chunk's completion."""
    C, T = 4, 9
    xs = make_inputs(B=2, T=T, C=C, seed=6)
    for offsets in ((0, 0), (0, 1)):
        states = [empty_flash_state(2, 1, C, 8, 6) for _ in range(2)]
        for t in range(T - 1):
            pos = torch.tensor([t + o for o in offsets])
            token, bias_row = step_inputs(xs, pos, xs[5])
            o_read, states[0] = mixed_chunk_attention_step(*token, bias_row, states[0], pos)
            o_given, states[1] = mixed_chunk_attention_step(*token, bias_row, states[1], pos, host_pos=pos.tolist())
            assert torch.equal(o_read, o_given)
        assert torch.equal(states[0].kv, states[1].kv) and torch.equal(states[0].v, states[1].v)


def test_prefill_state_equals_stepped_state():
    """The state after a prefill of n tokens equals the state after n steps from empty (kv, count, and the filled
    part of the open-chunk buffer)."""
    C, T = 4, 11
    xs = make_inputs(B=1, T=T, C=C, seed=4)
    for n in (1, 3, 4, 5, 8, 11):
        mask = right_padding([n], T)
        _, pre = prefill(xs, C, mask)
        st = empty_flash_state(1, 1, C, 8, 6)
        for t in range(n):
            token, bias_row = step_inputs(xs, torch.tensor([t]), xs[5])
            _, st = mixed_chunk_attention_step(*token, bias_row, st, torch.tensor([t]))
        torch.testing.assert_close(pre.kv, st.kv, **TOL)
        assert pre.count.tolist() == st.count.tolist() == [float(n // C * C)]
        filled = n % C
        for name in ("quad_k", "lin_k", "v"):
            torch.testing.assert_close(getattr(pre, name)[:, :, :filled], getattr(st, name)[:, :, :filled])


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_state_size_is_constant_over_many_chunks(variant):
    C = 4
    xs = make_inputs(B=1, T=1, C=C)
    sizes = set()
    for T in (1, 3, 4, 9, 40):
        big = make_inputs(B=1, T=T, C=C)
        _, st = prefill(big, C, variant=variant)
        sizes.add(st.nbytes())
    state = variant.empty_state(1, 1, C, 8, 6)
    sizes.add(state.nbytes())
    for t in range(5 * C):
        token, bias_row = step_inputs(xs, torch.zeros(1, dtype=torch.long), xs[5])
        _, state = variant.step(*token, bias_row, state, torch.tensor([t]))
        sizes.add(state.nbytes())
    assert len(sizes) == 1
    first_chunk = C * (8 + 6) if variant is FIRST_TO_ALL else 0                 # first_k, first_v
    assert sizes.pop() == 4 * (8 * 6 + 1 + C * (8 + 8 + 6) + first_chunk)   # kv, count, the open chunk's buffer


# ---------------------------------------------------------------------------------------------------------------
# linear_normalizer="sum": the per-chunk summaries / C, summed over the visible chunks (lucidrains, OpenNLPLab)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_sum_normaliser_divides_the_visible_summaries_by_c(causal):
    """The global term with "sum" is the "average" one times (tokens summarised) / C: written out on one row."""
    C, T = 4, 14
    xs = make_inputs(B=1, T=T, C=C, dtype=torch.float64, seed=8)
    no_local = [torch.zeros_like(xs[0]), xs[1], *xs[2:5], torch.full((C, C), -1.0, dtype=torch.float64)]
    average = mixed_chunk_attention(*no_local, chunk_size=C, causal=causal)[0][0, 0]
    summed = mixed_chunk_attention(*no_local, chunk_size=C, causal=causal, linear_normalizer="sum")[0][0, 0]
    seen = (torch.arange(T) // C * C if causal else torch.full((T,), T)).double()    # real keys each query sees
    torch.testing.assert_close(summed, average * seen[:, None] / C, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,C", [(1, 4), (11, 4), (9, 8), (6, 1)], ids=lambda x: str(x))
def test_sum_normaliser_fast_minimal_and_reference_agree(causal, T, C):
    xs = make_inputs(B=3, H=2, T=T, C=C, seed=7)
    mask = right_padding([T, max(T - 3, 1), 1], T)
    kw = dict(linear_normalizer="sum")
    fast = lambda *a: mixed_chunk_attention(*a, chunk_size=C, causal=causal, key_mask=mask, **kw)[0]
    for other in (lambda *a: mixed_chunk_attention_reference(*a[:5], dense_bias(a[5], T), chunk_size=C,
                                                             causal=causal, key_mask=mask, **kw),
                  lambda *a: mixed_chunk_attention_minimal(*a, chunk_size=C, causal=causal, key_mask=mask, **kw)):
        assert_forward_backward_close(fast, other, xs, names=NAMES, real=mask[:, None, :, None], **TOL)


def test_sum_normaliser_prefill_then_steps_equal_parallel():
    C = 4
    lengths = torch.tensor([1, 3, 4, 5, 11])
    T = int(lengths.max()) + 9
    xs = make_inputs(B=5, H=2, T=T, C=C, seed=9)
    want = mixed_chunk_attention(*xs, chunk_size=C, causal=True, linear_normalizer="sum")[0]
    mask = right_padding(lengths, T)
    _, state = mixed_chunk_attention(*xs, chunk_size=C, causal=True, key_mask=mask, linear_normalizer="sum",
                                     output_final_state=True)
    for k in range(9):
        pos = lengths + k
        token, bias_row = step_inputs(xs, pos, xs[5])
        o, state = mixed_chunk_attention_step(*token, bias_row, state, pos, linear_normalizer="sum")
        torch.testing.assert_close(o[:, :, 0], want[torch.arange(5), :, pos], **TOL)


def test_unknown_linear_normaliser_is_refused():
    with pytest.raises(ValueError, match="linear_normalizer must be one of"):
        mixed_chunk_attention(*make_inputs(), chunk_size=4, causal=True, linear_normalizer="mean")


@pytest.mark.parametrize("parts", ["local", "global"])
@pytest.mark.parametrize("causal", [True, False])
def test_one_part_alone_matches_reference_and_decodes(causal, parts):
    """parts="local" / "global" (the paper's ablation): fast == dense reference with padding (forward and backward),
    the two parts sum to "both", and (causal) prefill + steps equal the parallel form."""
    B, T, C = 2, 15, 4
    xs = make_inputs(B=B, T=T, C=C)
    mask = right_padding([15, 9], T)
    kw = dict(chunk_size=C, causal=causal, key_mask=mask)
    real = mask[:, None, :, None]
    used = [0, 1, 4, 5] if parts == "local" else [2, 3, 4]                # the inputs the part reads
    assert_forward_backward_close(
        with_inputs(lambda *a: mixed_chunk_attention(*a, parts=parts, **kw)[0], xs, used),
        with_inputs(lambda *a: mixed_chunk_attention_reference(*a[:5], dense_bias(a[5], T), parts=parts, **kw), xs,
                    used),
        [xs[i] for i in used], names=[NAMES[i] for i in used], real=real, **TOL)
    local, glob = (mixed_chunk_attention(*xs, parts=p, **kw)[0] for p in ("local", "global"))
    torch.testing.assert_close((local + glob) * real, fast_op(xs, C, causal, mask) * real, **TOL)
    if not causal:
        return
    full = mixed_chunk_attention(*xs, parts=parts, chunk_size=C, causal=True)[0]
    _, state = mixed_chunk_attention(*(x[:, :, :6] for x in xs[:5]), xs[5], chunk_size=C, causal=True, parts=parts,
                                     output_final_state=True)
    for t in range(6, T):
        o, state = mixed_chunk_attention_step(*(x[:, :, t:t + 1] for x in xs[:5]), xs[5][t % C].expand(B, 1, 1, C),
                                              state, torch.full((B,), t), parts=parts)
        torch.testing.assert_close(o, full[:, :, t:t + 1], **TOL)
