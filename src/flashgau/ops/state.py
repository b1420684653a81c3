"""`State`, the base of every decoding state (FlashState, KVCache, CombinerState, FavorState, SoftmaxChunkState).

A state is a dataclass whose fields are all tensors with the batch row as their first axis, or states themselves
(a block-level state wrapping its attention op's state, e.g. layers.token_shift.ShiftState), so one generic `map`
gives copies (`clone`), row selection and reordering (`select`, what beam search needs) and sizes (`nbytes`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, TypeVar

from torch import Tensor

S = TypeVar("S", bound="State")


@dataclass
class State:
    """Base class: a dataclass of (B, ...) tensors (or nested states). Subclasses add fields (and, if they grow,
    `reserve`)."""

    def map(self: S, fn: Callable[[Tensor], Tensor]) -> S:
        """A state of the same type holding fn(field) for every tensor field (nested states mapped the same way)."""
        def apply(value):
            return value.map(fn) if isinstance(value, State) else fn(value)
        return type(self)(**{f.name: apply(getattr(self, f.name)) for f in fields(self)})

    def clone(self: S) -> S:
        """An independent copy (decoding writes into a state in place)."""
        return self.map(Tensor.clone)

    def select(self: S, index: Tensor) -> S:
        """The rows `index` (a (B',) int64 tensor, which may reorder or repeat rows, or a (B,) bool mask)."""
        return self.map(lambda t: t[index])

    def nbytes(self) -> int:
        """Bytes held by the state's tensors (nested states included)."""
        def size(value) -> int:
            return value.nbytes() if isinstance(value, State) else value.nelement() * value.element_size()
        return sum(size(getattr(self, f.name)) for f in fields(self))

    def reserve(self, positions: int, *, exact: bool = True) -> None:
        """Make room for `positions` tokens per row. A fixed-size state has room for any number: nothing to do.
        Growing states (KVCache, CombinerState) allocate exactly that much, or with exact=False at least twice
        their current size, so that growing one token at a time costs amortised O(1)."""


def check_final_state(causal: bool, output_final_state: bool) -> None:
    """Raise ValueError when a parallel op is asked for a decoding state it cannot give (bidirectional attention)."""
    if output_final_state and not causal:
        raise ValueError("a decoding state exists only for causal attention (output_final_state needs causal=True)")


LINEAR_NORMALIZERS = ("average", "sum")


def check_linear_normalizer(linear_normalizer: str) -> None:
    """Raise ValueError unless `linear_normalizer` names a normaliser of mixed chunk attention's linear part."""
    if linear_normalizer not in LINEAR_NORMALIZERS:
        raise ValueError(f"linear_normalizer must be one of {LINEAR_NORMALIZERS}, got {linear_normalizer!r}")


MIXED_CHUNK_PARTS = ("both", "local", "global")


def check_parts(parts: str) -> None:
    """Raise ValueError unless `parts` names which parts of mixed chunk attention to compute."""
    if parts not in MIXED_CHUNK_PARTS:
        raise ValueError(f"parts must be one of {MIXED_CHUNK_PARTS}, got {parts!r}")

