"""`flashgau bench speed`: time of a full training step, peak memory, model FLOPs and MFU against context length.

What is measured (see docs/benchmarks.md):
- step time: forward, backward (loss on random byte tokens), gradient clipping and an AdamW step (the training
  loop's optimizer), in fp32 and in bf16 autocast. Two series: "tokens" keeps the tokens per step fixed
  (--tokens-per-step, batch = tokens / context, the paper's latency column) and "batch" keeps the batch fixed at 1
  (tokens grow with context). A third, "compiled", repeats the fixed-tokens step under torch.compile (inductor) for
  --compile-archs at --compile-contexts: the paper's timings are of XLA-compiled programs, and FLASH's many
  elementwise passes over wide activations are exactly what a compiler fuses (eager PyTorch runs each as its own pass
  over memory, while the baselines' attention is one fused SDPA kernel either way). All archs of one (series, context, precision) group are timed in one process,
  interleaved: warm-up steps, then `repeats` rounds that each time one step of every arch. Median, min, max, IQR.
- memory: in a separate process (one per group) with glibc's mmap threshold fixed at 128 KiB, so freed tensors go
  back to the OS and the resident set tracks live memory; the resident-set high-water mark (VmHWM, reset through
  /proc/self/clear_refs) during one training step, minus the resident set before the model was built. It counts
  weights, gradients, AdamW state, activations and kernel workspace: what the step needs beyond the process.
  The same step runs under FlopCounterMode, giving a counted FLOP total beside the analytic one (bench/flops.py).
- MFU: analytic model FLOPs per step (counted where no formula exists) / median step time / this machine's matmul
  peak in the same precision, measured at the start of the same run (common.matmul_peak).
Configurations whose estimated attention memory exceeds --max-attention-gib (FLASH-Quad's T x T maps at long
context) are skipped and reported as such rather than risking the machine.

Resumable: every finished group and memory measurement is a JSON file under <out>/runs/speed[-quick]/.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from .common import (DEFAULT_OUT, ResultStore, env_markdown, environment, fmt_bytes, fmt_ctx, matmul_peak,
                     save_figure, write_json, write_text)

CONTEXTS = (512, 1024, 2048, 4096, 8192, 16384)
BATCH_CONTEXTS = (4096, 8192, 16384)
COMPILE_CONTEXTS = (4096, 8192, 16384)
COMPILE_ARCHS = ("transformer+", "transformer++", "flash")
QUICK = dict(contexts=(512, 2048), tokens_per_step=2048, batch_contexts=(), compile_contexts=(), warmup=1, repeats=2)
PRECISIONS = ("fp32", "bf16")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .. import ARCHS
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=None, metavar="ARCH",
                   help=f"archs to compare (default: all: {' '.join(ARCHS)})")
    p.add_argument("--preset", default="small", help="model size shared by every arch (default: small: d=256, "
                   "8 GAU / 4 Transformer layers)")
    p.add_argument("--contexts", nargs="+", type=int, default=None, metavar="T",
                   help=f"context lengths (default: {' '.join(map(str, CONTEXTS))})")
    p.add_argument("--tokens-per-step", type=int, default=16384, metavar="N",
                   help="tokens per step of the fixed-tokens series; must be a multiple of every context "
                        "(default: 16384)")
    p.add_argument("--batch-contexts", nargs="*", type=int, default=None, metavar="T",
                   help="contexts of the fixed-batch (batch 1) series; those where batch 1 is already the "
                        f"fixed-tokens configuration are taken from it (default: {' '.join(map(str, BATCH_CONTEXTS))})")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--compile-contexts", nargs="*", type=int, default=None, metavar="T",
                   help="contexts of the compiled series: fixed tokens per step, fp32, under torch.compile "
                        f"(default: {' '.join(map(str, COMPILE_CONTEXTS))}; --quick: none; empty: none)")
    p.add_argument("--compile-archs", nargs="+", choices=ARCHS, default=list(COMPILE_ARCHS), metavar="ARCH",
                   help=f"archs of the compiled series (default: {' '.join(COMPILE_ARCHS)})")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per arch before timing (default: 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per arch (default: 3)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory/FLOP-count processes")
    p.add_argument("--max-attention-gib", type=float, default=8.0, metavar="GIB",
                   help="skip configurations whose estimated T x T attention memory exceeds this (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and random tokens (default: 0)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"results folder (default: {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="a reduced version (contexts 512 and 2048, 2048 tokens "
                   "per step, 2 repeats): a smoke run of a minute or two")
    p.add_argument("--report-only", action="store_true", help="rebuild the reports from saved runs; measure nothing")


# --------------------------------------------------------------------------------------------- configurations

def _settings(args) -> dict:
    from .. import ARCHS
    quick = bool(getattr(args, "quick", False))
    s = dict(archs=list(args.archs or ARCHS), preset=args.preset,
             contexts=sorted(args.contexts or (QUICK["contexts"] if quick else CONTEXTS)),
             tokens_per_step=QUICK["tokens_per_step"] if quick and args.tokens_per_step == 16384
             else args.tokens_per_step,
             batch_contexts=sorted(QUICK["batch_contexts"] if quick and args.batch_contexts is None
                                   else (BATCH_CONTEXTS if args.batch_contexts is None else args.batch_contexts)),
             precisions=list(args.precisions),
             compile_contexts=sorted(QUICK["compile_contexts"] if quick and args.compile_contexts is None
                                     else (COMPILE_CONTEXTS if args.compile_contexts is None
                                           else args.compile_contexts)),
             compile_archs=[a for a in (args.archs or ARCHS) if a in args.compile_archs],
             warmup=QUICK["warmup"] if quick else args.warmup,
             repeats=QUICK["repeats"] if quick else args.repeats, memory=not args.no_memory,
             max_attention_gib=args.max_attention_gib, seed=args.seed, quick=quick)
    return s


def groups(s: dict) -> list[dict]:
    """(series, context, batch, precision) groups in the order they are run: fixed-tokens from the longest
    context (the targets) down, then the fixed-batch series."""
    out = []
    for T in sorted(s["contexts"], reverse=True):
        if s["tokens_per_step"] % T:
            raise ValueError(f"--tokens-per-step {s['tokens_per_step']} is not a multiple of context {T}")
        for prec in s["precisions"]:
            out.append(dict(series="tokens", context=T, batch=s["tokens_per_step"] // T, precision=prec))
    for T in sorted(s["batch_contexts"], reverse=True):
        if T in s["contexts"] and s["tokens_per_step"] == T:
            continue  # batch 1 at this context is the fixed-tokens group
        for prec in s["precisions"]:
            out.append(dict(series="batch", context=T, batch=1, precision=prec))
    for T in sorted(s["compile_contexts"], reverse=True):
        if s["tokens_per_step"] % T:
            raise ValueError(f"--tokens-per-step {s['tokens_per_step']} is not a multiple of context {T}")
        if s["compile_archs"]:
            out.append(dict(series="compiled", context=T, batch=s["tokens_per_step"] // T, precision="fp32"))
    return out


def group_key(g: dict, preset: str) -> str:
    return f"{preset}-{g['series']}-T{g['context']}-B{g['batch']}-{g['precision']}"


def model_config(arch: str, preset: str, context: int):
    from ..config import ModelConfig
    return ModelConfig.preset(preset, arch=arch, vocab_size=256, causal=True, max_seq_len=max(context, 512))


def attention_bytes_estimate(cfg, batch: int, context: int) -> int:
    """Rough memory of the T x T maps FLASH-Quad keeps for backward (scores, relu, square, masked: 4 fp32 maps
    per layer); 0 for archs whose attention memory is linear in T."""
    if cfg.arch != "flash-quad":
        return 0
    return cfg.n_layers * batch * context * context * 4 * 4


# ----------------------------------------------------------------------------------------------- one step

def make_step(model, precision: str, batch: int, context: int, seed: int):
    """A closure running one full training step (forward, backward, clip, AdamW) on fixed random tokens."""
    import torch

    from ..runtime import resolve_precision
    from ..training.optim import make_optimizer

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, context + 1), generator=gen)
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    opt = make_optimizer(model, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.98))
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    autocast = resolve_precision(precision, torch.device("cpu")).autocast

    def step() -> float:
        with autocast():
            out = model(x, labels=y)
        out.loss.float().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    return step


def time_group(g: dict, s: dict, peaks: dict, log=print) -> dict:
    """Time every arch of group g, interleaved; returns the group record."""
    import torch

    from ..model import LanguageModel
    from .flops import analytic_flops

    archs, skipped, steps, info = [], {}, {}, {}
    cap = s["max_attention_gib"] * 2**30
    compiled = g["series"] == "compiled"
    if compiled:
        # a fresh compile cache per group: code compiled for another context would otherwise be recompiled with
        # dynamic (symbolic) shapes, whose generic kernels are slower than the static ones measured here
        torch._dynamo.reset()
    for arch in s["compile_archs"] if compiled else s["archs"]:
        cfg = model_config(arch, s["preset"], g["context"])
        est = attention_bytes_estimate(cfg, g["batch"], g["context"])
        if est > cap:
            skipped[arch] = (f"estimated T x T attention memory {est / 2**30:.0f} GiB > --max-attention-gib "
                             f"{s['max_attention_gib']:g}")
            continue
        torch.manual_seed(s["seed"])
        model = LanguageModel(cfg)
        if compiled:
            model.compile(dynamic=False)    # in place: parameter names (weight-decay groups) unchanged
        steps[arch] = make_step(model, g["precision"], g["batch"], g["context"], s["seed"])
        info[arch] = dict(params=model.num_parameters(), n_layers=cfg.n_layers,
                          analytic_flops=analytic_flops(cfg, g["batch"], g["context"]))
        archs.append(arch)
    times = {a: [] for a in archs}
    util = {a: [] for a in archs}
    losses, first = {}, {}
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    warmup = max(s["warmup"], 1) if compiled else s["warmup"]      # the first compiled step compiles
    for r in range(warmup + s["repeats"]):
        for arch in archs:            # interleaved: one step of every arch per round
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            losses[arch] = steps[arch]()
            dt = time.perf_counter() - t0
            first.setdefault(arch, dt)
            if r >= warmup:
                times[arch].append(dt)
                # CPU seconds this process got per wall second per thread: well below 1 means another process
                # took cores during the step (the time is then not trustworthy)
                util[arch].append((time.process_time() - c0) / dt / threads)
    results = {}
    for arch in archs:
        ts = sorted(times[arch])
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        med = statistics.median(ts)
        fl = info[arch]["analytic_flops"]
        res = dict(times=times[arch], cpu_utilisation=util[arch], median=med, min=ts[0], max=ts[-1], q1=q[0], q3=q[2],
                   tokens_per_s=g["batch"] * g["context"] / med, loss=losses[arch], first_step=first[arch],
                   **info[arch])
        if fl:
            res["mfu"] = fl["total"] / med / peaks[g["precision"]]["flops_per_s"]
            res["mfu_vs_fp32_peak"] = fl["total"] / med / peaks["fp32"]["flops_per_s"]
        results[arch] = res
        log(f"  {g['series']:>6} T={g['context']:>5} B={g['batch']:>2} {g['precision']} {arch:<16} "
            f"median {med:7.3f} s [{ts[0]:.3f}-{ts[-1]:.3f}]  cpu {min(util[arch]):.2f}"
            + (f"  MFU {res['mfu']:.0%}" if "mfu" in res else ""))
    for arch, why in skipped.items():
        log(f"  {g['series']:>6} T={g['context']:>5} B={g['batch']:>2} {g['precision']} {arch:<16} skipped: {why}")
    return dict(group=g, preset=s["preset"], warmup=warmup, repeats=s["repeats"], seed=s["seed"],
                results=results, skipped=skipped, peaks=peaks, env=environment(), torch_threads=threads,
                loadavg_before=load_before, loadavg_after=os.getloadavg())


# --------------------------------------------------------------------------- memory: a separate process

def _rss_kib() -> tuple[int, int]:
    text = Path("/proc/self/status").read_text()
    hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1))
    rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))
    return rss, hwm


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def worker_main(spec: dict) -> dict:
    """Run in the memory process: for each arch, the peak resident set of one training step and its counted
    FLOPs. The optimizer state is created by a first step before measuring."""
    import torch

    from ..model import LanguageModel
    from .flops import flop_counter

    g = spec["group"]
    out = {}
    # one throwaway step first, so one-time allocations (thread pools, kernel caches) are not charged to an arch
    torch.manual_seed(0)
    make_step(LanguageModel(model_config(spec["archs"][0], "tiny", 64)), g["precision"], 1, 64, 0)()
    gc.collect()
    for arch in spec["archs"]:
        gc.collect()
        rss_before, _ = _rss_kib()
        cfg = model_config(arch, spec["preset"], g["context"])
        torch.manual_seed(spec["seed"])
        model = LanguageModel(cfg)
        step = make_step(model, g["precision"], g["batch"], g["context"], spec["seed"])
        step()                                       # creates gradients' buffers and the AdamW state
        gc.collect()
        rss_steady, _ = _rss_kib()
        resettable = _reset_hwm()
        counter = flop_counter()
        with counter:
            step()
        _, hwm = _rss_kib()
        out[arch] = dict(peak_bytes=(hwm - rss_before) * 1024 if resettable else None,
                         steady_bytes=(rss_steady - rss_before) * 1024,
                         activation_bytes=(hwm - rss_steady) * 1024 if resettable else None,
                         counted_flops=int(counter.get_total_flops()))
        del model, step, counter
        gc.collect()
    return out


def measure_memory(g: dict, archs: list[str], s: dict) -> dict:
    spec = dict(group=g, archs=archs, preset=s["preset"], seed=s["seed"])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, "-m", "flashgau.bench.speed", "--worker", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"memory process exited with {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------ run

def run(args) -> int:
    s = _settings(args)
    stem = "speed-quick" if s["quick"] else "speed"
    out = Path(args.out)
    store = ResultStore(out / "runs" / stem)
    try:
        plan = groups(s)
    except ValueError as err:
        print(f"flashgau bench speed: error: {err}", file=sys.stderr)
        return 2
    if not getattr(args, "report_only", False):
        peaks = None
        for g in plan:
            key = group_key(g, s["preset"])
            rec = store.load(key)
            wanted = s["compile_archs"] if g["series"] == "compiled" else s["archs"]
            if rec is not None and set(wanted) <= set(rec["results"]) | set(rec["skipped"]):
                print(f"  {key}: done, skipped (delete {store.path(key)} to measure again)")
            else:
                if peaks is None:
                    peaks = {p: matmul_peak(p) for p in PRECISIONS}
                    print("matmul peak: " + ", ".join(f"{p} {v['flops_per_s'] / 1e9:.0f} GFLOP/s"
                                                      for p, v in peaks.items()), flush=True)
                rec = time_group(g, s, peaks)
                store.save(key, rec)
            if s["memory"] and "memory" not in rec and rec["results"] and g["series"] != "compiled":
                rec["memory"] = measure_memory(g, list(rec["results"]), s)
                store.save(key, rec)
                for arch, m in rec["memory"].items() if "error" not in rec["memory"] else ():
                    print(f"  {key} {arch:<16} peak {fmt_bytes(m['peak_bytes'])}  counted "
                          f"{m['counted_flops'] / 1e9:.1f} GFLOP")
                if "error" in rec["memory"]:
                    print(f"  {key}: {rec['memory']['error']}")
    report = build_report(store, s, stem)
    write_json(out / f"{stem}.json", report)
    write_text(out / f"{stem}.md", markdown(report))
    plot(report, out / f"{stem}.png")
    print(f"wrote {out / stem}.md, .json, .png")
    for t in report["targets"]:
        print(t["text"])
    return 0


# --------------------------------------------------------------------------------------------------- report

def build_report(store: ResultStore, s: dict, stem: str) -> dict:
    records = [r for r in store.all() if r.get("preset") == s["preset"]]
    # the machine's peak: the best rate measured by any run of this suite (a single measurement on a shared
    # machine can come out low, which would inflate MFU)
    best = {p: max((r["peaks"][p]["flops_per_s"] for r in records), default=None) for p in PRECISIONS}
    rows = []
    for rec in records:
        rec["peaks"] = {p: dict(rec["peaks"][p], flops_per_s=best[p]) for p in PRECISIONS}
        g = rec["group"]
        mem = rec.get("memory", {})
        for arch, res in rec["results"].items():
            m = mem.get(arch, {}) if isinstance(mem, dict) else {}
            fl = res.get("analytic_flops")
            flops = fl["total"] if fl else m.get("counted_flops")
            peak = rec["peaks"][g["precision"]]["flops_per_s"]
            rows.append(dict(arch=arch, **g, median=res["median"], min=res["min"], max=res["max"], q1=res["q1"],
                             q3=res["q3"], times=res["times"], params=res["params"], first_step=res.get("first_step"),
                             cpu_utilisation=min(res["cpu_utilisation"]) if res.get("cpu_utilisation") else None,
                             flops=flops, flops_source="analytic" if fl else ("counted" if flops else None),
                             analytic_flops=fl["total"] if fl else None, counted_flops=m.get("counted_flops"),
                             mfu=flops / res["median"] / peak if flops else None,
                             mfu_vs_fp32_peak=(flops / res["median"] / rec["peaks"]["fp32"]["flops_per_s"]
                                               if flops else None),
                             peak_bytes=m.get("peak_bytes"), activation_bytes=m.get("activation_bytes"),
                             steady_bytes=m.get("steady_bytes"), peak_fp32=rec["peaks"]["fp32"]["flops_per_s"],
                             peak_bf16=rec["peaks"]["bf16"]["flops_per_s"], key=group_key(g, s["preset"])))
        for arch, why in rec.get("skipped", {}).items():
            rows.append(dict(arch=arch, **g, skipped=why, key=group_key(g, s["preset"])))
    envs = [r["env"] for r in records]
    peaks = sorted({(round(r["peaks"]["fp32"]["flops_per_s"] / 1e9), round(r["peaks"]["bf16"]["flops_per_s"] / 1e9))
                    for r in store.all() if r.get("preset") == s["preset"]})
    log = [dict(key=group_key(r["group"], s["preset"]), time=r["env"].get("time"),
                code=r["env"].get("code", {}), command=r["env"].get("command"),
                memory="memory" in r and "error" not in r["memory"]) for r in records]
    report = dict(benchmark="speed", settings=s, env=environment(), run_envs=_unique_envs(envs), log=log,
                  matmul_peaks_gflops=peaks, peak_used={p: best[p] for p in PRECISIONS}, rows=rows)
    report["targets"] = targets(rows, s)
    return report


def _unique_envs(envs: list[dict]) -> list[dict]:
    seen, out = set(), []
    for e in envs:
        k = (e.get("command"), e.get("time", "")[:13])
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out


def find(rows, arch, series, T, prec) -> Optional[dict]:
    for r in rows:
        if r["arch"] == arch and r["series"] == series and r["context"] == T and r["precision"] == prec \
                and "skipped" not in r:
            return r
    return None


def fixed_batch(rows, arch, T, prec) -> Optional[dict]:
    """Batch-1 row at T: the fixed-batch series, or the fixed-tokens group when its batch is 1."""
    r = find(rows, arch, "batch", T, prec)
    if r is None:
        r = find(rows, arch, "tokens", T, prec)
        if r is not None and r["batch"] != 1:
            r = None
    return r


def targets(rows, s) -> list[dict]:
    out = []

    def add(name, value, goal, met, text):
        out.append(dict(name=name, value=value, target=goal, met=met,
                        text=f"{text}: {'met' if met else 'MISSED'}"))

    a, b = fixed_batch(rows, "flash", 4096, "fp32"), fixed_batch(rows, "flash", 16384, "fp32")
    if a and b:
        ratio = b["median"] / a["median"]
        add("flash_linear_4k_16k", ratio, 4.4, ratio <= 4.4,
            f"FLASH fp32 step time 16K / 4K at batch 1: {ratio:.2f}x (target <= 4.4x; tokens grow 4x)")
    for series, mode in (("tokens", "eager"), ("compiled", "torch.compile")):
        for T, goal in ((8192, 1.8), (16384, 3.0)):
            f, t = find(rows, "flash", series, T, "fp32"), find(rows, "transformer++", series, T, "fp32")
            if f and t:
                sp = t["median"] / f["median"]
                fr = (t["flops"] / f["flops"]) if f.get("flops") and t.get("flops") else None
                add(f"flash_vs_tfmpp_{T}" + ("_compiled" if series == "compiled" else ""), sp, goal, sp >= goal,
                    f"FLASH vs Transformer++ fp32 step at {fmt_ctx(T)}, {mode} ({s['tokens_per_step']} tokens/step): "
                    f"{sp:.2f}x faster (target >= {goal}x" + (f"; model-FLOP ratio {fr:.2f}x)" if fr else ")"))
        f = find(rows, "flash", series, 8192, "fp32")
        if f and f.get("mfu") is not None:
            add("flash_mfu_8k" + ("_compiled" if series == "compiled" else ""), f["mfu"], 0.40, f["mfu"] >= 0.40,
                f"FLASH fp32 MFU at 8K, {mode}: {f['mfu']:.1%} of the measured fp32 matmul peak "
                f"({f['peak_fp32'] / 1e9:.0f} GFLOP/s) (target >= 40%)")
    for T in (8192, 16384, 4096):
        f32, f16 = find(rows, "flash", "tokens", T, "fp32"), find(rows, "flash", "tokens", T, "bf16")
        if f32 and f16:
            sp = f32["median"] / f16["median"]
            add(f"flash_bf16_faster_{T}", sp, 1.0, sp > 1.0,
                f"FLASH bf16 step vs fp32 step at {fmt_ctx(T)}: {sp:.2f}x faster (target > 1x)")
            break
    return out


def markdown(rep: dict) -> str:
    s, rows = rep["settings"], rep["rows"]
    archs = [a for a in s["archs"] if any(r["arch"] == a for r in rows)]
    ctxs = sorted({r["context"] for r in rows if r["series"] == "tokens"})
    L = [f"# Training-step speed, memory and MFU against context length ({s['preset']} preset)", "",
         "FLASH here is the paper's model (Hua et al. 2022), not FlashAttention. One training step = forward, "
         "backward, gradient clip and AdamW step on random byte tokens; archs interleaved within each group; "
         f"{s['warmup']} warm-up step(s), median of {s['repeats']} timed steps (min-max in brackets). "
         f"Fixed-tokens series: {s['tokens_per_step']} tokens per step (batch = tokens / context). Memory: "
         "resident-set high-water mark of one step in a separate process minus the process before the model "
         "(weights, gradients, AdamW state, activations, workspace). MFU: analytic matmul FLOPs (bench/flops.py; "
         "FlopCounterMode count where no formula) / median step time / the matmul peak measured in the same run. "
         "See docs/benchmarks.md.", "",
         "Run environment:", "", *(env_markdown(e) for e in rep["run_envs"][-3:]),
         "Matmul peak measured at the start of each run (GFLOP/s, fp32 / bf16): "
         + "; ".join(f"{a} / {b}" for a, b in rep["matmul_peaks_gflops"])
         + f". MFU uses the best of them: fp32 {rep['peak_used']['fp32'] / 1e9:.0f}, bf16 "
           f"{rep['peak_used']['bf16'] / 1e9:.0f} GFLOP/s.", ""]
    L += ["## Targets (issue 5)", ""] + [f"- {t['text']}" for t in rep["targets"]] + [""]
    low = [r for r in rows if r.get("cpu_utilisation") is not None and r["cpu_utilisation"] < 0.85]
    if low:
        L += ["Steps during which this process got less than 85% of its threads' CPU time (another process took "
              "cores; those times are inflated): " + ", ".join(
                  f"{r['arch']} {r['key']} ({r['cpu_utilisation']:.2f})" for r in low) + ".", ""]
    if any(r.get("cpu_utilisation") is None for r in rows if "skipped" not in r):
        L += ["Groups measured before the CPU-utilisation check existed have no such record.", ""]

    def cell(r, key="median"):
        if r is None:
            return "–"
        if "skipped" in r:
            return "skipped"
        return f"{r[key]:.2f} s" if r[key] >= 1 else f"{r[key] * 1e3:.0f} ms"

    for prec in s["precisions"]:
        L += [f"## Step time and speedup vs Transformer+, fixed {s['tokens_per_step']} tokens per step, {prec}", "",
              "Shaped like the paper's PG-19 table (latency and its ratio to Transformer+; quality is in "
              "quality.md).", "",
              "| Model | " + " | ".join(f"{fmt_ctx(T)} lat. | ×" for T in ctxs) + " |",
              "|---|" + "---:|---:|" * len(ctxs)]
        for a in archs:
            cells = []
            for T in ctxs:
                r, ref = find(rows, a, "tokens", T, prec), find(rows, "transformer+", "tokens", T, prec)
                sk = next((x for x in rows if x["arch"] == a and x["context"] == T and x["series"] == "tokens"
                           and x["precision"] == prec and "skipped" in x), None)
                if r is None:
                    cells.append(("skipped" if sk else "–") + " | –")
                    continue
                sp = f"{ref['median'] / r['median']:.2f}×" if ref else "–"
                cells.append(f"{cell(r)} [{r['min']:.2f}–{r['max']:.2f}] | {sp}")
            L.append(f"| {a} | " + " | ".join(cells) + " |")
        L.append("")
    L += ["## Model FLOPs per step (GFLOP) and MFU (fp32 run vs fp32 peak / bf16 run vs bf16 peak)", "",
          "| Model | " + " | ".join(f"{fmt_ctx(T)} GFLOP | MFU fp32 | MFU bf16" for T in ctxs) + " |",
          "|---|" + "---:|---:|---:|" * len(ctxs)]
    for a in archs:
        cells = []
        for T in ctxs:
            r32, r16 = find(rows, a, "tokens", T, "fp32"), find(rows, a, "tokens", T, "bf16")
            r = r32 or r16
            fl = f"{r['flops'] / 1e9:.0f}" + ("" if r["flops_source"] == "analytic" else "*") \
                if r and r.get("flops") else "–"
            m32 = f"{r32['mfu']:.0%}" if r32 and r32.get("mfu") else "–"
            m16 = f"{r16['mfu']:.0%}" if r16 and r16.get("mfu") else "–"
            cells.append(f"{fl} | {m32} | {m16}")
        L.append(f"| {a} | " + " | ".join(cells) + " |")
    L += ["", "\\* counted with FlopCounterMode (no analytic formula for this arch).", ""]
    L += ["## Peak memory of one training step (fp32 / bf16)", "",
          "| Model | " + " | ".join(fmt_ctx(T) for T in ctxs) + " |", "|---|" + "---:|" * len(ctxs)]
    for a in archs:
        cells = []
        for T in ctxs:
            r32, r16 = find(rows, a, "tokens", T, "fp32"), find(rows, a, "tokens", T, "bf16")
            cells.append(f"{fmt_bytes(r32.get('peak_bytes')) if r32 else '–'} / "
                         f"{fmt_bytes(r16.get('peak_bytes')) if r16 else '–'}")
        L.append(f"| {a} | " + " | ".join(cells) + " |")
    bctx = sorted({r["context"] for r in rows if r["series"] == "batch"} |
                  {T for T in s["batch_contexts"] if any(fixed_batch(rows, a, T, "fp32") for a in archs)})
    if bctx:
        L += ["", "## Fixed batch (batch 1): step time against context", "",
              "| Model | precision | " + " | ".join(fmt_ctx(T) for T in bctx) + " | growth first→last |",
              "|---|---|" + "---:|" * len(bctx) + "---:|"]
        for a in archs:
            for prec in s["precisions"]:
                rs = [fixed_batch(rows, a, T, prec) for T in bctx]
                growth = f"{rs[-1]['median'] / rs[0]['median']:.2f}×" if rs[0] and rs[-1] else "–"
                L.append(f"| {a} | {prec} | " + " | ".join(cell(r) for r in rs) + f" | {growth} |")
    cctx = sorted({r["context"] for r in rows if r["series"] == "compiled" and "skipped" not in r})
    if cctx:
        L += ["", f"## Compiled (torch.compile, inductor): fixed {s['tokens_per_step']} tokens per step, fp32", "",
              "Each arch compiled, then timed like the eager series (compile time = the first step, not counted). "
              "× is the speedup of this compiled step over the same arch's eager fp32 step at the same context; "
              "vs T++ is Transformer++'s compiled step time over this one's.", "",
              "| Model | " + " | ".join(f"{fmt_ctx(T)} lat. | × eager | vs T++ | MFU" for T in cctx)
              + " | compile |", "|---|" + "---:|---:|---:|---:|" * len(cctx) + "---:|"]
        for a in s.get("compile_archs", []):
            cells, comp = [], []
            for T in cctx:
                r, e, t = (find(rows, a, "compiled", T, "fp32"), find(rows, a, "tokens", T, "fp32"),
                           find(rows, "transformer++", "compiled", T, "fp32"))
                if r is None:
                    cells.append("– | – | – | –")
                    continue
                comp.append(r.get("first_step") or 0)
                cells.append(f"{cell(r)} [{r['min']:.2f}–{r['max']:.2f}] | "
                             + (f"{e['median'] / r['median']:.2f}×" if e else "–") + " | "
                             + (f"{t['median'] / r['median']:.2f}×" if t else "–") + " | "
                             + (f"{r['mfu']:.0%}" if r.get("mfu") else "–"))
            L.append(f"| {a} | " + " | ".join(cells) + (f" | ≤ {max(comp):.0f} s |" if comp else " | – |"))
    sk = [r for r in rows if "skipped" in r]
    if sk:
        L += ["", "## Skipped configurations", ""] + [f"- {r['arch']} {r['key']}: {r['skipped']}" for r in sk]
    L += ["", "## Measurement log", "", "Each group was timed by one command; the flashgau source it measured is "
          "identified by its git commit and a hash of the package's files (other agents edit the tree while the "
          "suite runs, so groups measured at different times can differ in code).", "",
          "| group | measured | command | git | source sha256 | memory |", "|---|---|---|---|---|---|"]
    for g in sorted(rep.get("log", []), key=lambda g: g["time"] or ""):
        L.append(f"| {g['key']} | {g['time']} | `{g['command']}` | {g['code'].get('git_commit', '?')} | "
                 f"{g['code'].get('source_sha256', '(not recorded)')} | {'yes' if g['memory'] else 'no'} |")
    L += ["", f"![step time and memory against context]({rep['settings'] and ('speed-quick' if s['quick'] else 'speed')}.png)", ""]
    return "\n".join(L)


def plot(rep: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    s, rows = rep["settings"], rep["rows"]
    fig = Figure(figsize=(15, 4.5))
    axes = fig.subplots(1, 3)
    styles = {"fp32": "-", "bf16": "--"}
    colors = {}
    for a in s["archs"]:
        colors[a] = f"C{len(colors)}"
    for a in s["archs"]:
        for prec in s["precisions"]:
            rs = sorted((r for r in rows if r["arch"] == a and r["series"] == "tokens" and r["precision"] == prec
                         and "skipped" not in r), key=lambda r: r["context"])
            if rs:
                axes[0].plot([r["context"] for r in rs], [r["median"] for r in rs], styles[prec], marker="o",
                             color=colors[a], label=f"{a} {prec}")
                mem = [(r["context"], r["peak_bytes"] / 2**20) for r in rs if r.get("peak_bytes")]
                if mem:
                    axes[2].plot(*zip(*mem), styles[prec], marker="o", color=colors[a], label=f"{a} {prec}")
            bctx = sorted(set(s["batch_contexts"]) | {r["context"] for r in rows if r["series"] == "batch"})
            pts = [(T, fixed_batch(rows, a, T, prec)) for T in bctx]
            pts = [(T, r["median"]) for T, r in pts if r]
            if len(pts) >= 1:
                axes[1].plot(*zip(*pts), styles[prec], marker="o", color=colors[a], label=f"{a} {prec}")
        rs = sorted((r for r in rows if r["arch"] == a and r["series"] == "compiled" and "skipped" not in r),
                    key=lambda r: r["context"])
        if rs:
            axes[0].plot([r["context"] for r in rs], [r["median"] for r in rs], ":", marker="s", color=colors[a],
                         label=f"{a} fp32 compiled")
    titles = (f"step time, {s['tokens_per_step']} tokens/step", "step time, batch 1", "peak memory of a step")
    for ax, title, unit in zip(axes, titles, ("seconds", "seconds", "MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    # one legend under the panels: colour = arch, line style = precision / compiled (not over the curves)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=colors[a], marker="o", label=a) for a in s["archs"]]
    handles += [Line2D([], [], color="black", linestyle=ls, label=lab)
                for ls, lab in (("-", "fp32"), ("--", "bf16 autocast"), (":", "fp32 torch.compile (squares)"))]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False, handlelength=3)
    fig.suptitle(f"Training step against context ({s['preset']} preset)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="flashgau bench speed", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker_main(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
