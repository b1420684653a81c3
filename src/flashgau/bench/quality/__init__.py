"""`flashgau bench quality`: held-out quality of every arch trained with the same budget, against context length.

Every run is a normal training run of flashgau.training.train (the `flashgau train` loop, unchanged) on the chosen
device: the default book corpus (Shakespeare, whole plays held out), byte tokens, the chosen preset, one
TrainConfig per (series, arch, context, seed). The settings its runs share are read from the experiment's files in
configs/ (lm-512.toml; mlm-512.toml and mlm-2048.toml), which `flashgau train --config` runs one by one; the
benchmark's options override them. Two series, side by side:

- equal time (`--time-budget S`): every arch gets S seconds of training steps (TrainConfig.time_budget_covers =
  "training": held-out checks, checkpoints and setup are not charged, so an arch whose evaluation is slow loses no
  training time); the loop turns the seconds into a step count by timing its first steps;
- equal steps (`--steps N`): every arch takes N optimizer steps, hence sees the same tokens.

Archs run interleaved within each (context, seed, series), with two more rows that show what the defaults of each
release buy at equal steps and equal time: "flash-0.1.0", FLASH with the defaults of flashgau 0.1.0 (TODAY), before
the ablations' measurements changed them, and "flash-0.2.0", FLASH with 0.2.0's tied embedding and head. The
baselines run with their own settings (ARCH_OPTIONS, docs/baselines.md): Performer's causal block of 64 tokens
(speed only: its maths is the same at every block length), Combiner's chunk of about sqrt(T) (its authors' choice).

Reported per run: the final held-out loss, perplexity and bits per byte (all held-out windows), and the curve of
held-out loss (a fixed subset of held-out windows) against training seconds (the time inside optimizer steps) and
against training tokens. Per (series, context, seed): the paper's headline measure, the training time each arch
needs to reach Transformer+'s final held-out loss (on the same fixed subset; linear interpolation between
evaluations; "–" where it never does) and the speedup that gives, and the held-out loss of every arch against
Transformer++'s (equal time: on the curves, at the shorter of the two runs' training times; equal steps: the final
losses). The unigram floor (the held-out cross-entropy of the training split's token frequencies) is printed, and
every row within UNIGRAM_MARGIN of it is flagged: such a model has not yet learned more than token frequencies.
Two seeds give the spread (report.py).

Reproducible: each run folder keeps its TrainConfig (result.json), so `flashgau train` with those settings and
seed repeats it. Resumable: a finished run has result.json and is skipped; an interrupted one continues from its
checkpoint. `flashgau bench ablations` trains named model variants through the same functions.

`--objective mlm` runs the paper's C4 experiment instead (its archs, contexts 512 and 2K): every run trains a
bidirectional model with the masked-language-model task (flashgau.tasks.mlm), the curves and final numbers are the
held-out masked-token loss on fixed masked positions (the same for every arch and seed), and the reference of the
speedup is Transformer++ (the paper's C4 plot: training time to reach Transformer++'s final loss). Its reports are
quality-mlm.{md,json,png}.
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
from ...errors import FlashgauError
from ...tasks import OBJECTIVES
from ...runtime import resolve_device, resolve_precision
from ...training.run_config import read_run_config
from .. import common
from .report import build_report, markdown, plot

SERIES = ("time", "steps")


def _experiment(name: str) -> dict:
    """The run settings of the bundled config `name` (configs/NAME.toml) that every run of the benchmark shares
    (its arch, context, seed, budget and folder are the benchmark's), as DEFAULTS entries; eval_windows as the
    tokens they hold, so that each context scores about as many."""
    c = read_run_config(name)
    return dict(preset=c["preset"], time_budget=c["time_budget"], batch_tokens=c["batch_tokens"],
                micro_batch_tokens=c["micro_batch_tokens"], lr=c["lr"], warmup_steps=c["warmup_steps"],
                precision=c["precision"], heldout_fraction=c["heldout_fraction"],
                eval_tokens=c["eval_windows"] * c["context"], time_budget_covers=c["time_budget_covers"])


# The run settings are the paper's LM experiment as configs/lm-512.toml holds it (lm-1024 and lm-4096 differ by the
# context and its held-out windows only): 4096 tokens per step (8 windows of 512: the ablations' loop); 100 steps
# are 410K tokens, past the ~250K tokens every arch spends on the unigram plateau of the byte-level plays; 150
# training seconds give 60-115 steps on a 2-core AVX2 CPU in fp32
DEFAULTS = dict(**_experiment("lm-512"), contexts=(512, 4096), seeds=(0, 1), steps=100)
QUICK = dict(preset="tiny", contexts=(128, 512), seeds=(0,), time_budget=6.0, steps=20, batch_tokens=2048,
             eval_tokens=4096)
# --objective mlm: the archs of the paper's C4 plot at 512 and 2K, configs/mlm-512.toml and mlm-2048.toml. Tiny
# models: on 2 AVX2 cores in fp32 the small preset (2.5K tokens/s) spends a 2-minute budget on the unigram plateau
# (MLM scores 15% of the tokens); the tiny one (~55K tokens/s) leaves it, FLASH within ~15 s, Transformer++ at 2K
# only after ~150 s: hence 240 s at 2K
MLM_ARCHS = ("transformer+", "transformer++", "performer", "combiner", "flash-quad", "flash")
MLM_DEFAULTS = dict(_experiment("mlm-512"), contexts=(512, 2048), time_budget=120.0)
# seconds per run at these contexts (time_budget elsewhere)
MLM_CONTEXT_BUDGETS = {str(T): _experiment(f"mlm-{T}")["time_budget"] for T in (512, 2048)}
# the baselines' own settings (docs/baselines.md), on top of the preset in every run of the benchmark
ARCH_OPTIONS: dict[str, dict] = {"performer": {"performer_chunk_size": 64}, "combiner": {"combiner_chunk_size": "auto"}}
UNIGRAM_MARGIN = 0.05   # nats: a row this close to the unigram floor is flagged
# The FLASH defaults of flashgau 0.1.0, before the ablations' measurements changed them ("today" there).
TODAY = dict(token_shift=0.0, init="normal", norm="layernorm", rope_fraction=1.0, rel_pos="auto",
             linear_normalizer="average", tie_embeddings=True)
# The defaults of flashgau 0.2.0, before the learning-speed measurement untied the head (the embedding's std follows:
# init_std when tied).
RELEASE_0_2_0 = dict(tie_embeddings=True)
# Rows that are not an arch: name -> (arch, model options on top of the preset).
VARIANT_ROWS: dict[str, tuple[str, dict]] = {"flash-0.2.0": ("flash", RELEASE_0_2_0), "flash-0.1.0": ("flash", TODAY)}
ROWS: tuple[str, ...] = (*ARCHS, *VARIANT_ROWS)


@dataclass
class QualitySettings:
    """Everything a quality run depends on; stored in its report. `series`: "time" (time_budget training seconds
    per run) and/or "steps" (steps per run); the budget of a series not run is None. `precision` is what every run
    is asked for, `precision_reason` what it resolves to on this device and why."""

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
    series: list[str] = dataclasses.field(default_factory=lambda: ["time"])
    arch_options: dict = dataclasses.field(default_factory=lambda: dict(ARCH_OPTIONS))
    objective: str = "lm"
    context_budgets: dict = dataclasses.field(default_factory=dict)   # {"T": seconds}: time_budget at context T

    @property
    def stem(self) -> str:
        return "quality" + ("" if self.objective == "lm" else f"-{self.objective}") + ("-quick" if self.quick else "")

    def budget_for(self, context: int) -> Optional[float]:
        """The equal-time series' seconds of training steps at `context` (None when that series is not run)."""
        return None if self.time_budget is None else self.context_budgets.get(str(context), self.time_budget)

    def budget_label(self, series: str, context: int) -> str:
        """The budget of a series at `context` as it appears in run keys: "150s-train" (training seconds) or
        "100steps"."""
        return f"{self.budget_for(context):g}s-train" if series == "time" else f"{self.steps}steps"

    def run_key(self, arch: str, context: int, seed: int, series: Optional[str] = None) -> str:
        """The name of one run's record and folder: preset, context, the budget of `series` (default: the first of
        self.series), seed, arch and the device's tag."""
        budget = self.budget_label(series or self.series[0], context)
        tag = common.device_tag(torch.device(self.device), self.precision)
        return f"{self.preset}-T{context}-{budget}-seed{seed}-{arch}{tag}"

    def describe_series(self, series: str) -> str:
        return (f"equal time: {self.time_budget:g} s of training steps per run" if series == "time"
                else f"equal steps: {self.steps} steps per run ({self.steps * self.batch_tokens:,} tokens at "
                     "the shortest context)")

    def to_dict(self) -> dict:
        return asdict(self)


def _list(values) -> str:
    return " ".join(map(str, values))


def add_arguments(p: argparse.ArgumentParser) -> None:
    D, Q, M = DEFAULTS, QUICK, MLM_DEFAULTS
    # the QA and retrieval tasks have their experiment in `bench qa` (answers, not a loss series)
    p.add_argument("--objective", choices=[o for o in OBJECTIVES if o in ("lm", "mlm")], default="lm",
                   help="lm: causal language models, held-out loss and bits per byte; mlm: the paper's C4 experiment, "
                   "bidirectional models trained on masked language modelling, held-out masked-token loss, speedup to "
                   "Transformer++'s loss (its defaults, configs/mlm-512.toml and mlm-2048.toml: "
                   f"--archs {' '.join(MLM_ARCHS)} --preset {M['preset']} --contexts {_list(M['contexts'])} "
                   f"--time-budget {M['time_budget']:g} --batch-tokens {M['batch_tokens']}) (default: lm)")
    p.add_argument("--archs", nargs="+", choices=ROWS, default=None, metavar="ARCH",
                   help=f"archs (rows) to train (default: all: {' '.join(ROWS)})")
    p.add_argument("--preset", default=None, help=f"model size (default: {D['preset']}; --quick: {Q['preset']})")
    p.add_argument("--contexts", nargs="+", type=int, default=None, metavar="T",
                   help=f"context lengths (default: {_list(D['contexts'])}; --quick: {_list(Q['contexts'])})")
    p.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED",
                   help="seeds; every (arch, context) is trained once per seed "
                        f"(default: {_list(D['seeds'])}; --quick: {_list(Q['seeds'])})")
    p.add_argument("--series", nargs="+", choices=SERIES, default=None, help="equal time, equal steps or both "
                   "(default: both; only the one whose budget is given when just --time-budget or --steps is)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="seconds of training steps per run in the equal-time series (evaluation not counted), the "
                        f"same for every arch (default: {D['time_budget']:g}; --quick: {Q['time_budget']:g})")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run in the equal-steps series "
                   f"(the same tokens for every arch) (default: {D['steps']}; --quick: {Q['steps']})")
    p.add_argument("--context-budget", action="append", type=_context_budget, default=None, metavar="T=SECONDS",
                   help="the equal-time series' seconds at context T, instead of --time-budget (repeat for several "
                   "contexts; --objective mlm: " + ", ".join(f"{t}={b:g}" for t, b in MLM_CONTEXT_BUDGETS.items())
                   + " unless --time-budget, --steps or --quick is given)")
    p.add_argument("--batch-tokens", type=int, default=None, metavar="N", help="tokens per step "
                   f"(default: {D['batch_tokens']}; --quick: {Q['batch_tokens']})")
    p.add_argument("--micro-batch-tokens", type=int, default=None, metavar="N", help="tokens per forward pass "
                   f"(default: {D['micro_batch_tokens']})")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default: {D['lr']:g})")
    p.add_argument("--warmup-steps", type=int, default=None, help="warm-up steps, at most a fifth of a run "
                   f"(default: {D['warmup_steps']})")
    common.add_common_arguments(p, precision_default=D["precision"])
    p.add_argument("--eval-tokens", type=int, default=None, metavar="N",
                   help="tokens of the fixed held-out subset scored during training "
                        f"(default: {D['eval_tokens']}; --quick: {Q['eval_tokens']})")
    p.add_argument("--heldout-fraction", type=float, default=None, help="share of the corpus held out, whole "
                   f"documents (default: {D['heldout_fraction']:g}: one play, The Merry Wives of Windsor, ~128K "
                   "bytes)")
    p.add_argument("--data", default=None, metavar="PATH", help="corpus (default: the Shakespeare book corpus)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each finished run's checkpoint.pt")
    p.add_argument("--quick", action="store_true", help="a reduced version: tiny preset, contexts 128 and 512, "
                   "one seed, 6 s per run")
    p.add_argument("--max-runs", type=int, default=None, metavar="N", help="train at most N of the missing runs, "
                   "then write the report (to drive the benchmark run by run, e.g. one run per lock)")
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


