"""Position signals (layers/positions.py) against the paper (§2.4, §2.5): RoPE (half-split, decreasing frequencies,
relative), the scaled sinusoid, and the relative position bias (centred Toeplitz, RoPE-factorised, none)."""

import math

import pytest
import torch

from flashgau.layers.positions import RelPosBias, ScaledSinusoid, StepPositions, apply_rope, rope_tables


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------
# RoPE


def test_rope_preserves_norms():
    x = _randn(2, 3, 9, 16)
    for pos in (torch.arange(9), torch.tensor([0, 1, 7, 100, 511, 512, 4096, 9999, 123456])):
        y = apply_rope(x, pos)
        torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(y[:, :, 1:], x[:, :, 1:], atol=1e-3)      # it does rotate


@pytest.mark.parametrize("dim", [2, 8, 32])
def test_rope_dot_product_depends_only_on_offset(dim):
    q, k = _randn(1, 1, 1, dim, seed=1), _randn(1, 1, 1, dim, seed=2)

    def dot(i, j):
        return float((apply_rope(q, torch.tensor([i])) * apply_rope(k, torch.tensor([j]))).sum())

    for i, j in [(0, 3), (5, 2), (7, 7), (0, 0)]:
        for shift in (1, 13, 300):
            assert dot(i, j) == pytest.approx(dot(i + shift, j + shift), abs=1e-4)
    assert abs(dot(0, 3) - dot(0, 4)) > 1e-4                                     # and on the offset


def test_rope_frequencies_decrease_from_one():
    """Rotating the unit vector of pair m by one position turns it by theta_m = 10000^(-m/(dim/2)): theta_0 = 1 and
    the frequencies decrease (SinGaln's port computed 10000^(+m/half), frequencies growing)."""
    dim, half = 16, 8
    x = torch.eye(half, dim)[None, None]                                         # (1, 1, half, dim): e_0 .. e_7
    y = apply_rope(x, torch.ones(half, dtype=torch.long))[0, 0]                  # every row at position 1
    m = torch.arange(half)
    theta = torch.atan2(y[m, m + half], y[m, m])
    want = 10000.0 ** (-m.double() / half)
    torch.testing.assert_close(theta.double(), want, atol=1e-6, rtol=1e-6)
    assert theta[0] == pytest.approx(1.0, abs=1e-6)
    assert (theta[1:] < theta[:-1]).all()


def test_rope_half_split_layout():
    """[x1 cos - x2 sin, x2 cos + x1 sin] with x1, x2 the two halves (not interleaved pairs)."""
    dim, half = 8, 4
    x = _randn(2, 1, 5, dim, seed=3)
    pos = torch.tensor([0, 1, 2, 9, 40])
    ang = pos[:, None].double() * 10000.0 ** (-torch.arange(half).double() / half)
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., :half].double(), x[..., half:].double()
    want = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    torch.testing.assert_close(apply_rope(x, pos).double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_rope(x, torch.zeros(5, dtype=torch.long)), x)   # position 0: identity


def test_rope_per_row_positions_agree_with_shared():
    x = _randn(3, 2, 4, 8)
    pos = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8], [100, 101, 102, 103]])
    y = apply_rope(x, pos)
    for r in range(3):
        torch.testing.assert_close(y[r:r + 1], apply_rope(x[r:r + 1], pos[r]))
    assert not torch.allclose(y[1], y[0])


def test_rope_angles_in_fp32_for_low_precision_inputs():
    """At large positions bf16 angles would be off by whole radians; the rotation must be computed in fp32."""
    x = _randn(1, 1, 3, 16)
    pos = torch.tensor([5001, 20003, 65537])
    ref = apply_rope(x.double(), pos)
    y = apply_rope(x.bfloat16(), pos)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), ref, atol=3e-2, rtol=3e-2)


# ---------------------------------------------------------------------------------------------------------------
# Scaled sinusoid


