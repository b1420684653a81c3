"""Token windows for training (random, inside one document) and for held-out evaluation (fixed).

A window of context T holds T inputs and their T next-token labels, i.e. T + 1 consecutive tokens of one
document; windows never cross a document boundary (unless packed, below).

Training (`WindowSampler`): every start position of every document is equally likely (documents are drawn in
proportion to their number of windows). A document shorter than T + 1 tokens gives one window, right-padded: padded
inputs have attention_mask 0 and labels -100. Packed (`TokenDocuments.packed()`, `--pack-documents`): the documents
back to back, so a window may hold the end of one and the start of the next; the batch then carries segment_ids
(which document each input belongs to) for the model to keep them apart, and the last token of a document is not
asked to predict the first of the next (label -100). The sampler draws from its own seeded `torch.Generator`;
`state_dict()` / `load_state_dict()` save and restore its position exactly.

Documents come as a `TokenDocuments`: spans of memory-mapped token shards (a prepared dataset, prepared.py) or
tensors in memory; both classes read the tokens of a window only when the window is made.

Held-out (`HeldoutWindows`): each document is cut into consecutive windows with stride T, so every token but a
document's first is scored exactly once; the last window is aligned to the document's end (its already-scored
labels set to -100) so that it is full length. The windows depend only on the tokens and T, which makes losses
comparable between runs and architectures with the same tokenizer and context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch

from ..errors import ConfigError

IGNORE_INDEX = -100


@dataclass
class Batch:
    """input_ids (B, T) long; labels (B, T) long with -100 where ignored; attention_mask (B, T) bool or None
    when no window in the batch is padded; index (B,) long: the held-out window number of each row (None for
    training windows), so that what a task does to a held-out window can depend on the window alone;
    segment_ids (B, T) long: the document of each input in a packed window (0, 1, ... from the row's start), or
    None when no row holds more than one document."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None
    segment_ids: Optional[torch.Tensor] = None

    @property
    def num_targets(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    @property
    def num_tokens(self) -> int:
        """Real input tokens (a language-modelling window has as many targets; a masked one about 15% of them)."""
        return self.input_ids.numel() if self.attention_mask is None else int(self.attention_mask.sum())

    def to(self, device) -> "Batch":
        """The same batch on `device` (itself when already there)."""
        if self.input_ids.device == torch.device(device):
            return self
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.input_ids), move(self.labels), move(self.attention_mask), self.index,
                     move(self.segment_ids))


def tokenize_documents(texts: Sequence[str], tokenizer) -> list[torch.Tensor]:
    """One 1-D int32 tensor of token ids per text (documents with fewer than 2 tokens are dropped: they have
    nothing to predict)."""
    ids = tokenizer.encode_batch(list(texts))
    return [torch.tensor(x, dtype=torch.int32) for x in ids if len(x) >= 2]


