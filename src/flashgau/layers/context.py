"""What every block needs to know about the batch besides its activations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor


@dataclass
class Context:
    """positions: (T,) int64, the absolute position of each column (rows are right-padded, so shared).
    key_mask: (B, T) bool, True for real tokens, or None when every token is real.
    causal: whether a position may see later positions."""

    positions: Tensor
    key_mask: Optional[Tensor]
    causal: bool

    def lengths(self, batch: int) -> Tensor:
        """(B,) number of real tokens per row."""
        if self.key_mask is None:
            return self.positions.new_full((batch,), self.positions.shape[0])
        return self.key_mask.sum(1)
