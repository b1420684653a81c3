"""`flashgau bench speed`: time of a full training step, peak memory, model FLOPs and MFU against context length.

What is measured (see docs/benchmarks.md):
- step time: forward, backward (loss on random byte tokens), gradient clipping and an AdamW step (the training
  loop's optimizer), on the chosen device, in fp32 and wherever asked or fast (`--precisions auto`) in bf16
  autocast. Two series: "tokens" keeps the tokens per step fixed (--tokens-per-step, batch = tokens / context, the
  paper's latency column) and "batch" keeps the batch fixed at 1 (tokens grow with context). A third, "compiled",
  repeats the fixed-tokens step under torch.compile (inductor) for --compile-archs at --compile-contexts: the
  paper's timings are of XLA-compiled programs, and FLASH's many elementwise passes over wide activations are
  exactly what a compiler fuses (eager PyTorch runs each as its own pass over memory, while the baselines'
  attention is one fused SDPA kernel either way). With --checkpoint-activations a "checkpointed" series repeats
  every batch-1 configuration with activation checkpointing (each block recomputed in backward; `flashgau train
  --checkpoint-activations`): its step time and peak memory beside the plain ones, and the activation memory per
  token of both. All archs of one (series, context, precision) group are timed in
  one process, interleaved: warm-up steps, then `repeats` rounds that each time one step of every arch. Median,
  min, max, IQR.
- memory and counted FLOPs of one step (memory.py: the resident set in a separate process on a CPU,
  torch.cuda.max_memory_allocated on a GPU).
- MFU: analytic model FLOPs per step (counted where no formula exists) / median step time / this device's matmul
  peak in the same precision, measured at the start of the same run (common.matmul_peak, at --peak-sizes).
Configurations whose estimated attention memory exceeds --max-attention-gib (FLASH-Quad's T x T maps at long
context) are skipped and reported as such rather than risking the machine.

Modules: plan.py (settings, groups), measure.py (timing), memory.py (memory and FLOP count), report.py (report).
Resumable: every finished group and memory measurement is a JSON file under <out>/runs/speed[-quick]/.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import torch

from ... import ARCHS
from .. import common
from .measure import make_step, time_group
from .plan import DEFAULTS, PEAK_SIZES, QUICK, groups, model_config, settings_from_args
from .report import build_report, markdown, plot

__all__ = ["add_arguments", "groups", "main", "make_step", "model_config", "run", "settings_from_args"]


def _list(values) -> str:
    return " ".join(map(str, values)) or "none"


def add_arguments(p: argparse.ArgumentParser) -> None:
    D, Q = DEFAULTS, QUICK
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=None, metavar="ARCH",
                   help=f"archs to compare (default: all: {' '.join(ARCHS)})")
    p.add_argument("--preset", default="small", help="model size shared by every arch (default: small: d=256, "
                   "8 GAU / 4 Transformer layers)")
    p.add_argument("--contexts", nargs="+", type=int, default=None, metavar="T",
                   help=f"context lengths (default: {_list(D['contexts'])}; --quick: {_list(Q['contexts'])})")
    p.add_argument("--tokens-per-step", type=int, default=None, metavar="N",
                   help="tokens per step of the fixed-tokens series; must be a multiple of every context "
                        f"(default: {D['tokens_per_step']}; --quick: {Q['tokens_per_step']})")
    p.add_argument("--batch-contexts", nargs="*", type=int, default=None, metavar="T",
                   help="contexts of the fixed-batch (batch 1) series; those where batch 1 is already the "
                        f"fixed-tokens configuration are taken from it (default: {_list(D['batch_contexts'])}; "
                        f"--quick: {_list(Q['batch_contexts'])}; empty: none)")
    common.add_common_arguments(p, precision_default="auto: fp32, plus bf16 where the device is fast at it",
                                several=True)
    p.add_argument("--compile-contexts", nargs="*", type=int, default=None, metavar="T",
                   help="contexts of the compiled series: fixed tokens per step, fp32, under torch.compile "
                        f"(default: {_list(D['compile_contexts'])}; --quick: none; empty: none)")
    p.add_argument("--compile-archs", nargs="+", choices=ARCHS, default=None, metavar="ARCH",
                   help=f"archs of the compiled series (default: {_list(D['compile_archs'])})")
    p.add_argument("--warmup", type=int, default=None, help=f"untimed steps per arch before timing "
                   f"(default: {D['warmup']})")
    p.add_argument("--repeats", type=int, default=None, help=f"timed steps per arch (default: {D['repeats']}; "
                   f"--quick: {Q['repeats']})")
    p.add_argument("--peak-sizes", nargs="+", type=int, default=None, metavar="N",
                   help="sizes of the square matmuls timed for the device's peak (default: "
                        f"{_list(PEAK_SIZES['cpu'])} on a CPU, {_list(PEAK_SIZES['cuda'])} on a GPU)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory/FLOP-count measurement")
    p.add_argument("--checkpoint-activations", action="store_true", help="also measure every batch-1 configuration "
                   "(--batch-contexts, and a --contexts whose batch is 1) with activation checkpointing (each block "
                   "recomputed in backward, as `flashgau train --checkpoint-activations`): step time, peak memory and "
                   "activation memory per token with and without recompute")
    p.add_argument("--name", default=None, metavar="NAME", help="name of the report (NAME.md, .json, .png) and of its "
                   "saved runs (runs/NAME/) (default: speed; --quick: speed-quick)")
    p.add_argument("--max-attention-gib", type=float, default=8.0, metavar="GIB",
                   help="skip configurations whose estimated T x T attention memory exceeds this (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and random tokens (default: 0)")
    p.add_argument("--quick", action="store_true", help="a reduced version (contexts 512 and 2048, 2048 tokens "
                   "per step, 2 repeats, no batch-1 or compiled series): a smoke run of a few minutes")
    p.add_argument("--report-only", action="store_true", help="rebuild the reports from saved runs; measure nothing")


def run(args: argparse.Namespace) -> int:
    from .memory import measure_memory      # not at import: `python -m flashgau.bench.speed.memory` runs it

    s = settings_from_args(args)
    device = torch.device(s.device)
    tag = common.device_tag(device, "fp32")      # the key names its precision already
    out = common.results_folder(args.out, device)
    store = common.ResultStore(out / "runs" / s.stem)
    plan = groups(s)
    peaks = None
    for g in plan if not args.report_only else ():
        key = g.key(s.preset, tag)
        rec = store.load(key)
        wanted = s.compile_archs if g.series == "compiled" else s.archs
        if rec is not None and set(wanted) <= set(rec["results"]) | set(rec["skipped"]):
            print(f"  {key}: done, skipped (delete {store.path(key)} to measure again)")
        else:
            if peaks is None:
                names = dict.fromkeys(["fp32", *s.precisions])      # fp32 always: MFU against the fp32 peak
                peaks = {p: common.matmul_peak(p, device, s.peak_sizes) for p in names}
                print("matmul peak: " + ", ".join(f"{p} {v['flops_per_s'] / 1e9:.0f} GFLOP/s"
                                                  for p, v in peaks.items()), flush=True)
            rec = time_group(g, s, peaks)
            store.save(key, rec)
        if s.memory and "memory" not in rec and rec["results"] and g.series != "compiled":
            rec["memory"] = measure_memory(g, list(rec["results"]), s)
            store.save(key, rec)
            for arch, m in rec["memory"].items() if "error" not in rec["memory"] else ():
                print(f"  {key} {arch:<16} peak {common.fmt_bytes(m['peak_bytes'])}  counted "
                      f"{m['counted_flops'] / 1e9:.1f} GFLOP")
            if "error" in rec["memory"]:
                print(f"  {key}: {rec['memory']['error']}")
    common.write_reports(out, s.stem, build_report(store, s, tag), markdown, plot)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main("speed", add_arguments, run, argv)
