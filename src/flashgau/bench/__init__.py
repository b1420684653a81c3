"""flashgau's benchmark suite: `flashgau bench speed | quality | decode | all`.

Each benchmark is a module of this package with two functions, so the dispatcher (bench/cli.py) can register it:

    add_arguments(parser: argparse.ArgumentParser) -> None   # its options
    run(args: argparse.Namespace) -> int                      # run it, write its reports, return an exit code

`run` may also read `args.quick` (a reduced version for `bench all --quick`), `args.out` (the results folder,
default benchmarks/results) and `args.archs` when its parser defines them. Every benchmark writes Markdown, JSON
and PNG under the results folder, records the command, seed, package versions and machine (common.environment()),
and is resumable: each finished run is saved as it completes (common.ResultStore) and skipped when rerun.

Modules: speed.py (training-step time, memory, FLOPs, MFU against context length), quality.py (held-out loss at
equal training budget, time to Transformer+'s loss), decode.py (per-token decoding; optional, registered when
present). None of them is imported by `import flashgau`.
"""

BENCHMARKS = ("speed", "quality", "decode")
