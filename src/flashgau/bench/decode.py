"""`flashgau bench decode`: per-token decode latency and decoding-state memory against position.

For each position p (up to 16K) and each arch, interleaved: prefill p real tokens in parallel (batch 1 by default),
then time `--steps` single-token decode steps after `--warmup` untimed ones; the latency at p is their median.
State memory is the bytes held by the per-layer decoding states (FlashState or KV cache) after the steps.
Writes benchmarks/results/decode.{md,json,png}. Targets (issue 4): FLASH latency at 16K within 1.2x of its latency
at 256; FLASH >= 2x the tokens/s of Transformer++ (KV cache) at 8K.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ..config import ModelConfig
from ..model import LanguageModel
from .machine import describe_machine

DEFAULT_ARCHS = ("flash", "flash-quad", "transformer++")
DEFAULT_POSITIONS = (256, 1024, 2048, 4096, 8192, 16384)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archs", nargs="+", default=list(DEFAULT_ARCHS), help="archs to compare")
    parser.add_argument("--preset", default="small", help="model size shared by every arch (default: small)")
    parser.add_argument("--positions", nargs="+", type=int, default=list(DEFAULT_POSITIONS),
                        help="prompt lengths at which to time decoding")
    parser.add_argument("--steps", type=int, default=16, help="timed decode steps per point")
    parser.add_argument("--warmup", type=int, default=4, help="untimed decode steps before timing")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --steps per arch, archs taking turns")
    parser.add_argument("--batch", type=int, default=1, help="rows decoded together")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 = CPU autocast")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: a token's work is many small ops, where a second OpenMP "
                             "thread adds synchronisation and stalls badly on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results", help="folder for decode.md/.json/.png")
    parser.add_argument("--quick", action="store_true", help="positions 256..2048, tiny steps: a smoke run")


def _prefill(model: LanguageModel, position: int, args):
    gen = torch.Generator().manual_seed(args.seed + position)
    prompt = torch.randint(0, model.config.vocab_size, (args.batch, position), generator=gen)
    with _autocast(args):
        t0 = time.perf_counter()
        _, state = model.prefill(prompt, capacity=position + args.warmup + args.rounds * args.steps)
    return state, time.perf_counter() - t0


def _autocast(args):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")


def _time_steps(model: LanguageModel, state, n: int, args) -> list[float]:
    tokens = torch.randint(0, model.config.vocab_size, (n, args.batch), generator=torch.Generator().manual_seed(n))
    times = []
    with _autocast(args):
        for i in range(n):
            t0 = time.perf_counter()
            model.decode_step(tokens[i], state)
            times.append(time.perf_counter() - t0)
    return times


def _measure_position(models: dict, position: int, args) -> dict:
    """Prefill every arch to `position`, then time decode steps in rounds, archs taking turns within each round,
    so a slow spell on the shared machine hits every arch alike. Latency = median over all timed steps."""
    states, prefill_s, times = {}, {}, {arch: [] for arch in models}
    for arch, model in models.items():
        states[arch], prefill_s[arch] = _prefill(model, position, args)
        _time_steps(model, states[arch], args.warmup, args)
    for _ in range(args.rounds):
        for arch, model in models.items():
            times[arch] += _time_steps(model, states[arch], args.steps, args)
    rows = {}
    for arch, ts in times.items():
        ts = sorted(ts)
        med = statistics.median(ts)
        rows[arch] = dict(position=position, latency_ms=1e3 * med, latency_p10_ms=1e3 * ts[len(ts) // 10],
                          latency_p90_ms=1e3 * ts[(9 * len(ts)) // 10], latency_min_ms=1e3 * ts[0],
                          latency_max_ms=1e3 * ts[-1], tokens_per_s=args.batch / med,
                          state_bytes=states[arch].nbytes(), prefill_s=prefill_s[arch])
    return rows


def run(args) -> int:
    if args.quick:
        args.positions = [p for p in args.positions if p <= 2048] or [256]
        args.steps, args.warmup, args.rounds = min(args.steps, 8), min(args.warmup, 2), min(args.rounds, 2)
    bad = [p for p in args.positions if p < 1]
    if bad or args.steps < 1 or args.batch < 1 or args.warmup < 0 or args.rounds < 1 or args.threads < 1:
        print("flashgau bench decode: error: positions, --steps and --batch must be positive", file=sys.stderr)
        return 2
    max_len = max(args.positions) + args.warmup + args.rounds * args.steps
    torch.set_num_threads(args.threads)
    models = {}
    for arch in args.archs:
        try:
            cfg = ModelConfig.preset(args.preset, arch=arch, vocab_size=256, causal=True,
                                     max_seq_len=max(max_len, 512))
        except ValueError as err:
            print(f"flashgau bench decode: error: {err}", file=sys.stderr)
            return 2
        torch.manual_seed(args.seed)
        models[arch] = LanguageModel(cfg).eval()
        print(f"{arch}: {models[arch].num_parameters():,} parameters", flush=True)
    results = {arch: [] for arch in args.archs}
    for position in sorted(args.positions):          # archs interleaved at every position
        rows = _measure_position(models, position, args)
        for arch, row in rows.items():
            results[arch].append(row)
            print(f"  position {position:>6}  {arch:<15} {row['latency_ms']:8.2f} ms/token  "
                  f"{row['tokens_per_s']:8.1f} tok/s  state {row['state_bytes'] / 2**20:8.2f} MiB", flush=True)
    report = dict(benchmark="decode", command=_command(args),
                  preset=args.preset, batch=args.batch, precision=args.precision, steps=args.steps,
                  rounds=args.rounds,
                  warmup=args.warmup, seed=args.seed, machine=describe_machine(), results=results,
                  targets=_targets(results))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = report["stem"] = "decode-quick" if args.quick else "decode"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(_markdown(report))
    _plot(report, out / f"{stem}.png")
    print(f"wrote {out / stem}.md, .json, .png")
    for line in report["targets"]:
        print(line["text"])
    return 0


def _command(args) -> str:
    """The command line that reproduces this run."""
    return (f"flashgau bench decode --archs {' '.join(args.archs)} --preset {args.preset} --positions "
            f"{' '.join(map(str, args.positions))} --steps {args.steps} --warmup {args.warmup} --batch {args.batch} "
            f"--rounds {args.rounds} --threads {args.threads} --precision {args.precision} --seed {args.seed}")


def _at(rows: list[dict], position: int):
    for row in rows:
        if row["position"] == position:
            return row
    return None


def _targets(results: dict) -> list[dict]:
    out = []
    flash = results.get("flash", [])
    if flash:
        lo, hi = flash[0], flash[-1]
        ratio = hi["latency_ms"] / lo["latency_ms"]
        out.append(dict(name="flash_latency_flat", value=ratio, target=1.2, met=ratio <= 1.2,
                        text=f"FLASH latency at {hi['position']} / at {lo['position']}: {ratio:.2f}x "
                             f"(target <= 1.2x): {'met' if ratio <= 1.2 else 'MISSED'}"))
    f8, t8 = _at(flash, 8192), _at(results.get("transformer++", []), 8192)
    if f8 and t8:
        speed = f8["tokens_per_s"] / t8["tokens_per_s"]
        out.append(dict(name="flash_vs_tfmpp_8k", value=speed, target=2.0, met=speed >= 2.0,
                        text=f"FLASH tokens/s / Transformer++ tokens/s at 8192: {speed:.2f}x (target >= 2x): "
                             f"{'met' if speed >= 2.0 else 'MISSED'}"))
    return out


def _markdown(report: dict) -> str:
    archs = list(report["results"])
    positions = [r["position"] for r in report["results"][archs[0]]]
    m = report["machine"]
    lines = [f"# Decode latency and state memory against position ({report['preset']} preset)", "",
             f"Command: `{report['command']}`  ",
             f"Machine: {m['cpu']}, {m['threads']} torch threads, torch {m['torch']}, flashgau {m['flashgau']}, "
             f"{m['date']}  ",
             f"Batch {report['batch']}, {report['precision']}, median of {report['rounds']} rounds x "
             f"{report['steps']} steps after {report['warmup']} warm-up steps, seed {report['seed']}. One run; at each "
             "position every arch is prefilled, then the archs take turns round by round.", "",
             "## Per-token latency (ms, median [10th-90th percentile]) and tokens/s", "",
             "| position | " + " | ".join(archs) + " | " + " | ".join(f"{a} tok/s" for a in archs) + " |",
             "|---:|" + "---:|" * (2 * len(archs))]
    for i, p in enumerate(positions):
        cells = [f"{r['latency_ms']:.2f} [{r['latency_p10_ms']:.2f}-{r['latency_p90_ms']:.2f}]"
                 for r in (report["results"][a][i] for a in archs)]
        tps = [f"{report['results'][a][i]['tokens_per_s']:.0f}" for a in archs]
        lines.append(f"| {p} | " + " | ".join(cells) + " | " + " | ".join(tps) + " |")
    lines += ["", "## Decoding state per sequence (MiB, all layers)", "",
              "| position | " + " | ".join(archs) + " |", "|---:|" + "---:|" * len(archs)]
    for i, p in enumerate(positions):
        cells = [f"{report['results'][a][i]['state_bytes'] / report['batch'] / 2**20:.2f}" for a in archs]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets (issue 4)", ""] + [f"- {t['text']}" for t in report["targets"]]
    lines += ["", f"![decode latency and state memory]({report['stem']}.png)", ""]
    return "\n".join(lines)


def _plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arch, rows in report["results"].items():
        pos = [r["position"] for r in rows]
        ax1.plot(pos, [r["latency_ms"] for r in rows], marker="o", label=arch)
        ax2.plot(pos, [r["state_bytes"] / report["batch"] / 2**20 for r in rows], marker="o", label=arch)
    for ax, title, unit in ((ax1, "per-token decode latency", "ms / token"),
                            (ax2, "decoding state per sequence", "MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("position (tokens already in the sequence)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Decoding, {report['preset']} preset, batch {report['batch']}, {report['precision']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="flashgau bench decode", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
