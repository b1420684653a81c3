"""`flashgau bench compile-cost`: what torch.compile costs and gains for a training step here, the figures behind
`flashgau train --compile auto` (training/compiling.py's constants, docs/training.md "Compiling").

Small preset FLASH, fp32 (or bf16 autocast, as `--precision bf16` trains), forward + backward + AdamW step on random
bytes: a few eager steps, then the same model under torch.compile (the first step compiles), then a held-out-style
forward in eval mode under no_grad (the scoring graph), then training steps and scoring calls alternated, counting
dynamo's graphs (a recompile would add one), and last eager and compiled steps alternated (the speed-up side by
side, which host drift between the phases cannot bias). Prints what it measures. Run it with a cold inductor cache
(what a fresh machine pays) and the CPU to itself:

    d=$(mktemp -d); flock -x /tmp/flashgau-cpu.lock env OMP_NUM_THREADS=2 TORCHINDUCTOR_CACHE_DIR=$d \\
        flashgau bench compile-cost CONTEXT BATCH STEPS [fp32|bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ..config import ModelConfig
from ..model import LanguageModel
from ..runtime import keep_freed_memory, resolve_precision


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("context", type=int, help="tokens per window")
    p.add_argument("batch", type=int, help="windows per step")
    p.add_argument("steps", type=int, help="timed steps per phase (and rounds of the side-by-side phase)")
    p.add_argument("precision", nargs="?", default="fp32", help="fp32 or bf16 (default: fp32)")


def run(a: argparse.Namespace) -> int:
    from torch._dynamo.utils import counters    # here: importing the compiler adds ~1.5 s to every `flashgau` start

    ctx, batch, steps = a.context, a.batch, a.steps
    precision = resolve_precision(a.precision, torch.device("cpu"))
    print(f"precision {precision.describe()}", flush=True)
    keep_freed_memory()                     # as the flashgau command does
    torch.manual_seed(0)

    def make():
        torch.manual_seed(0)
        cfg = ModelConfig.for_context("small", arch="flash", context=ctx, vocab_size=256, causal=True)
        m = LanguageModel(cfg)
        m.train()
        return m, torch.optim.AdamW(m.parameters(), lr=1e-4)

    ids = torch.randint(0, 256, (batch, ctx + 1))

    def step(fwd, opt):
        t = time.perf_counter()
        with precision.autocast():
            out = fwd(ids[:, :-1], labels=ids[:, 1:])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    m, opt = make()
    eager = [step(m, opt) for _ in range(steps + 1)]
    print(f"ctx {ctx} batch {batch} eager steps: first {eager[0]:.3f} s, then median "
          f"{statistics.median(eager[1:]):.3f} s {['%.3f' % x for x in eager[1:]]}", flush=True)
    m, opt = make()
    c = torch.compile(m)
    comp = [step(c, opt) for _ in range(steps + 1)]
    med = statistics.median(comp[1:])
    print(f"ctx {ctx} batch {batch} compiled: first step {comp[0]:.1f} s (compile ~{comp[0] - med:.1f} s), then "
          f"median {med:.3f} s {['%.3f' % x for x in comp[1:]]}; speedup {statistics.median(eager[1:]) / med:.2f}x",
          flush=True)
    print("graphs after training:", dict(counters["stats"]), flush=True)

    def ev():   # the scoring graph at the same shape: its first call compiles it
        m.eval()
        t = time.perf_counter()
        with torch.no_grad(), precision.autocast():
            c(ids[:, :-1])
        m.train()
        return time.perf_counter() - t

    e1 = ev()
    e2 = ev()
    print(f"compiled eval: first {e1:.1f} s, second {e2:.3f} s", flush=True)
    t_eager = time.perf_counter()
    m.eval()
    with torch.no_grad(), precision.autocast():
        m(ids[:, :-1])
    m.train()
    t_eager = time.perf_counter() - t_eager
    print(f"eager eval batch {t_eager:.3f} s", flush=True)
    before = dict(counters["stats"])
    more = [step(c, opt), ev(), step(c, opt), ev()]
    print("alternating train/eval after warm-up:", ['%.3f' % x for x in more], "stats before", before, "after",
          dict(counters["stats"]), flush=True)
    # the speed-up side by side: eager and compiled steps alternated, both graphs built (the host's speed drifts
    # between the phases above: on the shared Xeon the eager phase alone measured 0.84 s and 0.47 s in two runs of
    # one code)
    rounds = [(step(m, opt), step(c, opt)) for _ in range(steps)]
    e_med, c_med = (statistics.median(r[i] for r in rounds) for i in (0, 1))
    print(f"side by side, {steps} rounds of an eager then a compiled step: eager {e_med:.3f} s, compiled "
          f"{c_med:.3f} s; speedup {e_med / c_med:.2f}x", flush=True)
    return 0
