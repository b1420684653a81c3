"""<out>/summary.md: the headline table, shaped like the paper's PG-19 table, joining the speed report (step time
at fixed tokens per step) and the quality report (held-out perplexity, speedup to Transformer+'s loss), with the
measured ratios of both reports and the machine they came from."""

from __future__ import annotations

from pathlib import Path

from .common import fmt_ctx, machine_line, md_table, read_json, unique, write_text


def write_summary(out, quick: bool = False) -> Path:
    out = Path(out)
    sfx = "-quick" if quick else ""
    speed = read_json(out / f"speed{sfx}.json")
    quality = read_json(out / f"quality{sfx}.json")
    L = ["# flashgau benchmarks: headline", "",
         "FLASH is the paper's model (Hua et al. 2022), not FlashAttention. Latency: median training step (fp32, "
         "fixed tokens per step) from speed.md; perplexity (per byte) and speedup (training time to reach "
         "Transformer+'s final held-out loss) from quality.md. Commands and settings are in those reports.", ""]
    if speed and quality:
        machines = unique((rep["env"]["machine"] for rep in (speed, quality)), machine_line)
        L += [f"Machine: {machine_line(m)}." for m in machines] + [""]
        ctxs = sorted(set(quality["settings"]["contexts"]))
        series = (quality["settings"].get("series") or ["time"])[0]
        rows = []
        for a in quality["settings"]["archs"]:
            cells = []
            for T in ctxs:
                sm = quality["summary"].get(series, {}).get(f"{a}@{T}")
                ppl = f"{sum(sm['ppl']) / len(sm['ppl']):.3f}" if sm else "–"
                sps = sm["speedup"] if sm else []
                sp = f"{sum(sps) / len(sps):.2f}×" if sps and all(x is not None for x in sps) else "–"
                lat = next((r for r in speed["rows"] if r["arch"] == a and r["context"] == T
                            and r["series"] == "tokens" and r["precision"] == "fp32" and not r.get("skipped")), None)
                cells += [ppl, f"{lat['median'] * 1e3:.0f} ms" if lat else "–", sp]
            rows.append([a, *cells])
        L += md_table(["Model", *[c for T in ctxs for c in (f"{fmt_ctx(T)} ppl", "lat.", "speedup")]], rows)
        lines = speed.get("headline", []) + quality.get("headline", [])
        L += ["", "Measured ratios:", ""] + [f"- {h['text']}" for h in lines]
    else:
        L.append("(run both `flashgau bench speed` and `flashgau bench quality` first)")
    return write_text(out / f"summary{sfx}.md", "\n".join(L) + "\n")
