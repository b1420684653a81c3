"""KVCache: the decoding state of attention whose state grows with the sequence (FLASH-Quad, Transformer+/++).

Slot t of a row holds the key and value of that row's token at position t, so rows of different lengths share
one tensor: a row at position pos (the caller's, not stored here) holds valid slots [0, pos).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .state import State


@dataclass
class KVCache(State):
    """k: (B, H, capacity, dk), v: (B, H, capacity, dv)."""

    k: Tensor
    v: Tensor

    @classmethod
    def from_prefill(cls, k: Tensor, v: Tensor, capacity: int = 0) -> "KVCache":
        """Cache holding the keys and values (B, H, T, d) of a prefill, with room for `capacity` positions. A row
        with fewer real tokens than T holds padding in its later slots: masked until its own tokens overwrite them."""
        own = torch.contiguous_format   # copies: append writes in place and must never touch the caller's k, v
        cache = cls(k=k.clone(memory_format=own), v=v.clone(memory_format=own))
        cache.reserve(max(capacity, k.shape[2]))
        return cache

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def reserve(self, positions: int, *, exact: bool = True) -> None:
        """Grow the slot axis so at least `positions` slots exist: to exactly that many, or (exact=False, for growth
        one token at a time) to at least twice the current size, so appends cost amortised O(1)."""
        if positions <= self.capacity:
            return
        new = positions if exact else max(positions, 2 * self.capacity, 16)
        grow = new - self.capacity
        self.k = torch.cat([self.k, self.k.new_zeros(*self.k.shape[:2], grow, self.k.shape[-1])], dim=2)
        self.v = torch.cat([self.v, self.v.new_zeros(*self.v.shape[:2], grow, self.v.shape[-1])], dim=2)

    def append(self, k: Tensor, v: Tensor, pos: Tensor) -> Tensor:
        """Write one token per row (k, v: (B, H, 1, d)) in place at slot pos (B,) (which must exist: reserve);
        return the (B, 1, 1, capacity) bool mask of the slots the new query may attend to (slots <= pos)."""
        rows = torch.arange(self.k.shape[0], device=self.k.device)
        self.k[rows, :, pos] = k[:, :, 0].to(self.k.dtype)
        self.v[rows, :, pos] = v[:, :, 0].to(self.v.dtype)
        valid = torch.arange(self.capacity, device=self.k.device)[None, :] <= pos[:, None]
        return valid[:, None, None, :]
