"""The quality report, built from the saved run records: per (series, context, seed) the time each arch needs to
reach the reference's final held-out loss (Transformer+'s; Transformer++'s for the masked-LM experiment, as in the
paper's C4 plot) and its loss against Transformer++'s (at equal training time, or at equal steps); per series and
(arch, context) the final numbers over seeds, flagged when near the unigram floor; the equal-time contexts whose
runs were trained on more than one kind of machine; Markdown and a plot."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Optional

import torch

from ..common import (ResultStore, env_markdown, environment, fmt_ctx, md_table, mixed_machines, mixed_machines_line,
                      save_figure, unique, warn_mixed_machines)

REFERENCE = "transformer+"      # the paper's speedup column: time to reach its final loss
BASELINE = "transformer++"      # loss at equal training time is compared against it
FLASH = "flash"
# rows of FLASH with an earlier release's defaults -> that release (quality.VARIANT_ROWS)
FLASH_BEFORE = {"flash-0.2.0": "0.2.0", "flash-0.1.0": "0.1.0"}
EARLY_STEP = 60                 # "after the first 60 steps": the budget of the ablations that chose the defaults
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


def compare(group: dict, series: str = "time", ref_arch: str = REFERENCE) -> dict:
    """Per arch of one (series, context, seed) group of runs: the training time to reach the final held-out loss
    of `ref_arch` (Transformer+ unless told) and the speedup that gives; and its held-out loss against
    Transformer++'s. Equal time: on the curves at the shorter of the two runs' training times (pairwise: a slow
    arch does not set the time for everyone). Equal steps: the final held-out losses (every arch took the same
    steps)."""
    ref, base = group.get(ref_arch), group.get(BASELINE)
    rows = {}
    for arch, r in group.items():
        row = {}
        if ref and ref["curve"]:
            target = ref["curve"][-1]["heldout_loss"]
            t_reach = interp_time_to(r["curve"], target)
            row.update(target_loss=target, time_to_target=t_reach,
                       speedup=(ref["train_time"] / t_reach) if t_reach else None)
        if series == "steps":
            if base:
                row.update(equal_steps=r["steps"], loss_at_equal_steps=r["final"]["loss"],
                           baseline_loss_at_equal_steps=base["final"]["loss"],
                           delta_vs_tfmpp=r["final"]["loss"] - base["final"]["loss"])
        elif base and base["train_time"] and r["train_time"]:
            t = min(r["train_time"], base["train_time"])
            la, lb = interp_loss_at(r["curve"], t), interp_loss_at(base["curve"], t)
            row.update(equal_time=t, loss_at_equal_time=la, baseline_loss_at_equal_time=lb,
                       delta_vs_tfmpp=(la - lb) if la is not None and lb is not None else None)
        rows[arch] = row
    return rows


def build_report(store: ResultStore, s, floor: Optional[dict] = None) -> dict:
    """The report (a JSON-ready dict) of the saved runs that these settings ask for, per series: comparisons per
    (series, context, seed) and a summary per series and (arch, context); `floor` is the unigram floor
    (unigram_floor), whose neighbours are flagged. `mixed_machines`: per context of the equal-time series whose runs
    (over archs and seeds) were trained on more than one machine kind, the rows of each kind (a warning is printed);
    equal steps do not depend on speed."""
    wanted = {s.run_key(a, T, seed, x): x for x in s.series for a in s.archs for T in s.contexts for seed in s.seeds}
    runs = [r for r in store.all() if r.get("final") and r.get("key") in wanted]
    for r in runs:
        r["series"] = wanted[r["key"]]
    comparisons, summary = [], {}
    for x in s.series:
        for T in s.contexts:
            for seed in s.seeds:
                group = {r["arch"]: r for r in runs if r["series"] == x and r["context"] == T and r["seed"] == seed}
                if group:
                    comparisons.append(dict(series=x, context=T, seed=seed,
                                            rows=compare(group, x, reference(s.objective))))
        summary[x] = summarise([r for r in runs if r["series"] == x],
                               [c for c in comparisons if c["series"] == x], s.archs, s.contexts, floor)
    before = against_before(runs)
    mixed = {}
    for T in s.contexts:
        kinds = mixed_machines([r for r in runs if r["series"] == "time" and r["context"] == T],
                               lambda r: f"{r['arch']} seed {r['seed']}")
        if kinds:
            mixed[str(T)] = kinds
            warn_mixed_machines(f"{s.stem}, equal time at {fmt_ctx(T)}", kinds)
    return dict(benchmark="quality", settings=s.to_dict(), env=environment(torch.device(s.device)), runs=runs,
                unigram_floor=floor, comparisons=comparisons, summary=summary, against_before=before,
                mixed_machines=mixed,
                run_envs=unique((r.get("env", {}) for r in runs), lambda e: e.get("command")),
                headline=headline(comparisons, s.objective)
                + [dict(name=f"flash_vs_{b['release']}_{b['series']}_{b['context']}_seed{b['seed']}", value=b["end"],
                        text=_before_text(b))
                   for b in before if "end" in b])


def summarise(runs: list[dict], comparisons: list[dict], archs, contexts, floor: Optional[dict]) -> dict:
    """Per (arch, context) of one series: the final numbers over seeds and the comparisons' figures."""
    out = {}
    for T in contexts:
        for arch in archs:
            rs = [r for r in runs if r["context"] == T and r["arch"] == arch]
            if not rs:
                continue
            cs = [c["rows"][arch] for c in comparisons if c["context"] == T and arch in c["rows"]]
            vals = lambda key: [c[key] for c in cs if c.get(key) is not None]  # noqa: E731
            losses = [r["final"]["loss"] for r in rs]
            out[f"{arch}@{T}"] = dict(
                arch=arch, context=T, seeds=[r["seed"] for r in rs], loss=losses,
                ppl=[r["final"]["perplexity"] for r in rs], bpb=[r["final"].get("bits_per_byte") for r in rs],
                accuracy=[r["final"].get("accuracy") for r in rs],
                steps=[r["steps"] for r in rs], tokens=[r["tokens"] for r in rs],
                train_time=[r["train_time"] for r in rs],
                step_seconds=[r["train_time"] / r["steps"] for r in rs if r["train_time"] and r["steps"]],
                loss_at_equal_time=vals("loss_at_equal_time"), delta_vs_tfmpp=vals("delta_vs_tfmpp"),
                speedup=[c.get("speedup") for c in cs], params=rs[0]["num_parameters"],
                near_unigram=near_floor(losses, floor))
    return out


