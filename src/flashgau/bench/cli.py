"""`flashgau bench speed | quality | decode | ablations | all`, and the commands of their own: the dispatcher of the
benchmark modules.

A benchmark module (see bench/__init__.py) exposes add_arguments(parser) and run(args) -> int. Modules are imported
only when their subcommand runs (or its parser is built), and `decode` is registered only when bench/decode.py
exists. The commands of their own (OWN_COMMANDS) are not part of `all`: `scaling` starts torchrun runs that take
every core or GPU, `qa` trains twelve runs, and the probes (`profile-step`, `perf-fastpath`, `compile-cost`,
`copy-probe`, `data-scale`, `learn-parity`, `peer-speed`) each answer one question about this machine or a trained
run. A module's subcommand is its name with "-" for "_". Hook into the top-level parser with
`add_arguments(parser)` + `run(args)` (the shape of flashgau.cli's commands).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from typing import Optional, Sequence

from .common import add_common_arguments, results_folder, run_checked

HELP = {
    "speed": "training-step time, peak memory, FLOPs and MFU of every arch against context length",
    "quality": "held-out loss of every arch trained with the same budget at several contexts; time to reach "
               "Transformer+'s loss",
    "decode": "per-token decoding latency and state memory against position",
    "ablations": "the paper's ablations and the candidates for FLASH's defaults: named model variants trained side "
                 "by side, each paper claim checked against the measurement",
    "scaling": "training tokens/s on 1 process and on N (torchrun, DDP) with the same global batch; scaling "
               "efficiency",
    "qa": "the paper's TriviaQA table on the stand-in QA task: six models pre-trained and fine-tuned for equal time, "
          "PT perplexity, FT EM/F1 beside the floors, latency reduction against Transformer+",
    "profile_step": "one training step under torch.profiler: aten ops, flashgau functions and backward functions by "
                    "CPU time",
    "perf_fastpath": "one training step with FLASH's fast paths off and on, side by side (--each: each fast path "
                     "off alone)",
    "compile_cost": "what torch.compile costs and gains for a training step here (the figures behind --compile "
                    "auto)",
    "copy_probe": "does a trained run copy from its context? loss of a held-out passage and of its repeat",
    "learn_parity": "flashgau's FLASH and lucidrains' FLASH-pytorch trained side by side by one plain loop: held-out "
                    "loss after the first steps, one difference at a time",
    "peer_speed": "flashgau's FLASH and lucidrains' FLASH-pytorch at the same shapes: one forward + backward step "
                  "of each, timed side by side",
    "data_scale": "flashgau prepare throughput and memory on a synthetic corpus of GBs, and training starts on it",
    "all": "every benchmark in turn (--quick: a reduced version in a few minutes)",
}
OWN_COMMANDS = ("scaling", "qa", "profile_step", "perf_fastpath", "compile_cost", "copy_probe",
                "data_scale", "learn_parity", "peer_speed")     # benchmarks that `all` does not run


def available() -> list[str]:
    """Benchmark modules present in this installation, in the order `all` runs them."""
    return [name for name in ("speed", "quality", "decode", "ablations")
            if importlib.util.find_spec(f"{__package__}.{name}") is not None]


def load(name: str):
    return importlib.import_module(f"{__package__}.{name}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bench subcommands to `parser` (the `flashgau bench` parser)."""
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name in available() + [n for n in OWN_COMMANDS if importlib.util.find_spec(f"{__package__}.{n}")]:
        command = name.replace("_", "-")
        p = sub.add_parser(command, help=HELP.get(name), description=HELP.get(name))
        load(name).add_arguments(p)
        p.set_defaults(bench_run=load(name).run, bench_name=command)
    p = sub.add_parser("all", help=HELP["all"], description=HELP["all"])
    p.add_argument("--quick", action="store_true", help="reduced settings of every benchmark (a few minutes)")
    p.add_argument("--only", nargs="+", choices=available(), metavar="NAME", help="run only these benchmarks")
    add_common_arguments(p, precision_default="each benchmark's own")
    p.set_defaults(bench_run=run_all, bench_name="all")


def run(args: argparse.Namespace) -> int:
    return run_checked(args.bench_name, args.bench_run, args)


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
    """Every available benchmark with its defaults (or its --quick settings) on one device, one after the other;
    each one is resumable, so an interrupted `all` continues where it stopped."""
    from ..runtime import resolve_device

    names = args.only or available()
    out = results_folder(args.out, resolve_device(args.device))
    precision = dict(precision=args.precision, precisions=[args.precision]) if args.precision else {}
    status = 0
    t_all = time.perf_counter()
    for name in names:
        print(f"=== flashgau bench {name}{' --quick' if args.quick else ''} ===", flush=True)
        t0 = time.perf_counter()
        code = run_checked(name, load(name).run, defaults(name, quick=args.quick, out=str(out), device=args.device,
                                                          **precision))
        print(f"=== {name}: exit {code}, {time.perf_counter() - t0:.0f} s ===", flush=True)
        status = status or code
    if "quality" in names and "speed" in names:
        from .summary import write_summary
        write_summary(out, quick=args.quick)
    print(f"bench all: {time.perf_counter() - t_all:.0f} s")
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="flashgau bench", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
