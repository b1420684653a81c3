"""The decoding-state base (ops/state.py): every state type copies, selects rows and counts its bytes the same way."""

import pytest
import torch

from flashgau.ops.combiner import empty_combiner_state
from flashgau.ops.favor import empty_favor_state
from flashgau.ops.kv_cache import KVCache
from flashgau.ops.mixed_chunk import empty_flash_state
from flashgau.ops.mixed_chunk_first_to_all import empty_flash_first_to_all_state
from flashgau.ops.mixed_chunk_softmax import empty_softmax_chunk_state

B = 3


def _reserved(state, positions):
    state.reserve(positions)                   # room for summaries: no empty field
    return state


def _numbered(state):
    """Every field filled with its row number, so row moves are visible."""
    def fill(t):
        rows = torch.arange(t.shape[0], dtype=torch.float64).reshape(-1, *[1] * (t.dim() - 1))
        return rows.expand_as(t).to(t.dtype).clone()
    return state.map(fill)


STATES = {
    "flash": lambda: empty_flash_state(B, 1, 4, 8, 6),
    "flash_first_to_all": lambda: empty_flash_first_to_all_state(B, 1, 4, 8, 6),
    "kv_cache": lambda: KVCache.from_prefill(torch.zeros(B, 2, 5, 4), torch.zeros(B, 2, 5, 3)),
    "combiner": lambda: _reserved(empty_combiner_state(B, 2, 4, 8), 8),
    "favor": lambda: empty_favor_state(B, 2, 16, 8),
    "softmax_chunk": lambda: empty_softmax_chunk_state(B, 2, 4, 8, 6),
}


@pytest.mark.parametrize("kind", list(STATES))
def test_select_reorders_repeats_and_drops_rows_of_every_field(kind):
    state = _numbered(STATES[kind]())
    picked = state.select(torch.tensor([2, 0, 0]))
    assert type(picked) is type(state)
    for name, t in vars(picked).items():
        assert t.shape[0] == 3, name
        assert t.reshape(3, -1)[:, 0].tolist() == [2, 0, 0], name
    kept = state.select(torch.tensor([True, False, True]))
    assert all(t.reshape(2, -1)[:, 0].tolist() == [0, 2] for t in vars(kept).values())


@pytest.mark.parametrize("kind", list(STATES))
def test_clone_is_independent_and_nbytes_counts_every_field(kind):
    state = _numbered(STATES[kind]())
    copy = state.clone()
    for t in vars(state).values():
        t.add_(1)
    for name, (a, b) in ((n, (getattr(state, n), getattr(copy, n))) for n in vars(state)):
        assert not torch.equal(a, b), name
    assert state.nbytes() == copy.nbytes() == sum(t.nelement() * t.element_size() for t in vars(state).values())