def near_floor(losses: list[float], floor: Optional[dict]) -> bool:
    """Whether any of `losses` is within the floor's margin of the unigram floor (above it or below)."""
    return bool(floor) and any(abs(x - floor["loss"]) < floor["margin"] for x in losses)


def interp_loss_at_step(points: list[dict], step: int) -> Optional[float]:
    """Held-out loss at optimizer step `step` (linear between evaluations; None outside the curve)."""
    prev = None
    for p in points:
        if p["step"] >= step:
            if prev is None:
                return p["heldout_loss"] if p["step"] == step else None
            w = (step - prev["step"]) / (p["step"] - prev["step"])
            return prev["heldout_loss"] + w * (p["heldout_loss"] - prev["heldout_loss"])
        prev = p
    return None


def against_before(runs: list[dict]) -> list[dict]:
    """FLASH (today's defaults) against each row of FLASH_BEFORE (an earlier release's defaults) per (series,
    context, seed): the final held-out losses (equal steps) or the curves at the shorter training time (equal time),
    and in the equal-steps series the curves at step EARLY_STEP too."""
    out = []
    keys = sorted({(r["series"], r["context"], r["seed"]) for r in runs})
    for row, release in FLASH_BEFORE.items():
        for x, T, seed in keys:
            pair = {r["arch"]: r for r in runs if (r["series"], r["context"], r["seed"]) == (x, T, seed)}
            new, old = pair.get(FLASH), pair.get(row)
            if not new or not old:
                continue
            line = dict(series=x, context=T, seed=seed, release=release)
            if x == "steps":
                line.update(end=new["final"]["loss"] - old["final"]["loss"], new=new["final"]["loss"],
                            old=old["final"]["loss"], steps=new["steps"])
                early = [interp_loss_at_step(r["curve"], EARLY_STEP) for r in (new, old)]
                if None not in early:
                    line.update(early=early[0] - early[1], early_new=early[0], early_old=early[1])
            else:
                t = min(new["train_time"], old["train_time"])
                la, lb = interp_loss_at(new["curve"], t), interp_loss_at(old["curve"], t)
                if la is not None and lb is not None:
                    line.update(end=la - lb, new=la, old=lb, equal_time=t)
            out.append(line)
    return out


