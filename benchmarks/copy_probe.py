"""Does a trained run copy from its context? The skill the QA task (docs/qa.md) stands on: finding the quoted line and
copying the tag above it needs a model that can look back and copy what it saw (an induction head).

Each probe row is a passage of the held-out plays (the default corpus's split), a line break, and the same passage
again. A model that copies predicts the second copy far better than the first; one that does not scores both alike.
Prints, per run, the mean loss (nats per token) of the two copies, leaving out each copy's first 10 tokens. Usage,
with the CPU to itself:

    flock -x /tmp/flashgau-cpu.lock env OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/copy_probe.py RUN [RUN ...]
"""
import argparse
import sys

import torch
import torch.nn.functional as F

from flashgau.data.corpus import load_split
from flashgau.training.trained import load_trained

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders or checkpoint files")
    p.add_argument("--rows", type=int, default=8, help="passages (default: 8)")
    p.add_argument("--length", type=int, default=150, help="tokens per passage (default: 150)")
    a = p.parse_args(argv)
    for run in a.runs:
        step, first, second = copy_losses(run, a.rows, a.length)
        print(f"{run} (step {step}): first copy {first:.2f} nats/token, second copy {second:.2f} "
              f"({first / second:.2f}x)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