class TokenDocuments:
    """Token documents as spans of flat token tensors: the memory-mapped shards of a prepared dataset
    (prepared.py) or one tensor per document in memory. Nothing is read until a window asks for it.

    shards: 1-D integer tensors (uint8, uint16, int32, uint32, ...); index (N, 3) long: per document its shard, the
    offset of its first token in that shard, and its length. starts (packed documents only): per entry of the
    index, the sorted offsets (from the entry's first token) where an original document begins. check: called
    before each scoring pass over the documents (HeldoutWindows.batches); prepared.py sets it to check the shards'
    checksums."""

    def __init__(self, shards: Sequence[torch.Tensor], index: torch.Tensor,
                 starts: Optional[Sequence[torch.Tensor]] = None,
                 check: Optional[Callable[[], None]] = None) -> None:
        self.shards = list(shards)
        self.index = index
        self.lengths = index[:, 2]
        self.starts = None if starts is None else list(starts)
        self.check = check
        self._one_per_document = False

    @classmethod
    def from_tensors(cls, docs: Sequence[torch.Tensor]) -> "TokenDocuments":
        """Documents held as one tensor each (what tokenize_documents returns)."""
        docs = list(docs)
        index = torch.tensor([[i, 0, len(d)] for i, d in enumerate(docs)], dtype=torch.long).reshape(-1, 3)
        made = cls(docs, index)
        made._one_per_document = True
        return made

    @classmethod
    def concat(cls, parts: Sequence["TokenDocuments"]) -> "TokenDocuments":
        """The documents of `parts`, one after the other."""
        shards, rows = [], []
        for part in parts:
            rows.append(part.index + torch.tensor([len(shards), 0, 0]))
            shards += part.shards
        checks = [part.check for part in parts if part.check is not None]
        return cls(shards, torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.long),
                   check=(lambda: [check() for check in checks]) if checks else None)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def longest(self) -> int:
        return int(self.lengths.max()) if len(self) else 0

    def tokens(self, doc: int, start: int = 0, stop: Optional[int] = None) -> torch.Tensor:
        """Tokens [start, stop) of document `doc` (a view of its shard, in the shard's dtype)."""
        shard, offset, length = self.index[doc].tolist()
        stop = length if stop is None else min(stop, length)
        return self.shards[shard][offset + start:offset + stop]

    def segments(self, doc: int, start: int = 0, stop: Optional[int] = None) -> Optional[torch.Tensor]:
        """The original document of each token [start, stop) of entry `doc`, numbered from 0 at `start` (long), or
        None when the documents are not packed or the span lies inside one of them."""
        if self.starts is None:
            return None
        stop = int(self.lengths[doc]) if stop is None else min(stop, int(self.lengths[doc]))
        seg = torch.searchsorted(self.starts[doc], torch.arange(start, stop), right=True)
        seg -= seg[0].clone()
        return seg if bool(seg[-1] > 0) else None

    def packed(self) -> "TokenDocuments":
        """The same tokens back to back, for training windows that may cross documents: each shard as one sequence
        (a prepared shard holds its documents back to back), or, in memory, all documents concatenated; `starts`
        keeps where each document begins, so a window knows its documents (`segments`)."""
        if self.starts is not None:
            return self
        if self._one_per_document:
            joined = torch.cat([d.to(torch.int64) for d in self.shards])
            starts = torch.cumsum(self.lengths, 0) - self.lengths
            return TokenDocuments([joined], torch.tensor([[0, 0, len(joined)]], dtype=torch.long), [starts])
        spans, starts = [], []
        for i, shard in enumerate(self.shards):
            if len(shard):
                spans.append([i, 0, len(shard)])
                starts.append(self.index[self.index[:, 0] == i, 1].sort().values)
        return TokenDocuments(self.shards, torch.tensor(spans, dtype=torch.long).reshape(-1, 3), starts, self.check)


def as_documents(docs) -> TokenDocuments:
    return docs if isinstance(docs, TokenDocuments) else TokenDocuments.from_tensors(docs)


def check_context(docs, context: int, what: str) -> None:
    """Raise ConfigError unless at least one document holds a full window of `context` + 1 tokens."""
    if context < 1:
        raise ConfigError(f"context must be >= 1, got {context}")
    longest = as_documents(docs).longest()
    if longest < context + 1:
        raise ConfigError(f"context {context} is longer than the {what} data: its longest document has "
                          f"{longest} tokens; use --context {max(longest - 1, 1)} or less, or more text")


class WindowSampler:
    """Random training windows inside documents, reproducible from `seed` and resumable from its state.

    `docs`: a TokenDocuments (memory-mapped shards) or a list of 1-D token tensors; the same documents and seed give
    the same windows either way. Several processes (rank r of world_size W, each with the same documents and seed)
    share one stream of draws: each `next_batch(B)` draws B * W windows and rank r takes draws r, r + W, r + 2W ...,
    so the ranks' windows are disjoint parts of what one process drawing B * W windows would see, and their states
    stay equal. world_size 1 (the default) is the single-process stream."""

    def __init__(self, docs, context: int, seed: int, *, rank: int = 0, world_size: int = 1) -> None:
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise ConfigError(f"rank must be in [0, world_size), got rank {rank!r} of world_size {world_size!r}")
        self.docs = as_documents(docs)
        check_context(self.docs, context, "training")
        self.context = context
        self.rank, self.world_size = rank, world_size
        # Document i owns the window numbers [self._first[i], self._first[i] + starts[i]).
        starts = (self.docs.lengths - context).clamp(min=1)
        self._cum = torch.cumsum(starts, 0)
        self._first = self._cum - starts
        self.num_windows = int(self._cum[-1])
        self.generator = torch.Generator().manual_seed(seed)
        self.windows_drawn = 0

    def next_batch(self, batch_size: int) -> Batch:
        picks = torch.randint(self.num_windows, (batch_size * self.world_size,), generator=self.generator)
        self.windows_drawn += batch_size * self.world_size
        picks = picks[self.rank::self.world_size].contiguous()
        doc_idx = torch.searchsorted(self._cum, picks, right=True)
        offsets = picks - self._first[doc_idx]
        spans = list(zip(doc_idx.tolist(), offsets.tolist()))
        rows = [self.docs.tokens(i, o, o + self.context + 1) for i, o in spans]
        segments = [self.docs.segments(i, o, o + self.context + 1) for i, o in spans]
        return _pack(rows, self.context, segments)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "windows_drawn": self.windows_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.windows_drawn = int(state["windows_drawn"])


