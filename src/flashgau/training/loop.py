"""train(): start a run or resume one, then one loop.

One optimizer step = `accumulation_steps` micro-batches of random windows (data.batching), each loss weighted by its
share of the step's scored tokens, then gradient clipping and an AdamW step at the learning rate of the warm-up +
cosine schedule. Every step is logged to metrics.jsonl; every `eval_every` steps the model is scored on a fixed
subset of held-out windows; every `save_every` steps and at the end a checkpoint is written atomically. At the end
the held-out set is scored, a sample is written, and loss.png and summary.json are drawn.

A time-budgeted run fits itself to the machine (training/budget.py). Resuming restores the weights, optimizer,
schedule, window sampler and RNG state, so the continued run takes the same steps as an uninterrupted one.
Ctrl-C or SIGTERM stops after the current step and saves a checkpoint (a second Ctrl-C aborts).
"""

from __future__ import annotations

import json
import math
import signal
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from ..errors import ConfigError, FlashgauError
from ..runtime import describe_device, resolve_device
from .budget import PERIODIC_CHECKS, BudgetPlan, check_first_step, plan_budget, refit_steps
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .evaluate import EvalResult, evaluate
from .metrics import MetricsLog, plot_losses, read_metrics
from .progress import Progress
from .state import RunState, resume_run, start_run
from .trained import sample_text

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"
SUMMARY_NAME = "summary.json"
TIMED_STEPS = 4          # a time-budgeted run times this many steps (the first excluded) before fixing its length


class TrainingDiverged(FlashgauError):
    """The training or held-out loss became NaN or infinite."""


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    step: int
    total_steps: int
    tokens_seen: int
    elapsed: float                  # wall seconds of the whole run (all sessions), final evaluation included
    num_parameters: int
    final: Optional[EvalResult]     # None when the run stopped before its last step
    sample: Optional[str]           # the prompt and its continuation, when one was asked for
    model: torch.nn.Module
    tokenizer: object
    data: object                    # the RunData (split, tokenizer, token documents)
    interrupted: bool = False       # stopped by Ctrl-C / SIGTERM before the last step

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


