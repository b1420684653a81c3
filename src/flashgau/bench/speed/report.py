"""The speed report, built from the saved group records: one typed row per (arch, group), the measured ratios of
FLASH against Transformer++, Markdown and a plot."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from ..common import (ResultStore, env_markdown, environment, fmt_bytes, fmt_ctx, log_axes, md_table, save_figure,
                      unique)
from .plan import Group, SpeedSettings

FLASH, BASELINE, REFERENCE = "flash", "transformer++", "transformer+"
SERIES_NAMES = {"tokens": "eager", "compiled": "torch.compile"}


@dataclass
class Row:
    """One arch in one group: its times (seconds), FLOPs, MFU and memory, or why it was skipped."""

    arch: str
    series: str
    context: int
    batch: int
    precision: str
    key: str
    skipped: Optional[str] = None
    median: Optional[float] = None
    min: Optional[float] = None
    max: Optional[float] = None
    q1: Optional[float] = None
    q3: Optional[float] = None
    times: Optional[list] = None
    params: Optional[int] = None
    first_step: Optional[float] = None
    cpu_utilisation: Optional[float] = None    # lowest share of its threads' CPU time a timed step got (CPU only)
    flops: Optional[float] = None              # analytic where a formula exists, else counted
    flops_source: Optional[str] = None
    analytic_flops: Optional[float] = None
    counted_flops: Optional[int] = None
    mfu: Optional[float] = None                # against the peak of the row's precision
    mfu_vs_fp32_peak: Optional[float] = None
    peak_bytes: Optional[int] = None
    activation_bytes: Optional[int] = None
    steady_bytes: Optional[int] = None
    peak_flops_per_s: Optional[float] = None   # the matmul peak of the row's precision
    peak_fp32: Optional[float] = None


class Rows:
    """The report's rows, looked up by (arch, series, context, precision)."""

    def __init__(self, rows: list[Row]) -> None:
        self.all = rows
        self._rows = {(r.arch, r.series, r.context, r.precision): r for r in rows}

    def get(self, arch: str, series: str, context: int, precision: str) -> Optional[Row]:
        """The measured row, or None (not run, or skipped)."""
        r = self._rows.get((arch, series, context, precision))
        return r if r is not None and r.skipped is None else None

    def missing(self, arch: str, series: str, context: int, precision: str) -> str:
        """What a table shows where there is no measured row: "skipped" or "–"."""
        r = self._rows.get((arch, series, context, precision))
        return "skipped" if r is not None and r.skipped else "–"

    def batch1(self, arch: str, context: int, precision: str) -> Optional[Row]:
        """Batch-1 row at a context: the fixed-batch series, or the fixed-tokens group when its batch is 1."""
        r = self.get(arch, "batch", context, precision)
        if r is None:
            r = self.get(arch, "tokens", context, precision)
        return r if r is not None and r.batch == 1 else None

    def batch1_pair(self, arch: str, context: int, precision: str) -> tuple[Optional[Row], Optional[Row]]:
        """Batch-1 rows at a context without and with activation checkpointing (the "checkpointed" series)."""
        return self.batch1(arch, context, precision), self.get(arch, "checkpointed", context, precision)

    def contexts(self, series: str) -> list[int]:
        return sorted({r.context for r in self.all if r.series == series})

    def precisions(self, first: list[str]) -> list[str]:
        """`first` (the settings' precisions), then any other precision saved runs have, fp32 first."""
        names = list(first) + sorted({r.precision for r in self.all} - set(first))
        return sorted(names, key=lambda p: p != "fp32")


