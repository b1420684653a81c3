"""`flashgau bench qa`: the paper's TriviaQA table (with `--task passkey`, `multikey16`, ... the same question on a
retrieval task instead: bench/qa/retrieval.py) (reference §8.2) on flashgau's stand-in task, "who speaks this
line?" (docs/qa.md): six rows, each pre-trained as a language model and then fine-tuned on the QA task, for equal
seconds of training steps, at one context; scored on the held-out plays.

A row is two ordinary training runs (the `flashgau train` loop): pre-training (`--objective lm`) on the training
plays, then fine-tuning (`--objective qa --init-from` the pre-trained run) on questions drawn from the same
training plays. Both use one split of whole plays (TrainConfig's default held-out fraction), so no held-out play is
seen in either. Reported per row, as the paper's table: the pre-training perplexity (held-out, per byte token), the
fine-tuned exact match and token F1 of the greedily decoded answers on the fixed held-out questions and the choice
accuracy (the window's speaker the model finds likeliest; tasks/qa.py), with the two floors of the task on the same
questions (the window's most frequent speaker, a random speaker of the window), and the pre-training and
fine-tuning step latency reduction against Transformer+ (its seconds per step over the row's; equal batches).
Resumable: each finished phase of a row is saved (runs/qa/<key>-pt.json, -ft.json) and skipped on a
rerun; the pre-trained checkpoint is kept until its fine-tuning is saved.

The rows (ROWS) follow the paper's: Transformer+, Combiner, FLASH-Quad with s = 128 and 512, FLASH with s = 512, and
FLASH with s = 512 + first-to-all (flashgau's reading: docs/model_options.md). s is the paper's absolute width at
its d = 768; at a smaller preset the rows keep the paper's ratios to the preset's own s (s_preset and 4 s_preset).
FLASH's chunk is QA_CHUNK tokens (the paper's 256 needs a longer context than a CPU run affords; the question, about
60-120 bytes, must fit in the first chunk for first-to-all to see all of it).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ...data.qa import TASK_VERSION
from ...errors import ConfigError
from ...runtime import resolve_device, resolve_precision
from .. import common, quality
from .rows import QA_CHUNK, RETRIEVAL_ROWS, ROWS, Row, model_options  # noqa: F401 (QA_CHUNK: for callers)

WHO_SPEAKS = "who-speaks"
# The tiny preset's Transformer+ has one layer and copying from far back takes two at least (induction), so the rows
# are small-preset models; at 512 bytes, 150 + 300 s buy 110-380 pre-training and 230-880 fine-tuning steps of 4,096
# tokens per row on a 2-core CPU, by arch (docs/qa.md has what that buys).
DEFAULTS = dict(preset="small", context=512, pretrain_seconds=150.0, finetune_seconds=300.0, seeds=(0,),
                batch_tokens=4096, precision="auto")
QUICK = dict(preset="tiny", context=512, pretrain_seconds=2.0, finetune_seconds=2.0, seeds=(0,), batch_tokens=1024)


@dataclass
class QASettings:
    """Everything the runs of the benchmark depend on; stored in its report."""

    preset: str
    context: int
    seeds: list[int]
    pretrain_seconds: float
    finetune_seconds: float
    batch_tokens: int
    lr: float
    finetune_lr: float
    warmup_steps: int
    precision: str
    precision_reason: str
    eval_windows: int
    data: Optional[str]
    quick: bool
    device: str
    rows: list[str]

    def key(self, row: Row, seed: int) -> str:
        return (f"{self.preset}-T{self.context}-pt{self.pretrain_seconds:g}s-ft{self.finetune_seconds:g}s-seed{seed}-"
                f"{row.slug}-task{TASK_VERSION}{common.device_tag(torch.device(self.device), self.precision)}")

    def to_dict(self) -> dict:
        return asdict(self)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ...tasks.retrieval import TASKS as RETRIEVAL_TASKS

    D, Q = DEFAULTS, QUICK
    p.add_argument("--task", default=WHO_SPEAKS, choices=[WHO_SPEAKS, *(t.name for t in RETRIEVAL_TASKS)],
                   help="who-speaks (pre-training then fine-tuning; the default) or a retrieval task (passkey, "
                   "multikey4/16/64, each also -first: trained from scratch, docs/qa.md)")
    p.add_argument("--rows", nargs="+", choices=[r.slug for r in ROWS + RETRIEVAL_ROWS], default=None,
                   metavar="ROW", help=f"rows to train (default: all: {' '.join(r.slug for r in ROWS)}; a "
                   f"retrieval task adds {' '.join(r.slug for r in RETRIEVAL_ROWS)})")
    p.add_argument("--seconds", type=float, default=None, metavar="S", help="a retrieval task: seconds of training "
                   "steps per row (default: 600)")
    p.add_argument("--init-std", type=float, default=None, metavar="STD", help="a retrieval task: init_std of "
                   "every row (default: 0.1)")
    p.add_argument("--warm-context", type=int, default=None, metavar="T0", help="a retrieval task: first train "
                   "each row --warm-seconds at context T0, then --seconds at --context from those weights (a length "
                   "curriculum; default: none, from scratch at --context)")
    p.add_argument("--warm-seconds", type=float, default=None, metavar="S", help="a retrieval task: seconds of "
                   "training steps at --warm-context")
    p.add_argument("--preset", default=None, help=f"model size (default: {D['preset']})")
    p.add_argument("--context", type=int, default=None, metavar="T", help="context of pre-training and "
                   f"fine-tuning (default: {D['context']}; --quick: {Q['context']})")
    p.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED", help="seeds (default: 0)")
    p.add_argument("--pretrain-seconds", type=float, default=None, metavar="S", help="seconds of pre-training steps "
                   f"per row (default: {D['pretrain_seconds']:g})")
    p.add_argument("--finetune-seconds", type=float, default=None, metavar="S", help="seconds of fine-tuning steps "
                   f"per row (default: {D['finetune_seconds']:g})")
    p.add_argument("--batch-tokens", type=int, default=None, metavar="N", help="tokens per step, both phases "
                   f"(default: {D['batch_tokens']})")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of pre-training, or of a retrieval "
                   "task's runs (default: 2e-3)")
    p.add_argument("--finetune-lr", type=float, default=2e-3, help="peak learning rate of fine-tuning "
                   "(default: 2e-3)")
    p.add_argument("--warmup-steps", type=int, default=20, help="warm-up steps of each phase, at most a fifth of it "
                   "(default: 20)")
    p.add_argument("--eval-windows", type=int, default=8, metavar="N", help="held-out windows (questions) of the "
                   "checks during training (default: 8; the final scores use all)")
    common.add_common_arguments(p, precision_default=D["precision"])
    p.add_argument("--data", default=None, metavar="PATH", help="corpus of plays (default: the Shakespeare book "
                   "corpus)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each finished run's checkpoint.pt")
    p.add_argument("--max-runs", type=int, default=None, metavar="N", help="train at most N of the missing rows, "
                   "then write the report")
    p.add_argument("--quick", action="store_true", help=f"a reduced version: context {Q['context']}, "
                   f"{Q['pretrain_seconds']:g} s + {Q['finetune_seconds']:g} s per row")
    p.add_argument("--report-only", action="store_true", help="rebuild the reports from saved runs; train nothing")


def settings_from_args(args) -> QASettings:
    device = resolve_device(args.device)
    o = common.options(args, DEFAULTS, QUICK)
    context = o["context"]
    if context < 1:
        raise ConfigError(f"--context must be >= 1, got {context}")
    for name in ("pretrain_seconds", "finetune_seconds"):
        if not o[name] > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {o[name]:g}")
    return QASettings(
        preset=o["preset"], context=context, seeds=list(o["seeds"]), pretrain_seconds=o["pretrain_seconds"],
        finetune_seconds=o["finetune_seconds"], batch_tokens=max(o["batch_tokens"], context), lr=args.lr,
        finetune_lr=args.finetune_lr, warmup_steps=args.warmup_steps, precision=o["precision"],
        precision_reason=resolve_precision(o["precision"], device).describe(), eval_windows=args.eval_windows,
        data=args.data, quick=bool(args.quick), device=str(device), rows=list(args.rows or [r.slug for r in ROWS]))


def phase_config(row: Row, seed: int, s: QASettings, folder: Path, phase: str):
    """The TrainConfig of a row's pre-training ("pt") or fine-tuning ("ft", from the pre-trained run)."""
    from ...training.config import TrainConfig

    pt = phase == "pt"
    return TrainConfig(arch=row.arch, preset=s.preset, objective="lm" if pt else "qa", context=s.context,
                       time_budget=s.pretrain_seconds if pt else s.finetune_seconds, time_budget_covers="training",
                       batch_tokens=s.batch_tokens, micro_batch_tokens=max(8192, s.context),
                       lr=s.lr if pt else s.finetune_lr, warmup_steps=s.warmup_steps, precision=s.precision,
                       data=s.data, eval_windows=s.eval_windows, seed=seed, out=str(folder / phase),
                       init_from=None if pt else str(folder / "pt"), model=model_options(row, s) if pt else {})


