"""flashgau's benchmarks: `flashgau bench speed | quality | decode | ablations | all`, `bench scaling`, `bench qa`,
and the probes `bench profile-step | perf-fastpath | compile-cost | copy-probe | data-scale | learn-parity |
peer-speed`.

Each benchmark is a module (or package) of this package with two functions, so the dispatcher (bench/cli.py) can
register it:

    add_arguments(parser: argparse.ArgumentParser) -> None   # its options
    run(args: argparse.Namespace) -> int                      # run it, write its reports, return an exit code

The suite's benchmarks take --device and --precision(s) (resolved by flashgau.runtime; "auto" allowed), --out and
--quick (a reduced version for `bench all --quick`); options it does not get take its defaults, or its --quick set
(common.options). Each writes Markdown, JSON and PNG under the results folder, records the command, seed, package
versions, machine and device (common.environment(), named in each report's header), and is resumable: each
finished run is saved as it completes (common.ResultStore) and skipped when rerun. The probes are single
measurements with options of their own.

Modules: speed/ (training-step time, memory, FLOPs, MFU against context length: plan, measure, memory, report),
quality/ (held-out loss at equal training budget, time to Transformer+'s loss: runs and report), ablations/ (named
model variants through quality's runs), qa/ (pre-training then fine-tuning on the QA task), decode.py (per-token
decoding; optional, registered when present), scaling.py (torchrun data parallel), summary.py (the headline of
speed and quality), the probes (profile_step.py, perf_fastpath.py, compile_cost.py, copy_probe.py, data_scale.py,
learn_parity.py, peer_speed.py), flops.py (model FLOPs), common.py (what they share). None of them is imported by
`import flashgau`.
"""
