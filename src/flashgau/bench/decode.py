"""`flashgau bench decode`: per-token decode latency and decoding-state memory against position.

For each position p (up to 16K) and each arch, interleaved: prefill p real tokens in parallel (batch 1 by default),
then time `--steps` single-token decode steps after `--warmup` untimed ones, on the chosen device (CUDA work is
synchronized around every timed step); the latency at p is their median. State memory is the bytes held by the
per-layer decoding states (FlashState or KV cache) after the steps. Writes <out>/decode.{md,json,png}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..config import ModelConfig
from ..errors import ConfigError
from ..model import LanguageModel
from ..runtime import resolve_device, resolve_precision
from . import common

DEFAULTS = dict(archs=("flash", "flash-quad", "transformer++"), positions=(256, 1024, 2048, 4096, 8192, 16384),
                steps=16, warmup=4, rounds=3, precision="fp32")
QUICK = dict(positions=(256, 1024, 2048), steps=8, warmup=2, rounds=2)


@dataclass
class DecodeSettings:
    archs: list[str]
    preset: str
    positions: list[int]
    steps: int
    warmup: int
    rounds: int
    batch: int
    precision: str            # the precision that runs ("auto" resolved), `precision_reason` says why
    precision_reason: str
    threads: int
    seed: int
    quick: bool
    device: str

    @property
    def stem(self) -> str:
        return "decode-quick" if self.quick else "decode"

    def command(self) -> str:
        """The command line that reproduces this run."""
        return (f"flashgau bench decode --archs {' '.join(self.archs)} --preset {self.preset} --positions "
                f"{' '.join(map(str, self.positions))} --steps {self.steps} --warmup {self.warmup} --batch "
                f"{self.batch} --rounds {self.rounds} --threads {self.threads} --device {self.device} --precision "
                f"{self.precision} --seed {self.seed}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    D, Q = DEFAULTS, QUICK
    parser.add_argument("--archs", nargs="+", default=None, help=f"archs to compare (default: {' '.join(D['archs'])})")
    parser.add_argument("--preset", default="small", help="model size shared by every arch (default: small)")
    parser.add_argument("--positions", nargs="+", type=int, default=None,
                        help=f"prompt lengths at which to time decoding (default: {' '.join(map(str, D['positions']))}"
                             f"; --quick: {' '.join(map(str, Q['positions']))})")
    parser.add_argument("--steps", type=int, default=None, help=f"timed decode steps per point and round "
                        f"(default: {D['steps']}; --quick: {Q['steps']})")
    parser.add_argument("--warmup", type=int, default=None, help=f"untimed decode steps before timing "
                        f"(default: {D['warmup']}; --quick: {Q['warmup']})")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of --steps per arch, archs taking turns "
                        f"(default: {D['rounds']}; --quick: {Q['rounds']})")
    parser.add_argument("--batch", type=int, default=1, help="rows decoded together (default: 1)")
    common.add_common_arguments(parser, precision_default=D["precision"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: a token's work is many small ops, where a second OpenMP "
                             "thread adds synchronisation and stalls badly on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="positions 256..2048, fewer steps: a smoke run")


def settings_from_args(args) -> DecodeSettings:
    o = common.options(args, DEFAULTS, QUICK)
    if min(o["positions"]) < 1 or o["steps"] < 1 or args.batch < 1 or o["warmup"] < 0 or o["rounds"] < 1 \
            or args.threads < 1:
        raise ConfigError("positions, --steps, --batch, --rounds and --threads must be positive, --warmup >= 0")
    for arch in o["archs"]:
        try:
            ModelConfig.preset(args.preset, arch=arch)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    device = resolve_device(args.device)
    precision = resolve_precision(o["precision"], device)
    return DecodeSettings(archs=list(o["archs"]), preset=args.preset, positions=sorted(o["positions"]),
                          steps=o["steps"], warmup=o["warmup"], rounds=o["rounds"], batch=args.batch,
                          precision=precision.name, precision_reason=precision.reason, threads=args.threads,
                          seed=args.seed, quick=bool(args.quick), device=str(device))


def measure_position(models: dict, position: int, s: DecodeSettings) -> dict:
    """Prefill every arch to `position`, then time decode steps in rounds, archs taking turns within each round,
    so a slow spell on the shared machine hits every arch alike. Latency = median over all timed steps."""
    device = torch.device(s.device)
    autocast, sync = resolve_precision(s.precision, device).autocast, common.synchronizer(device)

    def timed(fn):
        with autocast():
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
            return out, time.perf_counter() - t0

    def random_tokens(shape, seed):
        return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed)).to(device)

    def steps(model, state, n):
        return [timed(lambda: model.decode_step(t, state))[1] for t in random_tokens((n, s.batch), n)]

    states, prefill_s, times = {}, {}, {arch: [] for arch in models}
    capacity = position + s.warmup + s.rounds * s.steps
    for arch, model in models.items():
        prompt = random_tokens((s.batch, position), s.seed + position)
        (_, states[arch]), prefill_s[arch] = timed(lambda: model.prefill(prompt, capacity=capacity))
        steps(model, states[arch], s.warmup)
    for _ in range(s.rounds):
        for arch, model in models.items():
            times[arch] += steps(model, states[arch], s.steps)
    rows = {}
    for arch, ts in times.items():
        ts = sorted(ts)
        med = statistics.median(ts)
        rows[arch] = dict(position=position, latency_ms=1e3 * med, latency_p10_ms=1e3 * ts[len(ts) // 10],
                          latency_p90_ms=1e3 * ts[(9 * len(ts)) // 10], latency_min_ms=1e3 * ts[0],
                          latency_max_ms=1e3 * ts[-1], tokens_per_s=s.batch / med,
                          state_bytes=states[arch].nbytes(), prefill_s=prefill_s[arch])
    return rows


def run(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    device = torch.device(s.device)
    max_len = max(s.positions) + s.warmup + s.rounds * s.steps
    torch.set_num_threads(s.threads)
    models = {}
    for arch in s.archs:
        cfg = ModelConfig.preset(s.preset, arch=arch, vocab_size=256, causal=True, max_seq_len=max(max_len, 512))
        torch.manual_seed(s.seed)
        models[arch] = LanguageModel(cfg).to(device).eval()
        print(f"{arch}: {models[arch].num_parameters():,} parameters", flush=True)
    print(f"device {s.device}, precision {s.precision} ({s.precision_reason})", flush=True)
    results = {arch: [] for arch in s.archs}
    for position in s.positions:          # archs interleaved at every position
        for arch, row in measure_position(models, position, s).items():
            results[arch].append(row)
            print(f"  position {position:>6}  {arch:<15} {row['latency_ms']:8.2f} ms/token  "
                  f"{row['tokens_per_s']:8.1f} tok/s  state {row['state_bytes'] / 2**20:8.2f} MiB", flush=True)
    report = dict(benchmark="decode", command=s.command(), settings=asdict(s), stem=s.stem,
                  env=common.environment(device), results=results, headline=headline(results))
    common.write_reports(common.results_folder(args.out, device), s.stem, report, markdown, plot)
    return 0


def headline(results: dict) -> list[dict]:
    """FLASH's latency across positions, and its tokens/s against every other arch's at each position: plain
    measured ratios, one line each."""
    flash = results.get("flash", [])
    if not flash:
        return []
    lo, hi = flash[0], flash[-1]
    out = [dict(name="flash_latency_growth", value=hi["latency_ms"] / lo["latency_ms"],
                text=f"FLASH latency at {hi['position']} / at {lo['position']}: "
                     f"{hi['latency_ms'] / lo['latency_ms']:.2f}x")]
    for arch, rows in results.items():
        other = {r["position"]: r for r in rows}
        values = {f["position"]: f["tokens_per_s"] / other[f["position"]]["tokens_per_s"]
                  for f in flash if f["position"] in other}
        if arch != "flash" and values:
            out.append(dict(name=f"flash_vs_{arch}_tokens_per_s", values=values,
                            text=f"FLASH tokens/s / {arch} tokens/s: "
                                 + ", ".join(f"{v:.2f}x at {p}" for p, v in values.items())))
    return out


def markdown(report: dict) -> str:
    s = report["settings"]
    archs = list(report["results"])
    res = report["results"]
    positions = [r["position"] for r in res[archs[0]]]
    lines = [f"# Decode latency and state memory against position ({s['preset']} preset, {s['device']})", "",
             f"Settings as a command: `{report['command']}`", "", "Run environment:", "",
             common.env_markdown(report["env"]),
             f"Batch {s['batch']}, {s['precision']} ({s['precision_reason']}), median of {s['rounds']} rounds x "
             f"{s['steps']} steps after {s['warmup']} warm-up steps, seed {s['seed']}. One run; at each position "
             "every arch is prefilled, then the archs take turns round by round.", "",
             "## Per-token latency (ms, median [10th-90th percentile]) and tokens/s", "",
             *common.md_table(["position", *archs, *(f"{a} tok/s" for a in archs)],
                              [[p, *(f"{res[a][i]['latency_ms']:.2f} [{res[a][i]['latency_p10_ms']:.2f}-"
                                     f"{res[a][i]['latency_p90_ms']:.2f}]" for a in archs),
                                *(f"{res[a][i]['tokens_per_s']:.0f}" for a in archs)]
                               for i, p in enumerate(positions)], left=0),
             "", "## Decoding state per sequence (MiB, all layers)", "",
             *common.md_table(["position", *archs],
                              [[p, *(f"{res[a][i]['state_bytes'] / s['batch'] / 2**20:.2f}" for a in archs)]
                               for i, p in enumerate(positions)], left=0),
             "", "## FLASH across positions and against the others", ""]
    lines += [f"- {h['text']}" for h in report["headline"]] or ["- (FLASH was not measured)"]
    lines += ["", f"![decode latency and state memory]({report['stem']}.png)", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    s = report["settings"]
    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    for arch, rows in report["results"].items():
        pos = [r["position"] for r in rows]
        ax1.plot(pos, [r["latency_ms"] for r in rows], marker="o", label=arch)
        ax2.plot(pos, [r["state_bytes"] / s["batch"] / 2**20 for r in rows], marker="o", label=arch)
    for ax, title, unit in ((ax1, "per-token decode latency", "ms / token"),
                            (ax2, "decoding state per sequence", "MiB")):
        common.log_axes(ax, title, "position (tokens already in the sequence)", unit)
        ax.legend()
    fig.suptitle(f"Decoding, {s['preset']} preset, batch {s['batch']}, {s['precision']}, {s['device']}")
    fig.tight_layout()
    common.save_figure(fig, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main("decode", add_arguments, run, argv)


if __name__ == "__main__":
    import sys
    sys.exit(main())
