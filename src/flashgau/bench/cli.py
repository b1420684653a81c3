"""`flashgau bench speed | quality | decode | all`: the dispatcher of the benchmark modules.

A benchmark module (see bench/__init__.py) exposes add_arguments(parser) and run(args) -> int. Modules are imported
only when their subcommand runs (or its parser is built), and `decode` is registered only when bench/decode.py
exists. Hook into the top-level parser with `add_arguments(parser)` + `run(args)` (the shape of flashgau.cli's
commands) or with `add_bench_parser(subparsers)`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from typing import Optional, Sequence

from .common import DEFAULT_OUT

HELP = {
    "speed": "training-step time, peak memory, FLOPs and MFU of every arch against context length",
    "quality": "held-out loss of every arch trained with the same budget at several contexts; time to reach "
               "Transformer+'s loss",
    "decode": "per-token decoding latency and state memory against position",
    "all": "every benchmark in turn (--quick: a reduced version in a few minutes)",
}


def available() -> list[str]:
    """Benchmark modules present in this installation, in the order `all` runs them."""
    names = []
    for name in ("speed", "quality", "decode"):
        if importlib.util.find_spec(f"{__package__}.{name}") is not None:
            names.append(name)
    return names


def load(name: str):
    return importlib.import_module(f"{__package__}.{name}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bench subcommands to `parser` (the `flashgau bench` parser)."""
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name in available():
        p = sub.add_parser(name, help=HELP.get(name), description=HELP.get(name))
        load(name).add_arguments(p)
        p.set_defaults(bench_run=load(name).run)
    p = sub.add_parser("all", help=HELP["all"], description=HELP["all"])
    p.add_argument("--quick", action="store_true", help="reduced settings of every benchmark (under 5 minutes)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"results folder (default: {DEFAULT_OUT})")
    p.add_argument("--only", nargs="+", choices=available(), metavar="NAME", help="run only these benchmarks")
    p.set_defaults(bench_run=run_all)


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register `bench` in a top-level subparsers object."""
    p = subparsers.add_parser("bench", help="benchmarks: speed, quality, decode, all",
                              description="benchmarks: speed, quality, decode, all")
    add_arguments(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    return args.bench_run(args)


def defaults(name: str, **overrides) -> argparse.Namespace:
    """The arguments of benchmark `name` with its defaults, then `overrides` for the options it has."""
    p = argparse.ArgumentParser()
    load(name).add_arguments(p)
    args = p.parse_args([])
    for key, value in overrides.items():
        if hasattr(args, key):
            setattr(args, key, value)
    return args


def run_all(args: argparse.Namespace) -> int:
    """Every available benchmark with its defaults (or its --quick settings), one after the other; each one is
    resumable, so an interrupted `all` continues where it stopped."""
    status = 0
    t_all = time.perf_counter()
    for name in args.only or available():
        print(f"=== flashgau bench {name}{' --quick' if args.quick else ''} ===", flush=True)
        t0 = time.perf_counter()
        code = load(name).run(defaults(name, quick=args.quick, out=args.out))
        print(f"=== {name}: exit {code}, {time.perf_counter() - t0:.0f} s ===", flush=True)
        status = status or code
    if "quality" in (args.only or available()) and "speed" in (args.only or available()):
        from .summary import write_summary
        write_summary(args.out, quick=args.quick)
    print(f"bench all: {time.perf_counter() - t_all:.0f} s")
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="flashgau bench", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