def train_phase(row: Row, seed: int, s: QASettings, folder: Path, phase: str, keep: bool) -> dict:
    """Train (or resume) one phase of a row; its record. A row's checkpoints are removed once it is fine-tuned (the
    pre-trained one is the fine-tuning's starting point until then)."""
    from ...training.checkpoint import CHECKPOINT_NAME

    cfg = phase_config(row, seed, s, folder, phase)
    t0 = time.perf_counter()
    result, records = quality.train_or_resume(cfg, s.device, log=lambda m: None)
    points = quality.curve(records)
    train_time = points[-1]["train_time"] if points else None
    rec = dict(row=row.slug, label=row.label, arch=row.arch, phase=phase, seed=seed, context=s.context,
               model_options=model_options(row, s), train_config=cfg.to_dict(),
               model_config=result.model.config.to_dict(), num_parameters=result.num_parameters, steps=result.step,
               tokens=result.tokens_seen, train_time=train_time,
               step_seconds=train_time / result.step if train_time and result.step else None,
               final=result.final.to_dict(), curve=points, env=common.environment(torch.device(s.device)),
               session_seconds=time.perf_counter() - t0)
    if phase == "ft" and not keep:
        (folder / "ft" / CHECKPOINT_NAME).unlink(missing_ok=True)
        (folder / "pt" / CHECKPOINT_NAME).unlink(missing_ok=True)
    return rec


