"""`flashgau bench copy-probe RUN [RUN ...]`: does a trained run copy from its context? The skill the QA task
(docs/qa.md) stands on: finding the quoted line and copying the tag above it needs a model that can look back and
copy what it saw (an induction head).

Each probe row is a passage of the held-out plays (the default corpus's split), a line break, and the same passage
again. A model that copies predicts the second copy far better than the first; one that does not scores both alike.
Prints, per run, the mean loss (nats per token) of the two copies, leaving out each copy's first 10 tokens.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from ..data.corpus import load_split
from ..training.trained import load_trained

SKIP = 10       # tokens at the start of each copy left out (the second copy's first tokens need a cue to start)


def copy_losses(run: str, rows: int, length: int) -> tuple[int, float, float]:
    """(the run's step, loss of the first copy, loss of the second copy) over `rows` passages of `length` tokens."""
    trained = load_trained(run)
    held = load_split(None).heldout                 # the split training makes by default
    ids = trained.tokenizer.encode("\n".join(d.text for d in held))
    gap = max((len(ids) - length) // rows, 1)
    newline = trained.tokenizer.encode("\n")
    batch = torch.tensor([ids[i * gap:i * gap + length] + newline + ids[i * gap:i * gap + length]
                          for i in range(rows)])
    with torch.no_grad():
        logits = trained.model(batch[:, :-1]).logits.float()
    loss = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")     # (rows, 2 L + n - 1)
    second = length + len(newline)                                                   # where the second copy starts
    return (trained.step, loss[:, SKIP - 1:length - 1].mean().item(),
            loss[:, second + SKIP - 1:].mean().item())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or checkpoint files")
    p.add_argument("--rows", type=int, default=8, help="passages (default: 8)")
    p.add_argument("--length", type=int, default=150, help="tokens per passage (default: 150)")


def run(a: argparse.Namespace) -> int:
    for path in a.runs:
        step, first, second = copy_losses(path, a.rows, a.length)
        print(f"{path} (step {step}): first copy {first:.2f} nats/token, second copy {second:.2f} "
              f"({first / second:.2f}x)", flush=True)
    return 0