def headline(comparisons: list[dict], objective: str = "lm") -> list[dict]:
    """FLASH's held-out loss against Transformer++'s, per (series, context, seed): plain measured differences, one
    line each; for MLM also FLASH's training-time speedup to Transformer++'s final masked-token loss (the paper's
    C4 measure)."""
    out = []
    what = loss_name(objective)
    for c in comparisons:
        f = c["rows"].get(FLASH, {})
        if f.get("delta_vs_tfmpp") is None:
            continue
        d, x = f["delta_vs_tfmpp"], c.get("series", "time")
        if x == "steps":
            at, la, lb = f"equal steps ({f['equal_steps']})", f["loss_at_equal_steps"], f[
                "baseline_loss_at_equal_steps"]
            name = f"flash_vs_tfmpp_loss_steps_{c['context']}_seed{c['seed']}"
        else:
            at, la, lb = f"equal training time {f['equal_time']:.0f} s", f["loss_at_equal_time"], f[
                "baseline_loss_at_equal_time"]
            name = f"flash_vs_tfmpp_loss_{c['context']}_seed{c['seed']}"
        out.append(dict(name=name, series=x, context=c["context"], seed=c["seed"], value=d,
                        equal_time=f.get("equal_time"),
                        text=f"{fmt_ctx(c['context'])} context, seed {c['seed']}, {at}: FLASH held-out {what} "
                             f"{la:.4f} vs Transformer++ {lb:.4f} (difference {d:+.4f} nats)"))
        if objective == "mlm" and "target_loss" in f:
            sp = f.get("speedup")
            tag = "_steps" if x == "steps" else ""
            out.append(dict(name=f"flash_speedup_to_tfmpp{tag}_{c['context']}_seed{c['seed']}", series=x,
                            context=c["context"], seed=c["seed"], value=sp,
                            text=f"{fmt_ctx(c['context'])} context, seed {c['seed']}: FLASH reaches Transformer++'s "
                                 f"final {what} {f['target_loss']:.4f} "
                                 + (f"after {f['time_to_target']:.0f} s of training, {sp:.2f}x sooner"
                                    if sp else "not within its budget")))
    return out


# ------------------------------------------------------------------------------------------------ Markdown

def _before_text(b: dict) -> str:
    at = f"after {b['steps']} steps" if b["series"] == "steps" else f"at equal training time {b['equal_time']:.0f} s"
    text = (f"{fmt_ctx(b['context'])} context, seed {b['seed']}, {at}: FLASH (defaults) {b['new']:.4f} vs FLASH "
            f"{b.get('release', '0.1.0')} {b['old']:.4f} ({b['end']:+.4f} nats)")
    if "early" in b:
        text += (f"; after the first {EARLY_STEP} steps {b['early_new']:.4f} vs {b['early_old']:.4f} "
                 f"({b['early']:+.4f} nats)")
    return text