def rows_of(rec: dict, preset: str, tag: str, best_peaks: dict) -> list[Row]:
    """The rows of one saved group record, against the best matmul peaks of the whole suite."""
    g = Group(**rec["group"])
    key = g.key(preset, tag)
    mem = rec.get("memory", {})
    peak, peak32 = best_peaks.get(g.precision), best_peaks.get("fp32")
    out = []
    for arch, res in rec["results"].items():
        m = mem.get(arch, {}) if "error" not in mem else {}
        fl = res.get("analytic_flops")
        flops = fl["total"] if fl else m.get("counted_flops")
        util = res.get("cpu_utilisation")
        out.append(Row(arch=arch, **g.to_dict(), key=key, median=res["median"], min=res["min"], max=res["max"],
                       q1=res["q1"], q3=res["q3"], times=res["times"], params=res["params"],
                       first_step=res.get("first_step"), cpu_utilisation=min(util) if util else None,
                       flops=flops, flops_source="analytic" if fl else ("counted" if flops else None),
                       analytic_flops=fl["total"] if fl else None, counted_flops=m.get("counted_flops"),
                       mfu=flops / res["median"] / peak if flops and peak else None,
                       mfu_vs_fp32_peak=flops / res["median"] / peak32 if flops and peak32 else None,
                       peak_bytes=m.get("peak_bytes"), activation_bytes=m.get("activation_bytes"),
                       steady_bytes=m.get("steady_bytes"), peak_flops_per_s=peak, peak_fp32=peak32))
    out += [Row(arch=arch, **g.to_dict(), key=key, skipped=why) for arch, why in rec.get("skipped", {}).items()]
    return out


def build_report(store: ResultStore, s: SpeedSettings, tag: str) -> dict:
    """The report (a JSON-ready dict) of every saved group of this preset measured on this kind of device."""
    device_type = s.device.split(":")[0]
    records = [r for r in store.all() if r.get("preset") == s.preset
               and r.get("device", "cpu").split(":")[0] == device_type]
    # the device's peak: the best rate measured by any run of this suite (a single measurement on a shared
    # machine can come out low, which would inflate MFU)
    best = {}
    for r in records:
        for p, v in r["peaks"].items():
            best[p] = max(best.get(p, 0.0), v["flops_per_s"])
    rows = [row for r in records for row in rows_of(r, s.preset, tag, best)]
    log = [dict(key=Group(**r["group"]).key(s.preset, tag), time=r["env"].get("time"), code=r["env"].get("code", {}),
                command=r["env"].get("command"), memory="memory" in r and "error" not in r["memory"])
           for r in records]
    return dict(benchmark="speed", settings=s.to_dict(), env=environment(torch.device(s.device)),
                run_envs=unique((r["env"] for r in records), lambda e: (e.get("command"), e.get("time", "")[:13])),
                log=log, matmul_peaks_gflops=unique(({p: round(v["flops_per_s"] / 1e9) for p, v in
                                                            r["peaks"].items()} for r in records), str),
                peak_used=best, rows=[asdict(r) for r in rows], headline=headline(Rows(rows), s))


# ------------------------------------------------------------------------------------------ measured ratios

def headline(rows: Rows, s: SpeedSettings) -> list[dict]:
    """FLASH against Transformer++: the step-time ratio beside the model-FLOP ratio, per context, one line per
    precision and series (eager, compiled). Plain measured ratios."""
    out = []
    for series, mode in SERIES_NAMES.items():
        for prec in rows.precisions(s.precisions) if series == "tokens" else ["fp32"]:
            pairs, values = [], {}
            for T in rows.contexts(series):
                f, t = rows.get(FLASH, series, T, prec), rows.get(BASELINE, series, T, prec)
                if f and t:
                    values[T] = t.median / f.median
                    fr = f" (model-FLOP ratio {t.flops / f.flops:.2f}x)" if f.flops and t.flops else ""
                    pairs.append((T, f"{values[T]:.2f}x{fr}"))
            if pairs:
                out.append(dict(name=f"flash_vs_tfmpp_{series}_{prec}", values=values, text=(
                    f"FLASH vs Transformer++ step time, {prec}, {mode}, {s.tokens_per_step} tokens per step: "
                    + ", ".join(f"{fmt_ctx(T)}: {text}" for T, text in pairs))))
    kctx = rows.contexts("checkpointed")
    for arch in (FLASH, BASELINE) if kctx else ():
        for prec in rows.precisions(s.precisions):
            pairs = {T: rows.batch1_pair(arch, T, prec) for T in kctx}
            if not any(_per_token(p) is not None or _per_token(c) is not None for p, c in pairs.values()):
                continue
            parts = [f"{fmt_ctx(T)} " + " / ".join(_kib(_per_token(r)) for r in pair) for T, pair in pairs.items()]
            out.append(dict(name=f"activation_bytes_per_token_{arch}_{prec}", values={
                T: dict(plain=_per_token(p), checkpointed=_per_token(c)) for T, (p, c) in pairs.items()}, text=(
                f"{arch} activation memory per token, batch 1, {prec}, without / with recompute: "
                + ", ".join(parts))))
    return out


