"""The ablations report, built from the saved runs: per group and context, each variant's held-out loss against the
group's reference (the difference paired by seed), its steps, step time and parameters; each paper claim with the
measured difference and whether it agrees; the equal-time groups and contexts whose runs were trained on more than
one kind of machine; Markdown and a plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Optional

from ..common import (env_markdown, environment, fmt_ctx, md_table, mixed_machines, mixed_machines_line, save_figure,
                      unique, warn_mixed_machines)
from ..quality.report import _pm, floor_line, near_floor

NOISE = 0.03      # nats: below this a difference is not read as an effect, whatever the seeds say
SIMILAR = 0.05    # nats: "about equal" in the paper's claims


def row(records: list[dict], reference: list[dict], floor: Optional[dict]) -> dict:
    """One variant's figures over its seeds; deltas paired with the reference run of the same seed."""
    ref = {r["seed"]: r["final"]["loss"] for r in reference}
    deltas = [r["final"]["loss"] - ref[r["seed"]] for r in records if r["seed"] in ref]
    losses = [r["final"]["loss"] for r in records]
    return dict(seeds=[r["seed"] for r in records], loss=losses, delta=deltas,
                steps=[r["steps"] for r in records], tokens=[r["tokens"] for r in records],
                train_time=[r["train_time"] for r in records],
                step_seconds=[r["train_time"] / r["steps"] for r in records if r["train_time"] and r["steps"]],
                params=records[0]["num_parameters"], near_unigram=near_floor(losses, floor))


def noise(deltas: list[float]) -> float:
    """The difference a pair of variants must exceed to count: NOISE, or the half-range of the paired differences
    over seeds when that is larger."""
    return max(NOISE, (max(deltas) - min(deltas)) / 2) if len(deltas) > 1 else NOISE


def verdict(expect: str, deltas: list[float]) -> tuple[str, float, float]:
    """(verdict, mean difference, noise) for a claim about loss(a) - loss(b) measured as `deltas` (one per seed)."""
    d, n = statistics.fmean(deltas), noise(deltas)
    if expect == "similar":
        return ("agrees" if abs(d) <= max(SIMILAR, n) else "disagrees"), d, n
    better = d < -n
    if expect == "lower":
        return ("agrees" if better else "disagrees" if d > n else "inconclusive (within the noise)"), d, n
    return ("disagrees" if better else "agrees"), d, n          # "not_lower"


def build_report(store, groups, plan, floor: Optional[dict], device) -> dict:
    """The report (JSON-ready) of the saved runs the plan asks for. A group of the equal-time series has
    `mixed_machines`: per context whose runs (over variants and seeds) were trained on more than one machine kind,
    the rows of each kind (a warning is printed); equal steps do not depend on speed."""
    saved = {r["key"]: r for r in store.all() if r.get("final")}
    runs = [dict(saved[key], group=g.name, variant=v.label) for g, s, v, T, seed, key in plan if key in saved]
    out = []
    for g in groups:
        settings = next((s for gg, s, *_ in plan if gg is g), None)
        contexts, mixed = {}, {}
        for T in g.contexts:
            mine = [r for r in runs if r["group"] == g.name and r["context"] == T]
            if not mine:
                continue
            kinds = mixed_machines(mine, lambda r: f"{r['variant']} seed {r['seed']}") if g.series == "time" else {}
            if kinds:
                mixed[str(T)] = kinds
                warn_mixed_machines(f"ablations {g.name}, equal time at {fmt_ctx(T)}", kinds)
            reference = [r for r in mine if r["variant"] == g.reference]
            contexts[str(T)] = {v.label: dict(row(rs, reference, floor), arch=v.arch, model=v.model, lr=v.lr)
                                for v in g.variants if (rs := [r for r in mine if r["variant"] == v.label])}
        claims = []
        for c in g.claims:
            for T, rows in contexts.items():
                a, b = rows.get(c.a), rows.get(c.b)
                if not a or not b:
                    continue
                pa = {s: x for s, x in zip(a["seeds"], a["loss"])}
                deltas = [pa[s] - x for s, x in zip(b["seeds"], b["loss"]) if s in pa]
                if deltas:
                    v, d, n = verdict(c.expect, deltas)
                    claims.append(dict(text=c.text, a=c.a, b=c.b, expect=c.expect, context=int(T), delta=d,
                                       deltas=deltas, noise=n, verdict=v))
        out.append(dict(name=g.name, title=g.title, note=g.note, preset=g.preset, series=g.series, budget=g.budget,
                        reference=g.reference, seeds=settings.seeds if settings else list(g.seeds),
                        batch_tokens=settings.batch_tokens if settings else None,
                        lr=settings.lr if settings else None,
                        precision=settings.precision_reason if settings else None,
                        contexts=contexts, claims=claims, mixed_machines=mixed))
    return dict(benchmark="ablations", env=environment(device), unigram_floor=floor, groups=out, runs=runs,
                run_envs=unique((r.get("env", {}) for r in runs), lambda e: e.get("command")),
                headline=[dict(text=f"{c['text']} ({fmt_ctx(c['context'])}): {c['verdict']} "
                                    f"(Δ {c['delta']:+.3f} nats)") for g in out for c in g["claims"]])


