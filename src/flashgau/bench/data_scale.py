"""`flashgau bench data-scale`: data at scale: `flashgau prepare` throughput and memory on a synthetic corpus built
from the bundled plays, and what a training start costs on the prepared corpus against the default corpus. Run it
with the CPU to itself:

    flock /tmp/flashgau-cpu.lock flashgau bench data-scale            # 2 GB, BPE on a 200 MB slice

It writes the corpus into a temporary folder (--work, deleted at the end unless --keep): copies of the 42 plays and
poems of the `shakespeare` package, each copy a distinct document (its first line names the copy, so none is a
duplicate), in folders of 42 files, until --size-gb. Then, each in a child process whose peak resident memory is
read from the kernel (os.wait4):

1. `flashgau prepare CORPUS --out BYTES` (byte tokens): MB/s over the whole corpus, and per pass.
2. `flashgau prepare SLICE --out BPE --tokenizer bpe` on the first --bpe-mb of the corpus (the BPE trains on its
   default 64 MiB sample of the training split): MB/s. BPE is measured on a slice because HF `tokenizers` encodes
   at about 1 MB/s on this machine, so the full corpus would take most of an hour.
3. Training starts (`train(..., stop_after=1)`, the default settings: small FLASH, context 512, 4096 tokens per
   step): on the default corpus with an empty cache (it is prepared on the fly), then --repeats times each,
   alternating, on the default corpus (from the cache: the usual start) and on the prepared 2 GB corpus. Time to
   the first step (from train() to the end of step 1, as metrics.jsonl records it), the data part of it alone
   (opening the data and indexing its windows, timed again after the run) and peak resident memory; medians.

Results: <out>/data.md and data.json (--name), with the machine. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import common

SOURCE = Path(__file__).resolve().parents[2]     # the folder that holds the flashgau package
START = """
import json, sys, time
t0 = time.perf_counter()
from flashgau.training import TrainConfig, train
imported = time.perf_counter() - t0
data, out = sys.argv[1] or None, sys.argv[2]
result = train(TrainConfig(data=data, steps=1000, sample_tokens=0, out=out), stop_after=1, progress=False,
               log=lambda s: None)
first = [json.loads(line) for line in open(out + "/metrics.jsonl")][0]
from flashgau.training.setup import prepare_data
t1 = time.perf_counter()
again = prepare_data(TrainConfig(data=data, steps=1))         # the data part of a start alone: open, index windows
again.sampler(512, 0), again.heldout(512)
print(json.dumps({"import_s": imported, "first_step_s": first["elapsed"], "data_s": time.perf_counter() - t1,
                  "documents": result.data.describe()}))
"""


def run_child(argv: list[str], env: dict) -> dict:
    """Run a child process; its wall time, exit status, peak resident memory (MiB) and last stdout line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed with status {proc.returncode}")
    lines = out.strip().splitlines()
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mib": usage.ru_maxrss / 1024,
            "last_line": lines[-1] if lines else ""}


def synthesize(folder: Path, size: int) -> tuple[int, int]:
    """Copies of the plays as distinct documents, until `size` bytes; returns (bytes, documents)."""
    from flashgau.data.corpus import shakespeare_documents

    plays = [(d.name, d.text.encode("utf-8")) for d in shakespeare_documents()]
    written = docs = copy = 0
    while written < size:
        sub = folder / f"copy{copy:05d}"
        sub.mkdir(parents=True)
        for name, raw in plays:
            head = f"[synthetic copy {copy} of {name}]\n".encode()
            (sub / f"{name}.txt").write_bytes(head + raw)
            written += len(head) + len(raw)
            docs += 1
            if written >= size:
                break
        copy += 1
    return written, docs


def slice_of(corpus: Path, folder: Path, size: int) -> int:
    """Hard links to the corpus's first files (in the order prepare reads them) up to `size` bytes."""
    total = 0
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        if total >= size:
            break
        target = folder / path.relative_to(corpus)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
        total += path.stat().st_size
    return total


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "torch": torch.__version__, "python": platform.python_version(),
            "commit": common.code_state()["git_commit"],
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size-gb", type=float, default=2.0, help="synthetic corpus size in GB (default: 2)")
    p.add_argument("--bpe-mb", type=float, default=200.0, help="size of the slice prepared with BPE (default: 200)")
    p.add_argument("--work", default=None, help="temporary folder (default: a new one under $TMPDIR)")
    p.add_argument("--out", default=common.DEFAULT_OUT, help=f"results folder (default: {common.DEFAULT_OUT})")
    p.add_argument("--name", default="data", help="report name (default: data -> data.md, data.json)")
    p.add_argument("--repeats", type=int, default=3, help="training starts per data, alternating (default: 3)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from its JSON, run nothing")


