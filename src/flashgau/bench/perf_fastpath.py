"""`flashgau bench perf-fastpath`: before / after of the fast paths (ops/fastpath.py), side by side in one process:
one training step (forward, backward, clip, AdamW; bench/speed's make_step) of FLASH and Transformer++ at batch 1,
fp32 eager, with every fast path off ("plain", the before) and on ("fast", the after), the four configurations
timed interleaved round by round. Run it with the CPU to itself, e.g.

    flock -x /tmp/flashgau-cpu.lock flashgau bench perf-fastpath --contexts 4096 8192

With --each, one FLASH block (forward + backward at batch 1, the preset's first block) is also timed with every fast
path on but one ("-name"), and with all off, in rounds whose order rotates: the row of each change, as the median
of its per-round ratios to all on (a whole step's noise on a shared host, several percent, hides changes of 1-3%;
a block's is smaller and it runs 8x as many rounds in the time). --shapes 512x8 1024x4 (context x batch) times
those shapes instead of --contexts at batch 1; --before NAME ... turns only the named fast paths off in the "plain"
configuration (default: all); --clock thread times each step by the CPU time of the calling thread with one thread
(torch.set_num_threads(1): a CPU step's whole work then runs on that thread), which other processes' load does not
inflate, where wall time on a busy 2-core host swings 2-4x. Freed memory is kept for reuse, as `flashgau train` and
`flashgau bench` keep it (runtime/allocator.py). Prints a Markdown table and writes it with the raw times to
--out (.md and .json). FLOPs are bench/flops.py's analytic matmul count of the step; for FLASH with the local strips
on, the causal local part's share is scaled by the fraction of the C x C square its strips compute
(ops/local_blocks.local_fraction), i.e. the FLOPs executed.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from pathlib import Path

import torch

from ..layers.context import Context
from ..model import LanguageModel
from ..ops import fastpath
from ..ops.local_blocks import default_block, local_fraction
from ..runtime import keep_freed_memory
from . import common
from .flops import analytic_flops
from .speed import make_step, model_config

MODES = ("plain", "fast")


def without_modes() -> tuple[str, ...]:
    """"-name": every fast path on but `name`."""
    return tuple(f"-{name}" for name in fastpath.FAST_PATHS)


def executed_flops(cfg, context: int, mode: str, batch: int = 1) -> float:
    flops = analytic_flops(cfg, batch, context)["total"]
    if cfg.arch == "flash" and mode == "fast" and cfg.causal:
        C = min(cfg.chunk_size, context)
        if C == cfg.chunk_size:
            local = 3 * batch * context * cfg.n_layers * 2 * C * (cfg.qk_dim + cfg.expanded_dim)
            flops -= local * (1 - local_fraction(C, default_block(C)))
    return flops


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--contexts", type=int, nargs="+", default=[4096, 8192])
    p.add_argument("--archs", nargs="+", default=["flash", "transformer++"])
    p.add_argument("--preset", default="small")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--each", action="store_true", help="also time one FLASH block with each fast path off alone")
    p.add_argument("--each-rounds", type=int, default=15)
    p.add_argument("--shapes", nargs="+", default=None, metavar="TxB",
                   help="context x batch pairs, e.g. 512x8 8192x1 (instead of --contexts at batch 1)")
    p.add_argument("--before", nargs="+", default=None, metavar="NAME",
                   help="the fast paths off in the plain configuration (default: all)")
    p.add_argument("--clock", choices=["wall", "thread"], default="wall",
                   help="thread: the calling thread's CPU time, one thread (immune to other processes' load)")
    p.add_argument("--out", default=f"{common.DEFAULT_OUT}/perf-fastpath-run",
                   help="path of the report without its suffix (.md and .json are written)")


def parse_shapes(a: argparse.Namespace) -> list[tuple[int, int]]:
    """(context, batch) pairs: --shapes, else --contexts at batch 1."""
    if not a.shapes:
        return [(T, 1) for T in a.contexts]
    try:
        shapes = [tuple(int(n) for n in shape.lower().split("x")) for shape in a.shapes]
    except ValueError:
        shapes = []
    if len(shapes) != len(a.shapes) or any(len(shape) != 2 for shape in shapes):
        raise SystemExit(f"--shapes takes context x batch pairs such as 512x8, got {' '.join(a.shapes)}")
    return shapes


def run(a: argparse.Namespace) -> int:
    keep_freed_memory()
    shapes = parse_shapes(a)
    with fastpath.plain(*(a.before or ())):                  # an unknown name fails here, before any timing
        pass
    clock = common.step_clock(a.clock)
    before = tuple(a.before or ())
    started = time.time()
    peak = common.matmul_peak("fp32", torch.device("cpu"), [2048], repeats=6)["flops_per_s"]
    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}; fp32 matmul peak (2048^3) "
          f"{peak / 1e9:.1f} GFLOP/s", flush=True)
    records = []
    for T, batch in shapes:
        steps, cfgs = {}, {}
        for arch in a.archs:
            torch.manual_seed(0)
            cfgs[arch] = model_config(arch, a.preset, T)
            model = LanguageModel(cfgs[arch])
            steps[arch] = make_step(model, "fp32", batch, T, 0)
        configs = [(arch, mode) for arch in a.archs for mode in MODES]
        times = {c: [] for c in configs}

        def time_step(arch, mode):
            off = before if mode == "plain" else (mode[1:],) if mode.startswith("-") else None
            with fastpath.plain(*off) if off is not None else contextlib.nullcontext():
                t0 = clock()
                steps[arch]()
                return clock() - t0

        for c in configs:
            for _ in range(a.warmup):
                time_step(*c)
        for r in range(a.repeats):
            for c in rotated(configs, r):
                times[c].append(time_step(*c))
                print(f"T={T} B={batch} round {r} {c[0]:14s} {c[1]:5s} {times[c][-1]:7.3f} s", flush=True)
        for arch, mode in configs:
            t = statistics.median(times[(arch, mode)])
            flops = executed_flops(cfgs[arch], T, mode, batch)
            records.append(dict(context=T, batch=batch, arch=arch, mode=mode, median_s=t, times_s=times[(arch, mode)],
                                flops=flops, peak_share=flops / t / peak))
        steps.clear()                                                   # free the models before the next T
        if a.each and "flash" in a.archs:
            records += time_block_each(model_config("flash", a.preset, T), T, a.each_rounds, clock)
    lines = table(records, a.archs)
    header = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, clock {a.clock}; fp32 matmul peak "
              f"{peak / 1e9:.1f} GFLOP/s (2048^3); {a.preset} preset, fp32 eager; plain: "
              f"{', '.join(before) if before else 'every fast path'} off; median of {a.repeats} interleaved steps "
              f"after {a.warmup} warm-up; wall time {time.time() - started:.0f} s")
    print("\n" + header + "\n\n" + "\n".join(lines))
    out = Path(a.out)
    common.write_json(out.with_suffix(".json"), dict(peak_flops_per_s=peak, torch=torch.__version__,
                                                     threads=torch.get_num_threads(), records=records))
    common.write_text(out.with_suffix(".md"), header + "\n\n" + "\n".join(lines) + "\n")
    return 0


def rotated(items: list, r: int) -> list:
    """items in round r's order: rotated by r, so no configuration always runs after the same one."""
    k = r % len(items)
    return items[k:] + items[:k]