def _per_token(r: Optional[Row]) -> Optional[float]:
    """Activation bytes per token of a step (its peak minus the memory held between steps, over its tokens)."""
    if r is None or r.activation_bytes is None:
        return None
    return r.activation_bytes / (r.batch * r.context)


def _kib(value: Optional[float]) -> str:
    return "–" if value is None else f"{value / 1024:.1f} KiB"


# ------------------------------------------------------------------------------------------------ Markdown

def _time(r: Optional[Row]) -> str:
    if r is None:
        return "–"
    return f"{r.median:.2f} s" if r.median >= 1 else f"{r.median * 1e3:.0f} ms"


def _spread(r: Row) -> str:
    return f"{_time(r)} [{r.min:.2f}–{r.max:.2f}]"


def _x(a: Optional[Row], b: Optional[Row]) -> str:
    """a's time over b's, as a speedup of b ("–" unless both ran)."""
    return f"{a.median / b.median:.2f}×" if a and b else "–"


def markdown(rep: dict) -> str:
    s = SpeedSettings(**rep["settings"])
    rows = Rows([Row(**r) for r in rep["rows"]])
    archs = [a for a in s.archs if any(r.arch == a for r in rows.all)]
    precs = rows.precisions(s.precisions)
    ctxs = rows.contexts("tokens")
    cuda = s.device.startswith("cuda")
    memory = ("torch.cuda.max_memory_allocated during one step minus the memory allocated before the model" if cuda
              else "resident-set high-water mark of one step in a separate process minus the process before the "
                   "model")
    peaks = "; ".join(" / ".join(f"{p} {v}" for p, v in m.items()) for m in rep["matmul_peaks_gflops"])
    L = [f"# Training-step speed, memory and MFU against context length ({s.preset} preset, {s.device})", "",
         "FLASH here is the paper's model (Hua et al. 2022), not FlashAttention. One training step = forward, "
         "backward, gradient clip and AdamW step on random byte tokens; archs interleaved within each group; "
         f"{s.warmup} warm-up step(s), median of {s.repeats} timed steps (min-max in brackets). "
         f"Fixed-tokens series: {s.tokens_per_step} tokens per step (batch = tokens / context). Memory: {memory} "
         "(weights, gradients, AdamW state, activations, workspace). MFU: analytic matmul FLOPs (bench/flops.py; "
         "FlopCounterMode count where no formula) / median step time / the matmul peak measured in the same run. "
         "See docs/benchmarks.md.", "",
         "Run environment:", "", *(env_markdown(e) for e in rep["run_envs"][-3:]),
         "Precisions of this command: " + "; ".join(f"{p} ({why})" for p, why in s.precision_reasons.items())
         + ".", "",
         f"Matmul peak measured at the start of each run (GFLOP/s): {peaks or '–'}. MFU uses the best of them: "
         + ", ".join(f"{p} {v / 1e9:.0f}" for p, v in rep["peak_used"].items()) + " GFLOP/s.", ""]
    L += ["## FLASH against Transformer++", "",
          "Ratios of median step times (above 1: FLASH is faster), beside the ratio of model FLOPs.", ""]
    L += [f"- {h['text']}" for h in rep["headline"]] or ["- (FLASH and Transformer++ were not both measured)"]
    L.append("")
    low = [r for r in rows.all if r.cpu_utilisation is not None and r.cpu_utilisation < 0.85]
    if low:
        L += ["Steps during which this process got less than 85% of its threads' CPU time (another process took "
              "cores; those times are inflated): " + ", ".join(
                  f"{r.arch} {r.key} ({r.cpu_utilisation:.2f})" for r in low) + ".", ""]
    if not cuda and any(r.cpu_utilisation is None for r in rows.all if r.skipped is None):
        L += ["Groups measured before the CPU-utilisation check existed have no such record.", ""]

    for prec in precs:
        table = []
        for a in archs:
            cells = []
            for T in ctxs:
                r = rows.get(a, "tokens", T, prec)
                cells += [_spread(r), _x(rows.get(REFERENCE, "tokens", T, prec), r)] if r else \
                    [rows.missing(a, "tokens", T, prec), "–"]
            table.append([a, *cells])
        L += [f"## Step time and speedup vs Transformer+, fixed {s.tokens_per_step} tokens per step, {prec}", "",
              "Shaped like the paper's PG-19 table (latency and its ratio to Transformer+; quality is in "
              "quality.md).", "",
              *md_table(["Model", *[c for T in ctxs for c in (f"{fmt_ctx(T)} lat.", "×")]], table), ""]
    table = []
    for a in archs:
        cells = []
        for T in ctxs:
            rs = [rows.get(a, "tokens", T, p) for p in precs]
            r = next((x for x in rs if x), None)
            cells.append(f"{r.flops / 1e9:.0f}" + ("" if r.flops_source == "analytic" else "*")
                         if r and r.flops else "–")
            cells += [f"{x.mfu:.0%}" if x and x.mfu else "–" for x in rs]
        table.append([a, *cells])
    L += ["## Model FLOPs per step (GFLOP) and MFU (each precision's run vs its own peak)", "",
          *md_table(["Model", *[c for T in ctxs for c in (f"{fmt_ctx(T)} GFLOP", *(f"MFU {p}" for p in precs))]],
                    table),
          "", "\\* counted with FlopCounterMode (no analytic formula for this arch).", ""]
    table = [[a, *(" / ".join(fmt_bytes(r.peak_bytes) if r else "–" for r in
                              (rows.get(a, "tokens", T, p) for p in precs)) for T in ctxs)] for a in archs]
    L += [f"## Peak memory of one training step ({' / '.join(precs)})", "",
          *md_table(["Model", *map(fmt_ctx, ctxs)], table)]
    # the fixed-batch series, and the fixed-tokens groups of batch 1 beside it (asked for now, or saved by an earlier
    # command writing to this folder)
    batch = set(rows.contexts("batch"))
    candidates = set(s.batch_contexts) | (set(rows.contexts("tokens")) if batch else set())
    bctx = sorted(batch | {T for T in candidates if any(rows.batch1(a, T, p) for a in archs for p in precs)})
    if bctx:
        table = []
        for a in archs:
            for prec in precs:
                rs = [rows.batch1(a, T, prec) for T in bctx]
                if any(rs):
                    table.append([a, prec, *map(_time, rs), _x(rs[-1], rs[0])])
        L += ["", "## Fixed batch (batch 1): step time against context", "",
              *md_table(["Model", "precision", *map(fmt_ctx, bctx), "growth first→last"], table, left=2)]
    kctx = rows.contexts("checkpointed")
    if kctx:
        table = []
        for a in archs:
            for prec in precs:
                pairs = [rows.batch1_pair(a, T, prec) for T in kctx]
                for i, label in enumerate(("off", "on")):
                    rs = [pair[i] for pair in pairs]
                    cells = []
                    for T, r in zip(kctx, rs):
                        gone = min(rows.missing(a, series, T, prec) for series in (
                            ("batch", "tokens") if i == 0 else ("checkpointed",)))        # "skipped" < "–"
                        cells += [fmt_bytes(r.peak_bytes) if r and r.peak_bytes else gone,
                                  _kib(_per_token(r)) if _per_token(r) is not None else gone, _time(r)]
                    first, last = _per_token(rs[0]), _per_token(rs[-1])
                    table.append([a, prec, label, *cells, f"{last / first:.2f}×" if first and last else "–"])
        L += ["", "## Activation checkpointing: batch 1, with and without recompute", "",
              "recompute on = `flashgau train --checkpoint-activations`: each block keeps only its input and is "
              "recomputed in the backward pass. Peak: the step's peak memory (weights, gradients, AdamW state, "
              "activations, workspace). Act./token: that peak minus the memory held between steps (weights, "
              "gradients, AdamW state), over the step's tokens: the part that grows with context. Time: median step "
              "time (the recompute adds about one forward pass).", "",
              *md_table(["Model", "precision", "recompute",
                         *[c for T in kctx for c in (f"{fmt_ctx(T)} peak", f"{fmt_ctx(T)} act./token",
                                                     f"{fmt_ctx(T)} time")],
                         f"act./token {fmt_ctx(kctx[-1])} ÷ {fmt_ctx(kctx[0])}"], table, left=3)]
    cctx = rows.contexts("compiled")
    cctx = [T for T in cctx if any(rows.get(a, "compiled", T, "fp32") for a in s.compile_archs)]
    if cctx:
        table = []
        for a in s.compile_archs:
            cells, comp = [], []
            for T in cctx:
                r = rows.get(a, "compiled", T, "fp32")
                if r is None:
                    cells += ["–"] * 4
                    continue
                comp.append(r.first_step or 0)
                cells += [_spread(r), _x(rows.get(a, "tokens", T, "fp32"), r),
                          _x(rows.get(BASELINE, "compiled", T, "fp32"), r), f"{r.mfu:.0%}" if r.mfu else "–"]
            table.append([a, *cells, f"≤ {max(comp):.0f} s" if comp else "–"])
        L += ["", f"## Compiled (torch.compile, inductor): fixed {s.tokens_per_step} tokens per step, fp32", "",
              "Each arch compiled, then timed like the eager series (compile time = the first step, not counted). "
              "× is the speedup of this compiled step over the same arch's eager fp32 step at the same context; "
              "vs T++ is Transformer++'s compiled step time over this one's.", "",
              *md_table(["Model", *[c for T in cctx for c in (f"{fmt_ctx(T)} lat.", "× eager", "vs T++", "MFU")],
                         "compile"], table)]
    sk = [r for r in rows.all if r.skipped]
    if sk:
        L += ["", "## Skipped configurations", ""] + [f"- {r.arch} {r.key}: {r.skipped}" for r in sk]
    log = sorted(rep.get("log", []), key=lambda g: g["time"] or "")
    L += ["", "## Measurement log", "", "Each group was timed by one command; the flashgau source it measured is "
          "identified by its git commit and a hash of the package's files (other processes on the shared machine "
          "may edit the tree while the suite runs, so groups measured at different times can differ in code).", "",
          *md_table(["group", "measured", "command", "git", "source sha256", "memory"],
                    [[g["key"], g["time"], f"`{g['command']}`", g["code"].get("git_commit", "?"),
                      g["code"].get("source_sha256", "(not recorded)"), "yes" if g["memory"] else "no"] for g in log],
                    left=6),
          "", f"![step time and memory against context]({s.stem}.png)", ""]
    return "\n".join(L)