def _pm(xs, fmt="{:.3f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.fmean(xs))} ± {fmt.replace('+', '').format((max(xs) - min(xs)) / 2)}"


SERIES_TITLE = {"time": "equal time", "steps": "equal steps"}


def floor_line(floor: Optional[dict]) -> str:
    if not floor:
        return "Unigram floor: not computed."
    return (f"**Unigram floor: {floor['loss']:.4f} nats per token** ({floor['tokenizer']} tokens): the held-out "
            "cross-entropy of the training split's token frequencies (add-one smoothed), the loss of a model that "
            f"has learned nothing but them. Rows whose final loss comes within {floor['margin']:g} nats of it are "
            "flagged ⚠: they have not left the unigram plateau, and their loss says nothing about their "
            "architecture.")


def markdown(rep: dict) -> str:
    s = rep["settings"]
    series = s.get("series") or ["time"]
    objective = s.get("objective", "lm")
    mlm, ref, what = objective == "mlm", NAMES[reference(objective)], loss_name(objective)
    budgets = "; ".join(_series_text(s, x) for x in series)
    task = ("`flashgau train --objective mlm`: a bidirectional model trained to restore 15% of the tokens of each "
            "window (80% masked, 10% random, 10% kept), scored by the held-out masked-token loss on fixed masked "
            "positions, the same for every arch and seed (docs/mlm.md), " if mlm else "`flashgau train` ")
    L = [f"# {'Masked-language-model quality' if mlm else 'Quality'} at equal training budget ({s['preset']} preset, "
         f"{s['device']})", "",
         f"FLASH here is the paper's model (Hua et al. 2022), not FlashAttention. Each run is {task}"
         f"on the Shakespeare book corpus (byte tokens; held-out: whole plays, {s['heldout_fraction']:g} of the "
         f"corpus), {s['batch_tokens']} tokens per step, precision {s['precision_reason']}, peak lr {s['lr']:g}, "
         f"seeds {', '.join(map(str, s['seeds']))}. Series: {budgets}. Baselines with their own settings: "
         + (", ".join(f"{a} {o}" for a, o in s.get("arch_options", {}).items()) or "none") + ". Final numbers "
         "score every held-out window; curves and the time-to-target use a fixed subset of held-out windows scored "
         "during training, against the seconds spent in training steps. Mean ± half-range over seeds. See "
         "docs/benchmarks.md.", "", floor_line(rep.get("unigram_floor")), "",
         "Run environment:", "", *(env_markdown(e) for e in rep["run_envs"][-2:]), ""]
    for T, kinds in rep.get("mixed_machines", {}).items():
        L += [mixed_machines_line(f"Equal time at {fmt_ctx(int(T))}", kinds), ""]
    L += ["## FLASH against Transformer++" + ("" if mlm else ", and against FLASH with earlier releases' defaults"),
          ""] \
        + ([f"- {h['text']}" for h in rep["headline"]] or ["- (FLASH and Transformer++ were not both trained)"]) + [""]
    ctxs = s["contexts"]
    first = rep["summary"].get(series[0], {})
    table = []
    for arch in s["archs"]:
        cells = []
        for T in ctxs:
            sm = first.get(f"{arch}@{T}")
            if not sm:
                cells += ["–"] * 3
                continue
            sps = sm["speedup"]
            sp = "–" if not sps or any(x is None for x in sps) else _pm(sps, "{:.2f}") + "×"
            cells += [_pm(sm["ppl"]) + (" ⚠" if sm.get("near_unigram") else ""),
                      _pm(sm["accuracy"], "{:.4f}") if mlm else _pm(sm["bpb"], "{:.4f}"), sp]
        table.append([arch, *cells])
    second = "accuracy" if mlm else "bits/byte"
    L += [f"## Held-out perplexity, {'masked-token accuracy' if mlm else 'bits per byte'} and speedup to {ref}'s "
          f"{what} ({SERIES_TITLE[series[0]]})", "",
          f"Shaped like the paper's {'C4 comparison' if mlm else 'PG-19 table'}: perplexity per "
          f"{'masked byte token' if mlm else 'byte token'}, and the training-time speedup to reach {ref}'s final "
          f"held-out {what} (– where the arch never reaches it within the budget).", "",
          *md_table(["Model", *[c for T in ctxs for c in (f"{fmt_ctx(T)} ppl", second, "speedup")]], table)]
    L += ["", "## Per context: equal time and equal steps side by side", "",
          f"Δ vs Transformer++: this arch's held-out {what} minus Transformer++'s (negative: better); equal time: both "
          "on their curves at the shorter of the two runs' training times; equal steps: the final losses. Step: "
          "seconds per optimizer step (training time / steps). ⚠: within the margin of the unigram floor.", ""]
    for T in ctxs:
        table = []
        for arch in s["archs"]:
            cells, present = [], False
            for x in series:
                sm = rep["summary"].get(x, {}).get(f"{arch}@{T}")
                if not sm:
                    cells += ["–"] * 4
                    continue
                present = True
                cells += [_pm(sm["steps"], "{:.0f}"), _pm(sm["train_time"], "{:.0f}"),
                          _pm(sm["loss"], "{:.4f}") + (" ⚠" if sm.get("near_unigram") else ""),
                          _pm(sm["delta_vs_tfmpp"], "{:+.4f}")]
            if present:
                steps = [v for x in series for v in rep["summary"].get(x, {}).get(f"{arch}@{T}", {}).get(
                    "step_seconds", [])]
                params = next(rep["summary"][x][f"{arch}@{T}"]["params"] for x in series
                              if f"{arch}@{T}" in rep["summary"].get(x, {}))
                table.append([arch, f"{params:,}", _pm(steps, "{:.2f}"), *cells])
        head = [c for x in series for c in (f"{SERIES_TITLE[x]}: steps", "training s", "final loss", "Δ vs T++")]
        L += [f"### Context {fmt_ctx(T)}", "", *md_table(["Model", "params", "step (s)", *head], table), ""]
    stem = "quality" + ("-mlm" if mlm else "") + ("-quick" if s["quick"] else "")
    L += [f"![held-out {what} against training time and tokens]({stem}.png)", ""]
    return "\n".join(L)


def _series_text(s: dict, series: str) -> str:
    if series == "steps":
        return f"equal steps, {s['steps']} optimizer steps per run"
    per_context = {int(t): b for t, b in (s.get("context_budgets") or {}).items() if int(t) in s["contexts"]}
    seconds = (", ".join(f"{per_context.get(T, s['time_budget']):g} s at {fmt_ctx(T)}" for T in s["contexts"])
               if per_context else f"{s['time_budget']:g} s")
    return f"equal time, {seconds} of training steps per run (evaluation not counted)"


# ---------------------------------------------------------------------------------------------------- plot

def plot(rep: dict, path: Path) -> None:
    """Per context: held-out loss against training seconds (the equal-time series, or the only one) and against
    training tokens (the equal-steps series, or the only one); the unigram floor as a dashed line."""
    from matplotlib.figure import Figure

    s = rep["settings"]
    ctxs = s["contexts"]
    series = s.get("series") or ["time"]
    panels = [(series[0], "train_time", "training time (s of training steps)"),
              (series[-1], "tokens", "training tokens (M)")]
    fig = Figure(figsize=(11, 4 * len(ctxs)))
    axes = fig.subplots(len(ctxs), 2, squeeze=False)
    colors = {a: f"C{i}" for i, a in enumerate(s["archs"])}
    floor = rep.get("unigram_floor")
    for row, T in enumerate(ctxs):
        for ax, (x, field, xlabel) in zip(axes[row], panels):
            runs = [r for r in rep["runs"] if r["context"] == T and r["curve"] and r.get("series", "time") == x]
            for r in runs:
                first = r["seed"] == s["seeds"][0]
                xs = [p[field] / (1e6 if field == "tokens" else 1) for p in r["curve"]]
                ax.plot(xs, [p["heldout_loss"] for p in r["curve"]], "-" if first else ":", marker=".",
                        color=colors[r["arch"]], label=r["arch"] if first else None)
            # a loss spike of one run would squash every other curve: clip the y axis at the 98th percentile and
            # mark clipped evaluations at the top edge
            ys = sorted(p["heldout_loss"] for r in runs for p in r["curve"])
            top = ys[int(0.98 * (len(ys) - 1))] + 0.2 if ys else None
            clipped = top is not None and ys[-1] > top
            if clipped:
                for line in list(ax.get_lines()):
                    hi = [(u, top) for u, v in zip(line.get_xdata(), line.get_ydata()) if v > top]
                    if hi:
                        ax.plot(*zip(*hi), "^", color=line.get_color(), clip_on=False)
                ax.set_ylim(top=top)
            if floor:
                ax.axhline(floor["loss"], color="gray", ls="--", lw=1, label="unigram floor")
            ax.set_title(f"context {fmt_ctx(T)}, {SERIES_TITLE[x]}" + (" (▲: above the axis)" if clipped else ""))
            ax.set_xlabel(xlabel)
            ax.set_ylabel("held-out masked-token loss (nats/token)" if s.get("objective") == "mlm"
                          else "held-out loss (nats/byte)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"Held-out loss vs cost ({s['preset']} preset, {s['device']}; solid seed {s['seeds'][0]}, "
                 "dotted other seeds)")
    fig.tight_layout()
    save_figure(fig, path)
