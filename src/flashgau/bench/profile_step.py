"""`flashgau bench profile-step`: one training step of an arch under torch.profiler: the aten ops by self CPU time,
the flashgau functions (layers/, ops/, model.py) that issued them, and the backward functions. Run it with the CPU
to itself, e.g.

    flock /tmp/flashgau-cpu.lock flashgau bench profile-step --arch flash --context 8192 --batch 1

Writes <out>/profile-<arch>-T<context>-B<batch>-<precision>.txt and prints it. With --clock thread the step runs on
one thread and each aten op (forward and backward) is timed by that thread's CPU time, which other processes' load
does not inflate, with the bytes it reads and writes (its tensor arguments and results): the ops by name, and by name
and input shapes.
"""

from __future__ import annotations

import argparse
import collections
import time
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
    p.add_argument("--clock", choices=["wall", "thread"], default="wall",
                   help="thread: one thread, each op timed by its CPU time, with the bytes it moves")
    p.add_argument("--out", default=common.DEFAULT_OUT)


def run(a: argparse.Namespace) -> int:
    keep_freed_memory()                 # as the flashgau command does (runtime/allocator.py)
    if a.clock == "thread":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LanguageModel(model_config(a.arch, a.preset, a.context))
    step = make_step(model, a.precision, a.batch, a.context, 0)
    step()  # warm-up
    if a.clock == "thread":
        return _thread_profile(a, step)
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


def _thread_profile(a: argparse.Namespace, step) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class OpTimer(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ns, self.calls, self.bytes = collections.Counter(), collections.Counter(), collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            t0 = time.thread_time_ns()
            out = func(*args, **(kwargs or {}))
            elapsed = time.thread_time_ns() - t0
            ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            key = (func.__name__, tuple(tuple(t.shape) for t in ins))
            self.ns[key] += elapsed
            self.calls[key] += 1
            if "view" not in func.__name__ and func.__name__.split(".")[0] not in ("slice", "select", "t", "transpose",
                                                                                  "unbind", "split", "expand"):
                self.bytes[key] += sum(t.numel() * t.element_size() for t in ins + outs)
            return out

    t0 = time.thread_time()
    step()
    unprofiled = time.thread_time() - t0
    timer = OpTimer()
    with timer:
        step()
    total = sum(timer.ns.values())
    by_name = collections.defaultdict(lambda: [0, 0, 0])
    for key, ns in timer.ns.items():
        row = by_name[key[0]]
        row[0] += ns
        row[1] += timer.calls[key]
        row[2] += timer.bytes[key]
    lines = [f"# profile: {a.arch} {a.preset} T={a.context} B={a.batch} {a.precision}, one training step (forward, "
             f"backward, clip, AdamW) on one thread; thread CPU time {unprofiled:.3f} s unprofiled, "
             f"{total / 1e9:.3f} s in aten ops profiled; bytes: the tensor arguments and results of each op (views "
             f"none)", "", "## aten ops by thread CPU time", "", "| ms | share | calls | GB moved | op |",
             "|---:|---:|---:|---:|---|"]
    for name, (ns, calls, nbytes) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:25]:
        lines.append(f"| {ns / 1e6:.1f} | {100 * ns / total:.1f}% | {calls} | {nbytes / 1e9:.2f} | {name} |")
    lines += ["", "## by op and input shapes", "", "| ms | share | calls | GB moved | GB/s | op | input shapes |",
              "|---:|---:|---:|---:|---:|---|---|"]
    for key, ns in sorted(timer.ns.items(), key=lambda kv: -kv[1])[:40]:
        gb = timer.bytes[key] / 1e9
        lines.append(f"| {ns / 1e6:.1f} | {100 * ns / total:.1f}% | {timer.calls[key]} | {gb:.2f} | "
                     f"{gb / (ns / 1e9) if ns else 0:.1f} | {key[0]} | {list(key[1])[:4]} |")
    common.write_text(Path(a.out) / f"profile-{a.arch}-T{a.context}-B{a.batch}-{a.precision}-thread.txt",
                      "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