def train(config: Optional[TrainConfig] = None, *, resume: Optional[Union[str, Path]] = None,
          changes: Optional[dict] = None, device: Union[str, torch.device, None] = "auto",
          compile: Optional[bool] = None, stop_after: Optional[int] = None, overwrite: bool = False,
          progress: bool = True, log: Callable[[str], None] = print) -> TrainResult:
    """Train a language model as `config` says, or continue the run saved at `resume` (a checkpoint file or
    run folder) with its saved settings, but for `changes` (state.RESUME_CHANGES: compile, the sample), on
    `device` ("auto": a GPU when there is one). `compile` switches torch.compile for either. `stop_after` ends the
    session after that step with a checkpoint, as an interruption would. Everything is checked before anything
    is written."""
    t_start = time.perf_counter()
    if stop_after is not None and not (isinstance(stop_after, int) and stop_after >= 1):
        raise ConfigError(f"stop_after must be an integer >= 1, got {stop_after!r}")
    device = resolve_device(device)
    if resume is not None:
        changes = {**(changes or {}), **({"compile": compile} if compile is not None else {})}
        run = resume_run(resume, device=device, changes=changes)
    else:
        config = config if config is not None else TrainConfig()
        if compile is not None:
            config = TrainConfig.from_dict({**config.to_dict(), "compile": compile})
        run = start_run(config, device=device, overwrite=overwrite)
    cfg = run.config

    def elapsed() -> float:
        return run.elapsed_before + time.perf_counter() - t_start

    budget = cfg.time_budget
    if budget is not None and run.plan is None and run.step == 0:
        estimate = _one_window_seconds(run) * cfg.windows_per_step
        if estimate > 0.5 * budget:        # the first pass pays one-time costs (allocations, thread pools): again
            estimate = _one_window_seconds(run) * cfg.windows_per_step
        check_first_step(estimate, budget, windows_per_step=cfg.windows_per_step, context=cfg.context,
                         precision=run.precision.name)

    run.out_dir.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(run.out_dir / METRICS_NAME)
    if run.resumed:
        metrics.truncate_after(run.step)
        log(f"resuming {run.checkpoint_path} at step {run.step}/{run.total_steps}")
    else:
        metrics.path.unlink(missing_ok=True)
    log(f"{cfg.arch} ({cfg.preset}, {run.model.num_parameters():,} parameters) | {run.data.split.describe()} | "
        f"{cfg.tokenizer} tokenizer (V={run.data.tokenizer.vocab_size}) | context {cfg.context} | "
        f"{cfg.windows_per_step} windows/step ({cfg.micro_batch_size} x {cfg.accumulation_steps}) | "
        + (f"{run.total_steps} steps" if run.total_steps else f"time budget {budget:g} s") + f" | out {run.out_dir}")
    log(f"device {describe_device(device)} | precision {run.precision.describe()}"
        + (" | torch.compile" if cfg.compile else ""))

    def checkpoint() -> None:
        save_checkpoint(run.checkpoint_dict(elapsed()), run.checkpoint_path)

    eval_batch = max(1, cfg.micro_batch_tokens // cfg.context)

    def score(limit: Optional[int]) -> EvalResult:
        return evaluate(run.model, run.heldout, run.data.tokenizer.token_byte_lengths(), batch_size=eval_batch,
                        precision=run.precision, limit=limit)

    bar = Progress(run.total_steps, initial=run.step, enabled=progress)
    note = bar.write if progress else log          # what the run decides on the way (plans, early stops)
    intervals = _Intervals(cfg, run.total_steps)
    step_times: list[float] = []     # seconds per optimizer step, this session
    eval_times: list[float] = []     # seconds per held-out window in the periodic checks, this session
    interrupted = False
    run.model.train()
    try:
        with _stop_on_signals(bar.write) as stop:
            while ((run.total_steps is None or run.step < run.total_steps) and not stop.requested
                   and (stop_after is None or run.step < stop_after)):
                t_step = time.perf_counter()
                lr = run.schedule.apply(run.optimizer, run.step)
                loss, grad_norm, n_tokens = _optimizer_step(run)
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"training diverged at step {run.step + 1} (loss {loss}); the last "
                                           f"checkpoint is kept; try a lower learning rate (lr {cfg.lr:g})")
                dt = time.perf_counter() - t_step
                step_times.append(dt)
                run.step += 1
                run.tokens_seen += n_tokens
                metrics.append({"kind": "train", "step": run.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                                "tokens": run.tokens_seen, "elapsed": round(elapsed(), 3)})
                bar.update(run.step, loss, n_tokens / dt)
                if budget is not None and run.plan is None and _timed_enough(step_times, budget):
                    run.plan = _plan(run, budget, step_times, elapsed, score, checkpoint, eval_batch)
                    run.schedule.set_total(run.plan.total_steps)
                    intervals = _Intervals(cfg, run.total_steps)
                    bar.set_total(run.total_steps)
                    metrics.append({"kind": "plan", "step": run.step, "elapsed": round(elapsed(), 3),
                                    **run.plan.to_dict()})
                    note(run.plan.describe(budget, len(run.heldout)))
                if run.plan is not None and elapsed() + statistics.median(step_times[-20:]) > run.plan.deadline:
                    if run.step < run.total_steps:
                        note(f"time budget: training stops at step {run.step} of {run.total_steps} planned "
                             "(steps took longer than timed)")
                        run.schedule.total_steps = run.plan.total_steps = run.step
                        bar.set_total(run.step)
                if intervals.eval_due(run.step, run.total_steps):
                    t_eval = time.perf_counter()
                    result = score(run.plan.periodic_windows if run.plan else cfg.eval_windows)
                    eval_times.append((time.perf_counter() - t_eval) / result.windows)
                    _check_finite(result, run.step)
                    metrics.append({"kind": "eval", "step": run.step, "elapsed": round(elapsed(), 3),
                                    "heldout_loss": result.loss, "heldout_bpb": result.bits_per_byte})
                    bar.write(f"step {run.step}: held-out loss {result.loss:.4f}, {result.bits_per_byte:.4f} "
                              f"bits/byte ({result.windows} fixed windows)")
                    if run.plan is not None and run.step < run.total_steps:
                        _refit(run, step_times, eval_times, elapsed(), intervals, note, metrics)
                        bar.set_total(run.total_steps)
                if intervals.save_due(run.step, run.total_steps):
                    checkpoint()
            interrupted = stop.requested and (run.total_steps is None or run.step < run.total_steps)
    finally:
        bar.close()
    if run.total_steps is None:          # stopped while still timing the first steps: the length is what ran
        run.schedule.set_total(max(run.step, 1))
    checkpoint()
    final = sample = None
    if run.step >= run.total_steps:
        t_eval, end_of_training = time.perf_counter(), elapsed()
        final = score(run.plan.final_windows if run.plan else None)
        metrics.append({"kind": "final", "step": run.step, "elapsed": round(end_of_training, 3),
                        "eval_seconds": round(time.perf_counter() - t_eval, 3), "heldout_loss": final.loss,
                        "heldout_bpb": final.bits_per_byte, **final.to_dict()})
        log(final.describe())
        _check_finite(final, run.step)
        if cfg.sample_tokens:
            sample = run.sample_prompt + sample_text(run.model, run.data.tokenizer, run.sample_prompt,
                                                     max_new_tokens=cfg.sample_tokens, seed=cfg.seed,
                                                     precision=run.precision)
            log(f"--- sample (prompt, then {cfg.sample_tokens} generated tokens) ---\n{sample}\n---")
    else:
        log(f"stopped at step {run.step}/{run.total_steps}; continue with: flashgau train --resume {run.out_dir}")
    plot_losses(read_metrics(metrics.path), run.out_dir / PLOT_NAME,
                title=f"{cfg.arch} {cfg.preset}, {cfg.tokenizer}, context {cfg.context}")
    result = TrainResult(out_dir=run.out_dir, checkpoint=run.checkpoint_path, step=run.step,
                         total_steps=run.total_steps, tokens_seen=run.tokens_seen, elapsed=elapsed(),
                         num_parameters=run.model.num_parameters(), final=final, sample=sample, model=run.model,
                         tokenizer=run.data.tokenizer, data=run.data, interrupted=interrupted)
    _write_summary(result, run, time.perf_counter() - t_start)
    return result


