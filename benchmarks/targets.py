"""Check the acceptance targets of past issues against the benchmark reports' JSON (the package's reports state
measured numbers only; the targets live here). Run from the repository root:

    .venv/bin/python benchmarks/targets.py [--results benchmarks/results] [--quick]

Issue 5 (speed, small preset, fp32, 16384 tokens per step): FLASH's batch-1 step grows at most 4.4x from 4K to
16K; FLASH is at least 1.8x faster than Transformer++ at 8K and 3x at 16K (eager and compiled); FLASH reaches 40%
of the fp32 matmul peak at 8K; FLASH's bf16 step is faster than its fp32 step. Issue 5 (quality): at 4K and equal
training time FLASH's held-out loss is no worse than Transformer++'s, per seed. Issue 4 (decode): FLASH's
per-token latency at the longest position is within 1.2x of the shortest; FLASH decodes at least 2x the tokens/s
of Transformer++ at 8K.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional


def _target(name: str, value: float, goal: float, met: bool, text: str) -> dict:
    return dict(name=name, value=value, target=goal, met=met, text=f"{text}: {'met' if met else 'MISSED'}")


def _ctx(t: int) -> str:
    return f"{t // 1024}K"


def _find(rows: list[dict], arch: str, series: str, T: int, prec: str) -> Optional[dict]:
    return next((r for r in rows if (r["arch"], r["series"], r["context"], r["precision"]) == (arch, series, T, prec)
                 and not r.get("skipped")), None)


def _batch1(rows: list[dict], arch: str, T: int, prec: str) -> Optional[dict]:
    r = _find(rows, arch, "batch", T, prec) or _find(rows, arch, "tokens", T, prec)
    return r if r and r["batch"] == 1 else None


def speed_targets(rows: list[dict], tokens_per_step: int) -> list[dict]:
    out = []
    a, b = _batch1(rows, "flash", 4096, "fp32"), _batch1(rows, "flash", 16384, "fp32")
    if a and b:
        ratio = b["median"] / a["median"]
        out.append(_target("flash_linear_4k_16k", ratio, 4.4, ratio <= 4.4, f"FLASH fp32 step time 16K / 4K at "
                           f"batch 1: {ratio:.2f}x (target <= 4.4x; tokens grow 4x)"))
    for series, mode, sfx in (("tokens", "eager", ""), ("compiled", "torch.compile", "_compiled")):
        for T, goal in ((8192, 1.8), (16384, 3.0)):
            f, t = _find(rows, "flash", series, T, "fp32"), _find(rows, "transformer++", series, T, "fp32")
            if f and t:
                sp = t["median"] / f["median"]
                fr = f"; model-FLOP ratio {t['flops'] / f['flops']:.2f}x" if f.get("flops") and t.get("flops") else ""
                out.append(_target(f"flash_vs_tfmpp_{T}{sfx}", sp, goal, sp >= goal,
                                   f"FLASH vs Transformer++ fp32 step at {_ctx(T)}, {mode} ({tokens_per_step} "
                                   f"tokens/step): {sp:.2f}x faster (target >= {goal}x{fr})"))
        f = _find(rows, "flash", series, 8192, "fp32")
        if f and f.get("mfu") is not None:
            out.append(_target(f"flash_mfu_8k{sfx}", f["mfu"], 0.40, f["mfu"] >= 0.40,
                               f"FLASH fp32 MFU at 8K, {mode}: {f['mfu']:.1%} of the measured fp32 matmul peak "
                               f"({f['peak_fp32'] / 1e9:.0f} GFLOP/s) (target >= 40%)"))
    for T in (8192, 16384, 4096):
        f32, f16 = _find(rows, "flash", "tokens", T, "fp32"), _find(rows, "flash", "tokens", T, "bf16")
        if f32 and f16:
            sp = f32["median"] / f16["median"]
            out.append(_target(f"flash_bf16_faster_{T}", sp, 1.0, sp > 1.0,
                               f"FLASH bf16 step vs fp32 step at {_ctx(T)}: {sp:.2f}x faster (target > 1x)"))
            break
    return out


def quality_targets(comparisons: list[dict]) -> list[dict]:
    out = []
    for c in comparisons:
        f = c["rows"].get("flash", {})
        if c["context"] != 4096 or c.get("series", "time") != "time" or f.get("delta_vs_tfmpp") is None:
            continue
        d = f["delta_vs_tfmpp"]
        out.append(_target(f"flash_vs_tfmpp_quality_4k_seed{c['seed']}", d, 0.0, d <= 0,
                           f"4K context, seed {c['seed']}, equal training time {f['equal_time']:.0f} s: FLASH "
                           f"held-out loss {f['loss_at_equal_time']:.4f} vs Transformer++ "
                           f"{f['baseline_loss_at_equal_time']:.4f} (difference {d:+.4f} nats; target <= 0)"))
    return out


def decode_targets(results: dict) -> list[dict]:
    out = []
    flash = results.get("flash", [])
    if flash:
        lo, hi = flash[0], flash[-1]
        ratio = hi["latency_ms"] / lo["latency_ms"]
        out.append(_target("flash_latency_flat", ratio, 1.2, ratio <= 1.2, f"FLASH latency at {hi['position']} / "
                           f"at {lo['position']}: {ratio:.2f}x (target <= 1.2x)"))
    f8 = next((r for r in flash if r["position"] == 8192), None)
    t8 = next((r for r in results.get("transformer++", []) if r["position"] == 8192), None)
    if f8 and t8:
        speed = f8["tokens_per_s"] / t8["tokens_per_s"]
        out.append(_target("flash_vs_tfmpp_8k", speed, 2.0, speed >= 2.0, "FLASH tokens/s / Transformer++ "
                           f"tokens/s at 8192: {speed:.2f}x (target >= 2x)"))
    return out


def check(results: Path, quick: bool = False) -> list[dict]:
    """Every target the reports under `results` have numbers for."""
    sfx = "-quick" if quick else ""

    def load(name):
        path = results / f"{name}{sfx}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    speed, quality, decode = load("speed"), load("quality"), load("decode")
    out = []
    if speed:
        out += speed_targets(speed["rows"], speed["settings"]["tokens_per_step"])
    if quality:
        out += quality_targets(quality["comparisons"])
    if decode:
        out += decode_targets(decode["results"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="benchmarks/results", help="folder of the reports' JSON")
    p.add_argument("--quick", action="store_true", help="check the *-quick.json reports")
    a = p.parse_args(argv)
    for t in check(Path(a.results), a.quick):
        print(f"- {t['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
