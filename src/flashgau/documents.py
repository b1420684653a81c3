"""Packed documents: every document of a packed row runs as a row of its own, so nothing crosses a boundary.

A packed window holds the end of one document and the start of the next (`--pack-documents`); its segment_ids
(B, T) say which document each token belongs to, a document being a run of equal consecutive ids. The model cuts
the rows into their documents ("pieces"), stacks the pieces as a right-padded batch (N, L) (L: the longest
piece), runs that batch, and puts each output back in its place. Each document is then computed exactly as a run
of its own would compute it, in every architecture and both directions: the quadratic and the local chunk
attention, the chunk summaries of the global part and their normalisers, positions (counted from each piece's
first token), token shift. The chunks of FLASH start at each document's first token, as in a run of that
document alone, rather than at the window's start.

The cost is the padding of the pieces to the longest one: N x L tokens instead of B x T. A window that crosses one
boundary adds a row (N = B + 1, L <= T); a batch that mixes a long piece with many short ones pays more. Shapes: B
rows, T tokens, N pieces, L piece length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class Pieces:
    """The documents of a packed batch. index (N, L) long: the flat position (row * T + column) of each token of
    each piece, clamped inside the batch beyond the piece's end; mask (N, L) bool: real tokens of the pieces
    (inside the piece and not padding); batch, tokens: B and T."""

    index: Tensor
    mask: Tensor
    batch: int
    tokens: int

    def gather(self, x: Tensor) -> Tensor:
        """(B, T, ...) -> (N, L, ...)."""
        return x.reshape(self.batch * self.tokens, *x.shape[2:])[self.index]

    def scatter(self, y: Tensor) -> Tensor:
        """(N, L, ...) -> (B, T, ...), zeros where no piece has a real token."""
        out = y.new_zeros(self.batch * self.tokens, *y.shape[2:])
        out = out.index_put((self.index[self.mask],), y[self.mask])
        return out.reshape(self.batch, self.tokens, *y.shape[2:])

    @property
    def key_mask(self) -> Optional[Tensor]:
        """The pieces' key mask, None when every token of every piece is real."""
        return None if bool(self.mask.all()) else self.mask


def split_documents(segment_ids: Tensor, mask: Optional[Tensor] = None) -> Optional[Pieces]:
    """The pieces of rows with segment_ids (B, T), key mask (B, T) bool or None (every token real); None when no
    row holds two documents (then nothing needs cutting). Pieces without a real token are dropped."""
    B, T = segment_ids.shape
    first = torch.ones(B, T, dtype=torch.bool, device=segment_ids.device)
    first[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]                  # a piece starts here
    if not bool(first[:, 1:].any()):
        return None
    starts = first.reshape(-1).nonzero().squeeze(1)                           # flat positions, in order
    ends = torch.cat([starts[1:], starts.new_tensor([B * T])])
    ends = torch.minimum(ends, (starts // T + 1) * T)                         # a piece ends with its row
    real = torch.ones(B * T, dtype=torch.bool, device=segment_ids.device) if mask is None else mask.reshape(-1)
    counts = torch.cumsum(torch.cat([real.new_zeros(1, dtype=torch.long), real.long()]), 0)
    keep = counts[ends] > counts[starts]                                      # pieces with a real token
    starts, ends = starts[keep], ends[keep]
    width = int((ends - starts).max())
    offsets = torch.arange(width, device=segment_ids.device)
    inside = offsets[None] < (ends - starts)[:, None]                         # (N, L)
    index = torch.minimum(starts[:, None] + offsets[None], (ends - 1)[:, None])
    return Pieces(index=index, mask=inside & real[index], batch=B, tokens=T)
