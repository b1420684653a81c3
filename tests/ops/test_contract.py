"""The one op contract (flashgau/ops/__init__.py), checked for every op: the parallel form always returns
(o, final_state) with final_state None unless output_final_state=True (causal only), options are keyword-only, and
the step form takes (..., state, pos) and returns (o, state) with the state written in place (the same object)."""

import inspect

import pytest
import torch

from flashgau import ops
from flashgau.ops.favor import draw_orthogonal_features

B, H, T, C, S, E = 2, 2, 7, 4, 8, 6
PROJECTION = draw_orthogonal_features(16, S, generator=torch.Generator().manual_seed(0))


def _x(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _qk(n, T, seed=0):
    return [_x(B, H, T, S, seed=seed + i) for i in range(n)]


def _spec(parallel, step, inputs, extra=(), options=None, step_extra=lambda capacity: []):
    """inputs(T): the per-token tensors; extra: further tensor inputs of the parallel form; step_extra(capacity):
    further tensor inputs of the step form, before the state."""
    return parallel, step, inputs, list(extra), options or {}, step_extra


def _five(T):
    return _qk(4, T) + [_x(B, H, T, E, seed=9)]


OPS = {
    "mixed_chunk": _spec(ops.mixed_chunk_attention, ops.mixed_chunk_attention_step, _five, [_x(C, C, seed=5)],
                         dict(chunk_size=C), lambda capacity: [_x(B, 1, 1, C, seed=6)]),
    "mixed_chunk_first_to_all": _spec(ops.mixed_chunk_first_to_all_attention,
                                      ops.mixed_chunk_first_to_all_attention_step, _five, [_x(C, C, seed=5)],
                                      dict(chunk_size=C), lambda capacity: [_x(B, 1, 1, C, seed=6)]),
    "relu2": _spec(ops.relu2_attention, ops.relu2_attention_step, lambda T: _qk(2, T) + [_x(B, H, T, E, seed=9)],
                   [_x(T, T, seed=5)], dict(norm=float(T)), lambda capacity: [_x(B, 1, 1, capacity, seed=6)]),
    "softmax": _spec(ops.softmax_attention, ops.softmax_attention_step, lambda T: _qk(3, T)),
    "combiner": _spec(ops.combiner_attention, ops.combiner_attention_step, lambda T: _qk(3, T),
                      options=dict(chunk_size=C)),
    "favor": _spec(ops.favor_attention, ops.favor_attention_step, lambda T: _qk(3, T), [PROJECTION],
                   dict(chunk_size=C), lambda capacity: [PROJECTION]),
    "mixed_chunk_softmax": _spec(ops.mixed_chunk_softmax_attention, ops.mixed_chunk_softmax_attention_step, _five,
                                 options=dict(chunk_size=C)),
}


@pytest.mark.parametrize("name", list(OPS))
def test_options_are_keyword_only(name):
    parallel, step = OPS[name][:2]
    params = inspect.signature(parallel).parameters
    assert params["output_final_state"].default is False
    assert all(p.kind == p.KEYWORD_ONLY for p in params.values() if p.default is not p.empty or p.name == "causal")
    names = list(inspect.signature(step).parameters.values())
    positional = [p.name for p in names if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert "state" in positional and all(p.kind == p.KEYWORD_ONLY for p in names if p.name not in positional)
    if name != "favor":                                      # favor's step needs no position
        assert positional[-2:] == ["state", "pos"]


@pytest.mark.parametrize("name", list(OPS))
def test_parallel_form_always_returns_a_pair(name):
    parallel, _, inputs, extra, options, _ = OPS[name]
    xs = inputs(T) + extra
    o, none = parallel(*xs, causal=True, **options)
    assert none is None and o.shape[:3] == (B, H, T)
    o2, state = parallel(*xs, causal=True, output_final_state=True, **options)
    assert isinstance(state, ops.State)
    torch.testing.assert_close(o2, o, atol=0, rtol=0)
    assert parallel(*xs, causal=False, **options)[1] is None
    with pytest.raises(ValueError, match="causal"):
        parallel(*xs, causal=False, output_final_state=True, **options)


@pytest.mark.parametrize("name", list(OPS))
def test_step_writes_the_state_in_place_and_returns_it(name):
    parallel, step, inputs, extra, options, step_extra = OPS[name]
    mask = torch.arange(T)[None, :] < torch.tensor([T, 3])[:, None]
    xs = inputs(T + 1)
    _, state = parallel(*[x[:, :, :T] for x in xs], *extra, causal=True, key_mask=mask, output_final_state=True,
                        **options)
    pos = mask.sum(1)
    state.reserve(int(pos.max()) + 1, exact=False)
    before = state.clone()
    token = [x[:, :, T:] for x in xs]
    step_options = {k: v for k, v in options.items() if k == "norm"}
    args = (state,) if name == "favor" else (state, pos)
    o, returned = step(*token, *step_extra(getattr(state, "capacity", 0)), *args, **step_options)
    assert returned is state and o.shape[:3] == (B, H, 1)
    assert any(not torch.equal(a, b) for a, b in zip(vars(before).values(), vars(state).values()))