@pytest.mark.parametrize("d", [8, 64, 768])
def test_scaled_sinusoid_init_and_formula(d):
    sin = ScaledSinusoid(d)
    assert isinstance(sin.scale, torch.nn.Parameter) and sin.scale.numel() == 1
    assert sin.scale.item() == pytest.approx(1 / math.sqrt(d))
    pos = torch.tensor([0, 1, 5, 300])
    half = d // 2
    f = 10000.0 ** (-torch.arange(half).double() / half)
    want = torch.cat([torch.sin(pos[:, None] * f), torch.cos(pos[:, None] * f)], dim=-1) / math.sqrt(d)
    got = sin(pos)
    assert got.shape == (4, d)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_scaled_sinusoid_scale_is_learned_and_per_row_positions():
    sin = ScaledSinusoid(8)
    pos = torch.tensor([[0, 1, 2], [7, 8, 9]])
    out = sin(pos)
    assert out.shape == (2, 3, 8)
    for r in range(2):
        torch.testing.assert_close(out[r], sin(pos[r]))
    out.sum().backward()
    assert sin.scale.grad is not None and sin.scale.grad != 0
    with torch.no_grad():
        sin.scale.fill_(2.0)
    torch.testing.assert_close(sin(pos[0]), out[0].detach() * 2.0 * math.sqrt(8), atol=1e-5, rtol=1e-5)


def test_scaled_sinusoid_odd_width():
    assert ScaledSinusoid(7)(torch.arange(3)).shape == (3, 7)


# ---------------------------------------------------------------------------------------------------------------
# Relative position bias: Toeplitz


def _toeplitz(span, seed=0):
    rel = RelPosBias("toeplitz", span, 8)
    with torch.no_grad():
        rel.weight.copy_(_randn(2 * min(span, 512) - 1, seed=seed))          # distinct weights per offset
    return rel


@pytest.mark.parametrize("n", [1, 3, 8])
def test_toeplitz_is_w_of_offset_centred(n):
    """bias[i, j] = w[(j - i) + N - 1] with N the table's span, at every length n <= N (centred: an offset keeps
    its weight whatever the length; JunnYu's first version sliced w[:2n - 1], P9)."""
    N = 8
    rel = _toeplitz(N)
    pos = torch.arange(n)
    bias = rel(pos, pos)
    assert bias.shape == (n, n)
    w = rel.weight.detach()
    want = torch.stack([torch.stack([w[(j - i) + N - 1] for j in range(n)]) for i in range(n)])
    torch.testing.assert_close(bias, want, atol=0, rtol=0)
    assert torch.equal(bias.diagonal(), w[N - 1].expand(n))                   # offset 0 -> the centre, always


def test_toeplitz_clips_far_offsets_and_is_translation_invariant():
    N = 4
    rel = _toeplitz(N, seed=1)
    w = rel.weight.detach()
    pos = torch.arange(10)
    bias = rel(pos, pos)
    for i in range(10):
        for j in range(10):
            o = max(-(N - 1), min(N - 1, j - i))
            assert bias[i, j] == w[o + N - 1]
    torch.testing.assert_close(rel(pos + 1000, pos + 1000), bias, atol=0, rtol=0)
    q = torch.tensor([3, 4])                                                   # decoding: a few queries vs all keys
    torch.testing.assert_close(rel(q, pos), bias[3:5], atol=0, rtol=0)


def test_toeplitz_span_capped_at_512_and_gradient_per_offset():
    assert RelPosBias("toeplitz", 2048, 8).weight.numel() == 2 * 512 - 1
    rel = RelPosBias("toeplitz", 5, 8)
    assert rel.weight.numel() == 9
    pos = torch.arange(5)
    rel(pos, pos).sum().backward()
    # offset o appears (5 - |o|) times in a 5 x 5 table: one parameter per offset
    torch.testing.assert_close(rel.weight.grad, torch.tensor([1., 2, 3, 4, 5, 4, 3, 2, 1]))


# ---------------------------------------------------------------------------------------------------------------
# Relative position bias: RoPE-factorised, none, per-row positions


def test_rope_bias_is_rope_a_dot_rope_b_and_depends_only_on_offset():
    s = 8
    rel = RelPosBias("rope", 4096, s)
    with torch.no_grad():
        rel.a.copy_(_randn(s, seed=4))
        rel.b.copy_(_randn(s, seed=5))
    pos = torch.arange(6)
    bias = rel(pos, pos)
    assert bias.shape == (6, 6)
    ra = apply_rope(rel.a.detach().expand(1, 1, 6, s), pos)[0, 0]
    rb = apply_rope(rel.b.detach().expand(1, 1, 6, s), pos)[0, 0]
    torch.testing.assert_close(bias, ra @ rb.T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bias[1:, 1:], bias[:-1, :-1], atol=1e-5, rtol=1e-5)   # Toeplitz: f(j - i) only
    torch.testing.assert_close(rel(pos + 777, pos + 777), bias, atol=1e-4, rtol=1e-4)
    assert abs((bias[0, 1] - bias[1, 0]).item()) > 1e-4        # not symmetric: a != b
    bias.sum().backward()
    assert rel.a.grad.abs().sum() > 0 and rel.b.grad.abs().sum() > 0