def chosen_series(args) -> list[str]:
    """--series, else both unless only one of --time-budget / --steps is given."""
    if args.series:
        return [x for x in SERIES if x in args.series]
    if (args.time_budget is None) != (args.steps is None):
        return ["time"] if args.time_budget is not None else ["steps"]
    return list(SERIES)


def settings_from_args(args) -> QualitySettings:
    device = resolve_device(args.device)
    mlm = args.objective == "mlm"
    o = common.options(args, {**DEFAULTS, **MLM_DEFAULTS} if mlm else DEFAULTS, QUICK)
    series = chosen_series(args)
    return QualitySettings(
        archs=list(args.archs or (MLM_ARCHS if mlm else ROWS)), preset=o["preset"], contexts=sorted(o["contexts"]),
        seeds=list(o["seeds"]),
        time_budget=o["time_budget"] if "time" in series else None, steps=o["steps"] if "steps" in series else None,
        batch_tokens=o["batch_tokens"], micro_batch_tokens=o["micro_batch_tokens"], lr=o["lr"],
        warmup_steps=o["warmup_steps"], precision=o["precision"],
        precision_reason=resolve_precision(o["precision"], device).describe(), eval_tokens=o["eval_tokens"],
        heldout_fraction=o["heldout_fraction"], data=args.data, quick=bool(args.quick), device=str(device),
        series=series, objective=args.objective,
        context_budgets=_context_budgets(args, mlm) if "time" in series else {})


