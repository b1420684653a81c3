"""Before / after of the fast paths (ops/fastpath.py), side by side in one process: one training step (forward,
backward, clip, AdamW; bench/speed's make_step) of FLASH and Transformer++ at batch 1, fp32 eager, with every fast
path off ("plain", the before) and on ("fast", the after), the four configurations timed interleaved round by round.
Run under the shared CPU lock, e.g.

    flock -x /tmp/flashgau-cpu.lock .venv/bin/python benchmarks/perf_fastpath.py --contexts 4096 8192

With --each, FLASH is also timed with every fast path on but one ("-name"), in the same rounds: the row of each
change, its step time against all on. Freed memory is kept for reuse, as `flashgau train` and `flashgau bench` keep
it (runtime/allocator.py). Prints a Markdown table and writes it with the raw times to --out (.md and .json). FLOPs
are bench/flops.py's analytic matmul count of the step; for FLASH with the local strips on, the causal local part's
share is scaled by the fraction of the C x C square its strips compute (ops/local_blocks.local_fraction), i.e. the
FLOPs executed.
"""

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from flashgau.bench.common import matmul_peak
from flashgau.bench.flops import analytic_flops
from flashgau.bench.speed import make_step, model_config
from flashgau.model import LanguageModel
from flashgau.ops import fastpath
from flashgau.ops.local_blocks import default_block, local_fraction
from flashgau.runtime import keep_freed_memory

MODES = ("plain", "fast")


def without_modes() -> tuple[str, ...]:
    """"-name": every fast path on but `name`."""
    return tuple(f"-{name}" for name in fastpath.FAST_PATHS)


def executed_flops(cfg, context: int, mode: str) -> float:
    flops = analytic_flops(cfg, 1, context)["total"]
    if cfg.arch == "flash" and mode in ("fast", *without_modes()) and mode != "-causal_blocks" and cfg.causal:
        C = min(cfg.chunk_size, context)
        if C == cfg.chunk_size:
            local = 3 * context * cfg.n_layers * 2 * C * (cfg.qk_dim + cfg.expanded_dim)
            flops -= local * (1 - local_fraction(C, default_block(C)))
    return flops


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--contexts", type=int, nargs="+", default=[4096, 8192])
    p.add_argument("--archs", nargs="+", default=["flash", "transformer++"])
    p.add_argument("--preset", default="small")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--each", action="store_true", help="also time FLASH with each fast path off alone")
    p.add_argument("--out", default="benchmarks/results/perf-fastpath-run")
    a = p.parse_args(argv)

    keep_freed_memory()
    started = time.time()
    peak = matmul_peak("fp32", torch.device("cpu"), [2048], repeats=6)["flops_per_s"]
    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}; fp32 matmul peak (2048^3) "
          f"{peak / 1e9:.1f} GFLOP/s", flush=True)
    records = []
    for T in a.contexts:
        steps, cfgs = {}, {}
        for arch in a.archs:
            torch.manual_seed(0)
            cfgs[arch] = model_config(arch, a.preset, T)
            model = LanguageModel(cfgs[arch])
            steps[arch] = make_step(model, "fp32", 1, T, 0)
        configs = [(arch, mode) for arch in a.archs
                   for mode in MODES + (without_modes() if a.each and arch == "flash" else ())]
        times = {c: [] for c in configs}

        def run(arch, mode):
            off = () if mode == "plain" else (mode[1:],) if mode.startswith("-") else None
            with fastpath.plain(*off) if off is not None else contextlib.nullcontext():
                t0 = time.perf_counter()
                steps[arch]()
                return time.perf_counter() - t0

        for c in configs:
            for _ in range(a.warmup):
                run(*c)
        for r in range(a.repeats):
            for c in configs:
                times[c].append(run(*c))
                print(f"T={T} round {r} {c[0]:14s} {c[1]:17s} {times[c][-1]:7.3f} s", flush=True)
        for arch, mode in configs:
            t = statistics.median(times[(arch, mode)])
            flops = executed_flops(cfgs[arch], T, mode)
            records.append(dict(context=T, arch=arch, mode=mode, median_s=t, times_s=times[(arch, mode)],
                                flops=flops, peak_share=flops / t / peak))
        steps.clear()                                                   # free the models before the next T
    lines = table(records, a.archs)
    header = (f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 matmul peak "
              f"{peak / 1e9:.1f} GFLOP/s (2048^3); {a.preset} preset, batch 1, fp32 eager; median of {a.repeats} "
              f"interleaved steps after {a.warmup} warm-up; wall time {time.time() - started:.0f} s")
    print("\n" + header + "\n\n" + "\n".join(lines))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(peak_flops_per_s=peak, torch=torch.__version__,
                                                        threads=torch.get_num_threads(), records=records), indent=1))
    out.with_suffix(".md").write_text(header + "\n\n" + "\n".join(lines) + "\n")
    return 0


def table(records, archs):
    by = {(r["context"], r["arch"], r["mode"]): r for r in records}
    lines = ["| T | arch | plain s | fast s | plain / fast | GFLOP plain | GFLOP fast | % peak plain | % peak fast |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    contexts = sorted({r["context"] for r in records})
    for T in contexts:
        for arch in archs:
            pl, fa = by[(T, arch, "plain")], by[(T, arch, "fast")]
            lines.append(f"| {T} | {arch} | {pl['median_s']:.2f} | {fa['median_s']:.2f} | "
                         f"{pl['median_s'] / fa['median_s']:.2f}x | {pl['flops'] / 1e9:.0f} | "
                         f"{fa['flops'] / 1e9:.0f} | {100 * pl['peak_share']:.0f}% | {100 * fa['peak_share']:.0f}% |")
    each = [r for r in records if r["mode"].startswith("-")]
    if each:
        lines += ["", "Each fast path: FLASH's step with every fast path on but that one, against all on (same rounds; "
                  "above 1x: the fast path saves that share of the step; min-max of the per-round ratios last).",
                  "", "| T | fast path off | step s | / all on | per-round ratios |", "|---|---|---:|---:|---:|"]
        for r in each:
            fa = by[(r["context"], "flash", "fast")]
            ratios = sorted(w / f for w, f in zip(r["times_s"], fa["times_s"]))
            lines.append(f"| {r['context']} | {r['mode'][1:]} | {r['median_s']:.2f} | "
                         f"{r['median_s'] / fa['median_s']:.3f}x | {ratios[0]:.3f}-{ratios[-1]:.3f} |")
    if "flash" in archs and "transformer++" in archs:
        lines += ["", "| T | Transformer++ / FLASH, both plain (before) | both fast (after) |", "|---|---:|---:|"]
        for T in contexts:
            ratio = lambda m: by[(T, "transformer++", m)]["median_s"] / by[(T, "flash", m)]["median_s"]  # noqa: E731
            lines.append(f"| {T} | {ratio('plain'):.2f}x | {ratio('fast'):.2f}x |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
