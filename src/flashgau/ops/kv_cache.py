"""A key-value cache for attention whose state grows with the sequence (FLASH-Quad, Transformer+/++).

Slot t of a row holds the key and value of that row's token at position t, so rows of different lengths share
one tensor: row r's valid slots are [0, pos[r]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .state import State


@dataclass
class KVCache(State):
    """k: (B, H, capacity, dk), v: (B, H, capacity, dv), pos: (B,) int64 = number of tokens held per row."""

    k: Tensor
    v: Tensor
    pos: Tensor

    @classmethod
    def from_prefill(cls, k: Tensor, v: Tensor, lengths: Tensor, capacity: int = 0) -> "KVCache":
        """Cache holding the first lengths[r] positions of row r of k, v (B, H, T, d)."""
        own = torch.contiguous_format   # copies: append writes in place and must never touch the caller's k, v
        cache = cls(k=k.clone(memory_format=own), v=v.clone(memory_format=own), pos=lengths.to(torch.long).clone())
        cache.reserve(max(capacity, k.shape[2]))
        return cache

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def reserve(self, capacity: int, *, exact: bool = True) -> None:
        """Grow the slot axis so at least `capacity` slots exist: to exactly that many, or (exact=False, used when
        appending past the end) to at least twice the current size, so appends cost amortised O(1)."""
        if capacity <= self.capacity:
            return
        new = capacity if exact else max(capacity, 2 * self.capacity, 16)
        grow = new - self.capacity
        self.k = torch.cat([self.k, self.k.new_zeros(*self.k.shape[:2], grow, self.k.shape[-1])], dim=2)
        self.v = torch.cat([self.v, self.v.new_zeros(*self.v.shape[:2], grow, self.v.shape[-1])], dim=2)

    def append(self, k: Tensor, v: Tensor) -> Tensor:
        """Write one token per row (k, v: (B, H, 1, d)) at slot pos; return the (B, 1, 1, capacity) bool mask of
        the slots the new query may attend to (slots <= its position). Advances pos."""
        self.reserve(int(self.pos.max()) + 1, exact=False)
        rows = torch.arange(self.k.shape[0], device=self.k.device)
        self.k[rows, :, self.pos] = k[:, :, 0].to(self.k.dtype)
        self.v[rows, :, self.pos] = v[:, :, 0].to(self.v.dtype)
        valid = torch.arange(self.capacity, device=self.k.device)[None, :] <= self.pos[:, None]
        self.pos += 1
        return valid[:, None, None, :]
