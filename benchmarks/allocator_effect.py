"""Training step time with glibc's own malloc against flashgau's setting that keeps freed memory
(runtime/allocator.py), side by side: for each (arch, context) one process per setting, alternating, each timing
one warm-up step then `--steps` steps (forward, backward, clip, AdamW on random bytes; the speed benchmark's step),
with the page faults and kernel time of each step. Run under the shared CPU lock, e.g.

    flock -x /tmp/flashgau-cpu.lock env OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python \\
        benchmarks/allocator_effect.py --archs flash transformer++ --contexts 8192 16384

Writes a Markdown table to --out (default: stdout only).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def worker(arch: str, preset: str, context: int, batch: int, precision: str, steps: int) -> dict:
    import torch

    from flashgau.bench.speed import make_step, model_config
    from flashgau.model import LanguageModel
    from flashgau.runtime.allocator import keep_freed_memory

    kept = keep_freed_memory()
    torch.manual_seed(0)
    step = make_step(LanguageModel(model_config(arch, preset, context)), precision, batch, context, 0)
    step()
    times, faults, system = [], [], []
    for _ in range(steps):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        step()
        t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        times.append(t1 - t0)
        faults.append(r1.ru_minflt - r0.ru_minflt)
        system.append(r1.ru_stime - r0.ru_stime)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(kept=kept, seconds=statistics.median(times), faults=statistics.median(faults),
                system_seconds=statistics.median(system), peak_rss=peak)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--archs", nargs="+", default=["flash", "transformer++"])
    p.add_argument("--contexts", nargs="+", type=int, default=[8192, 16384])
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1, help="alternations of the two settings per (arch, context)")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(**json.loads(a.worker))))
        return
    rows = []
    for context in a.contexts:
        for arch in a.archs:
            spec = json.dumps(dict(arch=arch, preset=a.preset, context=context, batch=a.batch, precision=a.precision,
                                   steps=a.steps))
            results = {"system": [], "kept": []}
            for _ in range(a.rounds):
                for setting in ("system", "kept"):
                    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
                    env["FLASHGAU_MALLOC"] = "system" if setting == "system" else ""
                    out = subprocess.run([sys.executable, __file__, "--worker", spec], env=env, check=True,
                                         capture_output=True, text=True).stdout
                    results[setting].append(json.loads(out.strip().splitlines()[-1]))
            s = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
            f = {k: statistics.median(r["faults"] for r in v) for k, v in results.items()}
            k = {k: statistics.median(r["system_seconds"] for r in v) for k, v in results.items()}
            m = {k: max(r["peak_rss"] for r in v) for k, v in results.items()}
            row = (f"| {arch} | {context} x {a.batch} | {s['system']:.2f} s | {s['kept']:.2f} s | "
                   f"{s['system'] / s['kept']:.2f}x | {f['system']:,.0f} / {f['kept']:,.0f} | "
                   f"{k['system']:.2f} / {k['kept']:.2f} s | {m['system'] / 2**30:.2f} / {m['kept'] / 2**30:.2f} GiB |")
            print(row, flush=True)
            rows.append(row)
    from flashgau.bench.common import code_state, environment, machine_kind

    head = ["# Host allocator: glibc's own malloc against flashgau's keep-freed-memory setting", "",
            f"Machine: {machine_kind(environment())}; code {code_state().get('git_commit')}; torch threads: "
            f"{os.environ.get('OMP_NUM_THREADS', 'default')}; {a.preset} preset, {a.precision}, a step = forward + "
            f"backward + clip + AdamW; median of {a.steps} steps after one warm-up, {a.rounds} process(es) per "
            f"setting, alternating. Command: `python benchmarks/allocator_effect.py {' '.join(argv or sys.argv[1:])}`",
            "",
            "| arch | context x batch | step, glibc's own | step, kept | speed-up | "
            "page faults per step (own / kept) | kernel time per step (own / kept) | peak RSS (own / kept) |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    if a.out:
        with open(a.out, "w") as fh:
            fh.write("\n".join(head + rows) + "\n")


if __name__ == "__main__":
    main()
