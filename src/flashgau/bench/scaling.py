"""`flashgau bench scaling`: training tokens/s of one run on one process and on several (torchrun, DDP) with the same
global batch, and the scaling efficiency.

Every configuration runs `flashgau train` for real, as a user would (`torchrun --standalone --nproc_per_node P -m
flashgau train ...` when P > 1), each process with OMP_NUM_THREADS threads: --warmup untimed steps, then --steps
timed ones. tokens/s = the training tokens of the timed steps / their wall time, read from the run's metrics.jsonl
(rank 0's clock; a step ends when every process has finished it). Configurations take turns, --repeats times; the
median is reported. The runs stop before their last step, so no held-out scoring or sample is timed or run.

On a CPU the configurations are 1 process x 1 thread, 1 process x N threads and N processes x 1 thread (N = the
cores, or --processes): the same N cores used by threads or by processes. On CUDA: 1 process on one GPU and N
processes on N GPUs. Scaling efficiency of N processes = their tokens/s / (N x the tokens/s of 1 process x 1 thread,
or of 1 GPU). Writes <out>/scaling.{md,json} (scaling-quick with --quick).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from ..errors import ConfigError, FlashgauError
from ..runtime import resolve_device
from ..training.metrics import read_metrics
from . import common

DEFAULTS = dict(arch="flash", preset="small", context=2048, batch_tokens=4096, steps=8, warmup=2, repeats=2,
                precision="fp32")
QUICK = dict(preset="tiny", context=512, steps=4, warmup=1, repeats=1)


@dataclass
class ScalingSettings:
    arch: str
    preset: str
    context: int
    batch_tokens: int
    steps: int
    warmup: int
    repeats: int
    precision: str
    processes: int
    configs: list            # [processes, threads per process] of each configuration
    data: Optional[str]
    device: str
    quick: bool

    @property
    def stem(self) -> str:
        return "scaling-quick" if self.quick else "scaling"

    def command(self) -> str:
        return (f"flashgau bench scaling --arch {self.arch} --preset {self.preset} --context {self.context} "
                f"--batch-tokens {self.batch_tokens} --steps {self.steps} --warmup {self.warmup} --repeats "
                f"{self.repeats} --processes {self.processes} --precision {self.precision} --device {self.device}"
                + (f" --data {self.data}" if self.data else ""))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    D, Q = DEFAULTS, QUICK
    parser.add_argument("--arch", default=None, help=f"the model's arch (default: {D['arch']})")
    parser.add_argument("--preset", default=None, help=f"model size (default: {D['preset']}; --quick: {Q['preset']})")
    parser.add_argument("--context", type=int, default=None, help=f"tokens per window (default: {D['context']}; "
                        f"--quick: {Q['context']})")
    parser.add_argument("--batch-tokens", type=int, default=None, help="the global batch: tokens per optimizer step, "
                        f"the same in every configuration (default: {D['batch_tokens']})")
    parser.add_argument("--steps", type=int, default=None, help=f"timed steps per run (default: {D['steps']}; "
                        f"--quick: {Q['steps']})")
    parser.add_argument("--warmup", type=int, default=None, help=f"untimed steps first (default: {D['warmup']}; "
                        f"--quick: {Q['warmup']})")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each configuration, configurations taking "
                        f"turns (default: {D['repeats']}; --quick: {Q['repeats']})")
    parser.add_argument("--processes", type=int, default=None, help="N: the processes of the data-parallel "
                        "configuration, and the threads of the one-process one on a CPU (default: the CPU's cores; "
                        "on CUDA the GPUs)")
    parser.add_argument("--data", default=None, metavar="PATH", help="training data, as for flashgau train --data "
                        "(default: the default corpus)")
    common.add_common_arguments(parser, precision_default=D["precision"])
    parser.add_argument("--quick", action="store_true", help="tiny preset, context 512, a few steps: a smoke run")


def settings_from_args(args: argparse.Namespace) -> ScalingSettings:
    o = common.options(args, DEFAULTS, QUICK)
    device = resolve_device(args.device)
    if device.type == "cuda":
        n = args.processes or torch.cuda.device_count()
        configs = [[1, 1]] + ([[n, 1]] if n > 1 else [])
    else:
        n = args.processes or os.cpu_count() or 1
        configs = [[1, 1]] + ([[1, n], [n, 1]] if n > 1 else [])
    for name, value in (("context", o["context"]), ("batch-tokens", o["batch_tokens"]), ("steps", o["steps"]),
                        ("repeats", o["repeats"]), ("processes", n)):
        if not value >= 1:
            raise ConfigError(f"--{name} must be a positive integer, got {value}")
    if not o["warmup"] >= 1:
        raise ConfigError(f"--warmup must be at least 1 (the first step pays one-time costs), got {o['warmup']}")
    windows = -(-o["batch_tokens"] // o["context"])
    if windows % n:
        raise ConfigError(f"the global batch of {windows} windows does not split over {n} processes; give "
                          f"--batch-tokens a multiple of {n} x {o['context']}")
    return ScalingSettings(arch=o["arch"], preset=o["preset"], context=o["context"], batch_tokens=o["batch_tokens"],
                           steps=o["steps"], warmup=o["warmup"], repeats=o["repeats"],
                           precision=args.precision or DEFAULTS["precision"], processes=n, configs=configs,
                           data=args.data, device=str(device), quick=bool(args.quick))


def run(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    device = torch.device(s.device)
    print(f"{s.arch} {s.preset}, context {s.context}, {s.batch_tokens} tokens per step, {s.precision} on {s.device}: "
          f"{s.warmup} + {s.steps} steps per run, {s.repeats} round(s) of "
          + ", ".join(label(p, t, device) for p, t in s.configs), flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="flashgau-scaling-") as work:
        for repeat in range(s.repeats):
            for processes, threads in s.configs:
                row = measure(s, processes, threads, Path(work) / f"p{processes}x{threads}-{repeat}")
                runs.append({"processes": processes, "threads": threads, "repeat": repeat, **row})
                print(f"  {label(processes, threads, device):<26} {row['tokens_per_s']:10,.0f} tok/s  "
                      f"{row['step_seconds']:.3f} s/step", flush=True)
    summary = summarize(runs, device)
    report = dict(benchmark="scaling", command=s.command(), settings=asdict(s), env=common.environment(device),
                  runs=runs, summary=summary, headline=headline(summary, device))
    out = common.results_folder(args.out, device)
    common.write_json(out / f"{s.stem}.json", report)
    common.write_text(out / f"{s.stem}.md", markdown(report))
    print(f"wrote {out / s.stem}.md, .json")
    for line in report["headline"]:
        print(line["text"])
    return 0


def label(processes: int, threads: int, device: torch.device) -> str:
    if device.type == "cuda":
        return f"{processes} process{'es' if processes > 1 else ''} ({processes} GPU{'s' if processes > 1 else ''})"
    return f"{processes} process{'es' if processes > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"


def measure(s: ScalingSettings, processes: int, threads: int, out: Path) -> dict:
    """One `flashgau train` of warmup + steps steps; its tokens/s over the timed steps."""
    total = s.warmup + s.steps
    argv = ["train", "--arch", s.arch, "--preset", s.preset, "--context", str(s.context), "--batch-tokens",
            str(s.batch_tokens), "--steps", str(total + 1), "--stop-after", str(total), "--eval-every", str(total + 1),
            "--save-every", str(total + 1), "--sample-tokens", "0", "--precision", s.precision, "--device", s.device,
            "--seed", "0", "--no-progress", "--overwrite", "--out", str(out)] + (["--data", s.data] if s.data else [])
    launcher = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                        "--nproc_per_node", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([*launcher, "-m", "flashgau", *argv], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-3:]
        raise FlashgauError(f"the run of {processes} process(es) x {threads} thread(s) failed (exit "
                            f"{proc.returncode}): {' | '.join(tail)}")
    steps = {r["step"]: r for r in read_metrics(out / "metrics.jsonl") if r.get("kind") == "train"}
    if sorted(steps) != list(range(1, total + 1)):
        raise FlashgauError(f"the run of {processes} process(es) logged steps {sorted(steps)}, not 1..{total}")
    first, last = steps[s.warmup], steps[total]
    seconds = last["elapsed"] - first["elapsed"]
    per_step = [steps[i]["elapsed"] - steps[i - 1]["elapsed"] for i in range(s.warmup + 1, total + 1)]
    return {"tokens_per_s": (last["tokens"] - first["tokens"]) / seconds, "step_seconds": statistics.median(per_step),
            "timed_steps": s.steps, "timed_seconds": seconds}


def summarize(runs: list[dict], device: torch.device) -> list[dict]:
    """Per configuration: the median tokens/s (min, max), s/step, the ratio to 1 process x 1 thread and, for
    several processes, the scaling efficiency and the ratio to 1 process with as many threads."""
    configs = []
    for run in runs:
        if (run["processes"], run["threads"]) not in configs:
            configs.append((run["processes"], run["threads"]))
    rows = []
    for processes, threads in configs:
        mine = [r for r in runs if (r["processes"], r["threads"]) == (processes, threads)]
        tps = [r["tokens_per_s"] for r in mine]
        rows.append({"processes": processes, "threads": threads, "label": label(processes, threads, device),
                     "tokens_per_s": statistics.median(tps), "min": min(tps), "max": max(tps),
                     "step_seconds": statistics.median(r["step_seconds"] for r in mine), "runs": len(mine)})
    base = next((r for r in rows if (r["processes"], r["threads"]) == (1, 1)), None)
    for row in rows:
        row["vs_one"] = row["tokens_per_s"] / base["tokens_per_s"] if base else None
        if row["processes"] > 1 and base:
            row["efficiency"] = row["tokens_per_s"] / (row["processes"] * base["tokens_per_s"])
            threaded = next((r for r in rows if (r["processes"], r["threads"]) == (1, row["processes"])), None)
            row["vs_threads"] = row["tokens_per_s"] / threaded["tokens_per_s"] if threaded else None
    return rows


def headline(summary: list[dict], device: torch.device) -> list[dict]:
    lines = []
    for row in summary:
        if row["processes"] > 1:
            text = (f"{row['label']}: {row['tokens_per_s']:,.0f} tokens/s, {row['vs_one']:.2f}x 1 process"
                    + ("" if device.type == "cuda" else " x 1 thread")
                    + f" (scaling efficiency {100 * row['efficiency']:.0f}%)")
            if row.get("vs_threads") is not None:
                text += (f"; {row['vs_threads']:.2f}x 1 process x {row['processes']} threads "
                         f"({100 * (row['vs_threads'] - 1):+.0f}%)")
            lines.append({"text": text, **{k: row.get(k) for k in ("efficiency", "vs_one", "vs_threads")}})
    return lines


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [f"# Data-parallel scaling: tokens/s on 1 and {s['processes']} processes",
             "",
             "FLASH here is the paper's model (Hua et al. 2022), not FlashAttention. Each row is `flashgau train` run "
             "as a user runs it (`torchrun --standalone --nproc_per_node P -m flashgau train` for P > 1, DDP over "
             "gloo on a CPU, NCCL on GPUs), with the same global batch in every row: "
             f"{s['arch']} {s['preset']}, context {s['context']}, {s['batch_tokens']} tokens per step, "
             f"{s['precision']}. tokens/s over {s['steps']} timed steps after {s['warmup']} untimed ones, from the "
             f"run's metrics (rank 0's clock); median of {s['repeats']} run(s) per row, rows taking turns. "
             "Scaling efficiency = tokens/s of P processes / (P x tokens/s of 1 process x 1 thread).",
             "",
             "Run environment:",
             "",
             common.env_markdown(report["env"]).rstrip("\n"),
             "",
             "| configuration | tokens/s (median) | min–max | s/step | × 1 process x 1 thread | scaling efficiency "
             "| × 1 process, same threads |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in report["summary"]:
        eff = f"{100 * row['efficiency']:.0f}%" if row.get("efficiency") is not None else "–"
        vs_threads = f"{row['vs_threads']:.2f}×" if row.get("vs_threads") is not None else "–"
        lines.append(f"| {row['label']} | {row['tokens_per_s']:,.0f} | {row['min']:,.0f}–{row['max']:,.0f} | "
                     f"{row['step_seconds']:.3f} | {row['vs_one']:.2f}× | {eff} | {vs_threads} |")
    lines += ["", "Headline:", ""] + [f"- {h['text']}" for h in report["headline"]] + [
        "", f"Reproduce: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    return common.main("scaling", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
