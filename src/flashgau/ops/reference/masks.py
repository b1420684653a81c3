"""The dense visibility mask the references share: may query i look at key j (causal order, real keys)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def dense_mask(T: int, key_mask: Optional[Tensor], causal: bool, device) -> Tensor:
    """(B or 1, 1, T, T) bool: key j is visible to query i (j <= i when causal, and key j real)."""
    i = torch.arange(T, device=device)
    allowed = (i[None, :] <= i[:, None]) if causal else torch.ones(T, T, dtype=torch.bool, device=device)
    allowed = allowed[None, None]
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :].bool()
    return allowed