def _budget(g: dict) -> str:
    return f"{g['budget']:g} steps" if g["series"] == "steps" else f"{g['budget']:g} s of training steps"


def markdown(rep: dict) -> str:
    L = ["# Ablations: the paper's (§4, reference §8.4) and the candidates for FLASH's defaults, one variant at a "
         "time", "",
         "FLASH here is the paper's model (Hua et al. 2022), not FlashAttention. Every row is `flashgau train` on "
         "the Shakespeare book corpus (byte tokens, held-out: whole plays), through the quality benchmark's "
         "functions. Final held-out loss over all held-out windows; Δ: the variant's loss minus the group's "
         "reference, paired by seed (mean ± half-range over seeds); step: seconds per optimizer step. A claim "
         f"counts a difference only beyond the noise: {NOISE} nats, or the half-range of the paired differences "
         f"over seeds when larger; \"about equal\" means within {SIMILAR} nats (or the noise). One seed gives no "
         "spread: read those rows as indications.", "", floor_line(rep.get("unigram_floor")), "",
         "Run environment:", "", *(env_markdown(e) for e in rep["run_envs"][-2:]), ""]
    claims = [(g, c) for g in rep["groups"] for c in g["claims"]]
    if claims:
        L += ["## The paper's claims against the measurements", "",
              *md_table(["Claim", "context", "measured Δ (a - b)", "seeds", "verdict"],
                        [[f"{c['text']} (a: {c['a']}, b: {c['b']})", fmt_ctx(c["context"]),
                          f"{c['delta']:+.3f} (noise {c['noise']:.3f})", len(c["deltas"]), c["verdict"]]
                         for g, c in claims]), ""]
    for g in rep["groups"]:
        L += [f"## {g['title']}", "", f"`--groups {g['name']}`: preset `{g['preset']}`, {_budget(g)} per run, "
              f"{g['batch_tokens']} tokens per step, peak lr {g['lr']:g} unless a row says, seeds "
              f"{', '.join(map(str, g['seeds']))}, precision {g['precision']}; reference: {g['reference']}. "
              + g["note"], ""]
        for T, rows in g["contexts"].items():
            table = [[label, r["arch"], f"{r['params']:,}", _pm(r["steps"], "{:.0f}"),
                      _pm(r["step_seconds"], "{:.2f}"),
                      _pm(r["loss"], "{:.4f}") + (" ⚠" if r["near_unigram"] else ""),
                      _pm(r["delta"], "{:+.4f}"), len(r["seeds"])] for label, r in rows.items()]
            kinds = g.get("mixed_machines", {}).get(T)
            L += [f"### Context {fmt_ctx(int(T))}", "",
                  *([mixed_machines_line(f"Equal time at {fmt_ctx(int(T))}", kinds), ""] if kinds else []),
                  *md_table(["Variant", "arch", "params", "steps", "step (s)", "final held-out loss",
                             "Δ vs reference", "seeds"], table), ""]
    L += ["![Δ held-out loss of each variant against its group's reference](ablations.png)", ""]
    return "\n".join(L)


def plot(rep: dict, path: Path) -> None:
    """One panel per group: each variant's Δ held-out loss against the reference (bars: mean over seeds; whiskers:
    the range), one colour per context."""
    from matplotlib.figure import Figure

    groups = [g for g in rep["groups"] if g["contexts"]]
    fig = Figure(figsize=(10, max(2.5, sum(1.2 + 0.3 * len(next(iter(g["contexts"].values()))) for g in groups))))
    if not groups:
        save_figure(fig, path)
        return
    heights = [1 + len(next(iter(g["contexts"].values()))) for g in groups]
    axes = fig.subplots(len(groups), 1, squeeze=False, gridspec_kw=dict(height_ratios=heights))[:, 0]
    for ax, g in zip(axes, groups):
        labels = list(dict.fromkeys(label for rows in g["contexts"].values() for label in rows))
        width = 0.8 / len(g["contexts"])
        for i, (T, rows) in enumerate(g["contexts"].items()):
            ys = [j + i * width for j, label in enumerate(labels) if label in rows]
            ds = [rows[label]["delta"] for label in labels if label in rows]
            means = [statistics.fmean(d) if d else 0.0 for d in ds]
            err = [[m - min(d) if d else 0 for m, d in zip(means, ds)],
                   [max(d) - m if d else 0 for m, d in zip(means, ds)]]
            ax.barh(ys, means, height=width, xerr=err, color=f"C{i}", label=f"context {fmt_ctx(int(T))}")
        ax.set_yticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(g["title"], fontsize=9)
        ax.set_xlabel(f"Δ held-out loss vs {g['reference']} (nats; negative: better)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