def run(args: argparse.Namespace) -> int:
    if args.report_only:
        write_report(json.loads((Path(args.out) / f"{args.name}.json").read_text()), Path(args.out), args.name)
        return 0

    work = Path(args.work or tempfile.mkdtemp(prefix="flashgau-data-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FLASHGAU_CACHE": str(work / "cache"), "PYTHONPATH": os.pathsep.join(
        [str(SOURCE)] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x])}
    py = sys.executable
    results: dict = {"machine": machine(), "command": common.command_line()}
    say = lambda s: print(s, flush=True)  # noqa: E731
    try:
        say(f"free disk in {work}: {shutil.disk_usage(work).free / 2**30:.0f} GiB")
        t0 = time.perf_counter()
        nbytes, ndocs = synthesize(work / "corpus", int(args.size_gb * 1e9))
        results["corpus"] = {"bytes": nbytes, "documents": ndocs, "synthesis_s": round(time.perf_counter() - t0, 1)}
        say(f"corpus: {nbytes / 1e9:.2f} GB, {ndocs} documents ({time.perf_counter() - t0:.0f} s)")

        def prepare(name: str, source: Path, size: int, *extra: str) -> dict:
            child = run_child([py, "-m", "flashgau.cli", "prepare", str(source), "--out", str(work / name),
                               *extra], env)
            manifest = json.loads((work / name / "manifest.json").read_text())
            disk = sum(f.stat().st_size for f in (work / name).iterdir())
            out = {"input_bytes": size, "wall_s": round(child["wall_s"], 1), "mb_per_s": round(size / 1e6 /
                   child["wall_s"], 1), "peak_rss_mib": round(child["peak_rss_mib"]), "passes_s": manifest["seconds"],
                   "tokens": manifest["train"]["tokens"] + manifest["heldout"]["tokens"], "dtype": manifest["dtype"],
                   "prepared_bytes_on_disk": disk, "bpe_sample": manifest["bpe_sample"]}
            say(f"prepare {name}: {json.dumps(out)}")
            return out

        results["prepare_bytes"] = prepare("bytes", work / "corpus", nbytes)
        slice_bytes = slice_of(work / "corpus", work / "slice", int(args.bpe_mb * 1e6))
        results["prepare_bpe"] = prepare("bpe", work / "slice", slice_bytes, "--tokenizer", "bpe")
        shutil.rmtree(work / "slice")

        def start(name: str, data: str) -> dict:
            folder = work / f"run-{name}"
            shutil.rmtree(folder, ignore_errors=True)
            child = run_child([py, "-c", START, data, str(folder)], env)
            out = {**json.loads(child["last_line"]), "peak_rss_mib": round(child["peak_rss_mib"])}
            out = {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}
            say(f"start {name}: {json.dumps(out)}")
            return out

        results["start_default_cold_cache"] = start("default-cold", "")
        runs = {"default": [], "prepared": []}
        for _ in range(args.repeats):
            runs["default"].append(start("default", ""))
            runs["prepared"].append(start("prepared", str(work / "bytes")))
        results["start_default"] = median_of(runs["default"])
        results["start_prepared_2gb"] = median_of(runs["prepared"])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    write_report(results, Path(args.out), args.name)
    return 0


