"""`flashgau bench qa --task passkey` (or any retrieval objective: multikey16, passkey-first, ...): the paper's
question on a retrieval task (docs/qa.md): does FLASH (s = 512, with first-to-all) find a fact far back in a long
context as Transformer+ does, at a lower cost?

Each row is one ordinary training run (the `flashgau train` loop) on the task from scratch, for equal seconds of
training steps (`--seconds`), each seed on its own; scored on the task's fixed held-out examples (held-out plays,
keys and values): accuracy in all and by distance between the fact and the question in chunks of QA_CHUNK tokens
(every row is given chunk_size QA_CHUNK, so the buckets are the same positions for every row; only FLASH uses
it), beside the task's floors, with the step time and the latency reduction against Transformer+.

Rows: the six of the paper's table (bench/qa: ROWS), then FLASH at the preset's own s with the same chunk, and
FLASH s = 512 with the global (linear) part off (`mixed_chunk_parts` "local": a fact beyond the question's chunk is
out of its sight), which says how much the linear part carries. `--init-std` (default 0.1) is given to every row:
at the model's default 0.02 GAU attention starts near zero, where relu^2 has no gradient, and the GAU rows do not
leave chance in minutes of CPU training (docs/qa.md). `--warm-context T0 --warm-seconds S` makes each row a length
curriculum: S seconds at context T0 from scratch, then `--seconds` at `--context` from those weights (`--init-from`;
the model keeps what the short run built it with, FLASH-Quad's normaliser length included); the report's step time
and latency are the long stage's. Resumable: each finished run is saved (runs/retrieval-<task>/<key>.json) and
skipped on a rerun.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from ...data.retrieval import BUCKETS, TASK_VERSION
from ...errors import ConfigError
from ...runtime import resolve_device, resolve_precision
from .. import common, quality
from .rows import QA_CHUNK, model_options

RETRIEVAL_DEFAULTS = dict(preset="tiny", context=512, seconds=600.0, seeds=(0, 1), batch_tokens=8192,
                          precision="auto")
RETRIEVAL_QUICK = dict(preset="tiny", context=256, seconds=2.0, seeds=(0,), batch_tokens=1024)
REFERENCE = "transformer+"


@dataclass
class RetrievalSettings:
    """Everything the runs of the benchmark depend on; stored in its report."""

    task: str
    preset: str
    context: int
    seeds: list
    seconds: float
    batch_tokens: int
    lr: float
    warmup_steps: int
    init_std: float
    precision: str
    precision_reason: str
    eval_windows: int
    data: Optional[str]
    quick: bool
    device: str
    rows: list
    warm_context: Optional[int] = None      # the curriculum's first stage (None: from scratch at `context`)
    warm_seconds: float = 0.0

    def key(self, row, seed: int) -> str:
        warm = f"-warm{self.warm_context}x{self.warm_seconds:g}s" if self.warm_context else ""
        return (f"{self.task}-{self.preset}-T{self.context}-{self.seconds:g}s{warm}-b{self.batch_tokens}-"
                f"lr{self.lr:g}-std{self.init_std:g}-seed{seed}-{row.slug}-task{TASK_VERSION}"
                f"{common.device_tag(torch.device(self.device), self.precision)}")

    def to_dict(self) -> dict:
        return asdict(self)


def settings_from_args(args, rows) -> RetrievalSettings:
    device = resolve_device(args.device)
    o = common.options(args, RETRIEVAL_DEFAULTS, RETRIEVAL_QUICK)
    if not o["seconds"] > 0:
        raise ConfigError(f"--seconds must be > 0, got {o['seconds']:g}")
    if o["context"] < 1:
        raise ConfigError(f"--context must be >= 1, got {o['context']}")
    init_std = 0.1 if args.init_std is None else args.init_std
    if not init_std > 0:
        raise ConfigError(f"--init-std must be > 0, got {init_std:g}")
    warm_context, warm_seconds = getattr(args, "warm_context", None), getattr(args, "warm_seconds", None)
    if (warm_context is None) != (warm_seconds is None):
        raise ConfigError("--warm-context and --warm-seconds go together (the curriculum's first stage: its "
                          "context and its seconds of training)")
    if warm_context is not None and not 1 <= warm_context < o["context"]:
        raise ConfigError(f"--warm-context must be >= 1 and shorter than --context {o['context']}, got {warm_context}")
    if warm_seconds is not None and not warm_seconds > 0:
        raise ConfigError(f"--warm-seconds must be > 0, got {warm_seconds:g}")
    return RetrievalSettings(
        task=args.task, preset=o["preset"], context=o["context"], seeds=list(o["seeds"]), seconds=o["seconds"],
        batch_tokens=max(o["batch_tokens"], o["context"]), lr=args.lr, warmup_steps=args.warmup_steps,
        init_std=init_std, precision=o["precision"],
        precision_reason=resolve_precision(o["precision"], device).describe(), eval_windows=args.eval_windows,
        data=args.data, quick=bool(args.quick), device=str(device), rows=[r.slug for r in rows],
        warm_context=warm_context, warm_seconds=warm_seconds or 0.0)


def longer_positions(row, s: RetrievalSettings) -> dict:
    """{"max_seq_len": --context} where the context is longer than the preset's max_seq_len (the tiny preset's
    2,048 at --context 4096), else nothing: the rows' models are then exactly the preset's."""
    from ...config import ModelConfig

    longest = ModelConfig.preset(s.preset, arch=row.arch).max_seq_len
    return {"max_seq_len": s.context} if s.context > longest else {}


def row_config(row, seed: int, s: RetrievalSettings, folder: Path, *, warm: bool = False,
               init_from: Optional[Path] = None):
    """The TrainConfig of a row's run on the task: its long stage (from scratch, or from `init_from`, the weights of
    its warm stage), or with warm=True the curriculum's first stage at the short context."""
    from ...training.config import TrainConfig
    # from init_from the model is the warm stage's, as built for its context (Combiner's "auto" chunk included); a
    # max_seq_len beyond the preset's is named again (the source's own value), so the long context passes the checks
    model = longer_positions(row, s)
    if init_from is None:
        model = {"chunk_size": QA_CHUNK, **model_options(row, s), "init_std": s.init_std, **model}
    context, seconds = (s.warm_context, s.warm_seconds) if warm else (s.context, s.seconds)
    return TrainConfig(arch=row.arch, preset=s.preset, objective=s.task, context=context, time_budget=seconds,
                       time_budget_covers="training", batch_tokens=max(s.batch_tokens, context),
                       micro_batch_tokens=max(8192, context), lr=s.lr, warmup_steps=s.warmup_steps,
                       precision=s.precision, data=s.data, eval_windows=s.eval_windows, seed=seed, out=str(folder),
                       model=model, init_from=None if init_from is None else str(init_from))