# ---------------------------------------------------------------------------------------------------- plot

def plot(rep: dict, path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    s = SpeedSettings(**rep["settings"])
    rows = Rows([Row(**r) for r in rep["rows"]])
    fig = Figure(figsize=(15, 4.5))
    axes = fig.subplots(1, 3)
    styles = {"fp32": "-", "bf16": "--", "fp16": "-."}
    colors = {a: f"C{i}" for i, a in enumerate(s.archs)}
    bctx = sorted(set(s.batch_contexts) | set(rows.contexts("batch")))
    for a in s.archs:
        for prec in rows.precisions(s.precisions):
            rs = [r for r in (rows.get(a, "tokens", T, prec) for T in rows.contexts("tokens")) if r]
            if rs:
                axes[0].plot([r.context for r in rs], [r.median for r in rs], styles[prec], marker="o",
                             color=colors[a])
                mem = [(r.context, r.peak_bytes / 2**20) for r in rs if r.peak_bytes]
                if mem:
                    axes[2].plot(*zip(*mem), styles[prec], marker="o", color=colors[a])
            pts = [(T, r.median) for T, r in ((T, rows.batch1(a, T, prec)) for T in bctx) if r]
            if pts:
                axes[1].plot(*zip(*pts), styles[prec], marker="o", color=colors[a])
        rs = [r for r in (rows.get(a, "compiled", T, "fp32") for T in rows.contexts("compiled")) if r]
        if rs:
            axes[0].plot([r.context for r in rs], [r.median for r in rs], ":", marker="s", color=colors[a])
    titles = (f"step time, {s.tokens_per_step} tokens/step", "step time, batch 1", "peak memory of a step")
    for ax, title, unit in zip(axes, titles, ("seconds", "seconds", "MiB")):
        log_axes(ax, title, "context length (tokens)", unit)
    # one legend under the panels: colour = arch, line style = precision / compiled (not over the curves)
    handles = [Line2D([], [], color=colors[a], marker="o", label=a) for a in s.archs]
    handles += [Line2D([], [], color="black", linestyle=styles[p], label=p if p == "fp32" else f"{p} autocast")
                for p in rows.precisions(s.precisions)]
    if rows.contexts("compiled"):
        handles.append(Line2D([], [], color="black", linestyle=":", label="fp32 torch.compile (squares)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False, handlelength=3)
    fig.suptitle(f"Training step against context ({s.preset} preset, {s.device})")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, path)
