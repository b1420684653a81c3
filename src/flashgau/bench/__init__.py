"""flashgau's benchmark suite: `flashgau bench speed | quality | decode | all`.

Each benchmark is a module (or package) of this package with two functions, so the dispatcher (bench/cli.py) can
register it:

    add_arguments(parser: argparse.ArgumentParser) -> None   # its options
    run(args: argparse.Namespace) -> int                      # run it, write its reports, return an exit code

Every benchmark takes --device and --precision(s) (resolved by flashgau.runtime; "auto" allowed), --out and
--quick (a reduced version for `bench all --quick`); options it does not get take its defaults, or its --quick set
(common.options). Every benchmark writes Markdown, JSON and PNG under the results folder, records the command,
seed, package versions, machine and device (common.environment(), named in each report's header), and is
resumable: each finished run is saved as it completes (common.ResultStore) and skipped when rerun.

Modules: speed/ (training-step time, memory, FLOPs, MFU against context length: plan, measure, memory, report),
quality/ (held-out loss at equal training budget, time to Transformer+'s loss: runs and report), decode.py
(per-token decoding; optional, registered when present), summary.py (the headline of speed and quality),
flops.py (model FLOPs), common.py (what they share). None of them is imported by `import flashgau`.
"""
