"""`flashgau bench quality`: held-out quality of every arch trained with the same budget, against context length.

Every run is a normal training run of flashgau.training.train (the `flashgau train` loop, unchanged) on the chosen
device: the default book corpus (Shakespeare, whole plays held out), byte tokens, the chosen preset, one
TrainConfig per (arch, context, seed). The budget is the same wall time for every arch (`--time-budget`, which the
training loop turns into a step count by timing a few steps first, evaluation included) or the same number of
steps, hence tokens (`--steps`). Archs run interleaved within each (context, seed).

Reported per run: the final held-out loss, perplexity and bits per byte (all held-out windows), and the curve of
held-out loss (a fixed subset of held-out windows) against training wall time (evaluation time removed) and
against training tokens. Per (context, seed): the paper's headline measure, the training time each arch needs to
reach Transformer+'s final held-out loss (on the same fixed subset; linear interpolation between evaluations; "–"
where it never does) and the speedup that gives, and the held-out loss of every arch against Transformer++'s at
equal training time (report.py). Two seeds give the spread.

`--objective mlm` runs the paper's C4 experiment instead (its archs, contexts 512 and 2K): every run trains a
bidirectional model with the masked-language-model task (flashgau.tasks.mlm), the curves and final numbers are the
held-out masked-token loss on fixed masked positions (the same for every arch and seed), and the reference of the
speedup is Transformer++ (the paper's C4 plot: training time to reach Transformer++'s final loss). Its reports are
quality-mlm.{md,json,png}.

Reproducible: each run folder keeps its TrainConfig (result.json), so `flashgau train` with those settings and
seed repeats it. Resumable: a finished run has result.json and is skipped; an interrupted one continues from its
checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ... import ARCHS
from ...tasks import OBJECTIVES
from ...errors import FlashgauError
from ...runtime import resolve_device, resolve_precision
from .. import common

# seconds per run: at 4K the budget fitter then leaves ~40-80 optimizer steps (at 45-60 s the probe and the
# evaluations took most of it); 28 default runs take ~50 min, which keeps `bench all` under 2 hours
DEFAULTS = dict(preset="small", contexts=(512, 4096), seeds=(0, 1), time_budget=100.0, batch_tokens=8192,
                eval_tokens=16384, precision="auto")
QUICK = dict(preset="tiny", contexts=(128, 512), seeds=(0,), time_budget=6.0, batch_tokens=2048, eval_tokens=4096)
# --objective mlm: the archs of the paper's C4 plot at 512 and 2K. Tiny models: on 2 AVX2 cores in fp32 the small
# preset (2.5K tokens/s) spends a 2-minute budget on the unigram plateau (MLM scores 15% of the tokens); the tiny
# one (~55K tokens/s) leaves it, FLASH within ~15 s, Transformer++ at 2K only after ~150 s: hence 240 s at 2K
MLM_ARCHS = ("transformer+", "transformer++", "performer", "combiner", "flash-quad", "flash")
MLM_DEFAULTS = dict(preset="tiny", contexts=(512, 2048), time_budget=120.0, batch_tokens=4096)
MLM_CONTEXT_BUDGETS = {"512": 100.0, "2048": 240.0}     # seconds per run at these contexts (time_budget elsewhere)


@dataclass
class QualitySettings:
    """Everything a quality run depends on; stored in its report. `time_budget` is None when `steps` is given;
    `precision` is what every run is asked for, `precision_reason` what it resolves to on this device and why."""

    archs: list[str]
    preset: str
    contexts: list[int]
    seeds: list[int]
    time_budget: Optional[float]
    steps: Optional[int]
    batch_tokens: int
    micro_batch_tokens: int
    lr: float
    warmup_steps: int
    precision: str
    precision_reason: str
    eval_tokens: int
    heldout_fraction: float
    data: Optional[str]
    quick: bool
    device: str
    objective: str = "lm"
    context_budgets: dict = dataclasses.field(default_factory=dict)   # {"T": seconds}: time_budget at context T

    def budget_for(self, context: int) -> Optional[float]:
        """The time budget of a run at `context` (None when the runs are given in steps)."""
        return None if self.time_budget is None else self.context_budgets.get(str(context), self.time_budget)

    @property
    def stem(self) -> str:
        return "quality" + ("" if self.objective == "lm" else f"-{self.objective}") + ("-quick" if self.quick else "")

    def to_dict(self) -> dict:
        return asdict(self)


def _list(values) -> str:
    return " ".join(map(str, values))


def add_arguments(p: argparse.ArgumentParser) -> None:
    D, Q = DEFAULTS, QUICK
    M = MLM_DEFAULTS
    p.add_argument("--objective", choices=OBJECTIVES, default="lm", help="lm: causal language models, held-out "
                   "loss and bits per byte; mlm: the paper's C4 experiment, bidirectional models trained on masked "
                   "language modelling, held-out masked-token loss, speedup to Transformer++'s loss (its defaults: "
                   f"--archs {' '.join(MLM_ARCHS)} --preset {M['preset']} --contexts {_list(M['contexts'])} "
                   f"--time-budget {M['time_budget']:g} --batch-tokens {M['batch_tokens']}) (default: lm)")
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=None, metavar="ARCH",
                   help=f"archs to train (default: all: {' '.join(ARCHS)})")
    p.add_argument("--preset", default=None, help=f"model size (default: {D['preset']}; --quick: {Q['preset']})")
    p.add_argument("--contexts", nargs="+", type=int, default=None, metavar="T",
                   help=f"context lengths (default: {_list(D['contexts'])}; --quick: {_list(Q['contexts'])})")
    p.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED",
                   help="seeds; every (arch, context) is trained once per seed "
                        f"(default: {_list(D['seeds'])}; --quick: {_list(Q['seeds'])})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="wall seconds per run, evaluation included, the same for every arch "
                        f"(default: {D['time_budget']:g}; --quick: {Q['time_budget']:g})")
    budget.add_argument("--steps", type=int, default=None, help="optimizer steps per run (same tokens for every "
                        "arch) instead of a time budget")
    p.add_argument("--context-budget", action="append", type=_context_budget, default=None, metavar="T=SECONDS",
                   help="the time budget of the runs at context T, instead of --time-budget (repeat for several "
                   "contexts; --objective mlm: " + ", ".join(f"{t}={b:g}" for t, b in MLM_CONTEXT_BUDGETS.items())
                   + " unless --time-budget, --steps or --quick is given)")
    p.add_argument("--batch-tokens", type=int, default=None, metavar="N", help="tokens per step "
                   f"(default: {D['batch_tokens']}; --quick: {Q['batch_tokens']})")
    p.add_argument("--micro-batch-tokens", type=int, default=8192, metavar="N", help="tokens per forward pass "
                   "(default: 8192)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    p.add_argument("--warmup-steps", type=int, default=20, help="warm-up steps, at most a fifth of a run "
                   "(default: 20)")
    common.add_common_arguments(p, precision_default=D["precision"])
    p.add_argument("--eval-tokens", type=int, default=None, metavar="N",
                   help="tokens of the fixed held-out subset scored during training "
                        f"(default: {D['eval_tokens']}; --quick: {Q['eval_tokens']})")
    p.add_argument("--heldout-fraction", type=float, default=0.02, help="share of the corpus held out, whole "
                   "documents (default: 0.02: one play, The Merry Wives of Windsor, ~128K bytes)")
    p.add_argument("--data", default=None, metavar="PATH", help="corpus (default: the Shakespeare book corpus)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each finished run's checkpoint.pt")
    p.add_argument("--quick", action="store_true", help="a reduced version: tiny preset, contexts 128 and 512, "
                   "one seed, 6 s per run")
    p.add_argument("--report-only", action="store_true", help="rebuild the reports from saved runs; train nothing")


def _context_budget(text: str) -> tuple[str, float]:
    context, _, seconds = text.partition("=")
    try:
        if int(context) >= 1 and float(seconds) > 0:
            return str(int(context)), float(seconds)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected T=SECONDS (e.g. 2048=240), got {text!r}")


def _context_budgets(args, mlm: bool) -> dict:
    if args.context_budget:
        return dict(args.context_budget)
    if mlm and args.time_budget is None and args.steps is None and not args.quick:
        return dict(MLM_CONTEXT_BUDGETS)
    return {}


def settings_from_args(args) -> QualitySettings:
    device = resolve_device(args.device)
    mlm = args.objective == "mlm"
    o = common.options(args, {**DEFAULTS, **MLM_DEFAULTS} if mlm else DEFAULTS, QUICK)
    return QualitySettings(
        archs=list(args.archs or (MLM_ARCHS if mlm else ARCHS)), preset=o["preset"], contexts=sorted(o["contexts"]), seeds=list(o["seeds"]),
        time_budget=o["time_budget"] if args.steps is None else None, steps=args.steps,
        batch_tokens=o["batch_tokens"], micro_batch_tokens=args.micro_batch_tokens, lr=args.lr,
        warmup_steps=args.warmup_steps, precision=o["precision"],
        precision_reason=resolve_precision(o["precision"], device).describe(), eval_tokens=o["eval_tokens"],
        heldout_fraction=args.heldout_fraction, data=args.data, quick=bool(args.quick), device=str(device),
        objective=args.objective, context_budgets=_context_budgets(args, mlm) if args.steps is None else {})


def run_key(arch: str, context: int, seed: int, s: QualitySettings) -> str:
    budget = f"{s.budget_for(context):g}s" if s.time_budget else f"{s.steps}steps"
    return f"{s.preset}-T{context}-{budget}-seed{seed}-{arch}{common.device_tag(torch.device(s.device))}"


def train_config(arch: str, context: int, seed: int, s: QualitySettings, out_dir: Path):
    from ...training.config import TrainConfig
    return TrainConfig(arch=arch, preset=s.preset, objective=s.objective, context=context, steps=s.steps,
                       time_budget=s.budget_for(context), batch_tokens=max(s.batch_tokens, context),
                       micro_batch_tokens=max(s.micro_batch_tokens, context), lr=s.lr,
                       warmup_steps=s.warmup_steps, precision=s.precision, data=s.data,
                       heldout_fraction=s.heldout_fraction,
                       eval_windows=max(2, s.eval_tokens // context), seed=seed, out=str(out_dir))


def curve(records: list[dict]) -> list[dict]:
    """Held-out points with training-only time: each evaluation's duration (its record's elapsed minus the
    elapsed of the training step it follows) is removed from the clock of every later point."""
    train = [r for r in records if r.get("kind") == "train"]
    train_elapsed = {r["step"]: r["elapsed"] for r in train}
    tokens = {r["step"]: r["tokens"] for r in train}
    evals = {r["step"] for r in records if r.get("kind") == "eval"}
    # the clock starts before data preparation and model building: start it one step before step 1 ends, one
    # step being the median duration of the steps not followed by an evaluation
    gaps = [b["elapsed"] - a["elapsed"] for a, b in zip(train, train[1:]) if a["step"] not in evals]
    step_time = statistics.median(gaps) if gaps else 0.0
    eval_time = (train[0]["elapsed"] - step_time) if train else 0.0
    out = []
    for r in records:
        if r.get("kind") != "eval":
            continue
        t_train = train_elapsed.get(r["step"], r["elapsed"])
        out.append(dict(step=r["step"], tokens=tokens.get(r["step"]), train_time=round(t_train - eval_time, 3),
                        elapsed=r["elapsed"], heldout_loss=r["heldout_loss"], heldout_bpb=r.get("heldout_bpb"),
                        heldout_accuracy=r.get("heldout_accuracy")))
        eval_time += max(0.0, r["elapsed"] - t_train)
    return out


def train_one(arch: str, context: int, seed: int, s: QualitySettings, folder: Path, keep: bool, log=print) -> dict:
    from ...training.checkpoint import CHECKPOINT_NAME
    from ...training.loop import METRICS_NAME, train
    from ...training.metrics import read_metrics

    cfg = train_config(arch, context, seed, s, folder)
    t0 = time.perf_counter()
    if (folder / CHECKPOINT_NAME).exists():
        log(f"  resuming {folder}")
        result = train(resume=folder, device=s.device, progress=False, log=lambda m: None)
    else:
        result = train(cfg, device=s.device, overwrite=True, progress=False, log=lambda m: None)
    records = read_metrics(folder / METRICS_NAME)
    pts = curve(records)
    final_rec = next((r for r in records if r.get("kind") == "final"), {})
    rec = dict(arch=arch, context=context, seed=seed, preset=s.preset, key=folder.name, device=s.device,
               train_config=cfg.to_dict(), model_config=result.model.config.to_dict(),
               num_parameters=result.num_parameters, steps=result.step, tokens=result.tokens_seen,
               elapsed=result.elapsed, train_time=pts[-1]["train_time"] if pts else None,
               final=result.final.to_dict() if result.final else None,
               final_eval_seconds=final_rec.get("eval_seconds"), curve=pts,
               env=common.environment(torch.device(s.device)),
               session_seconds=time.perf_counter() - t0)
    if not keep:
        (folder / CHECKPOINT_NAME).unlink(missing_ok=True)
    return rec



def run(args: argparse.Namespace) -> int:
    from .report import build_report, markdown, plot

    s = settings_from_args(args)
    out = common.results_folder(args.out, torch.device(s.device))
    runs_dir = out / "runs" / s.stem
    store = common.ResultStore(runs_dir)
    print(f"device {s.device}, precision {s.precision_reason}", flush=True)
    for T in s.contexts if not args.report_only else ():
        for seed in s.seeds:
            for arch in s.archs:           # archs interleaved within each (context, seed)
                key = run_key(arch, T, seed, s)
                if store.has(key):
                    print(f"  {key}: done, skipped")
                    continue
                try:
                    rec = train_one(arch, T, seed, s, runs_dir / key, args.keep_checkpoints)
                except FlashgauError as err:
                    print(f"flashgau bench quality: error: {key}: {err}", file=sys.stderr)
                    return 1
                store.save(key, rec)
                f = rec["final"]
                extra = (f"{f['bits_per_byte']:.4f} bits/byte" if "bits_per_byte" in f
                         else f"accuracy {f['accuracy']:.2%}")
                print(f"  {key}: {rec['steps']} steps, {rec['tokens']:,} tokens, train {rec['train_time']:.0f} s"
                      f" | held-out loss {f['loss']:.4f}, ppl {f['perplexity']:.3f}, {extra}", flush=True)
    common.write_reports(out, s.stem, build_report(store, s), markdown, plot)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main("quality", add_arguments, run, argv)
