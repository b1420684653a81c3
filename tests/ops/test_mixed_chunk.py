"""FLASH's mixed chunk attention (ops/mixed_chunk.py) against its dense reference and the paper (§3, §4, P6-P8).

The fast op takes a (C, C) in-chunk bias; the dense reference takes a (T, T) one. `_dense_bias` tiles the chunk bias
onto the diagonal blocks (built from the same leaf, so bias gradients compare too); off-block entries are never used.
"""


import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from flashgau.ops.mixed_chunk import (
    FlashFirstToAllState,
    FlashState,
    empty_flash_state,
    mixed_chunk_attention,
    mixed_chunk_attention_step,
)
from flashgau.ops.reference.mixed_chunk import mixed_chunk_attention_minimal, mixed_chunk_attention_reference
from op_helpers import assert_forward_backward_close, right_padding, with_inputs

TOL = dict(atol=2e-5, rtol=2e-4)
NAMES = ["quad_q", "quad_k", "lin_q", "lin_k", "v", "bias"]


def _inputs(B=2, H=1, T=11, s=8, e=6, C=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    quad_q, quad_k, lin_q, lin_k = (torch.randn(B, H, T, s, generator=g) for _ in range(4))
    v = torch.randn(B, H, T, e, generator=g)
    bias = torch.randn(C, C, generator=g) * 0.5
    return [t.to(dtype) for t in (quad_q, quad_k, lin_q, lin_k, v, bias)]


def _dense_bias(bias, T):
    C = bias.shape[0]
    slot = torch.arange(T) % C
    return bias[slot[:, None], slot[None, :]]


def _fast(xs, C, causal, key_mask=None, **options):
    return mixed_chunk_attention(*xs, chunk_size=C, causal=causal, key_mask=key_mask, **options)[0]


def _prefill(xs, C, key_mask=None, **options):
    """(o, the state after each row's real tokens)."""
    return mixed_chunk_attention(*xs, chunk_size=C, causal=True, key_mask=key_mask, output_final_state=True,
                                 **options)


def _minimal(xs, C, causal, key_mask=None):
    return mixed_chunk_attention_minimal(*xs, chunk_size=C, causal=causal, key_mask=key_mask)


def _ref(xs, C, causal, key_mask=None, **options):
    *qkv, bias = xs
    T = qkv[0].shape[-2]
    return mixed_chunk_attention_reference(*qkv, _dense_bias(bias, T), chunk_size=C, causal=causal,
                                           key_mask=key_mask, **options)


# ---------------------------------------------------------------------------------------------------------------
# The reference itself, against the paper's formulas written out element by element (§3.1, §3.3 net normalisation)


def _paper_loop(quad_q, quad_k, lin_q, lin_k, v, bias, C, causal, first_to_all=False):
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


@pytest.mark.parametrize("causal", [True, False])
def test_reference_matches_paper_formula(causal):
    quad_q, quad_k, lin_q, lin_k, v, bias = _inputs(B=1, T=10, C=4, dtype=torch.float64)
    want = _paper_loop(quad_q[0, 0], quad_k[0, 0], lin_q[0, 0], lin_k[0, 0], v[0, 0], bias, 4, causal)
    got = _ref([quad_q, quad_k, lin_q, lin_k, v, bias], 4, causal)[0, 0]
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    fast = _fast([quad_q, quad_k, lin_q, lin_k, v, bias], 4, causal)[0, 0]
    torch.testing.assert_close(fast, want, atol=1e-10, rtol=1e-10)
    minimal = mixed_chunk_attention_minimal(quad_q, quad_k, lin_q, lin_k, v, bias, chunk_size=4, causal=causal)[0, 0]
    torch.testing.assert_close(minimal, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("causal", [True, False])
def test_first_to_all_reference_and_fast_op_match_the_written_out_formula(causal):
    xs = _inputs(B=1, T=14, C=4, dtype=torch.float64)
    want = _paper_loop(*(t[0, 0] for t in xs[:5]), xs[5], 4, causal, first_to_all=True)
    for form in (_ref, _fast):
        torch.testing.assert_close(form(xs, 4, causal, first_to_all=True)[0, 0], want, atol=1e-10, rtol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# Fast vs dense reference, forward and backward

SHAPES = [  # (T, C): T = 1, T < C, T = C, T not a multiple of C, many chunks, C = 1
    (1, 4), (3, 4), (4, 4), (11, 4), (9, 8), (37, 4), (64, 4), (6, 1),
]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,C", SHAPES, ids=[f"T{t}-C{c}" for t, c in SHAPES])
def test_forward_backward_match_reference_fp32(causal, T, C):
    xs = _inputs(B=2, H=2, T=T, C=C)
    assert _fast(xs, C, causal).shape == (2, 2, T, 6)
    assert_forward_backward_close(lambda *a: _fast(a, C, causal), lambda *a: _ref(a, C, causal), xs, names=NAMES,
                                  **TOL)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,C", [(1, 4), (4, 4), (11, 4), (9, 8), (6, 1)], ids=lambda x: str(x))
def test_minimal_chunked_form_matches_reference_and_fast_op(causal, T, C):
    """The einsum listing of the four steps (reference/mixed_chunk.py) equals the dense reference and the fast op,
    outputs and every gradient, with rows of different lengths (right padding)."""
    xs = _inputs(B=3, H=2, T=T, C=C, seed=6)
    mask = right_padding([T, max(T - 3, 1), 1], T)
    for other in (_ref, _fast):
        assert_forward_backward_close(lambda *a: _minimal(a, C, causal, mask), lambda *a: other(a, C, causal, mask),
                                      xs, names=NAMES, real=mask[:, None, :, None], **TOL)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_gradcheck_fp64(causal):
    xs = [t.requires_grad_() for t in _inputs(B=1, T=6, s=3, e=2, C=4, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: _fast(a, 4, causal), xs)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,C", [(5, 8), (19, 4), (48, 8)])
def test_bf16_close_to_fp32_reference(causal, T, C):
    xs = _inputs(B=2, T=T, C=C)
    ref = _ref([t.bfloat16().double() for t in xs], C, causal)      # same rounded inputs, exact arithmetic
    out = _fast([t.bfloat16() for t in xs], C, causal)
    assert out.dtype == torch.bfloat16
    err = (out.double() - ref).norm() / ref.norm()
    assert err < 2e-2, f"relative error {err:.3g}"
    grad_out = [t.bfloat16().requires_grad_() for t in xs]
    _fast(grad_out, C, causal).float().square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in grad_out)


# ---------------------------------------------------------------------------------------------------------------
# Padding


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("C", [1, 4, 5])
def test_key_mask_matches_reference_on_real_tokens(causal, C):
    T = 17
    lengths = [17, 1, 4, 9, 13]
    xs = _inputs(B=5, H=2, T=T, C=C)
    mask = right_padding(lengths, T)
    assert_forward_backward_close(lambda *a: _fast(a, C, causal, mask), lambda *a: _ref(a, C, causal, mask), xs,
                                  names=NAMES, real=mask[:, None, :, None], **TOL)   # padded outputs are ignored


@pytest.mark.parametrize("first_to_all", [False, True], ids=["plain", "first-to-all"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,extra", [(1, 3), (3, 1), (4, 4), (6, 11), (13, 7)])
def test_padding_invariance(causal, T, extra, first_to_all):
    """Appending padded tokens (with garbage values) changes no real output, and the padded inputs get no gradient
    from real outputs (P6: padded keys are zeroed before lin_k^T v and not counted in the normaliser)."""
    C = 4
    xs = _inputs(B=2, T=T, C=C)
    base = _fast(xs, C, causal, first_to_all=first_to_all)
    g = torch.Generator().manual_seed(9)
    padded = [torch.cat([t, 50 * torch.randn(*t.shape[:2], extra, t.shape[-1], generator=g)], dim=2)
              for t in xs[:5]] + [xs[5]]
    padded = [t.requires_grad_() for t in padded]
    mask = right_padding([T, T], T + extra)
    out = _fast(padded, C, causal, mask, first_to_all=first_to_all)
    torch.testing.assert_close(out[:, :, :T], base, atol=1e-5, rtol=1e-5)
    out[:, :, :T].sum().backward()
    for t in padded[:5]:
        assert t.grad[:, :, T:].abs().max() == 0


@pytest.mark.parametrize("first_to_all", [False, True], ids=["plain", "first-to-all"])
def test_rows_of_different_lengths_equal_separate_runs(first_to_all):
    C, T = 4, 14
    lengths = [14, 2, 8, 11]
    xs = _inputs(B=4, T=T, C=C, seed=5)
    mask = right_padding(lengths, T)
    for causal in (True, False):
        out = _fast(xs, C, causal, mask, first_to_all=first_to_all)
        for r, n in enumerate(lengths):
            alone = _fast([t[r:r + 1, :, :n] for t in xs[:5]] + [xs[5]], C, causal, first_to_all=first_to_all)
            torch.testing.assert_close(out[r:r + 1, :, :n], alone, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Causality and the exclusive global part


@pytest.mark.parametrize("first_to_all", [False, True], ids=["plain", "first-to-all"])
@pytest.mark.parametrize("j", [0, 3, 4, 5, 9, 15])
def test_causal_no_leakage(j, first_to_all):
    """Perturb every input at token j: outputs before j are bit-identical, outputs from j on change."""
    C, T = 4, 16
    xs = _inputs(T=T, C=C)
    base = _fast(xs, C, True, first_to_all=first_to_all)
    moved = [t.clone() for t in xs]
    for t in moved[:5]:
        t[:, :, j] += 3.0
    out = _fast(moved, C, True, first_to_all=first_to_all)
    assert torch.equal(out[:, :, :j], base[:, :, :j])
    assert (out[:, :, j] - base[:, :, j]).abs().max() > 1e-3


@pytest.mark.parametrize("first_to_all", [False, True], ids=["plain", "first-to-all"])
def test_causal_jacobian_is_lower_triangular(first_to_all):
    C, T = 4, 10
    xs = [t.double() for t in _inputs(B=1, T=T, s=3, e=2, C=C)]
    for idx in range(5):
        def f(x, idx=idx):
            args = list(xs)
            args[idx] = x
            return _fast(args, C, True, first_to_all=first_to_all)[0, 0].sum(-1)           # (T,)
        jac = torch.autograd.functional.jacobian(f, xs[idx])[:, 0, 0].abs().sum(-1)   # (T out, T in)
        assert jac.triu(1).max() == 0, f"input {idx} leaks from the future"
        assert jac.tril().max() > 0


@pytest.mark.parametrize("g", [0, 1, 2, 3])
def test_causal_global_part_uses_only_earlier_chunks(g):
    """Perturb only the global key of a token in chunk g. Chunk g itself must not change at all (the current chunk
    reaches its tokens through the local part only: exclusive cumsum); chunks < g unchanged; chunk g+1 changes."""
    C, T = 4, 16
    xs = _inputs(T=T, C=C)
    base = _fast(xs, C, True)
    for j in (g * C, g * C + 2, g * C + C - 1):
        moved = [t.clone() for t in xs]
        moved[3][:, :, j] += 5.0                               # lin_k only
        out = _fast(moved, C, True)
        end = (g + 1) * C
        assert torch.equal(out[:, :, :end], base[:, :, :end]), f"token {j} reaches its own chunk globally"
        if end < T:
            assert (out[:, :, end:] - base[:, :, end:]).abs().min() > 0


def test_bidirectional_global_part_sees_every_chunk():
    """P5: the non-causal global part reduces over ALL chunks, including later and the query's own."""
    C, T = 4, 12
    xs = _inputs(T=T, C=C)
    base = _fast(xs, C, False)
    moved = [t.clone() for t in xs]
    moved[3][:, :, T - 1] += 5.0
    out = _fast(moved, C, False)
    assert ((out - base).abs().amax(-1) > 0).all()


def test_first_causal_chunk_global_term_is_exactly_zero():
    """P8: chunk 0 sees no earlier chunk; 0/0 := 0, not NaN, whatever lin_q is."""
    C, T = 4, 10
    quad_q, quad_k, lin_q, lin_k, v, bias = _inputs(T=T, C=C)
    lin_q = lin_q * 1e6
    local_off = torch.full((C, C), -1.0)                      # relu(0 - 1)^2 = 0
    xs = [torch.zeros_like(quad_q).requires_grad_(), torch.zeros_like(quad_k), lin_q.requires_grad_(), lin_k, v,
          local_off]
    out = _fast(xs, C, True)
    assert torch.equal(out[:, :, :C], torch.zeros_like(out[:, :, :C]))
    assert out[:, :, C:].abs().min() > 0
    out.sum().backward()
    assert torch.isfinite(xs[2].grad).all() and xs[2].grad[:, :, :C].abs().max() == 0
    # bidirectional, a row with no real key at all: 0, not NaN
    mask = right_padding([T, 0], T)
    out = _fast([x.detach() for x in xs[:5]] + [local_off], C, False, mask)
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
        out = _fast([zeros, zeros, lin_q, lin_k_n, v_n, torch.full((C, C), -1.0)], C, causal, mask)[0, 0]
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


@pytest.mark.parametrize("first_to_all", [False, True], ids=["plain", "first-to-all"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_no_quadratic_or_per_token_state_tensor(causal, first_to_all):
    """Every intermediate of forward and backward is at most max(T*max(C, s, e), G*s*e) elements (B = H = 1), while a
    T x T matrix would hold 16384 and a per-token cumsum of lin_k^T v T*s*e = 8192."""
    T, C, s, e = 128, 4, 8, 8
    G = T // C
    xs = [t.requires_grad_() for t in _inputs(B=1, H=1, T=T, s=s, e=e, C=C)]
    mask = right_padding([T - 3], T)
    bound = max(T * max(C, s, e), G * s * e)
    assert bound < min(T * T, T * s * e)
    with _LargestTensor() as probe:
        out = _fast(xs, C, causal, mask, first_to_all=first_to_all)
        out.sum().backward()
    assert probe.largest <= bound, f"intermediate of shape {probe.shape}"
    with _LargestTensor() as probe_ref:                      # the probe does see a T x T tensor when one exists
        _ref([x.detach() for x in xs], C, causal, mask, first_to_all=first_to_all)
    assert probe_ref.largest >= T * T


# ---------------------------------------------------------------------------------------------------------------
# Step form: prefill state + token-by-token decoding == parallel form


def _step_inputs(xs, pos, bias):
    """Token at per-row positions pos (B,) -> the step's inputs (B, H, 1, .) and its bias row (B, 1, 1, C)."""
    rows = torch.arange(pos.shape[0])
    token = [t[rows, :, pos][:, :, None] for t in xs[:5]]
    C = bias.shape[0]
    return token, bias[pos % C][:, None, None, :]


def test_step_from_empty_state_reproduces_parallel():
    C, T = 4, 14
    xs = _inputs(B=2, H=2, T=T, C=C, seed=2)
    want = _fast(xs, C, True)
    state = empty_flash_state(2, 2, C, 8, 6)
    for t in range(T):
        token, bias_row = _step_inputs(xs, torch.full((2,), t), xs[5])
        o, state = mixed_chunk_attention_step(*token, bias_row, state, torch.full((2,), t))
        assert o.shape == (2, 2, 1, 6)
        torch.testing.assert_close(o[:, :, 0], want[:, :, t], **TOL, msg=lambda m, t=t: f"position {t}: {m}")
    assert state.count.tolist() == [12.0, 12.0]


def test_fp64_stays_fp64():
    """Summaries are accumulated in at least fp32: fp64 inputs must not be rounded to fp32 in the parallel form, the
    prefill state or the step form (gradcheck and exact comparisons rely on it)."""
    C, T = 4, 13
    xs = _inputs(B=2, T=T, C=C, dtype=torch.float64)
    want = _ref(xs, C, True)
    torch.testing.assert_close(_fast(xs, C, True), want, atol=1e-12, rtol=1e-12)
    _, pre = _prefill([t[:, :, :5] for t in xs[:5]] + [xs[5]], C)
    state = empty_flash_state(2, 1, C, 8, 6, dtype=torch.float64)
    assert pre.kv.dtype == state.kv.dtype == torch.float64
    for t in range(T):
        pos = torch.full((2,), t)
        token, bias_row = _step_inputs(xs, pos, xs[5])
        o, state = mixed_chunk_attention_step(*token, bias_row, state, pos)
        torch.testing.assert_close(o[:, :, 0], want[:, :, t], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("first_to_all", [False, True], ids=["plain", "first-to-all"])
@pytest.mark.parametrize("C", [1, 4, 5])
def test_prefill_then_steps_rows_of_different_lengths(C, first_to_all):
    """Rows prefilled with 1, C-1, C, C+1, 2C+3 tokens (right padding), then stepped together across >= 2 chunk
    boundaries; every step equals the parallel output at that row's position."""
    lengths = torch.tensor([1, max(C - 1, 1), C, C + 1, 2 * C + 3])
    steps = 2 * C + 3
    T = int(lengths.max()) + steps
    xs = _inputs(B=5, H=2, T=T, C=C, seed=1)
    want = _fast(xs, C, True, first_to_all=first_to_all)
    mask = right_padding(lengths, T)
    pre, state = _prefill(xs, C, mask, first_to_all=first_to_all)
    assert isinstance(state, FlashFirstToAllState if first_to_all else FlashState)
    real = mask[:, None, :, None].expand_as(pre)
    torch.testing.assert_close(pre[real], want[real], **TOL)
    size = state.nbytes()
    for k in range(steps):
        pos = lengths + k
        token, bias_row = _step_inputs(xs, pos, xs[5])
        o, state = mixed_chunk_attention_step(*token, bias_row, state, pos, first_to_all=first_to_all)
        rows = torch.arange(5)
        torch.testing.assert_close(o[:, :, 0], want[rows, :, pos], **TOL, msg=lambda m, k=k: f"step {k}: {m}")
        assert state.nbytes() == size


def test_step_reads_only_the_filled_slots():
    """The step's local part reads the open chunk's slots up to the furthest row's token only: the keys after it
    (stale, from the previous chunk) are never read, so NaN there leaves every output equal to the parallel one.
    Rows at different slots (one at a chunk's first slot while the other is further in), across two boundaries."""
    C, T = 5, 19
    xs = _inputs(B=2, H=2, T=T, C=C, seed=6)
    want = _fast(xs, C, True)
    lengths = torch.tensor([7, 5])
    _, state = _prefill(xs, C, right_padding(lengths, T))
    rows = torch.arange(2)
    for k in range(12):
        pos = lengths + k
        n = int((pos % C).max()) + 1
        stale = state.quad_k[:, :, n:].clone()
        state.quad_k[:, :, n:] = float("nan")
        token, bias_row = _step_inputs(xs, pos, xs[5])
        o, state = mixed_chunk_attention_step(*token, bias_row, state, pos)
        state.quad_k[:, :, n:] = stale        # a later step with a larger n reads these (finite stale keys, v = 0)
        torch.testing.assert_close(o[:, :, 0], want[rows, :, pos], **TOL, msg=lambda m, k=k: f"step {k}: {m}")


def test_prefill_state_equals_stepped_state():
    """The state after a prefill of n tokens equals the state after n steps from empty (kv, count, and the filled
    part of the open-chunk buffer)."""
    C, T = 4, 11
    xs = _inputs(B=1, T=T, C=C, seed=4)
    for n in (1, 3, 4, 5, 8, 11):
        mask = right_padding([n], T)
        _, pre = _prefill(xs, C, mask)
        st = empty_flash_state(1, 1, C, 8, 6)
        for t in range(n):
            token, bias_row = _step_inputs(xs, torch.tensor([t]), xs[5])
            _, st = mixed_chunk_attention_step(*token, bias_row, st, torch.tensor([t]))
        torch.testing.assert_close(pre.kv, st.kv, **TOL)
        assert pre.count.tolist() == st.count.tolist() == [float(n // C * C)]
        filled = n % C
        for name in ("quad_k", "lin_k", "v"):
            torch.testing.assert_close(getattr(pre, name)[:, :, :filled], getattr(st, name)[:, :, :filled])


@pytest.mark.parametrize("first_to_all", [False, True], ids=["plain", "first-to-all"])
def test_state_size_is_constant_over_many_chunks(first_to_all):
    C = 4
    xs = _inputs(B=1, T=1, C=C)
    sizes = set()
    for T in (1, 3, 4, 9, 40):
        big = _inputs(B=1, T=T, C=C)
        _, st = _prefill(big, C, first_to_all=first_to_all)
        sizes.add(st.nbytes())
    state = empty_flash_state(1, 1, C, 8, 6, first_to_all=first_to_all)
    sizes.add(state.nbytes())
    for t in range(5 * C):
        token, bias_row = _step_inputs(xs, torch.zeros(1, dtype=torch.long), xs[5])
        _, state = mixed_chunk_attention_step(*token, bias_row, state, torch.tensor([t]), first_to_all=first_to_all)
        sizes.add(state.nbytes())
    assert len(sizes) == 1
    first_chunk = C * (8 + 6) if first_to_all else 0                   # first_k, first_v
    assert sizes.pop() == 4 * (8 * 6 + 1 + C * (8 + 8 + 6) + first_chunk)   # kv, count, the open chunk's buffer


# ---------------------------------------------------------------------------------------------------------------
# linear_normalizer="sum": the per-chunk summaries / C, summed over the visible chunks (lucidrains, OpenNLPLab)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_sum_normaliser_divides_the_visible_summaries_by_c(causal):
    """The global term with "sum" is the "average" one times (tokens summarised) / C: written out on one row."""
    C, T = 4, 14
    xs = _inputs(B=1, T=T, C=C, dtype=torch.float64, seed=8)
    no_local = [torch.zeros_like(xs[0]), xs[1], *xs[2:5], torch.full((C, C), -1.0, dtype=torch.float64)]
    average = mixed_chunk_attention(*no_local, chunk_size=C, causal=causal)[0][0, 0]
    summed = mixed_chunk_attention(*no_local, chunk_size=C, causal=causal, linear_normalizer="sum")[0][0, 0]
    seen = (torch.arange(T) // C * C if causal else torch.full((T,), T)).double()    # real keys each query sees
    torch.testing.assert_close(summed, average * seen[:, None] / C, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,C", [(1, 4), (11, 4), (9, 8), (6, 1)], ids=lambda x: str(x))
def test_sum_normaliser_fast_minimal_and_reference_agree(causal, T, C):
    xs = _inputs(B=3, H=2, T=T, C=C, seed=7)
    mask = right_padding([T, max(T - 3, 1), 1], T)
    kw = dict(linear_normalizer="sum")
    fast = lambda *a: mixed_chunk_attention(*a, chunk_size=C, causal=causal, key_mask=mask, **kw)[0]
    for other in (lambda *a: mixed_chunk_attention_reference(*a[:5], _dense_bias(a[5], T), chunk_size=C,
                                                             causal=causal, key_mask=mask, **kw),
                  lambda *a: mixed_chunk_attention_minimal(*a, chunk_size=C, causal=causal, key_mask=mask, **kw)):
        assert_forward_backward_close(fast, other, xs, names=NAMES, real=mask[:, None, :, None], **TOL)


def test_sum_normaliser_prefill_then_steps_equal_parallel():
    C = 4
    lengths = torch.tensor([1, 3, 4, 5, 11])
    T = int(lengths.max()) + 9
    xs = _inputs(B=5, H=2, T=T, C=C, seed=9)
    want = mixed_chunk_attention(*xs, chunk_size=C, causal=True, linear_normalizer="sum")[0]
    mask = right_padding(lengths, T)
    _, state = mixed_chunk_attention(*xs, chunk_size=C, causal=True, key_mask=mask, linear_normalizer="sum",
                                     output_final_state=True)
    for k in range(9):
        pos = lengths + k
        token, bias_row = _step_inputs(xs, pos, xs[5])
        o, state = mixed_chunk_attention_step(*token, bias_row, state, pos, linear_normalizer="sum")
        torch.testing.assert_close(o[:, :, 0], want[torch.arange(5), :, pos], **TOL)


def test_unknown_linear_normaliser_is_refused():
    with pytest.raises(ValueError, match="linear_normalizer must be one of"):
        mixed_chunk_attention(*_inputs(), chunk_size=4, causal=True, linear_normalizer="mean")


@pytest.mark.parametrize("parts", ["local", "global"])
@pytest.mark.parametrize("causal", [True, False])
def test_one_part_alone_matches_reference_and_decodes(causal, parts):
    """parts="local" / "global" (the paper's ablation): fast == dense reference with padding (forward and backward),
    the two parts sum to "both", and (causal) prefill + steps equal the parallel form."""
    B, T, C = 2, 15, 4
    xs = _inputs(B=B, T=T, C=C)
    mask = right_padding([15, 9], T)
    kw = dict(chunk_size=C, causal=causal, key_mask=mask)
    real = mask[:, None, :, None]
    used = [0, 1, 4, 5] if parts == "local" else [2, 3, 4]                # the inputs the part reads
    assert_forward_backward_close(
        with_inputs(lambda *a: mixed_chunk_attention(*a, parts=parts, **kw)[0], xs, used),
        with_inputs(lambda *a: mixed_chunk_attention_reference(*a[:5], _dense_bias(a[5], T), parts=parts, **kw), xs,
                    used),
        [xs[i] for i in used], names=[NAMES[i] for i in used], real=real, **TOL)
    local, glob = (mixed_chunk_attention(*xs, parts=p, **kw)[0] for p in ("local", "global"))
    torch.testing.assert_close((local + glob) * real, _fast(xs, C, causal, mask) * real, **TOL)
    if not causal:
        return
    full = mixed_chunk_attention(*xs, parts=parts, chunk_size=C, causal=True)[0]
    _, state = mixed_chunk_attention(*(x[:, :, :6] for x in xs[:5]), xs[5], chunk_size=C, causal=True, parts=parts,
                                     output_final_state=True)
    for t in range(6, T):
        o, state = mixed_chunk_attention_step(*(x[:, :, t:t + 1] for x in xs[:5]), xs[5][t % C].expand(B, 1, 1, C),
                                              state, torch.full((B,), t), parts=parts)
        torch.testing.assert_close(o, full[:, :, t:t + 1], **TOL)


# ---------------------------------------------------------------------------------------------------------------
# first_to_all (flashgau's reading of the paper's "first-to-all", docs/model_options.md): chunks >= 1 also attend
# exactly to chunk 0, which leaves their global part; chunk 0 itself is unchanged


FIRST_SHAPES = [(3, 4), (4, 4), (5, 4), (11, 4), (9, 8), (37, 4), (6, 1), (260, 128)]   # T < C, T = C, partial
# chunks, C = 1, and C = 128, whose causal local part runs in strips (ops/local_blocks.py)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T,C", FIRST_SHAPES, ids=[f"T{t}-C{c}" for t, c in FIRST_SHAPES])
def test_first_to_all_matches_reference_with_padding(causal, T, C):
    """fast == dense reference, outputs and every gradient, with rows of different lengths (right padding; one row
    shorter than the first chunk)."""
    xs = _inputs(B=3, H=2, T=T, C=C, seed=11)
    mask = right_padding([T, max(T - 3, 1), 1], T)
    assert_forward_backward_close(lambda *a: _fast(a, C, causal, mask, first_to_all=True),
                                  lambda *a: _ref(a, C, causal, mask, first_to_all=True), xs, names=NAMES,
                                  real=mask[:, None, :, None], **TOL)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("options", [dict(linear_normalizer="sum"), dict(parts="local")], ids=["sum", "local"])
def test_first_to_all_with_other_options_matches_reference(causal, options):
    T, C = 14, 4
    xs = _inputs(B=2, H=2, T=T, C=C, seed=12)
    mask = right_padding([T, 6], T)
    used = [0, 1, 4, 5] if options.get("parts") == "local" else range(6)
    kw = dict(first_to_all=True, **options)
    assert_forward_backward_close(with_inputs(lambda *a: _fast(a, C, causal, mask, **kw), xs, used),
                                  with_inputs(lambda *a: _ref(a, C, causal, mask, **kw), xs, used),
                                  [xs[i] for i in used], names=[NAMES[i] for i in used], real=mask[:, None, :, None],
                                  **TOL)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_first_to_all_gradcheck_fp64(causal):
    xs = [t.requires_grad_() for t in _inputs(B=1, T=10, s=3, e=2, C=4, dtype=torch.float64)]
    mask = right_padding([9], 10)
    assert torch.autograd.gradcheck(lambda *a: _fast(a, 4, causal, mask, first_to_all=True), xs)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("T", [1, 3, 4])
def test_first_to_all_on_the_first_chunk_alone_is_the_plain_op(causal, T):
    """T <= C: there is no chunk >= 1, so the option changes nothing."""
    xs = _inputs(B=2, H=2, T=T, C=4)
    torch.testing.assert_close(_fast(xs, 4, causal, first_to_all=True), _fast(xs, 4, causal), atol=0, rtol=0)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_first_to_all_reaches_chunk_0_exactly_and_not_globally(causal):
    """Moving a local key of chunk 0 changes every later chunk (it is an exact key of their queries); moving a global key of
    chunk 0 changes no later chunk (chunk 0 left their global part) and, bidirectional, still changes chunk 0 (its
    queries keep the global summary of every chunk)."""
    C, T = 4, 16
    xs = _inputs(T=T, C=C, seed=13)
    base = _fast(xs, C, causal, first_to_all=True)
    moved = [t.clone() for t in xs]
    moved[1][:, :, 2] += 3.0                                     # quad_k of token 2 (chunk 0)
    out = _fast(moved, C, causal, first_to_all=True)
    changed = (out - base).abs().reshape(2, 1, T // C, C * 6).amax(-1)   # per chunk (relu^2 zeroes some queries)
    assert changed[:, :, 1:].min() > 0
    moved = [t.clone() for t in xs]
    moved[3][:, :, 2] += 3.0                                     # lin_k of token 2
    out = _fast(moved, C, causal, first_to_all=True)
    assert torch.equal(out[:, :, C:], base[:, :, C:])
    assert torch.equal(out[:, :, :C], base[:, :, :C]) == causal


def test_first_to_all_masked_keys_of_chunk_0_add_nothing():
    """A masked key inside chunk 0 (a hole, not only right padding) adds nothing to any chunk: its inputs get no
    gradient and garbage there changes no output; fast == reference."""
    C, T = 4, 13
    xs = _inputs(B=2, T=T, C=C, seed=14)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[:, 1] = False
    for causal in (True, False):
        assert_forward_backward_close(lambda *a: _fast(a, C, causal, mask, first_to_all=True),
                                      lambda *a: _ref(a, C, causal, mask, first_to_all=True), xs, names=NAMES,
                                      real=mask[:, None, :, None], **TOL)
        garbage = [t.clone() for t in xs]
        for t in garbage[:5]:
            t[:, :, 1] = 40.0
        keep = mask[:, None, :, None]
        torch.testing.assert_close(_fast(garbage, C, causal, mask, first_to_all=True) * keep,
                                   _fast(xs, C, causal, mask, first_to_all=True) * keep, atol=1e-5, rtol=1e-5)


def test_first_to_all_prefix_consistency():
    C, T = 4, 19
    xs = _inputs(B=2, H=2, T=T, C=C, seed=15)
    full = _fast(xs, C, True, first_to_all=True)
    for n in (1, 4, 5, 8, 13):
        torch.testing.assert_close(_fast([t[:, :, :n] for t in xs[:5]] + [xs[5]], C, True, first_to_all=True),
                                   full[:, :, :n], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("normalizer", ["average", "sum"])
def test_first_to_all_steps_from_empty_reproduce_parallel(normalizer):
    """From the empty state, token by token across several chunks (chunk 0 is frozen at position C - 1); the state
    after n steps equals the prefill's after n tokens (first chunk, running sum without chunk 0, count)."""
    C, T = 4, 14
    xs = _inputs(B=2, H=2, T=T, C=C, seed=16)
    kw = dict(first_to_all=True, linear_normalizer=normalizer)
    want = _fast(xs, C, True, **kw)
    state = empty_flash_state(2, 2, C, 8, 6, first_to_all=True)
    for t in range(T):
        pos = torch.full((2,), t)
        token, bias_row = _step_inputs(xs, pos, xs[5])
        o, state = mixed_chunk_attention_step(*token, bias_row, state, pos, **kw)
        torch.testing.assert_close(o[:, :, 0], want[:, :, t], **TOL, msg=lambda m, t=t: f"position {t}: {m}")
        _, pre = _prefill([x[:, :, :t + 1] for x in xs[:5]] + [xs[5]], C, **kw)
        for name in ("kv", "count", "first_k", "first_v"):
            torch.testing.assert_close(getattr(state, name), getattr(pre, name), **TOL)
    assert state.count.tolist() == [8.0, 8.0]                          # chunks 1 and 2; chunk 0 is not counted


def test_first_to_all_needs_the_local_part_and_a_matching_state():
    xs = _inputs(T=9, C=4)
    with pytest.raises(ValueError, match="parts='global' does not compute"):
        _fast(xs, 4, True, parts="global", first_to_all=True)
    _, plain = _prefill(xs, 4)
    _, first = _prefill(xs, 4, first_to_all=True)
    token, bias_row = _step_inputs(xs, torch.full((2,), 8), xs[5])
    with pytest.raises(ValueError, match="needs a FlashFirstToAllState"):
        mixed_chunk_attention_step(*token, bias_row, plain, torch.full((2,), 9), first_to_all=True)
    with pytest.raises(ValueError, match="needs a FlashState without first_to_all"):
        mixed_chunk_attention_step(*token, bias_row, first, torch.full((2,), 9))
