"""`flashgau bench peer-speed`: flashgau's FLASH beside lucidrains' FLASH-pytorch, the independent implementation
(`pip install flash-pytorch einops rotary-embedding-torch`; not a dependency of flashgau), timed in one process.

Both models have the shapes of the `--preset` FLASH (width, GAU layers, chunk size, s, expansion: the builder of
`bench learn-parity`), causal, fp32 eager, on the same random tokens. One timed step: forward, the cross-entropy
of the next token, backward, gradients dropped (no optimizer: both would run the same AdamW over parameter sets of
the same size). Three arms, timed round by round in rotating order, so no arm always follows the same one:

    flashgau         FLASH with flashgau's defaults (every fast path on)
    flashgau-plain   the same model with every fast path off (ops/fastpath.py): what the fast paths add
    lucidrains       FLASHTransformer with its own defaults at the same shapes

Prints each step and a table (median seconds per step, the ratio lucidrains / flashgau of the medians and the
median of the per-round ratios, which a drifting host moves less); writes it with the raw times to --out (.md,
.json). Run it with the CPU to itself, e.g.

    flock -x /tmp/flashgau-cpu.lock flashgau bench peer-speed --shapes 8192x1 2048x2 512x8
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..ops import fastpath
from ..runtime import keep_freed_memory
from . import common
from .learn_parity import LUCIDRAINS_NOT_INSTALLED, flashgau_logits, flashgau_model, lucidrains_available, \
    lucidrains_model, parse_arm
from .perf_fastpath import parse_shapes, rotated

ARMS = ("flashgau", "flashgau-plain", "lucidrains")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", nargs="+", default=["8192x1", "2048x2", "512x8"], metavar="TxB",
                   help="context x batch pairs (default: 8192x1 2048x2 512x8)")
    p.add_argument("--preset", default="small", help="the shapes of both models (default: small)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="arms to time (default: all)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each arm first (default: 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--clock", choices=["wall", "thread"], default="wall",
                   help="thread: the calling thread's CPU time with one thread (immune to other processes' load)")
    p.add_argument("--out", default=f"{common.DEFAULT_OUT}/peer-speed",
                   help="path of the report without its suffix (.md and .json are written)")


def peer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flash-pytorch")
    except PackageNotFoundError:
        return "(version unknown)"


def check(a: argparse.Namespace) -> list[tuple[int, int]]:
    """The shapes, or a one-line error for settings that cannot run."""
    shapes = parse_shapes(a)
    if "lucidrains" in a.arms and not lucidrains_available():
        raise ConfigError(f"{LUCIDRAINS_NOT_INSTALLED}; or pass --arms flashgau flashgau-plain")
    if a.repeats < 1 or a.warmup < 0:
        raise ConfigError(f"--repeats must be at least 1 and --warmup at least 0, got {a.repeats} and {a.warmup}")
    if a.threads is not None and a.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {a.threads}")
    for T, batch in shapes:
        if T < 1 or batch < 1:
            raise ConfigError(f"--shapes takes positive context x batch pairs, got {T}x{batch}")
    return shapes


def build(arm: str, preset: str, context: int) -> tuple[nn.Module, Callable]:
    """The arm's model and its logits function (the same weights' shapes for both flashgau arms)."""
    if arm == "lucidrains":
        return lucidrains_model(parse_arm("lucidrains"), preset, context), lambda model, ids: model(ids)
    return flashgau_model(parse_arm("flashgau"), preset, context), flashgau_logits


def make_step(model: nn.Module, logits_of: Callable, ids: torch.Tensor, plain: bool) -> Callable[[], float]:
    """One step: forward, next-token cross-entropy, backward, gradients dropped; the loss."""
    x, y = ids[:, :-1], ids[:, 1:]
    model.train()

    def step() -> float:
        with fastpath.plain() if plain else contextlib.nullcontext():
            logits = logits_of(model, x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
            loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def run(a: argparse.Namespace) -> int:
    shapes = check(a)
    keep_freed_memory()
    if a.threads and a.clock == "wall":
        torch.set_num_threads(a.threads)
    clock = common.step_clock(a.clock)
    started = time.time()
    peak = common.matmul_peak("fp32", torch.device("cpu"), [2048], repeats=6)["flops_per_s"]
    peer = peer_version() if "lucidrains" in a.arms else None
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, clock {a.clock}; fp32 matmul peak "
          f"(2048^3) {peak / 1e9:.1f} GFLOP/s" + (f"; flash-pytorch {peer}" if peer else ""), flush=True)
    records = []
    for T, batch in shapes:
        cfg = ModelConfig.for_context(a.preset, arch="flash", context=T)
        ids = torch.randint(0, cfg.vocab_size, (batch, T + 1), generator=torch.Generator().manual_seed(0))
        steps, params = {}, {}
        for arm in a.arms:
            torch.manual_seed(0)
            model, logits_of = build(arm, a.preset, T)
            params[arm] = sum(p.numel() for p in model.parameters())
            steps[arm] = make_step(model, logits_of, ids, plain=arm == "flashgau-plain")
        times = {arm: [] for arm in a.arms}

        def timed(arm: str) -> float:
            t0 = clock()
            steps[arm]()
            return clock() - t0

        for arm in a.arms:
            for _ in range(a.warmup):
                timed(arm)
        for r in range(a.repeats):
            for arm in rotated(list(a.arms), r):
                times[arm].append(timed(arm))
                print(f"T={T} B={batch} round {r} {arm:15s} {times[arm][-1]:7.3f} s", flush=True)
        for arm in a.arms:
            records.append(dict(context=T, batch=batch, arm=arm, params=params[arm], times_s=times[arm],
                                median_s=statistics.median(times[arm])))
        steps.clear()
    lines = table(records, list(a.arms))
    header = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, clock {a.clock}; fp32 matmul peak "
              f"{peak / 1e9:.1f} GFLOP/s (2048^3); {a.preset} preset shapes, causal, fp32 eager, forward + "
              f"cross-entropy + backward; median of {a.repeats} interleaved rounds after {a.warmup} warm-up; "
              f"wall time {time.time() - started:.0f} s" + (f"; lucidrains: flash-pytorch {peer}" if peer else ""))
    print("\n" + header + "\n\n" + "\n".join(lines))
    out = Path(a.out)
    env = common.environment()
    settings = dict(shapes=a.shapes, preset=a.preset, arms=a.arms, repeats=a.repeats, warmup=a.warmup,
                    threads=torch.get_num_threads(), clock=a.clock)
    common.write_json(out.with_suffix(".json"), dict(peak_flops_per_s=peak, environment=env, settings=settings,
                                                     command=common.command_line(), records=records))
    common.write_text(out.with_suffix(".md"), header + "\n\n" + "\n".join(lines) + "\n\n" + common.env_markdown(env)
                      + "\n")
    return 0


def table(records: list[dict], arms: list[str]) -> list[str]:
    """One row per shape: each arm's median and parameters, then lucidrains / flashgau (medians; per round)."""
    by = {(r["context"], r["batch"], r["arm"]): r for r in records}
    shapes = list(dict.fromkeys((r["context"], r["batch"]) for r in records))
    header = ["T x B", *(f"{arm} s" for arm in arms), "params " + " / ".join(arms)]
    ratios = [(num, den) for num, den in (("lucidrains", "flashgau"), ("flashgau-plain", "flashgau"))
              if num in arms and den in arms]
    header += [f"{num} / {den} (medians; per round)" for num, den in ratios]
    rows = []
    for T, batch in shapes:
        row = [f"{T} x {batch}", *(f"{by[(T, batch, arm)]['median_s']:.3f}" for arm in arms),
               " / ".join(f"{by[(T, batch, arm)]['params']:,}" for arm in arms)]
        for num, den in ratios:
            n, d = by[(T, batch, num)], by[(T, batch, den)]
            per_round = statistics.median(x / y for x, y in zip(n["times_s"], d["times_s"]))
            row.append(f"{n['median_s'] / d['median_s']:.2f}x; {per_round:.2f}x")
        rows.append(row)
    return common.md_table(header, rows)