def median_of(runs: list[dict]) -> dict:
    """Per numeric field the median over runs, and every run's values."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)):
            out[key] = statistics.median(r[key] for r in runs)
            out[f"{key}_runs"] = [r[key] for r in runs]
    return out


def write_report(r: dict, out: Path, name: str) -> None:
    common.write_json(out / f"{name}.json", r)
    m, c, b, e = r["machine"], r["corpus"], r["prepare_bytes"], r["prepare_bpe"]
    d, p, cold = r["start_default"], r["start_prepared_2gb"], r["start_default_cold_cache"]
    rss_delta = p["peak_rss_mib"] - d["peak_rss_mib"]
    ratio = p["first_step_s"] / d["first_step_s"]
    mark = lambda ok: "met" if ok else "missed"  # noqa: E731
    lines = [
        "# Data at scale: prepare throughput, memory, training start",
        "",
        f"`{r['command']}` (under `flock /tmp/flashgau-cpu.lock`), commit {m['commit']}, {m['date']}.",
        f"Machine: {m['cpu']}, {m['cores']} cores shared with other jobs, torch CPU capability "
        f"{m['cpu_capability']}, {m['memory_gib']} GiB RAM, torch {m['torch']}, Python {m['python']}.",
        "",
        f"Corpus: {c['bytes'] / 1e9:.2f} GB, {c['documents']:,} documents, synthesised from the 42 plays and poems "
        "of the `shakespeare` package (each copy's first line names it, so no document is a duplicate); deleted "
        "after the run.",
        "",
        "## `flashgau prepare`",
        "",
        "| tokenizer | input | wall time | throughput | passes (s) | peak RSS | tokens | on disk |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for label, x in (("bytes (whole corpus)", b), (f"BPE 4096 ({x_mb(e)} slice)", e)):
        passes = ", ".join(f"{k} {v:.0f}" for k, v in x["passes_s"].items())
        lines.append(f"| {label} | {x['input_bytes'] / 1e6:,.0f} MB | {x['wall_s']:.0f} s | **{x['mb_per_s']:.1f} "
                     f"MB/s** | {passes} | {x['peak_rss_mib']:,} MiB | {x['tokens']:,} ({x['dtype']}) | "
                     f"{x['prepared_bytes_on_disk'] / 1e6:,.0f} MB |")
    sample = e.get("bpe_sample") or {}
    encode = e["input_bytes"] / 1e6 / max(e["passes_s"].get("tokenize", 1), 1e-9)
    runs = lambda x, k: ", ".join(f"{v:.2f}" for v in x.get(f"{k}_runs", [x[k]]))  # noqa: E731
    lines += [
        "",
        f"Throughput is input bytes over the whole command's wall time (start-up included). BPE was measured on a "
        f"{x_mb(e)} slice (the corpus's first files): HF `tokenizers` encodes at about {encode:.1f} MB/s here (its "
        f"pass), so the {c['bytes'] / 1e9:.1f} GB corpus would take about {c['bytes'] / 1e6 / encode / 60:.0f} "
        f"minutes. The BPE trained on {sample.get('characters', 0) / 2**20:.0f} MiB of training text "
        f"({sample.get('documents', 0):,} documents; the default --bpe-sample-mb 64).",
        "",
        "## Training start (small FLASH, context 512, default settings, stopped after step 1)",
        "",
        "| data | time to first step | of which data | peak RSS | runs (time to first step, s) |",
        "|---|---:|---:|---:|---|",
        f"| default corpus, empty cache (prepared on the fly) | {cold['first_step_s']:.2f} s | (the preparation) "
        f"| {cold['peak_rss_mib']:,} MiB | {cold['first_step_s']:.2f} |",
        f"| default corpus (from the cache: every later start) | {d['first_step_s']:.2f} s | "
        f"{d['data_s'] * 1e3:.0f} ms | {d['peak_rss_mib']:,.0f} MiB | {runs(d, 'first_step_s')} |",
        f"| prepared {c['bytes'] / 1e9:.1f} GB corpus (`--data DIR`) | {p['first_step_s']:.2f} s | "
        f"{p['data_s'] * 1e3:.0f} ms | {p['peak_rss_mib']:,.0f} MiB | {runs(p, 'first_step_s')} |",
        "",
        "Time to first step: from `train()` to the end of step 1 (metrics.jsonl): opening the data, indexing its "
        "windows, the precision probe, building the model and optimizer, one step. \"Of which data\": opening the "
        "data and indexing the training and held-out windows alone, timed again in the same process after the run. "
        f"Medians of {len(d.get('first_step_s_runs', [1]))} starts each, alternating; one step of the small model "
        "takes seconds on these shared cores, so the step, not the data, sets the start time.",
        "",
        "## Targets",
        "",
        f"- Peak RSS of `prepare` below 1 GB: bytes {b['peak_rss_mib']:,} MiB, BPE {e['peak_rss_mib']:,} MiB: "
        f"{mark(max(b['peak_rss_mib'], e['peak_rss_mib']) < 1000)}.",
        f"- Training start on the prepared corpus below 1 GB above the default corpus's: {rss_delta:+,.0f} MiB: "
        f"{mark(rss_delta < 1000)}.",
        f"- Time to first step within 2x of the default corpus's: {p['first_step_s']:.2f} s vs "
        f"{d['first_step_s']:.2f} s = {ratio:.2f}x: {mark(ratio <= 2)}.",
        "",
    ]
    common.write_text(out / f"{name}.md", "\n".join(lines))
    print("\n".join(lines))


def x_mb(x: dict) -> str:
    return f"{x['input_bytes'] / 1e6:,.0f} MB"
