"""Token windows for training (random, inside one document) and for held-out evaluation (fixed).

A window of context T holds T inputs and their T next-token labels, i.e. T + 1 consecutive tokens of one
document; windows never cross a document boundary.

Training (`WindowSampler`): every start position of every document is equally likely (documents are drawn in
proportion to their number of windows). A document shorter than T + 1 tokens gives one window, right-padded:
padded inputs have attention_mask 0 and labels -100. The sampler draws from its own seeded `torch.Generator`;
`state_dict()` / `load_state_dict()` save and restore its position exactly.

Held-out (`HeldoutWindows`): each document is cut into consecutive windows with stride T, so every token but a
document's first is scored exactly once; the last window is aligned to the document's end (its already-scored
labels set to -100) so that it is full length. The windows depend only on the tokens and T, which makes losses
comparable between runs and architectures with the same tokenizer and context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch

from ..errors import ConfigError

IGNORE_INDEX = -100


@dataclass
class Batch:
    """input_ids (B, T) long; labels (B, T) long with -100 where ignored; attention_mask (B, T) bool or None
    when no window in the batch is padded."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: Optional[torch.Tensor] = None

    @property
    def num_targets(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device) -> "Batch":
        """The same batch on `device` (itself when already there)."""
        if self.input_ids.device == torch.device(device):
            return self
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.input_ids), move(self.labels), move(self.attention_mask))


def tokenize_documents(texts: Sequence[str], tokenizer) -> list[torch.Tensor]:
    """One 1-D int32 tensor of token ids per text (documents with fewer than 2 tokens are dropped: they have
    nothing to predict)."""
    ids = tokenizer.encode_batch(list(texts))
    return [torch.tensor(x, dtype=torch.int32) for x in ids if len(x) >= 2]


def check_context(docs: Sequence[torch.Tensor], context: int, what: str) -> None:
    """Raise ConfigError unless at least one document holds a full window of `context` + 1 tokens."""
    if context < 1:
        raise ConfigError(f"context must be >= 1, got {context}")
    longest = max((len(d) for d in docs), default=0)
    if longest < context + 1:
        raise ConfigError(f"context {context} is longer than the {what} data: its longest document has "
                          f"{longest} tokens; use --context {max(longest - 1, 1)} or less, or more text")


class WindowSampler:
    """Random training windows inside documents, reproducible from `seed` and resumable from its state."""

    def __init__(self, docs: Sequence[torch.Tensor], context: int, seed: int) -> None:
        check_context(docs, context, "training")
        self.docs = list(docs)
        self.context = context
        # Document i owns the window numbers [self._first[i], self._first[i] + starts[i]).
        starts = torch.tensor([max(len(d) - context, 1) for d in self.docs], dtype=torch.long)
        self._cum = torch.cumsum(starts, 0)
        self._first = self._cum - starts
        self.num_windows = int(self._cum[-1])
        self.generator = torch.Generator().manual_seed(seed)
        self.windows_drawn = 0

    def next_batch(self, batch_size: int) -> Batch:
        picks = torch.randint(self.num_windows, (batch_size,), generator=self.generator)
        self.windows_drawn += batch_size
        doc_idx = torch.searchsorted(self._cum, picks, right=True)
        offsets = picks - self._first[doc_idx]
        rows = [self.docs[i][o:o + self.context + 1] for i, o in zip(doc_idx.tolist(), offsets.tolist())]
        return _pack(rows, self.context)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "windows_drawn": self.windows_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.windows_drawn = int(state["windows_drawn"])


class HeldoutWindows:
    """The fixed evaluation windows of a set of documents (see the module docstring)."""

    def __init__(self, docs: Sequence[torch.Tensor], context: int) -> None:
        check_context(docs, context, "held-out")
        self.context = context
        rows: list[torch.Tensor] = []
        skips: list[int] = []  # leading labels of each row that were already scored by the previous window
        for doc in docs:
            n = len(doc)
            if n < context + 1:
                rows.append(doc)
                skips.append(0)
                continue
            start = 0
            while start + context + 1 <= n:
                rows.append(doc[start:start + context + 1])
                skips.append(0)
                start += context
            scored_until = start  # last scored target index (targets are tokens 1..n-1)
            if scored_until < n - 1:
                tail = n - context - 1
                rows.append(doc[tail:])
                skips.append(scored_until - tail)
        batch = _pack(rows, context)
        for r, skip in enumerate(skips):
            batch.labels[r, :skip] = IGNORE_INDEX
        self._all = batch

    def __len__(self) -> int:
        return self._all.input_ids.shape[0]

    @property
    def num_targets(self) -> int:
        return self._all.num_targets

    def batches(self, batch_size: int, limit: Optional[int] = None) -> Iterator[Batch]:
        """Batches of at most `batch_size` windows; `limit` keeps an evenly spaced fixed subset of windows."""
        index = torch.arange(len(self))
        if limit is not None and limit < len(self):
            index = torch.linspace(0, len(self) - 1, max(limit, 1)).round().long().unique()
        for i in range(0, len(index), batch_size):
            sel = index[i:i + batch_size]
            mask = None
            if self._all.attention_mask is not None:
                mask = self._all.attention_mask[sel]
                if bool(mask.all()):
                    mask = None
            yield Batch(self._all.input_ids[sel], self._all.labels[sel], mask)


def _pack(rows: Sequence[torch.Tensor], context: int) -> Batch:
    """Stack windows of up to context + 1 tokens into a Batch, right-padding short ones."""
    n = len(rows)
    inputs = torch.zeros(n, context, dtype=torch.long)
    labels = torch.full((n, context), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(n, context, dtype=torch.bool)
    for r, row in enumerate(rows):
        length = len(row) - 1
        inputs[r, :length] = row[:-1]
        labels[r, :length] = row[1:]
        mask[r, :length] = True
    return Batch(inputs, labels, None if bool(mask.all()) else mask)
