"""Timing a group: one full training step per arch, the archs interleaved round by round, on the chosen device
(CUDA work is synchronized around every timed step)."""

from __future__ import annotations

import gc
import os
import statistics
import time

import torch

from ...model import LanguageModel
from ...runtime import resolve_precision
from ..common import environment, synchronizer
from ..flops import analytic_flops
from .plan import Group, SpeedSettings, attention_bytes_estimate, model_config


def make_step(model, precision: str, batch: int, context: int, seed: int):
    """A closure running one full training step (forward, backward, clip, AdamW) on fixed random tokens, on the
    model's device in `precision` (fp32, bf16 or fp16 autocast; fp16 with a gradient scaler)."""
    from ...training.optim import make_optimizer

    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, context + 1), generator=gen).to(device)
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    opt = make_optimizer(model, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.98))
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    prec = resolve_precision(precision, device)
    scaler = prec.grad_scaler()

    def step() -> float:
        with prec.autocast():
            out = model(x, labels=y)
        loss = out.loss.float()
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def time_group(g: Group, s: SpeedSettings, peaks: dict, log=print) -> dict:
    """Time every arch of group g, interleaved; returns the group's record (the saved JSON)."""
    device = torch.device(s.device)
    sync = synchronizer(device)
    archs, skipped, steps, info = [], {}, {}, {}
    compiled, checkpointed = g.series == "compiled", g.series == "checkpointed"
    if compiled:
        # a fresh compile cache per group: code compiled for another context would otherwise be recompiled with
        # dynamic (symbolic) shapes, whose generic kernels are slower than the static ones measured here
        torch._dynamo.reset()
    for arch in s.compile_archs if compiled else s.archs:
        cfg = model_config(arch, s.preset, g.context)
        est = attention_bytes_estimate(cfg, g.batch, g.context, checkpointed)
        if est > s.max_attention_gib * 2**30:
            skipped[arch] = (f"estimated T x T attention memory {est / 2**30:.0f} GiB > --max-attention-gib "
                             f"{s.max_attention_gib:g}")
            continue
        torch.manual_seed(s.seed)
        model = LanguageModel(cfg).to(device).set_activation_checkpointing(checkpointed)
        if compiled:
            model.compile(dynamic=False)    # in place: parameter names (weight-decay groups) unchanged
        steps[arch] = make_step(model, g.precision, g.batch, g.context, s.seed)
        info[arch] = dict(params=model.num_parameters(), n_layers=cfg.n_layers,
                          analytic_flops=analytic_flops(cfg, g.batch, g.context))
        archs.append(arch)
    times = {a: [] for a in archs}
    util = {a: [] for a in archs}
    losses, first = {}, {}
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    warmup = max(s.warmup, 1) if compiled else s.warmup      # the first compiled step compiles
    for r in range(warmup + s.repeats):
        for arch in archs:            # interleaved: one step of every arch per round
            gc.collect()
            sync()
            c0, t0 = time.process_time(), time.perf_counter()
            losses[arch] = steps[arch]()
            sync()
            dt = time.perf_counter() - t0
            first.setdefault(arch, dt)
            if r >= warmup:
                times[arch].append(dt)
                if device.type == "cpu":
                    # CPU seconds this process got per wall second per thread: well below 1 means another
                    # process took cores during the step (the time is then not trustworthy)
                    util[arch].append((time.process_time() - c0) / dt / threads)
    results = {}
    for arch in archs:
        ts = sorted(times[arch])
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        med = statistics.median(ts)
        fl = info[arch]["analytic_flops"]
        res = dict(times=times[arch], cpu_utilisation=util[arch] or None, median=med, min=ts[0], max=ts[-1],
                   q1=q[0], q3=q[2], tokens_per_s=g.batch * g.context / med, loss=losses[arch],
                   first_step=first[arch], **info[arch])
        if fl:
            res["mfu"] = fl["total"] / med / peaks[g.precision]["flops_per_s"]
            res["mfu_vs_fp32_peak"] = fl["total"] / med / peaks["fp32"]["flops_per_s"]
        results[arch] = res
        log(f"  {g.series:>8} T={g.context:>5} B={g.batch:>2} {g.precision} {arch:<16} "
            f"median {med:7.3f} s [{ts[0]:.3f}-{ts[-1]:.3f}]"
            + (f"  cpu {min(util[arch]):.2f}" if util[arch] else "") + (f"  MFU {res['mfu']:.0%}" if fl else ""))
    for arch, why in skipped.items():
        log(f"  {g.series:>8} T={g.context:>5} B={g.batch:>2} {g.precision} {arch:<16} skipped: {why}")
    return dict(group=g.to_dict(), preset=s.preset, device=str(device), warmup=warmup, repeats=s.repeats,
                seed=s.seed, results=results, skipped=skipped, peaks=peaks, env=environment(device),
                torch_threads=threads, loadavg_before=load_before, loadavg_after=os.getloadavg())
