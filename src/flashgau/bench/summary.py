"""benchmarks/results/summary.md: the headline table, shaped like the paper's PG-19 table, joining the speed report
(step time at fixed tokens per step) and the quality report (held-out perplexity, speedup to Transformer+'s loss)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import fmt_ctx, write_text


def write_summary(out, quick: bool = False) -> Path:
    out = Path(out)
    sfx = "-quick" if quick else ""
    speed = _load(out / f"speed{sfx}.json")
    quality = _load(out / f"quality{sfx}.json")
    L = ["# flashgau benchmarks: headline", "",
         "FLASH is the paper's model (Hua et al. 2022), not FlashAttention. Latency: median training step (fp32, "
         "fixed tokens per step) from speed.md; perplexity (per byte) and speedup (training time to reach "
         "Transformer+'s final held-out loss) from quality.md. Commands, machine and settings are in those reports.",
         ""]
    if speed and quality:
        ctxs = sorted(set(quality["settings"]["contexts"]))
        archs = quality["settings"]["archs"]
        L += ["| Model | " + " | ".join(f"{fmt_ctx(T)} ppl | lat. | speedup" for T in ctxs) + " |",
              "|---|" + "---:|---:|---:|" * len(ctxs)]
        for a in archs:
            cells = []
            for T in ctxs:
                sm = quality["summary"].get(f"{a}@{T}")
                ppl = f"{sum(sm['ppl']) / len(sm['ppl']):.3f}" if sm else "–"
                sps = sm["speedup"] if sm else []
                sp = f"{sum(sps) / len(sps):.2f}×" if sps and all(x is not None for x in sps) else "–"
                lat = next((r for r in speed["rows"] if r["arch"] == a and r["context"] == T
                            and r["series"] == "tokens" and r["precision"] == "fp32" and "skipped" not in r), None)
                cells.append(f"{ppl} | {lat['median'] * 1e3:.0f} ms | {sp}" if lat else f"{ppl} | – | {sp}")
            L.append(f"| {a} | " + " | ".join(cells) + " |")
        L += ["", "Targets:", ""] + [f"- {t['text']}" for t in speed["targets"] + quality["targets"]]
    else:
        L.append("(run both `flashgau bench speed` and `flashgau bench quality` first)")
    return write_text(out / f"summary{sfx}.md", "\n".join(L) + "\n")


def _load(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
