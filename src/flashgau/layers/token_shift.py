"""Token shift (ModelConfig.token_shift; not in the paper): part of a block's normalised input is taken from the
neighbouring token, RWKV-style (lucidrains' `shift_tokens` in FLASH-pytorch shifts half of the channels).

With n = round(token_shift * d) channels: a causal block takes channels [0, n) of the previous token (zeros at
position 0); a bidirectional block takes channels [0, n - n//2) from the previous token and [n - n//2, n) from the
next (zeros past either end). A padded token never reaches a real one: with a key mask the shifted-in channels of
padded sources are zeroed. GAU blocks shift before the uvz projection, Transformer blocks before attention and
before the feed-forward, always after the pre-norm.

Decoding: the block's state is a `ShiftState`, the attention op's state plus the carry, channels [0, n) of the
previous token's normalised input at each shift point (holding no position: DecodeState.pos stays the only one).
With token_shift 0 the blocks return their attention's state unwrapped. Shapes: B batch, T tokens, d width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..ops import fastpath
from ..ops.autocast import cast
from ..ops.chunks import pick_rows
from ..ops.shift import shift_channels, shift_channels_plain
from ..ops.state import State
from .context import Context


@dataclass
class ShiftState(State):
    """Decoding state of a block with token shift.

    attn:  the attention op's state (FlashState, KVCache, ...), updated by the op's step.
    carry: (B, k, n), at each of the block's k shift points (GAU 1; Transformer 2: before attention, before the
           feed-forward) the shifted channels of the previous token's normalised input.
    """

    attn: Any
    carry: Tensor

    def reserve(self, positions: int, *, exact: bool = True) -> None:
        self.attn.reserve(positions, exact=exact)


class TokenShift(nn.Module):
    """h (B, T, d) normalised input -> the same with channels [0, n) taken from the neighbouring tokens."""

    def __init__(self, fraction: float, d_model: int):
        super().__init__()
        self.n = int(round(fraction * d_model))

    @property
    def active(self) -> bool:
        return self.n > 0

    def forward(self, h: Tensor, ctx: Context) -> Tensor:
        if not self.active:
            return h
        n = self.n
        back = n if ctx.causal else n - n // 2          # channels from the previous token, the rest from the next
        shift = shift_channels if fastpath.enabled("shift_nocat") else shift_channels_plain
        return shift(h, n, back, ctx.key_mask)

    def wrap(self, state: Any, hs: Sequence[Tensor], ctx: Context) -> Any:
        """The block's decoding state after a prefill: `state` itself without token shift, else a ShiftState
        carrying channels [0, n) of each row's last real token of every normalised input in hs (B, T, d)."""
        if not self.active:
            return state
        last = ctx.lengths(hs[0].shape[0]) - 1
        carry = torch.stack([pick_rows(h[..., :self.n], last, dim=1) for h in hs], dim=1)   # (B, k, n)
        return ShiftState(attn=state, carry=carry)

    def step(self, h: Tensor, carry: Tensor) -> Tensor:
        """One token per row, h (B, 1, d), carry (B, n) of the previous token (a view into the state, written in
        place with this token's channels): the shifted input."""
        out = torch.cat([cast(carry[:, None], h.dtype), h[..., self.n:]], dim=-1)
        carry.copy_(h[:, 0, :self.n])
        return out