def train_config(arch: str, context: int, seed: int, s: QualitySettings, out_dir: Path, series: Optional[str] = None,
                 *, model: Optional[dict] = None, lr: Optional[float] = None):
    """The TrainConfig of one run: `series` "time" or "steps" (default: the first of s.series); `model` options
    (default: the arch's ARCH_OPTIONS of the settings) and `lr` (default: s.lr) for a variant. `arch` may be a row of
    VARIANT_ROWS: its arch, with the row's options under `model`."""
    from ...training.config import TrainConfig
    if arch in VARIANT_ROWS:
        arch, options = VARIANT_ROWS[arch]
        model = {**s.arch_options.get(arch, {}), **options, **(model or {})}
    timed = (series or s.series[0]) == "time"
    return TrainConfig(arch=arch, preset=s.preset, objective=s.objective, context=context,
                       steps=None if timed else s.steps, time_budget=s.budget_for(context) if timed else None,
                       time_budget_covers=(MLM_DEFAULTS if s.objective == "mlm" else DEFAULTS)["time_budget_covers"],
                       batch_tokens=max(s.batch_tokens, context),
                       micro_batch_tokens=max(s.micro_batch_tokens, context),
                       lr=s.lr if lr is None else lr, warmup_steps=s.warmup_steps, precision=s.precision,
                       data=s.data, heldout_fraction=s.heldout_fraction,
                       eval_windows=max(2, s.eval_tokens // context), seed=seed, out=str(out_dir),
                       model=dict(s.arch_options.get(arch, {}) if model is None else model))


def curve(records: list[dict]) -> list[dict]:
    """Held-out points against training time: the seconds inside optimizer steps the loop records
    (`train_seconds`); for records written before it did, the run's clock with each evaluation's duration (its
    record's elapsed minus the elapsed of the training step it follows) removed from every later point."""
    train = [r for r in records if r.get("kind") == "train"]
    if train and all("train_seconds" in r for r in train):
        at = {r["step"]: r for r in train}
        return [dict(step=r["step"], tokens=at[r["step"]]["tokens"], train_time=at[r["step"]]["train_seconds"],
                     elapsed=r["elapsed"], heldout_loss=r["heldout_loss"], heldout_bpb=r.get("heldout_bpb"),
                     heldout_accuracy=r.get("heldout_accuracy"))
                for r in records if r.get("kind") == "eval" and r["step"] in at]
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


def train_one(arch: str, context: int, seed: int, s: QualitySettings, folder: Path, keep: bool, log=print,
              series: Optional[str] = None, *, model: Optional[dict] = None, lr: Optional[float] = None) -> dict:
    """Train (or resume) one run into `folder` and return its record (train_config's arguments; `arch` may be a
    row of VARIANT_ROWS, recorded under that name)."""
    from ...training.checkpoint import CHECKPOINT_NAME

    series = series or s.series[0]
    cfg = train_config(arch, context, seed, s, folder, series, model=model, lr=lr)
    t0 = time.perf_counter()
    result, records = train_or_resume(cfg, s.device, log)
    pts = curve(records)
    final_rec = next((r for r in records if r.get("kind") == "final"), {})
    rec = dict(arch=arch, context=context, seed=seed, preset=s.preset, key=folder.name, device=s.device,
               series=series, budget=s.budget_label(series, context), model_options=cfg.model, lr=cfg.lr,
               train_config=cfg.to_dict(), model_config=result.model.config.to_dict(),
               num_parameters=result.num_parameters, steps=result.step, tokens=result.tokens_seen,
               elapsed=result.elapsed, train_time=pts[-1]["train_time"] if pts else None,
               final=result.final.to_dict(),
               final_eval_seconds=final_rec.get("eval_seconds"), curve=pts,
               env=common.environment(torch.device(s.device)),
               session_seconds=time.perf_counter() - t0)
    if not keep:
        (folder / CHECKPOINT_NAME).unlink(missing_ok=True)
    return rec


def train_or_resume(cfg, device: str, log=print):
    """Train `cfg` (a TrainConfig) into its folder, or resume the run whose checkpoint is there or set aside by an
    interrupted replacement (a finished one is scored again); (TrainResult, the run's metric records). A run stopped
    before its last step (Ctrl-C, SIGTERM) raises FlashgauError, so that no benchmark records it as done."""
    from ...training.checkpoint import CHECKPOINT_NAME
    from ...training.loop import METRICS_NAME, train
    from ...training.metrics import read_metrics
    from ...training.run_folder import set_aside_run

    folder = Path(cfg.out)
    if (folder / CHECKPOINT_NAME).exists() or set_aside_run(folder) is not None:   # resuming moves it back
        log(f"  resuming {folder}")
        result = train(resume=folder, device=device, progress=False, log=lambda m: None)
    else:
        result = train(cfg, device=device, overwrite=True, progress=False, log=lambda m: None)
    if not result.finished:   # stopped by Ctrl-C / SIGTERM: not a result; its checkpoint stays for the next run
        raise FlashgauError(f"interrupted after step {result.step} of {result.total_steps}; its checkpoint is kept "
                            f"in {folder}: run the same command again to resume it")
    return result, read_metrics(folder / METRICS_NAME)


def unigram_floor(data: Optional[str], heldout_fraction: float) -> dict:
    """The held-out cross-entropy (nats per scored token) of the training split's unigram distribution: the loss of
    a model that knows token frequencies and nothing else. Add-one smoothing (a token unseen in training keeps a
    finite cost); the targets are the tokens the held-out windows score (every token of a held-out document but its
    first)."""
    from ...training.config import TrainConfig
    from ...training.setup import prepare_data

    run_data = prepare_data(TrainConfig(data=data, heldout_fraction=heldout_fraction, steps=1))
    V = run_data.tokenizer.vocab_size

    def counts(docs, skip_first: bool) -> torch.Tensor:
        total = torch.zeros(V, dtype=torch.float64)
        for i in range(len(docs)):
            tokens = docs.tokens(i).long()
            total += torch.bincount(tokens[1:] if skip_first else tokens, minlength=V).double()
        return total

    train, held = counts(run_data.train_docs, False), counts(run_data.heldout_docs, True)
    logp = ((train + 1) / (train.sum() + V)).log()
    return dict(loss=float(-(held * logp).sum() / held.sum()), tokenizer=run_data.tokenizer.kind, vocab_size=V,
                train_tokens=int(train.sum()), heldout_targets=int(held.sum()), margin=UNIGRAM_MARGIN)


def run(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    out = common.results_folder(args.out, torch.device(s.device))
    runs_dir = out / "runs" / s.stem
    store = common.ResultStore(runs_dir)
    print(f"device {s.device}, precision {s.precision_reason}", flush=True)
    budget = Budget(args.max_runs)
    # archs interleaved within each (context, seed, series)
    plan = [(T, seed, x, a) for T in s.contexts for seed in s.seeds for x in s.series for a in s.archs]
    for T, seed, series, arch in plan:
        key = s.run_key(arch, T, seed, series)
        if store.has(key):
            warn_if_stale(store.load(key), key, store.path(key), train_config(arch, T, seed, s, runs_dir / key,
                                                                               series))
    for T, seed, series, arch in plan if not args.report_only else ():
        key = s.run_key(arch, T, seed, series)
        if not train_and_save(store, key, lambda: train_one(arch, T, seed, s, runs_dir / key, args.keep_checkpoints,
                                                            series=series), budget=budget):
            return 1
    common.write_reports(out, s.stem, build_report(store, s, unigram_floor(s.data, s.heldout_fraction)), markdown,
                         plot)
    return 0


def stale_settings(saved: dict, cfg) -> dict[str, tuple]:
    """The model fields a saved run was trained with that `cfg` (the TrainConfig today's code gives its key) sets
    otherwise, as {field: (saved, today)}: a default changed since the run (its key names only the arch)."""
    from ...config import ModelConfig

    then = ModelConfig.from_dict(saved["model_config"]).to_dict()
    now = cfg.model_config(then["vocab_size"]).to_dict()
    return {k: (then.get(k), x) for k, x in now.items() if then.get(k) != x}


def warn_if_stale(saved: Optional[dict], key: str, path: Path, cfg) -> None:
    """One line when the saved run `key` (its record `saved`, in `path`) was trained with other model settings than
    today's code would use."""
    if not saved or "model_config" not in saved:
        return
    diff = stale_settings(saved, cfg)
    if diff:
        what = ", ".join(f"{k} {a!r} (today {b!r})" for k, (a, b) in sorted(diff.items()))
        print(f"  {key}: saved run trained with {what}; its row is kept: delete {path} to train it "
              "again with today's settings", flush=True)


class Budget:
    """How many more runs this invocation may train (--max-runs; None: all)."""

    def __init__(self, runs: Optional[int]) -> None:
        self.left = runs

    def take(self) -> bool:
        if self.left is None:
            return True
        self.left -= 1
        return self.left >= 0


def train_and_save(store: common.ResultStore, key: str, train_run, name: str = "quality",
                   budget: Optional[Budget] = None) -> bool:
    """Run `train_run()` unless `key` is saved (or `budget` has no run left), save its record and print one line;
    False (after one line on stderr) when the run fails on a user error."""
    if store.has(key):
        print(f"  {key}: done, skipped")
        return True
    if budget is not None and not budget.take():
        return True
    try:
        rec = train_run()
    except FlashgauError as err:
        print(f"flashgau bench {name}: error: {key}: {err}", file=sys.stderr)
        return False
    store.save(key, rec)
    f = rec["final"]
    extra = f"{f['bits_per_byte']:.4f} bits/byte" if "bits_per_byte" in f else f"accuracy {f['accuracy']:.2%}"
    print(f"  {key}: {rec['steps']} steps, {rec['tokens']:,} tokens, train {rec['train_time']:.0f} s"
          f" | held-out loss {f['loss']:.4f}, ppl {f['perplexity']:.3f}, {extra}", flush=True)
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main("quality", add_arguments, run, argv)
