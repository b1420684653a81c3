"""The language-modelling task (`--objective lm`, the default): a causal model predicts every next token.

Training batches are the WindowSampler's random windows (data/batching.py): T inputs and their T next-token
labels, inside one document unless --pack-documents. The held-out set is the fixed HeldoutWindows of the held-out
documents, scored by `evaluate`: loss per token, bits per byte and perplexity.

Bits per byte = (sum of the per-token losses in nats) / ln 2 / (UTF-8 bytes of the scored tokens). Each scored
token's byte count comes from the tokenizer (1 for bytes; the token's byte length for BPE), so the number
compares across tokenizers as well as across architectures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..data.batching import IGNORE_INDEX, HeldoutWindows, TokenDocuments, WindowSampler
from ..data.run_data import RunData
from ..data.tokenizers import Tokenizer
from ..runtime import Distributed, Precision
from .base import Score, Task, shared_logits


@dataclass
class EvalResult(Score):
    loss: float            # mean nats per scored token
    bits_per_byte: float
    perplexity: float      # exp(loss), per token
    tokens: int            # scored tokens
    bytes: int             # UTF-8 bytes those tokens stand for
    windows: int
    all_windows: bool = True   # False: a fixed subset of the held-out windows was scored

    RECORD = {"heldout_loss": "loss", "heldout_bpb": "bits_per_byte"}
    BRIEF = "loss {loss:.4f}, {bits_per_byte:.4f} bits/byte"
    HEADLINE = "bits per byte: {bits_per_byte:.4f}"
    DESCRIBE = ("loss {loss:.4f} nats/token | {bits_per_byte:.4f} bits/byte | perplexity {perplexity:.2f} per token "
                "({tokens:,} tokens, {bytes:,} bytes, {windows:,} windows{subset})")
    REPORT = ("loss: {loss:.4f} nats/token\nbits per byte: {bits_per_byte:.4f}\n"
              "perplexity: {perplexity:.3f} per token\ntokens: {tokens:,}  bytes: {bytes:,}")


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: HeldoutWindows, byte_lengths: Sequence[int], *,
             batch_size: int = 8, precision: Optional[Precision] = None, limit: Optional[int] = None,
             dist: Optional[Distributed] = None) -> EvalResult:
    """Score `windows` (all of them, or a fixed evenly spaced subset of `limit`) with `model` in eval mode, on the
    device the model's parameters are on, in `precision` (None: the model's own dtype, no autocast). With `dist`
    (several processes, runtime.distributed) each process scores its share of the batches and the sums are
    reduced, so every process gets the score one process would."""
    dist = dist if dist is not None else Distributed()
    table = torch.tensor(list(byte_lengths), dtype=torch.long)
    nats, tokens, nbytes, count = 0.0, 0, 0, 0

    def batches(rank: int, world_size: int):
        return windows.batches(batch_size, limit=limit, rank=rank, world_size=world_size)

    for batch, logits in shared_logits(model, windows, batches, batch_size, limit, precision, dist):
        labels = batch.labels
        nats += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                      ignore_index=IGNORE_INDEX, reduction="sum"))
        scored = labels[labels != IGNORE_INDEX].cpu()
        tokens += scored.numel()
        nbytes += int(table[scored].sum())
        count += labels.shape[0]
    nats, tokens, nbytes, count = dist.sum([nats, tokens, nbytes, count])
    tokens, nbytes, count = int(tokens), int(nbytes), int(count)
    loss = nats / max(tokens, 1)
    return EvalResult(loss=loss, bits_per_byte=nats / math.log(2) / max(nbytes, 1),
                      perplexity=math.exp(min(loss, 700.0)), tokens=tokens, bytes=nbytes, windows=count,
                      all_windows=limit is None or limit >= len(windows))


@dataclass
class LMHeldout:
    """The fixed held-out windows of a language-modelling run and the byte count of each token id."""

    windows: HeldoutWindows
    byte_lengths: Sequence[int]

    def __len__(self) -> int:
        return len(self.windows)

    def evaluate(self, model: torch.nn.Module, *, batch_size: int = 8, precision: Optional[Precision] = None,
                 limit: Optional[int] = None, dist: Optional[Distributed] = None) -> EvalResult:
        return evaluate(model, self.windows, self.byte_lengths, batch_size=batch_size, precision=precision,
                        limit=limit, dist=dist)


class LMTask(Task):
    name = "lm"
    causal = True
    generates = True
    describe = "language modelling: a causal model predicts every next token"

    def training_stream(self, data: RunData, *, context: int, seed: int, pack_documents: bool = False,
                        rank: int = 0, world_size: int = 1) -> WindowSampler:
        return data.sampler(context, seed, pack_documents=pack_documents, rank=rank, world_size=world_size)

    def heldout(self, docs: TokenDocuments, tokenizer: Tokenizer, context: int) -> LMHeldout:
        return LMHeldout(HeldoutWindows(docs, context), tokenizer.token_byte_lengths())