def test_none_bias_is_zero():
    rel = RelPosBias("none", 64, 8)
    assert list(rel.parameters()) == []
    assert torch.equal(rel(torch.arange(3), torch.arange(5)), torch.zeros(3, 5))
    assert torch.equal(rel(torch.arange(3).expand(2, 3), torch.arange(5)), torch.zeros(2, 1, 3, 5))


@pytest.mark.parametrize("kind", ["toeplitz", "rope", "none"])
def test_per_row_query_positions_agree_with_shared(kind):
    torch.manual_seed(0)
    rel = RelPosBias(kind, 16, 8, init_std=1.0)
    keys = torch.arange(16)
    pos_q = torch.tensor([[0, 1, 2], [5, 6, 7], [13, 14, 15]])
    bias = rel(pos_q, keys)
    assert bias.shape == (3, 1, 3, 16)
    for r in range(3):
        torch.testing.assert_close(bias[r, 0], rel(pos_q[r], keys), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind,span,width", [("toeplitz", 8, 8), ("toeplitz", 512, 8), ("toeplitz", 4, 8),
                                              ("rope", 8, 8), ("none", 8, 8)])
def test_chunk_row_is_the_bias_of_a_slot_against_its_chunk(kind, span, width):
    """chunk_row (decoding's bias row) equals forward(slot[:, None], arange(width)) for every slot, also where the
    Toeplitz table is narrower than the chunk (offsets clipped: the general form)."""
    torch.manual_seed(0)
    rel = RelPosBias(kind, span, 8)
    if kind == "toeplitz":
        torch.nn.init.normal_(rel.weight)
    slot = torch.tensor([0, 3, width - 1, 5, 0])
    want = rel(slot[:, None], torch.arange(width))
    got = rel.chunk_row(slot, width)
    assert got.shape == want.shape == (5, 1, 1, width)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    for r, i in enumerate(slot.tolist()):          # an int slot: the row of every batch row, (1, 1, 1, width)
        got = rel.chunk_row(i, width)
        assert got.shape == (1, 1, 1, width)
        torch.testing.assert_close(got, want[r:r + 1], atol=0, rtol=0)


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="t5"):
        RelPosBias("t5", 16, 8)


@pytest.mark.parametrize("dims", [0, 2, 4, 8])
def test_partial_rope_rotates_the_first_dims_and_passes_the_rest(dims):
    """apply_rope(x, pos, dims): the first `dims` channels rotated as a dims-wide RoPE, the others untouched."""
    x = _randn(2, 1, 6, 8, seed=7)
    pos = torch.tensor([0, 1, 5, 9, 100, 4000])
    y = apply_rope(x, pos, dims)
    torch.testing.assert_close(y[..., dims:], x[..., dims:], atol=0, rtol=0)
    if dims:
        torch.testing.assert_close(y[..., :dims], apply_rope(x[..., :dims], pos))
    torch.testing.assert_close(apply_rope(x, pos, 8), apply_rope(x, pos))


def test_step_positions_hold_the_rope_tables_and_host_positions_of_a_step():
    """StepPositions (one per decoding step, shared by its layers) gives what rope_tables gives for pos[:, None],
    without the head axis, computed once per width and dtype, and pos as ints."""
    pos = torch.tensor([3, 700, 0])
    step = StepPositions(pos)
    assert step.host() == [3, 700, 0]
    for dims, dtype in [(8, torch.float32), (4, torch.float32), (8, torch.float64)]:
        cos, sin = rope_tables(pos[:, None], dims, dtype)
        got = step.rope_tables(dims, dtype)
        assert got[0].shape == (3, 1, dims // 2)
        torch.testing.assert_close(got, (cos[:, 0], sin[:, 0]), atol=0, rtol=0)
        assert step.rope_tables(dims, dtype)[0] is got[0]
