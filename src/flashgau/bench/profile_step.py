"""`flashgau bench profile-step`: one training step of an arch under torch.profiler: the aten ops by self CPU time,
the flashgau functions (layers/, ops/, model.py) that issued them, and the backward functions. Run it with the CPU
to itself, e.g.

    flock /tmp/flashgau-cpu.lock flashgau bench profile-step --arch flash --context 8192 --batch 1

Writes <out>/profile-<arch>-T<context>-B<batch>-<precision>.txt and prints it.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ..model import LanguageModel
from ..runtime import keep_freed_memory
from . import common
from .speed import make_step, model_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="flash")
    p.add_argument("--preset", default="small")
    p.add_argument("--context", type=int, default=8192)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--out", default=common.DEFAULT_OUT)


def run(a: argparse.Namespace) -> int:
    keep_freed_memory()                 # as the flashgau command does (runtime/allocator.py)
    torch.manual_seed(0)
    model = LanguageModel(model_config(a.arch, a.preset, a.context))
    step = make_step(model, a.precision, a.batch, a.context, 0)
    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU], with_stack=True, record_shapes=True) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    lines = [f"# profile: {a.arch} {a.preset} T={a.context} B={a.batch} {a.precision}, one training step "
             f"(forward, backward, clip, AdamW); self CPU time total {total / 1e6:.2f} s", "",
             "## aten ops by self CPU time", ""]
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:25]:
        lines.append(f"{e.self_cpu_time_total / 1e6:8.3f} s {100 * e.self_cpu_time_total / total:5.1f}%  "
                     f"{e.count:5d} calls  {e.key}")
    # forward time by flashgau Python function (inclusive: the ops it issued and the functions it called)
    funcs = [e for e in events if "flashgau/" in e.key and "/bench/" not in e.key]
    lines += ["", "## forward: flashgau functions by inclusive CPU time (nested functions counted in each)", ""]
    for e in sorted(funcs, key=lambda e: -e.cpu_time_total)[:25]:
        lines.append(f"{e.cpu_time_total / 1e6:8.3f} s {100 * e.cpu_time_total / total:5.1f}%  "
                     f"{e.count:4d} calls  {e.key}")
    bwd = collections.Counter()
    for e in events:
        if "Backward" in e.key and e.key.startswith("autograd::engine"):
            bwd[e.key.split(": ")[-1]] += e.cpu_time_total
    lines += ["", "## backward functions by total CPU time (children included)", ""]
    for k, t in bwd.most_common(15):
        lines.append(f"{t / 1e6:8.3f} s {100 * t / total:5.1f}%  {k}")
    common.write_text(Path(a.out) / f"profile-{a.arch}-T{a.context}-B{a.batch}-{a.precision}.txt",
                      "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