def run(args: argparse.Namespace) -> int:
    from ...training.checkpoint import CHECKPOINT_NAME
    from .report import build_report, markdown, plot

    if getattr(args, "task", WHO_SPEAKS) != WHO_SPEAKS:
        from . import retrieval

        chosen = args.rows or [r.slug for r in ROWS + RETRIEVAL_ROWS]
        return retrieval.run(args, [r for r in ROWS + RETRIEVAL_ROWS if r.slug in chosen])
    given = [flag for flag, value in (("--seconds", args.seconds), ("--init-std", args.init_std),
                                      ("--warm-context", args.warm_context), ("--warm-seconds", args.warm_seconds))
             if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} belong to the retrieval tasks; give --task passkey (or another "
                          "retrieval task) or leave them out")
    extra = sorted(set(args.rows or ()) & {r.slug for r in RETRIEVAL_ROWS})
    if extra:
        raise ConfigError(f"row(s) {', '.join(extra)} belong to the retrieval tasks; give --task passkey (or "
                          "another retrieval task) or leave them out")
    s = settings_from_args(args)
    out = common.results_folder(args.out, torch.device(s.device))
    stem = "qa-quick" if s.quick else "qa"
    runs_dir = out / "runs" / stem
    store = common.ResultStore(runs_dir)
    print(f"device {s.device}, precision {s.precision_reason}", flush=True)
    budget = quality.Budget(args.max_runs)
    rows = [r for r in ROWS if r.slug in s.rows]
    for seed in s.seeds if not args.report_only else ():
        for row in rows:
            key = s.key(row, seed)
            if store.has(f"{key}-ft"):
                print(f"  {key}: done, skipped")
                continue
            if not budget.take():
                break
            if store.has(f"{key}-pt") and not (runs_dir / key / "pt" / CHECKPOINT_NAME).exists():
                store.path(f"{key}-pt").unlink()          # its checkpoint is gone: pre-train again
            for phase in ("pt", "ft"):
                if store.has(f"{key}-{phase}"):
                    continue
                rec = train_phase(row, seed, s, runs_dir / key, phase, args.keep_checkpoints)
                store.save(f"{key}-{phase}", dict(rec, key=key))
                print(f"  {key} {'pre-training' if phase == 'pt' else 'fine-tuning'}: {rec['steps']} steps in "
                      f"{rec['train_time'] or 0:.0f} s | {_brief(rec)}", flush=True)
    report = build_report(store, s, rows)
    common.write_reports(out, stem, report, markdown, plot)
    return 0


def _brief(rec: dict) -> str:
    f = rec["final"]
    if rec["phase"] == "pt":
        return f"held-out perplexity {f['perplexity']:.3f} per token, {f['bits_per_byte']:.4f} bits/byte"
    return (f"EM {f['exact_match']:.1f}, F1 {f['f1']:.1f}, choice {f['choice']:.1f} (floors EM / F1: most frequent "
            f"speaker {f['floor_frequent_em']:.1f} / {f['floor_frequent_f1']:.1f}, random {f['floor_random_em']:.1f} / "
            f"{f['floor_random_f1']:.1f})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main("qa", add_arguments, run, argv)