def train_stage(cfg, device: str):
    """One training run (resumed where it stopped): its result, its curve and its seconds of training steps."""
    result, records = quality.train_or_resume(cfg, device, log=lambda m: None)
    points = quality.curve(records)
    return result, points, points[-1]["train_time"] if points else None


def train_row(row, seed: int, s: RetrievalSettings, folder: Path, keep: bool) -> dict:
    from ...training.checkpoint import CHECKPOINT_NAME

    t0 = time.perf_counter()
    warm = None
    if s.warm_context:
        warm_folder = folder / "warm"
        warm_result, _, warm_time = train_stage(row_config(row, seed, s, warm_folder, warm=True), s.device)
        warm = dict(context=s.warm_context, steps=warm_result.step, final=warm_result.final.to_dict(),
                    train_time=warm_time)
        cfg = row_config(row, seed, s, folder, init_from=warm_folder)
    else:
        cfg = row_config(row, seed, s, folder)
    result, points, train_time = train_stage(cfg, s.device)
    rec = dict(row=row.slug, label=row.label, arch=row.arch, seed=seed, train_config=cfg.to_dict(),
               model_config=result.model.config.to_dict(), num_parameters=result.num_parameters, steps=result.step,
               train_time=train_time, step_seconds=train_time / result.step if train_time and result.step else None,
               final=result.final.to_dict(), curve=points, env=common.environment(torch.device(s.device)),
               session_seconds=time.perf_counter() - t0, warm=warm)
    if not keep:
        (folder / CHECKPOINT_NAME).unlink(missing_ok=True)
        (folder / "warm" / CHECKPOINT_NAME).unlink(missing_ok=True)
    return rec


def run(args, rows) -> int:
    s = settings_from_args(args, rows)
    out = common.results_folder(args.out, torch.device(s.device))
    stem = f"retrieval-{s.task}" + ("-quick" if s.quick else "")
    runs_dir = out / "runs" / stem
    store = common.ResultStore(runs_dir)
    print(f"device {s.device}, precision {s.precision_reason}", flush=True)
    budget = quality.Budget(args.max_runs)
    for seed in s.seeds if not args.report_only else ():
        for row in rows:
            key = s.key(row, seed)
            if store.has(key):
                print(f"  {key}: done, skipped")
                continue
            if not budget.take():
                break
            rec = train_row(row, seed, s, runs_dir / key, args.keep_checkpoints)
            store.save(key, dict(rec, key=key))
            f = rec["final"]
            print(f"  {key}: {rec['steps']} steps in {rec['train_time'] or 0:.0f} s | accuracy {f['accuracy']:.1f}",
                  flush=True)
    report = build_report(store, s, rows)
    common.write_reports(out, stem, report, markdown, plot)
    return 0


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


FIELDS = ("same_chunk", "near", "three_back", "far")


