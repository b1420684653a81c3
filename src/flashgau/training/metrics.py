"""The metrics log (one JSON object per line) and its plot (PNG, matplotlib's Agg backend, no display needed).

Records have a "kind": "train" (step, loss, lr, grad_norm, tokens, elapsed), "eval" (step, elapsed,
heldout_loss, heldout_bpb on the fixed subset of held-out windows), "final" (the full held-out set; its elapsed is
when training ended, eval_seconds what scoring took), "plan" (a time budget's plan) or "compile" (a compiled
session's first step: first_step_seconds, compile_seconds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Union

from ..files import atomic_write


class MetricsLog:
    """Append-only JSONL file; `truncate_after(step)` drops records past a checkpoint when a run resumes."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        records = [r for r in read_metrics(self.path) if r.get("kind") != "final" and r.get("step", 0) <= step]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in records))


class NoMetricsLog(MetricsLog):
    """The log of a process that writes none (under torchrun every rank but 0: rank 0 writes the run's log)."""

    def append(self, record: dict[str, Any]) -> None:
        pass

    def truncate_after(self, step: int) -> None:
        pass


def read_metrics(path: Union[str, Path]) -> list[dict[str, Any]]:
    """All complete records of a metrics log (a torn last line from a crash is ignored); [] if no file."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def plot_losses(records: Iterable[dict[str, Any]], path: Union[str, Path], title: str = "") -> Path:
    """Training loss (raw and smoothed) and held-out loss against steps (left) and wall time (right)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, no display needed

    records = list(records)
    train = [r for r in records if r.get("kind") == "train"]
    held = [r for r in records if r.get("kind") == "eval"]
    final = [r for r in records if r.get("kind") == "final"]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in ((axes[0], "step", "step"), (axes[1], "elapsed", "wall time (minutes)")):
        scale = (lambda v: v / 60.0) if key == "elapsed" else (lambda v: v)
        if train:
            xs = [scale(r[key]) for r in train]
            ax.plot(xs, [r["loss"] for r in train], color="tab:blue", alpha=0.25, linewidth=0.8)
            ax.plot(xs, _smooth([r["loss"] for r in train]), color="tab:blue", label="training (smoothed)")
        if held:
            ax.plot([scale(r[key]) for r in held], [r["heldout_loss"] for r in held], "o-", color="tab:red",
                    label="held-out (fixed subset)")
        if final:
            ax.plot([scale(r[key]) for r in final], [r["heldout_loss"] for r in final], "*", color="black",
                    markersize=12, label="held-out (all windows)")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss (nats per token)")
    axes[0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return atomic_write(path, lambda handle: fig.savefig(handle, dpi=100, format="png"))


def _smooth(values: list[float]) -> list[float]:
    """Centred moving average over ~2% of the points (shrinking at the ends), so it does not lag."""
    half = max(1, len(values) // 100)
    out = []
    for i in range(len(values)):
        window = values[max(0, i - half): i + half + 1]
        out.append(sum(window) / len(window))
    return out