def time_block_each(cfg, T: int, rounds: int, clock=time.perf_counter) -> list[dict]:
    """One FLASH block's forward + backward (batch 1, fp32) with all fast paths on ("fast"), each off alone
    ("-name") and all off ("plain"), rounds in rotating order: records of mode "block<mode>"."""
    torch.manual_seed(0)
    block = LanguageModel(cfg).blocks[0]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, T, cfg.d_model, generator=gen).requires_grad_()
    grad = torch.randn(1, T, cfg.d_model, generator=gen)
    ctx = Context(positions=torch.arange(T), key_mask=None, causal=cfg.causal)
    modes = ["fast", *without_modes(), "plain"]

    def time_block(mode):
        off = () if mode == "plain" else (mode[1:],) if mode.startswith("-") else None
        with fastpath.plain(*off) if off is not None else contextlib.nullcontext():
            t0 = clock()
            block(x, ctx).backward(grad)
            elapsed = clock() - t0
        x.grad = None
        block.zero_grad(set_to_none=True)
        return elapsed

    times = {m: [] for m in modes}
    for m in modes:
        time_block(m)
    for r in range(rounds):
        for m in rotated(modes, r):
            times[m].append(time_block(m))
    print(f"T={T} one block, median ms: " + ", ".join(f"{m} {1e3 * statistics.median(t):.1f}"
                                                     for m, t in times.items()), flush=True)
    return [dict(context=T, arch="flash", mode=f"block{m}", median_s=statistics.median(times[m]), times_s=times[m],
                 ratios=[w / f for w, f in zip(times[m], times["fast"])]) for m in modes]


def table(records, archs):
    by = {(r["context"], r["arch"], r["mode"]): r for r in records}
    shape = {r["context"]: f"{r['context']} x {r.get('batch', 1)}" for r in records if "batch" in r}
    lines = ["| T x B | arch | plain s | fast s | plain / fast | GFLOP plain | GFLOP fast | % peak plain "
             "| % peak fast |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    contexts = sorted({r["context"] for r in records})
    for T in contexts:
        for arch in archs:
            pl, fa = by[(T, arch, "plain")], by[(T, arch, "fast")]
            lines.append(f"| {shape.get(T, T)} | {arch} | {pl['median_s']:.2f} | {fa['median_s']:.2f} | "
                         f"{pl['median_s'] / fa['median_s']:.2f}x | {pl['flops'] / 1e9:.0f} | "
                         f"{fa['flops'] / 1e9:.0f} | {100 * pl['peak_share']:.0f}% | {100 * fa['peak_share']:.0f}% |")
    each = [r for r in records if r["mode"].startswith("block") and r["mode"] != "blockfast"]
    if each:
        lines += ["",
                  "Each fast path: one FLASH block's forward + backward (batch 1, fp32) with every fast path on but "
                  "that one (all off: plain), against all on, in the same rounds (order rotating). Ratio: median of "
                  "the per-round ratios (above 1x: the fast path saves that share of the block's time), min-max "
                  "last.", "", "| T | fast path off | block ms | all on ms | / all on | per-round ratios |",
                  "|---|---|---:|---:|---:|---:|"]
        for r in each:
            fast = by[(r["context"], "flash", "blockfast")]
            ratios = sorted(r["ratios"])
            name = "all (plain)" if r["mode"] == "blockplain" else r["mode"][len("block-"):]
            lines.append(f"| {r['context']} | {name} | "
                         f"{1e3 * r['median_s']:.1f} | {1e3 * fast['median_s']:.1f} | "
                         f"{statistics.median(ratios):.3f}x | {ratios[0]:.3f}-{ratios[-1]:.3f} |")
    if "flash" in archs and "transformer++" in archs:
        lines += ["", "| T x B | Transformer++ / FLASH, both plain (before) | both fast (after) |", "|---|---:|---:|"]
        for T in contexts:
            ratio = lambda m: by[(T, "transformer++", m)]["median_s"] / by[(T, "flash", m)]["median_s"]  # noqa: E731
            lines.append(f"| {shape.get(T, T)} | {ratio('plain'):.2f}x | {ratio('fast'):.2f}x |")
    return lines

