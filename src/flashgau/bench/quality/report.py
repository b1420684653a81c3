"""The quality report, built from the saved run records: per (context, seed) the time each arch needs to reach
the reference's final held-out loss (Transformer+'s; Transformer++'s for the masked-LM experiment, as in the paper's
C4 plot) and its loss against Transformer++'s at equal training time; per (arch, context) the final numbers over
seeds; Markdown and a plot."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Optional

import torch

from ..common import ResultStore, env_markdown, environment, fmt_ctx, md_table, save_figure, unique

REFERENCE = "transformer+"      # the paper's speedup column: time to reach its final loss
BASELINE = "transformer++"      # loss at equal training time is compared against it
FLASH = "flash"
NAMES = {"transformer+": "Transformer+", "transformer++": "Transformer++"}


def reference(objective: str) -> str:
    """The arch whose final loss the speedup is measured to: Transformer+ (PG-19's table), Transformer++ for MLM
    (the paper's C4 plot)."""
    return BASELINE if objective == "mlm" else REFERENCE


def loss_name(objective: str) -> str:
    return "masked-token loss" if objective == "mlm" else "loss"


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


def compare(group: dict, ref_arch: str = REFERENCE) -> dict:
    """Per arch of one (context, seed) group of runs: the training time to reach the final held-out loss of
    `ref_arch` (Transformer+ unless told) and the speedup that gives; and its held-out loss against Transformer++'s
    at equal training time, the shorter of the two runs' (pairwise: a slow arch whose budget went mostly to
    evaluation does not set the time for everyone)."""
    ref, base = group.get(ref_arch), group.get(BASELINE)
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


def build_report(store: ResultStore, s) -> dict:
    """The report (a JSON-ready dict) of the saved runs that these settings ask for."""
    from . import run_key

    runs = [r for r in store.all() if r.get("preset") == s.preset and r.get("final")
            and r["arch"] in s.archs and r["context"] in s.contexts and r["seed"] in s.seeds
            and r["key"] == run_key(r["arch"], r["context"], r["seed"], s)]
    comparisons = []
    for T in s.contexts:
        for seed in s.seeds:
            group = {r["arch"]: r for r in runs if r["context"] == T and r["seed"] == seed}
            if group:
                comparisons.append(dict(context=T, seed=seed, rows=compare(group, reference(s.objective))))
    summary = {}
    for T in s.contexts:
        for arch in s.archs:
            rs = [r for r in runs if r["context"] == T and r["arch"] == arch]
            if not rs:
                continue
            cs = [c["rows"][arch] for c in comparisons if c["context"] == T and arch in c["rows"]]
            vals = lambda key: [c[key] for c in cs if c.get(key) is not None]  # noqa: E731
            summary[f"{arch}@{T}"] = dict(
                arch=arch, context=T, seeds=[r["seed"] for r in rs],
                loss=[r["final"]["loss"] for r in rs], ppl=[r["final"]["perplexity"] for r in rs],
                bpb=[r["final"].get("bits_per_byte") for r in rs],
                accuracy=[r["final"].get("accuracy") for r in rs], steps=[r["steps"] for r in rs],
                tokens=[r["tokens"] for r in rs], train_time=[r["train_time"] for r in rs],
                loss_at_equal_time=vals("loss_at_equal_time"), delta_vs_tfmpp=vals("delta_vs_tfmpp"),
                speedup=[c.get("speedup") for c in cs],
                params=rs[0]["num_parameters"])
    return dict(benchmark="quality", settings=s.to_dict(), env=environment(torch.device(s.device)), runs=runs,
                comparisons=comparisons, summary=summary,
                run_envs=unique((r.get("env", {}) for r in runs), lambda e: e.get("command")),
                headline=headline(comparisons, s.objective))


def headline(comparisons: list[dict], objective: str = "lm") -> list[dict]:
    """FLASH's held-out loss against Transformer++'s at equal training time, per (context, seed): plain
    measured differences, one line each; for MLM also FLASH's training-time speedup to Transformer++'s final
    masked-token loss (the paper's C4 measure)."""
    out = []
    what = loss_name(objective)
    for c in comparisons:
        f = c["rows"].get(FLASH, {})
        if f.get("delta_vs_tfmpp") is None:
            continue
        d = f["delta_vs_tfmpp"]
        out.append(dict(name=f"flash_vs_tfmpp_loss_{c['context']}_seed{c['seed']}", context=c["context"],
                        seed=c["seed"], value=d, equal_time=f["equal_time"],
                        text=f"{fmt_ctx(c['context'])} context, seed {c['seed']}, equal training time "
                             f"{f['equal_time']:.0f} s: FLASH held-out {what} {f['loss_at_equal_time']:.4f} vs "
                             f"Transformer++ {f['baseline_loss_at_equal_time']:.4f} (difference {d:+.4f} nats)"))
        if objective == "mlm" and "target_loss" in f:
            sp = f.get("speedup")
            out.append(dict(name=f"flash_speedup_to_tfmpp_{c['context']}_seed{c['seed']}", context=c["context"],
                            seed=c["seed"], value=sp,
                            text=f"{fmt_ctx(c['context'])} context, seed {c['seed']}: FLASH reaches Transformer++'s "
                                 f"final {what} {f['target_loss']:.4f} "
                                 + (f"after {f['time_to_target']:.0f} s of training, {sp:.2f}x sooner"
                                    if sp else "not within its budget")))
    return out


# ------------------------------------------------------------------------------------------------ Markdown

def _pm(xs, fmt="{:.3f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.fmean(xs))} ± {fmt.replace('+', '').format((max(xs) - min(xs)) / 2)}"


def markdown(rep: dict) -> str:
    s = rep["settings"]
    objective = s.get("objective", "lm")
    mlm, ref, what = objective == "mlm", NAMES[reference(objective)], loss_name(objective)
    per_context = {int(t): b for t, b in (s.get("context_budgets") or {}).items() if int(t) in s["contexts"]}
    if not s["time_budget"]:
        budget = f"{s['steps']} steps per run ({s['batch_tokens']} tokens per step)"
    else:
        seconds = ", ".join(f"{per_context.get(T, s['time_budget']):g} s at {fmt_ctx(T)}" for T in s["contexts"]) \
            if per_context else f"{s['time_budget']:g} s"
        budget = f"{seconds} of wall time per run (evaluation included)"
    task = ("`flashgau train --objective mlm`: a bidirectional model trained to restore 15% of the tokens of each "
            "window (80% masked, 10% random, 10% kept), scored by the held-out masked-token loss on fixed masked "
            "positions, the same for every arch and seed (docs/mlm.md), " if mlm else "`flashgau train` ")
    L = [f"# {'Masked-language-model quality' if mlm else 'Quality'} at equal training budget ({s['preset']} preset, "
         f"{s['device']})", "",
         f"FLASH here is the paper's model (Hua et al. 2022), not FlashAttention. Each run is {task}"
         f"on the Shakespeare book corpus (byte tokens; held-out: whole plays, {s['heldout_fraction']:g} of the "
         f"corpus), {budget}, {s['batch_tokens']} tokens per step, precision {s['precision_reason']}, peak lr "
         f"{s['lr']:g}, seeds {', '.join(map(str, s['seeds']))}. Final numbers score every held-out window; curves "
         "and the time-to-target use a fixed subset of held-out windows scored during training, against training "
         "time with evaluation time removed. Mean ± half-range over seeds. See docs/benchmarks.md.", "",
         "Run environment:", "", *(env_markdown(e) for e in rep["run_envs"][-2:]), ""]
    L += ["## FLASH against Transformer++ at equal training time", ""] \
        + ([f"- {h['text']}" for h in rep["headline"]] or ["- (FLASH and Transformer++ were not both trained)"]) + [""]
    ctxs = s["contexts"]
    table = []
    for arch in s["archs"]:
        cells = []
        for T in ctxs:
            sm = rep["summary"].get(f"{arch}@{T}")
            if not sm:
                cells += ["–"] * 3
                continue
            sps = sm["speedup"]
            sp = "–" if not sps or any(x is None for x in sps) else _pm(sps, "{:.2f}") + "×"
            cells += [_pm(sm["ppl"]), _pm(sm["accuracy"], "{:.4f}") if mlm else _pm(sm["bpb"], "{:.4f}"), sp]
        table.append([arch, *cells])
    second = "accuracy" if mlm else "bits/byte"
    L += [f"## Held-out perplexity, {'masked-token accuracy' if mlm else 'bits per byte'} and speedup to {ref}'s "
          f"{what}", "",
          f"Shaped like the paper's {'C4 comparison' if mlm else 'PG-19 table'}: perplexity per "
          f"{'masked byte token' if mlm else 'byte token'}, and the training-time speedup to reach {ref}'s final "
          f"held-out {what} (– where the arch never reaches it within the budget).", "",
          *md_table(["Model", *[c for T in ctxs for c in (f"{fmt_ctx(T)} ppl", second, "speedup")]], table)]
    L += ["", "## Per context: budget used and loss at equal training time", "",
          f"Δ vs Transformer++: this arch's held-out {what} minus Transformer++'s, both at the shorter of the two "
          "runs' training times (negative: better at equal time).", ""]
    for T in ctxs:
        table = []
        for arch in s["archs"]:
            sm = rep["summary"].get(f"{arch}@{T}")
            if not sm:
                continue
            tt = [c["rows"][arch].get("time_to_target") for c in rep["comparisons"]
                  if c["context"] == T and arch in c["rows"]]
            table.append([arch, f"{sm['params']:,}", _pm(sm["steps"], "{:.0f}"), _pm(sm["tokens"], "{:,.0f}"),
                          _pm(sm["train_time"], "{:.0f}"), _pm(sm["loss"], "{:.4f}"),
                          _pm(sm["delta_vs_tfmpp"], "{:+.4f}"),
                          "–" if any(x is None for x in tt) or not tt else _pm(tt, "{:.0f}")])
        L += [f"### Context {fmt_ctx(T)}", "",
              *md_table(["Model", "params", "steps", "tokens", "training time (s)", f"final held-out {what}",
                         "Δ vs Transformer++ at equal time", f"time to {ref} {what} (s)"], table), ""]
    stem = "quality" + ("-mlm" if mlm else "") + ("-quick" if s["quick"] else "")
    L += [f"![held-out {what} against training time and tokens]({stem}.png)", ""]
    return "\n".join(L)


# ---------------------------------------------------------------------------------------------------- plot

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
            ax.set_ylabel("held-out masked-token loss (nats/token)" if s.get("objective") == "mlm"
                          else "held-out loss (nats/byte)")
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=7)
    fig.suptitle(f"Held-out loss vs cost ({s['preset']} preset, {s['device']}; solid seed {s['seeds'][0]}, "
                 "dotted other seeds)")
    fig.tight_layout()
    save_figure(fig, path)