# ------------------------------------------------------------------------------------------------ one step

def _optimizer_step(run: RunState) -> tuple[float, float, int]:
    """Draw one step's micro-batches, accumulate gradients, clip, update. Returns (loss, grad norm, tokens)."""
    cfg = run.config
    batches = [run.sampler.next_batch(cfg.micro_batch_size) for _ in range(cfg.accumulation_steps)]
    counts = [b.num_targets for b in batches]
    total_targets = sum(counts)
    loss_sum = torch.zeros((), device=run.device)
    for batch, count in zip(batches, counts):
        batch = batch.to(run.device)
        with run.precision.autocast():
            out = run.forward(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
        loss = out.loss.float() * (count / total_targets)
        (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
        loss_sum += loss.detach()
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    params = [p for p in run.model.parameters() if p.requires_grad]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return float(loss_sum), grad_norm, total_targets


# ------------------------------------------------------------------------------------------ the time budget

def _one_window_seconds(run: RunState) -> float:
    """One forward + backward of the eager model on one window of random tokens (no optimizer step; gradients
    discarded; the global RNG is restored), to refuse a step that cannot fit before taking it."""
    rng = torch.get_rng_state()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, run.model_config.vocab_size, (1, run.config.context + 1), generator=gen).to(run.device)
    t0 = time.perf_counter()
    with run.precision.autocast():
        out = run.model(ids[:, :-1], labels=ids[:, 1:])
    out.loss.float().backward()
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    seconds = time.perf_counter() - t0
    run.model.zero_grad(set_to_none=True)
    torch.set_rng_state(rng)
    return seconds


def _timed_enough(step_times: list[float], budget: float) -> bool:
    """Enough steps timed to plan: TIMED_STEPS after the first (which pays one-time costs), or fewer when they
    already used a tenth of the budget."""
    return len(step_times) > TIMED_STEPS or (len(step_times) >= 2 and sum(step_times) > 0.1 * budget) \
        or step_times[0] > 0.25 * budget


def _plan(run: RunState, budget: float, step_times: list[float], elapsed, score, checkpoint,
          eval_batch: int) -> BudgetPlan:
    """Time one held-out batch, a short decode and a checkpoint write, then fit the run into the budget."""
    t0 = time.perf_counter()
    windows = min(eval_batch, len(run.heldout))
    score(windows)
    window_seconds = (time.perf_counter() - t0) / windows
    sample_seconds = 0.0
    if run.config.sample_tokens:
        t0 = time.perf_counter()
        probe = min(8, run.config.sample_tokens)
        sample_text(run.model, run.data.tokenizer, run.sample_prompt, max_new_tokens=probe, seed=0,
                    precision=run.precision)
        sample_seconds = (time.perf_counter() - t0) / probe * run.config.sample_tokens
    t0 = time.perf_counter()
    checkpoint()
    save_seconds = time.perf_counter() - t0
    timed = step_times[1:] or step_times
    return plan_budget(budget=budget, elapsed=elapsed(), steps_done=run.step, step_seconds=statistics.median(timed),
                       window_seconds=window_seconds, heldout_windows=len(run.heldout),
                       periodic_windows=run.config.eval_windows, sample_seconds=sample_seconds,
                       save_seconds=save_seconds)


def _refit(run: RunState, step_times: list[float], eval_times: list[float], now: float, intervals: "_Intervals",
           note: Callable[[str], None], metrics: MetricsLog) -> None:
    """Re-fit the plan to what the machine does now: the held-out scoring time measured in the checks moves the
    deadline (the final score must still fit), the step time of the last 50 steps sets the step count."""
    plan = run.plan
    plan.window_seconds = statistics.median(eval_times)
    final_seconds = (plan.final_windows or len(run.heldout)) * plan.window_seconds
    plan.deadline += plan.final_seconds - final_seconds
    plan.final_seconds = final_seconds
    recent = statistics.median(step_times[-50:])
    checks_left = max(0, (run.total_steps - run.step) // intervals.eval_every)
    total = refit_steps(plan, step=run.step, elapsed=now, step_seconds=recent, checks_left=checks_left)
    if total != run.total_steps and total > run.step:
        note(f"time budget: {total} steps instead of {run.total_steps} (steps take {recent:.2f} s, planned "
             f"{plan.step_seconds:.2f} s)")
        plan.total_steps = total
        run.schedule.set_total(total)
        metrics.append({"kind": "plan", "step": run.step, "elapsed": round(now, 3), **plan.to_dict()})


def _check_finite(result: EvalResult, step: int) -> None:
    if not math.isfinite(result.loss):
        raise TrainingDiverged(f"the held-out loss is {result.loss} at step {step}: the model diverged; the last "
                               "checkpoint is kept; try a lower learning rate")


class _Intervals:
    """When to score and when to save: every `eval_every` / `save_every` steps and at the last step (about ten
    checks and five checkpoints per run unless the config says otherwise; nothing while the length is unknown)."""

    def __init__(self, cfg: TrainConfig, total: Optional[int]) -> None:
        self.eval_every = cfg.eval_every or max(1, (total or 1) // PERIODIC_CHECKS)
        self.save_every = cfg.save_every or max(1, (total or 1) // 5)
        self.known = total is not None

    def eval_due(self, step: int, total: Optional[int]) -> bool:
        return self.known and (step % self.eval_every == 0 or step == total)

    def save_due(self, step: int, total: Optional[int]) -> bool:
        return self.known and step % self.save_every == 0 and step < total


# ------------------------------------------------------------------------------------------------- the end

def _write_summary(result: TrainResult, run: RunState, session_seconds: float) -> None:
    summary = {"step": result.step, "total_steps": result.total_steps, "tokens_seen": result.tokens_seen,
               "num_parameters": result.num_parameters, "train_elapsed_s": round(result.elapsed, 1),
               "session_s": round(session_seconds, 1), "time_budget_s": run.config.time_budget,
               "device": str(run.device), "precision": run.precision.to_dict(),
               "plan": run.plan.to_dict() if run.plan else None,
               "final": result.final.to_dict() if result.final else None, "sample": result.sample}
    path = run.out_dir / SUMMARY_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


class _StopFlag:
    requested = False


@contextmanager
def _stop_on_signals(say: Callable[[str], None]):
    """First Ctrl-C (SIGINT) or SIGTERM (what schedulers and `kill` send): finish the current step, save, return.
    A second Ctrl-C aborts at once."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        say(f"{name}: stopping after this step and saving a checkpoint (Ctrl-C again to abort without saving)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
