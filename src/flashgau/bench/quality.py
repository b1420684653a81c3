"""`flashgau bench quality`: held-out quality of every arch trained with the same budget, against context length.

Every run is a normal training run of flashgau.training.train (the `flashgau train` loop, unchanged): the default
book corpus (Shakespeare, whole plays held out), byte tokens, the chosen preset, one TrainConfig per (arch,
context, seed). The budget is the same wall time for every arch (`--time-budget`, which the training loop turns
into a step count by timing a few steps first, evaluation included) or the same number of steps, hence tokens
(`--steps`). Archs run interleaved within each (context, seed).

Reported per run: the final held-out loss, perplexity and bits per byte (all held-out windows), and the curve of
held-out loss (a fixed subset of held-out windows) against training wall time (evaluation time removed) and
against training tokens. Per (context, seed): the paper's headline measure, the training time each arch needs to
reach Transformer+'s final held-out loss (on the same fixed subset; linear interpolation between evaluations; "–"
where it never does) and the speedup that gives, and the held-out loss of every arch at equal training time (the
shortest run's training time, interpolated). Two seeds give the spread.

Reproducible: each run folder keeps its TrainConfig (result.json), so `flashgau train` with those settings and
seed repeats it. Resumable: a finished run has result.json and is skipped; an interrupted one continues from its
checkpoint.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

from .common import (DEFAULT_OUT, ResultStore, env_markdown, environment, fmt_ctx, save_figure, write_json,
                     write_text)

CONTEXTS = (512, 4096)
SEEDS = (0, 1)
# seconds per run: at 4K the budget fitter then leaves ~40-80 optimizer steps (at 45-60 s the probe and the
# evaluations took most of it); 28 default runs take ~50 min, which keeps `bench all` under 2 hours
DEFAULT_BUDGET = 100.0
REFERENCE = "transformer+"      # the paper's speedup column: time to reach its final loss
BASELINE = "transformer++"      # issue 5's quality target: loss at equal training time against it


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .. import ARCHS
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=None, metavar="ARCH",
                   help=f"archs to train (default: all: {' '.join(ARCHS)})")
    p.add_argument("--preset", default="small", help="model size (default: small)")
    p.add_argument("--contexts", nargs="+", type=int, default=None, metavar="T",
                   help=f"context lengths (default: {' '.join(map(str, CONTEXTS))})")
    p.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED",
                   help=f"seeds; every (arch, context) is trained once per seed (default: {' '.join(map(str, SEEDS))})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="wall seconds per run, evaluation included, the same for every arch "
                        f"(default: {DEFAULT_BUDGET:g}; --quick: 6)")
    budget.add_argument("--steps", type=int, default=None, help="optimizer steps per run (same tokens for every "
                        "arch) instead of a time budget")
    p.add_argument("--batch-tokens", type=int, default=8192, metavar="N", help="tokens per step (default: 8192)")
    p.add_argument("--micro-batch-tokens", type=int, default=8192, metavar="N", help="tokens per forward pass "
                   "(default: 8192)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    p.add_argument("--warmup-steps", type=int, default=20, help="warm-up steps, at most a fifth of a run "
                   "(default: 20)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto", help="(default: auto: bf16 "
                   "autocast where this machine is fast at it, else fp32)")
    p.add_argument("--eval-tokens", type=int, default=16384, metavar="N",
                   help="tokens of the fixed held-out subset scored during training (default: 16384)")
    p.add_argument("--heldout-fraction", type=float, default=0.02, help="share of the corpus held out, whole "
                   "documents (default: 0.02: one play, The Merry Wives of Windsor, ~128K bytes)")
    p.add_argument("--data", default=None, metavar="PATH", help="corpus (default: the Shakespeare book corpus)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each finished run's checkpoint.pt")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"results folder (default: {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="a reduced version: tiny preset, contexts 128 and 512, "
                   "one seed, 6 s per run")
    p.add_argument("--report-only", action="store_true", help="rebuild the reports from saved runs; train nothing")


def _settings(args) -> dict:
    from .. import ARCHS
    quick = bool(getattr(args, "quick", False))
    budget = args.time_budget
    if args.steps is None and budget is None:
        budget = 6.0 if quick else DEFAULT_BUDGET
    return dict(archs=list(args.archs or ARCHS), preset="tiny" if quick and args.preset == "small" else args.preset,
                contexts=sorted(args.contexts or ((128, 512) if quick else CONTEXTS)),
                seeds=list(args.seeds if args.seeds is not None else ((0,) if quick else SEEDS)),
                time_budget=budget if args.steps is None else None, steps=args.steps,
                batch_tokens=args.batch_tokens if not quick or args.batch_tokens != 8192 else 2048,
                micro_batch_tokens=args.micro_batch_tokens, lr=args.lr, warmup_steps=args.warmup_steps,
                precision=args.precision,
                eval_tokens=4096 if quick and args.eval_tokens == 16384 else args.eval_tokens,
                heldout_fraction=args.heldout_fraction,
                data=args.data, quick=quick)


def run_key(arch: str, context: int, seed: int, s: dict) -> str:
    budget = f"{s['time_budget']:g}s" if s["time_budget"] else f"{s['steps']}steps"
    return f"{s['preset']}-T{context}-{budget}-seed{seed}-{arch}"


def train_config(arch: str, context: int, seed: int, s: dict, out_dir: Path):
    from ..training.config import TrainConfig
    return TrainConfig(arch=arch, preset=s["preset"], context=context, steps=s["steps"],
                       time_budget=s["time_budget"], batch_tokens=max(s["batch_tokens"], context),
                       micro_batch_tokens=max(s["micro_batch_tokens"], context), lr=s["lr"],
                       warmup_steps=s["warmup_steps"], precision=s["precision"], data=s["data"],
                       heldout_fraction=s["heldout_fraction"],
                       eval_windows=max(2, s["eval_tokens"] // context), seed=seed, out=str(out_dir))


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
                        elapsed=r["elapsed"], heldout_loss=r["heldout_loss"], heldout_bpb=r["heldout_bpb"]))
        eval_time += max(0.0, r["elapsed"] - t_train)
    return out


def train_one(arch: str, context: int, seed: int, s: dict, folder: Path, keep: bool, log=print) -> dict:
    from ..training.checkpoint import CHECKPOINT_NAME
    from ..training.loop import METRICS_NAME, train
    from ..training.metrics import read_metrics

    cfg = train_config(arch, context, seed, s, folder)
    t0 = time.perf_counter()
    if (folder / CHECKPOINT_NAME).exists():
        log(f"  resuming {folder}")
        result = train(resume=folder, progress=False, log=lambda m: None)
    else:
        result = train(cfg, overwrite=True, progress=False, log=lambda m: None)
    records = read_metrics(folder / METRICS_NAME)
    pts = curve(records)
    final_rec = next((r for r in records if r.get("kind") == "final"), {})
    train_time = pts[-1]["train_time"] if pts else None
    rec = dict(arch=arch, context=context, seed=seed, preset=s["preset"], key=folder.name,
               train_config=cfg.to_dict(), model_config=result.model.config.to_dict(),
               num_parameters=result.num_parameters, steps=result.step, tokens=result.tokens_seen,
               elapsed=result.elapsed, train_time=train_time, final=result.final.to_dict() if result.final else None,
               final_eval_seconds=final_rec.get("eval_seconds"), curve=pts, env=environment(),
               session_seconds=time.perf_counter() - t0)
    if not keep:
        (folder / CHECKPOINT_NAME).unlink(missing_ok=True)
    return rec


def run(args) -> int:
    s = _settings(args)
    stem = "quality-quick" if s["quick"] else "quality"
    out = Path(args.out)
    runs_dir = out / "runs" / stem
    store = ResultStore(runs_dir)
    if not getattr(args, "report_only", False):
        from ..errors import FlashgauError
        for T in s["contexts"]:
            for seed in s["seeds"]:
                for arch in s["archs"]:           # archs interleaved within each (context, seed)
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
                    print(f"  {key}: {rec['steps']} steps, {rec['tokens']:,} tokens, train {rec['train_time']:.0f} s"
                          f" | held-out loss {f['loss']:.4f}, ppl {f['perplexity']:.3f}, {f['bits_per_byte']:.4f} "
                          "bits/byte", flush=True)
    report = build_report(store, s)
    write_json(out / f"{stem}.json", report)
    write_text(out / f"{stem}.md", markdown(report, stem))
    plot(report, out / f"{stem}.png")
    print(f"wrote {out / stem}.md, .json, .png")
    for t in report["targets"]:
        print(t["text"])
    return 0


# --------------------------------------------------------------------------------------------------- report

def interp_time_to(points: list[dict], target: float) -> Optional[float]:
    """First training time at which the held-out loss reaches `target` (linear between evaluations)."""
    prev = None
    for p in points:
        if p["heldout_loss"] <= target:
            if prev is None:
                return p["train_time"]
            (t0, l0), (t1, l1) = (prev["train_time"], prev["heldout_loss"]), (p["train_time"], p["heldout_loss"])
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1) if l0 != l1 else t1
        prev = p
    return None


def interp_loss_at(points: list[dict], t: float) -> Optional[float]:
    """Held-out loss at training time t (linear between evaluations; None before the first one)."""
    prev = None
    for p in points:
        if p["train_time"] >= t:
            if prev is None:
                return p["heldout_loss"] if math.isclose(p["train_time"], t, rel_tol=1e-6) else None
            (t0, l0), (t1, l1) = (prev["train_time"], prev["heldout_loss"]), (p["train_time"], p["heldout_loss"])
            return l0 + (l1 - l0) * (t - t0) / (t1 - t0) if t1 != t0 else l1
        prev = p
    return points[-1]["heldout_loss"] if points and t >= points[-1]["train_time"] else None


def compare(group: dict) -> dict:
    """Per arch of one (context, seed) group of runs: the training time to reach Transformer+'s final held-out
    loss and the speedup that gives; and its held-out loss against Transformer++'s at equal training time, the
    shorter of the two runs' (pairwise: a slow arch whose budget went mostly to evaluation does not set the time
    for everyone)."""
    ref, base = group.get(REFERENCE), group.get(BASELINE)
    rows = {}
    for arch, r in group.items():
        row = {}
        if ref and ref["curve"]:
            target = ref["curve"][-1]["heldout_loss"]
            t_reach = interp_time_to(r["curve"], target)
            row.update(target_loss=target, time_to_target=t_reach,
                       speedup=(ref["train_time"] / t_reach) if t_reach else None)
        if base and base["train_time"] and r["train_time"]:
            t = min(r["train_time"], base["train_time"])
            la, lb = interp_loss_at(r["curve"], t), interp_loss_at(base["curve"], t)
            row.update(equal_time=t, loss_at_equal_time=la, baseline_loss_at_equal_time=lb,
                       delta_vs_tfmpp=(la - lb) if la is not None and lb is not None else None)
        rows[arch] = row
    return rows


def build_report(store: ResultStore, s: dict) -> dict:
    runs = [r for r in store.all() if r.get("preset") == s["preset"] and r.get("final")
            and r["arch"] in s["archs"] and r["context"] in s["contexts"] and r["seed"] in s["seeds"]
            and r["key"] == run_key(r["arch"], r["context"], r["seed"], s)]
    comparisons = []
    for T in s["contexts"]:
        for seed in s["seeds"]:
            group = {r["arch"]: r for r in runs if r["context"] == T and r["seed"] == seed}
            if not group:
                continue
            comparisons.append(dict(context=T, seed=seed, rows=compare(group)))
    summary = {}
    for T in s["contexts"]:
        for arch in s["archs"]:
            rs = [r for r in runs if r["context"] == T and r["arch"] == arch]
            if not rs:
                continue
            cs = [c["rows"][arch] for c in comparisons if c["context"] == T and arch in c["rows"]]
            vals = lambda key: [c[key] for c in cs if c.get(key) is not None]  # noqa: E731
            summary[f"{arch}@{T}"] = dict(
                arch=arch, context=T, seeds=[r["seed"] for r in rs],
                loss=[r["final"]["loss"] for r in rs], ppl=[r["final"]["perplexity"] for r in rs],
                bpb=[r["final"]["bits_per_byte"] for r in rs], steps=[r["steps"] for r in rs],
                tokens=[r["tokens"] for r in rs], train_time=[r["train_time"] for r in rs],
                loss_at_equal_time=vals("loss_at_equal_time"), delta_vs_tfmpp=vals("delta_vs_tfmpp"),
                speedup=[c.get("speedup") for c in cs],
                params=rs[0]["num_parameters"])
    report = dict(benchmark="quality", settings=s, env=environment(), runs=runs, comparisons=comparisons,
                  summary=summary, run_envs=_envs(runs))
    report["targets"] = targets(report)
    return report


def _envs(runs):
    seen, out = set(), []
    for r in runs:
        e = r.get("env", {})
        k = e.get("command")
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def targets(rep) -> list[dict]:
    out = []
    for c in rep["comparisons"]:
        f = c["rows"].get("flash", {})
        if c["context"] != 4096 or f.get("delta_vs_tfmpp") is None:
            continue
        d = f["delta_vs_tfmpp"]
        out.append(dict(name=f"flash_vs_tfmpp_quality_4k_seed{c['seed']}", value=d, target=0.0, met=d <= 0,
                        equal_time=f["equal_time"],
                        text=f"4K context, seed {c['seed']}, equal training time {f['equal_time']:.0f} s: FLASH "
                             f"held-out loss {f['loss_at_equal_time']:.4f} vs Transformer++ "
                             f"{f['baseline_loss_at_equal_time']:.4f} (difference {d:+.4f} nats; target <= 0): "
                             f"{'met' if d <= 0 else 'MISSED'}"))
    return out


def _pm(xs, fmt="{:.3f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.fmean(xs))} ± {fmt.replace('+', '').format((max(xs) - min(xs)) / 2)}"


def markdown(rep: dict, stem: str) -> str:
    s = rep["settings"]
    budget = f"{s['time_budget']:g} s of wall time per run (evaluation included)" if s["time_budget"] \
        else f"{s['steps']} steps per run ({s['batch_tokens']} tokens per step)"
    L = [f"# Quality at equal training budget ({s['preset']} preset)", "",
         "FLASH here is the paper's model (Hua et al. 2022), not FlashAttention. Each run is `flashgau train` "
         f"on the Shakespeare book corpus (byte tokens; held-out: whole plays, {s['heldout_fraction']:g} of the "
         f"corpus), {budget}, {s['batch_tokens']} tokens per step, {s['precision']}, peak lr {s['lr']:g}, seeds "
         f"{', '.join(map(str, s['seeds']))}. Final numbers score every held-out window; curves and the "
         "time-to-target use a fixed subset of held-out windows scored during training, against training time "
         "with evaluation time removed. Mean ± half-range over seeds. See docs/benchmarks.md.", "",
         "Run environment:", "", *(env_markdown(e) for e in rep["run_envs"][-2:]), ""]
    L += ["## Targets (issue 5)", ""] + ([f"- {t['text']}" for t in rep["targets"]] or ["- (no 4K runs)"]) + [""]
    ctxs = s["contexts"]
    L += ["## Held-out perplexity, bits per byte and speedup to Transformer+'s loss", "",
          "Shaped like the paper's PG-19 table: perplexity per byte token, and the training-time speedup to "
          "reach Transformer+'s final held-out loss (– where the arch never reaches it within the budget).", "",
          "| Model | " + " | ".join(f"{fmt_ctx(T)} ppl | bits/byte | speedup" for T in ctxs) + " |",
          "|---|" + "---:|---:|---:|" * len(ctxs)]
    for arch in s["archs"]:
        cells = []
        for T in ctxs:
            sm = rep["summary"].get(f"{arch}@{T}")
            if not sm:
                cells.append("– | – | –")
                continue
            sps = sm["speedup"]
            sp = "–" if not sps or any(x is None for x in sps) else _pm(sps, "{:.2f}") + "×"
            cells.append(f"{_pm(sm['ppl'])} | {_pm(sm['bpb'], '{:.4f}')} | {sp}")
        L.append(f"| {arch} | " + " | ".join(cells) + " |")
    L += ["", "## Per context: budget used and loss at equal training time", "",
          "Δ vs Transformer++: this arch's held-out loss minus Transformer++'s, both at the shorter of the two "
          "runs' training times (negative: better at equal time).", ""]
    for T in ctxs:
        L += [f"### Context {fmt_ctx(T)}", "",
              "| Model | params | steps | tokens | training time (s) | final held-out loss | Δ vs Transformer++ "
              "at equal time | time to Transformer+ loss (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for arch in s["archs"]:
            sm = rep["summary"].get(f"{arch}@{T}")
            if not sm:
                continue
            tt = [c["rows"][arch].get("time_to_target") for c in rep["comparisons"]
                  if c["context"] == T and arch in c["rows"]]
            L.append(f"| {arch} | {sm['params']:,} | {_pm(sm['steps'], '{:.0f}')} | {_pm(sm['tokens'], '{:,.0f}')} | "
                     f"{_pm(sm['train_time'], '{:.0f}')} | {_pm(sm['loss'], '{:.4f}')} | "
                     f"{_pm(sm['delta_vs_tfmpp'], '{:+.4f}')} | "
                     f"{'–' if any(x is None for x in tt) or not tt else _pm(tt, '{:.0f}')} |")
        L.append("")
    L += [f"![held-out loss against training time and tokens]({stem}.png)", ""]
    return "\n".join(L)


def plot(rep: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    s = rep["settings"]
    ctxs = s["contexts"]
    fig = Figure(figsize=(11, 4 * len(ctxs)))
    axes = fig.subplots(len(ctxs), 2, squeeze=False)
    colors = {a: f"C{i}" for i, a in enumerate(s["archs"])}
    for row, T in enumerate(ctxs):
        for r in rep["runs"]:
            if r["context"] != T or not r["curve"]:
                continue
            style = "-" if r["seed"] == s["seeds"][0] else ":"
            label = r["arch"] if r["seed"] == s["seeds"][0] else None
            xs_t = [p["train_time"] for p in r["curve"]]
            xs_n = [p["tokens"] / 1e6 for p in r["curve"]]
            ys = [p["heldout_loss"] for p in r["curve"]]
            axes[row][0].plot(xs_t, ys, style, marker=".", color=colors[r["arch"]], label=label)
            axes[row][1].plot(xs_n, ys, style, marker=".", color=colors[r["arch"]], label=label)
        # a loss spike of one run would squash every other curve: clip the y axis at the 98th percentile and
        # mark clipped evaluations at the top edge
        ys_all = sorted(p["heldout_loss"] for r in rep["runs"] if r["context"] == T for p in r["curve"])
        top = ys_all[int(0.98 * (len(ys_all) - 1))] + 0.2 if ys_all else None
        clipped = top is not None and ys_all[-1] > top
        for ax, xl in zip(axes[row], ("training wall time (s, evaluation excluded)", "training tokens (M)")):
            if clipped:
                for line in list(ax.get_lines()):
                    hi = [(x, top) for x, y in zip(line.get_xdata(), line.get_ydata()) if y > top]
                    if hi:
                        ax.plot(*zip(*hi), "^", color=line.get_color(), clip_on=False)
                ax.set_ylim(top=top)
            ax.set_title(f"context {fmt_ctx(T)}" + (" (▲: evaluation above the axis)" if clipped else ""))
            ax.set_xlabel(xl)
            ax.set_ylabel("held-out loss (nats/byte)")
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=7)
    fig.suptitle(f"Held-out loss vs cost ({s['preset']} preset; solid seed {s['seeds'][0]}, dotted other seeds)")
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="flashgau bench quality", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
