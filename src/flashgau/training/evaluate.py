"""Held-out evaluation: loss per token, bits per byte and perplexity on fixed windows.

Bits per byte = (sum of the per-token losses in nats) / ln 2 / (UTF-8 bytes of the scored tokens). Each scored
token's byte count comes from the tokenizer (1 for bytes; the token's byte length for BPE), so the number
compares across tokenizers as well as across architectures.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..data.batching import IGNORE_INDEX, HeldoutWindows
from ..runtime import Distributed, Precision


@dataclass
class EvalResult:
    loss: float            # mean nats per scored token
    bits_per_byte: float
    perplexity: float      # exp(loss), per token
    tokens: int            # scored tokens
    bytes: int             # UTF-8 bytes those tokens stand for
    windows: int
    all_windows: bool = True   # False: a fixed subset of the held-out windows was scored

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"held-out loss {self.loss:.4f} nats/token | {self.bits_per_byte:.4f} bits/byte | "
                f"perplexity {self.perplexity:.2f} per token ({self.tokens:,} tokens, {self.bytes:,} bytes, "
                f"{self.windows:,} windows{'' if self.all_windows else ', a fixed subset of the held-out set'})")


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: HeldoutWindows, byte_lengths: Sequence[int], *,
             batch_size: int = 8, precision: Optional[Precision] = None, limit: Optional[int] = None,
             dist: Optional[Distributed] = None) -> EvalResult:
    """Score `windows` (all of them, or a fixed evenly spaced subset of `limit`) with `model` in eval mode, on the
    device the model's parameters are on, in `precision` (None: the model's own dtype, no autocast). With `dist`
    (several processes, runtime.distributed) each process scores its share of the batches and the sums are
    reduced, so every process gets the score one process would."""
    dist = dist if dist is not None else Distributed()
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    table = torch.tensor(list(byte_lengths), dtype=torch.long)
    nats, tokens, nbytes, count = 0.0, 0, 0, 0
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    try:
        for batch in windows.batches(batch_size, limit=limit, rank=dist.rank, world_size=dist.world_size):
            batch = batch.to(device)
            with autocast():
                out = model(batch.input_ids, attention_mask=batch.attention_mask)
            logits = out.logits.float()
            labels = batch.labels
            nats += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                          ignore_index=IGNORE_INDEX, reduction="sum"))
            scored = labels[labels != IGNORE_INDEX].cpu()
            tokens += scored.numel()
            nbytes += int(table[scored].sum())
            count += labels.shape[0]
        if dist.fsdp:        # a sharded model's forward passes are collectives: every process runs as many
            batches = -(-len(windows.selection(limit)) // batch_size)
            mine = len(range(dist.rank, batches, dist.world_size))
            idle = next(windows.batches(batch_size, limit=limit)).to(device)
            for _ in range(-(-batches // dist.world_size) - mine):
                with autocast():
                    model(idle.input_ids, attention_mask=idle.attention_mask)
        nats, tokens, nbytes, count = dist.sum([nats, tokens, nbytes, count])
        tokens, nbytes, count = int(tokens), int(nbytes), int(count)
    finally:
        model.train(was_training)
    loss = nats / max(tokens, 1)
    return EvalResult(loss=loss, bits_per_byte=nats / math.log(2) / max(nbytes, 1),
                      perplexity=math.exp(min(loss, 700.0)), tokens=tokens, bytes=nbytes, windows=count,
                      all_windows=limit is None or limit >= len(windows))