def build_report(store, s: RetrievalSettings, rows) -> dict:
    saved = {r["key"]: r for r in store.all() if r.get("final") and "key" in r}
    table = []
    for row in rows:
        runs = [saved[s.key(row, seed)] for seed in s.seeds if s.key(row, seed) in saved]
        if not runs:
            continue
        f = [r["final"] for r in runs]
        table.append(dict(row=row.slug, label=row.label, arch=row.arch, seeds=[r["seed"] for r in runs],
                          params=runs[0]["num_parameters"], steps=[r["steps"] for r in runs],
                          step_seconds=[r["step_seconds"] for r in runs], accuracy=[x["accuracy"] for x in f],
                          greedy=[x["greedy"] for x in f],
                          **{name: [x[name] for x in f] for name in FIELDS}, counts=f[0]["counts"],
                          floor_random=f[0]["floor_random"], floor_frequent=f[0]["floor_frequent"],
                          floor_fact=f[0]["floor_fact"], facts=f[0]["facts"], questions=f[0]["questions"]))
    ref = next((r for r in table if r["row"] == REFERENCE), None)
    for r in table:
        mine, theirs = _mean(r["step_seconds"]), ref and _mean(ref["step_seconds"])
        r["latency_reduction"] = theirs / mine if mine and theirs else None
    envs = common.unique([rec["env"] for rec in store.all() if rec.get("env")], key=lambda e: e.get("command"))
    headline = [dict(text=f"{r['label']}: accuracy {_mean(r['accuracy']):.1f} (" + ", ".join(
        f"{b} {_fmt(r[name])}" for b, name in zip(BUCKETS, FIELDS)) + f"), {_mean(r['steps']):.0f} steps")
        for r in table]
    return dict(settings=s.to_dict(), rows=table, env=envs or [common.environment()], headline=headline)


def _fmt(xs) -> str:
    m = _mean(xs)
    if m is None:
        return "–"
    xs = [x for x in xs if x is not None]
    return f"{m:.1f}" + (f" ± {(max(xs) - min(xs)) / 2:.1f}" if len(xs) > 1 else "")


def markdown(rep: dict) -> str:
    s, rows = rep["settings"], rep["rows"]
    lines = [f"# Retrieval, {s['task']} ({s['preset']} preset, {common.fmt_ctx(s['context'])} context, "
             f"{s['device']})", "",
             "FLASH here is the paper's model (Hua et al. 2022), not FlashAttention. The task (docs/qa.md): facts "
             "\"The key of the <key> is <value>.\" in a window of a play, a question about one or more of them, a "
             "one-token answer; trained from scratch on training plays, keys and values; scored on 200 fixed "
             "examples of held-out plays, keys and values.", "",
             (f"Each row: {s['warm_seconds']:g} s of training steps at {common.fmt_ctx(s['warm_context'])} from "
              f"scratch, then {s['seconds']:g} s at {common.fmt_ctx(s['context'])} from those weights (a length "
              "curriculum; steps and step time below are the second stage's)"
              if s.get("warm_context") else f"Each row: {s['seconds']:g} s of training steps from scratch")
             + f", {s['batch_tokens']:,} tokens per step, "
             f"peak lr {s['lr']:g}, init_std {s['init_std']:g} for every row, precision {s['precision_reason']}, "
             f"seeds {', '.join(map(str, s['seeds']))} (mean ± half-range). Distances are in chunks of {QA_CHUNK} "
             "tokens of absolute position between the fact's value and the token that reads the answer. **accuracy**: "
             "the held-out value the model finds likeliest is the answer (by distance in the next columns); "
             "**greedy**: its likeliest token of all is (held-out values are never a training answer, so a model "
             "that reads the fact may still write a training value).", ""]
    if rows:
        r0 = rows[0]
        floors = f"a random value {r0['floor_random']:.1f}, the most frequent value {r0['floor_frequent']:.1f}"
        if r0["facts"] > 1:
            floors += f", a random fact's value {r0['floor_fact']:.1f}"
        lines += [f"Floors on these {r0['questions']} questions: {floors}. Questions by distance: "
                  + ", ".join(f"{b} {n}" for b, n in zip(BUCKETS, r0["counts"])) + ".", ""]
    table = [[r["label"], f"{r['params']:,}", _fmt(r["accuracy"]), *[_fmt(r[name]) for name in FIELDS],
              _fmt(r["greedy"]),
              f"{_mean(r['steps']):.0f}", f"{_mean(r['step_seconds']):.3f}",
              "–" if r["latency_reduction"] is None else f"{r['latency_reduction']:.2f}×"] for r in rows]
    lines += common.md_table(["Model", "params", "accuracy", *BUCKETS, "greedy", "steps", "s per step",
                              "latency reduction"], table)
    lines += ["", "## Run environment", ""]
    for env in rep["env"]:
        lines += [common.env_markdown(env), ""]
    return "\n".join(lines) + "\n"


def plot(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rep["rows"]:
        ys = [_mean(r[name]) for name in FIELDS]
        ax.plot(range(len(FIELDS)), [float("nan") if y is None else y for y in ys], marker="o", label=r["label"])
    if rep["rows"]:
        ax.axhline(rep["rows"][0]["floor_frequent"], color="grey", linestyle=":", label="most frequent value")
    ax.set_xticks(range(len(FIELDS)), BUCKETS)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{rep['settings']['task']}: accuracy by distance between fact and question")
    ax.legend(fontsize=7)
    common.save_figure(fig, path)
