"""The metrics log (one JSON object per line), its plot (PNG, matplotlib's Agg backend, no display needed), and the
same records sent on to TensorBoard and Weights & Biases where the run asks for them (TrainConfig.log).

Records have a "kind": "train" (step, loss, lr, grad_norm, tokens, tokens_per_s, elapsed, train_seconds), "eval"
(step, elapsed, the task's held-out scores on the fixed subset of held-out windows: heldout_loss, heldout_bpb for
LM), "final" (the full held-out set; its elapsed is when training ended, eval_seconds what scoring took), "plan" (a
time budget's plan) or "compile" (a compiled session's first step: first_step_seconds, compile_seconds).

TensorBoard and W&B get the numbers of the train, eval and final records against the step (train/loss, train/lr,
train/tokens_per_s, train/grad_norm, heldout/loss, heldout/bpb, ..., final/...), the losses and held-out scores
against training tokens too (tokens/train_loss, tokens/heldout_loss, ...), and the run's settings as
hyper-parameters. They are optional packages, imported only by a run that asks for them (`require_loggers` says
which one is missing, in one line, before the run starts).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ..errors import ConfigError
from ..files import atomic_write

LOGGERS = ("tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"


class MetricsLog:
    """Append-only JSONL file; `truncate_after(step)` drops records past a checkpoint when a run resumes. Each
    appended record also goes to the `sinks` opened by `open_sinks` (TensorBoard, W&B)."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self.sinks: list = []

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for sink in self.sinks:
            sink.write(record)

    def open_sinks(self, loggers: Iterable[str], *, hparams: dict[str, Any], config_text: str, name: str,
                   step: int) -> None:
        """Start the `loggers` of a run (LOGGERS) in the log's folder: `hparams` its settings (flat), `config_text`
        its config.toml, `name` its name; `step` the step it starts from (a resumed run drops what an earlier
        session logged after it)."""
        opened = {"tensorboard": TensorBoardSink, "wandb": WandbSink}
        self.sinks = [opened[kind](self.path.parent, hparams=hparams, config_text=config_text, name=name, step=step)
                      for kind in loggers]

    def close(self) -> None:
        """Flush and close the sinks (the JSONL file is closed after every record)."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close()

    def truncate_after(self, step: int) -> None:
        records = [r for r in read_metrics(self.path) if r.get("kind") != "final" and r.get("step", 0) <= step]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in records))


class NoMetricsLog(MetricsLog):
    """The log of a process that writes none (under torchrun every rank but 0: rank 0 writes the run's log and is
    the one that logs to TensorBoard and W&B)."""

    def append(self, record: dict[str, Any]) -> None:
        pass

    def open_sinks(self, loggers: Iterable[str], **info: Any) -> None:
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


# ------------------------------------------------------------------------------------- TensorBoard and W&B

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def require_loggers(loggers: Iterable[str]) -> None:
    """A one-line ConfigError when the package of one of `loggers` is not installed."""
    for kind in loggers:
        if not _installed(_PACKAGES[kind]):
            raise ConfigError(f"--log {kind} needs the {_PACKAGES[kind]} package: pip install 'flashgau[{kind}]'")


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def scalars(record: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """The numbers of a metrics record for TensorBoard and W&B: ({tag: value} against the step, {tag: value}
    against training tokens); both empty for records of other kinds than train, eval and final."""
    kind = record.get("kind")
    numbers = {k: float(v) for k, v in record.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if kind == "train":
        by_step = {f"train/{k}": numbers[k] for k in ("loss", "lr", "tokens_per_s", "grad_norm") if k in numbers}
        return by_step, {"tokens/train_loss": numbers["loss"]} if "loss" in numbers else {}
    if kind in ("eval", "final"):
        prefix = "heldout" if kind == "eval" else "final"
        scores = {k[len("heldout_"):]: v for k, v in numbers.items() if k.startswith("heldout_")}
        return ({f"{prefix}/{k}": v for k, v in scores.items()},
                {f"tokens/{prefix}_{k}": v for k, v in scores.items()})
    return {}, {}


class _Sink:
    """Sends the train, eval and final records of one run to a logger, tracking the tokens at each step (an eval
    record follows the train record of its step)."""

    def __init__(self) -> None:
        self.tokens: Optional[int] = None

    def write(self, record: dict[str, Any]) -> None:
        if record.get("kind") == "train" and "tokens" in record:
            self.tokens = int(record["tokens"])
        by_step, by_tokens = scalars(record)
        if by_step:
            self.log(int(record["step"]), by_step, by_tokens if self.tokens is not None else {}, record["kind"])

    def log(self, step: int, by_step: dict, by_tokens: dict, kind: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TensorBoardSink(_Sink):
    """Event files in OUT/tensorboard (`tensorboard --logdir OUT`): the scalars, the settings as hyper-parameters
    (the HPARAMS tab, with the final held-out scores as its metrics) and config.toml as text."""

    def __init__(self, folder: Path, *, hparams: dict, config_text: str, name: str, step: int) -> None:
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        # purge_step: TensorBoard hides what an earlier session (or a run this one replaces) logged after `step`
        self.writer = SummaryWriter(log_dir=str(folder / TENSORBOARD_DIR), purge_step=step + 1)
        if step == 0:
            experiment, start, end = hparams_summary(hparams, {"final/loss": math.nan})
            for summary in (experiment, start, end):
                self.writer.file_writer.add_summary(summary)
            self.writer.add_text("config.toml", "".join(f"    {line}\n" for line in config_text.splitlines()))

    def log(self, step: int, by_step: dict, by_tokens: dict, kind: str) -> None:
        for tag, value in by_step.items():
            self.writer.add_scalar(tag, value, step)
        for tag, value in by_tokens.items():
            self.writer.add_scalar(tag, value, self.tokens)
        if kind != "train":
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink(_Sink):
    """A Weights & Biases run in OUT/wandb, offline unless WANDB_MODE says otherwise (`wandb sync OUT/wandb/...`
    uploads it later); its project WANDB_PROJECT or "flashgau", its name the run folder's; each session of a resumed
    run is a W&B run of its own. The scalars carry "step" and "tokens", so either can be the x axis."""

    def __init__(self, folder: Path, *, hparams: dict, config_text: str, name: str, step: int) -> None:
        super().__init__()
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "flashgau"), name=name, dir=str(folder),
                              config=hparams, mode=os.environ.get("WANDB_MODE", "offline"),
                              settings=wandb.Settings(quiet=True))
        self.run.define_metric("tokens")
        self.run.define_metric("tokens/*", step_metric="tokens")

    def log(self, step: int, by_step: dict, by_tokens: dict, kind: str) -> None:
        self.run.log({**by_step, **by_tokens, "tokens": self.tokens}, step=step)

    def close(self) -> None:
        self.run.finish()


def flat_hparams(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as hyper-parameters: nested tables flattened (model.qk_dim), lists joined, None as "none"."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in flat_hparams(value).items()})
        elif isinstance(value, (list, tuple)):
            flat[key] = ",".join(map(str, value)) or "none"
        elif value is None:
            flat[key] = "none"
        else:
            flat[key] = value
    return flat