class HeldoutWindows:
    """The fixed evaluation windows of a set of documents (see the module docstring). Only an index of windows is
    kept, (document, first token, already-scored labels), three integers per window; a batch reads its tokens when
    it is made, so memory does not grow with the held-out text."""

    def __init__(self, docs, context: int) -> None:
        self.docs = as_documents(docs)
        check_context(self.docs, context, "held-out")
        self.context = context
        n = self.docs.lengths
        full = torch.where(n >= context + 1, (n - 1) // context, torch.zeros_like(n))  # stride-T windows per doc
        scored_until = full * context                      # last scored target index (targets are 1..n-1)
        tail = (n >= context + 1) & (scored_until < n - 1)  # one more window aligned to the document's end
        per_doc = torch.where(n >= context + 1, full + tail.long(), torch.ones_like(n))
        doc = torch.repeat_interleave(torch.arange(len(n)), per_doc)
        first_row = torch.cumsum(per_doc, 0) - per_doc
        k = torch.arange(len(doc)) - first_row[doc]        # window number inside its document
        is_tail = tail[doc] & (k == full[doc])
        start = torch.where(is_tail, n[doc] - context - 1, k * context)
        skip = torch.where(is_tail, scored_until[doc] - start, torch.zeros_like(start))
        self._doc, self._start, self._skip = doc, start, skip
        self.num_targets = int((torch.minimum(n[doc], torch.full_like(doc, context + 1)) - 1 - skip).sum())

    def __len__(self) -> int:
        return int(self._doc.shape[0])

    def selection(self, limit: Optional[int] = None) -> torch.Tensor:
        """The numbers of the windows scored: all, or with `limit` an evenly spaced fixed subset of them."""
        return evenly_spaced(len(self), limit)

    def batches(self, batch_size: int, limit: Optional[int] = None, *, rank: int = 0,
                world_size: int = 1) -> Iterator[Batch]:
        """Batches of at most `batch_size` windows of `selection(limit)`; with `world_size` processes, process `rank`
        takes batches rank, rank + world_size, ... (the same batches one process would make, shared out). The
        documents' `check` runs first."""
        if self.docs.check is not None:
            self.docs.check()
        for sel in shared_batches(self.selection(limit).tolist(), batch_size, rank, world_size):
            rows = [self.docs.tokens(int(self._doc[j]), int(self._start[j]), int(self._start[j]) + self.context + 1)
                    for j in sel]
            batch = _pack(rows, self.context)
            for r, j in enumerate(sel):
                batch.labels[r, :int(self._skip[j])] = IGNORE_INDEX
            batch.index = torch.tensor(sel, dtype=torch.long)
            yield batch


def evenly_spaced(count: int, limit: Optional[int] = None) -> torch.Tensor:
    """0 .. count - 1, or with `limit` < count an evenly spaced fixed subset of them: the held-out units scored."""
    if limit is not None and limit < count:
        return torch.linspace(0, count - 1, max(limit, 1)).round().long().unique()
    return torch.arange(count)


def shared_batches(index: Sequence[int], batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[list]:
    """`index` cut into batches of at most `batch_size`; process `rank` of `world_size` takes batches rank,
    rank + world_size, ... (the batches one process would make, shared out)."""
    for i in range(rank * batch_size, len(index), batch_size * world_size):
        yield list(index[i:i + batch_size])


def _pack(rows: Sequence[torch.Tensor], context: int,
          segments: Optional[Sequence[Optional[torch.Tensor]]] = None) -> Batch:
    """Stack windows of up to context + 1 tokens into a Batch, right-padding short ones. segments: per row the
    document of each of its tokens (or None: one document); a label whose token belongs to the next document is
    -100, and the batch carries the inputs' segment ids when any row holds more than one document."""
    n = len(rows)
    inputs = torch.zeros(n, context, dtype=torch.long)
    labels = torch.full((n, context), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(n, context, dtype=torch.bool)
    segment_ids = None
    for r, row in enumerate(rows):
        length = len(row) - 1
        inputs[r, :length] = row[:-1]
        labels[r, :length] = row[1:]
        mask[r, :length] = True
        seg = None if segments is None else segments[r]
        if seg is not None:
            if segment_ids is None:
                segment_ids = torch.zeros(n, context, dtype=torch.long)
            segment_ids[r, :length] = seg[:-1]
            segment_ids[r, length:] = seg[-2]          # padding: the row's last document (masked anyway)
            labels[r, :length].masked_fill_(seg[1:] != seg[:-1], IGNORE_INDEX)
    return Batch(inputs, labels, None if bool(mask.all()) else mask, segment_ids=segment_ids)
