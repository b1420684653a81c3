"""train(): start a run or resume one, then one loop.

The run's task (flashgau.tasks: lm, mlm) supplies the batches, the held-out set and its score; the loop knows no
objective. One optimizer step = `accumulation_steps` micro-batches of the task's batches, each loss weighted by its
share of the step's scored tokens, then gradient clipping and an AdamW step at the learning rate of the warm-up +
cosine schedule. Every step is logged to metrics.jsonl; every `eval_every` steps the model is scored on a fixed
subset of held-out windows; every `save_every` steps and at the end a checkpoint is written atomically. At the end
the held-out set is scored, a sample is written, and loss.png and summary.json are drawn. The run's settings,
resolved, are written first as config.toml (`flashgau train --config` repeats the run from it:
training/run_config.py); a run that asks for TensorBoard or W&B (TrainConfig.log) gets the metrics there too.

A time-budgeted run fits itself to the machine (training/budget.py); torch.compile is applied (or, for "auto",
decided) before the first step (training/compiling.py). Resuming restores the weights, optimizer, schedule, window
sampler and RNG state, so the continued run takes the same steps as an uninterrupted one. Ctrl-C or SIGTERM stops
after the current step and saves a checkpoint (a second Ctrl-C aborts: training/stopping.py).

Under torchrun the same loop runs in every process (runtime/distributed.py): each process draws its share of every
step's windows from the run's one stream, gradients are averaged by DDP (or reduced by FSDP), and each process
takes the same steps: rank 0's clock and plan decide the time budget, and a stop asked for on any process stops
all of them after the same step. Rank 0 alone claims the run folder, writes the checkpoint, metrics, plot and
summary, and prints; the held-out score is split over the processes and summed. A process that loses its peers
stops with PeerLost (one line: which checkpoint is kept, if any, and how to continue).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from ..errors import ConfigError
from ..files import atomic_write
from ..runtime import PeerLost, describe_device, join_process_group
from ..runtime.distributed import as_float
from ..tasks import Score
from .budget import PERIODIC_CHECKS, TimeBudget
from .checkpoint import save_checkpoint
from .compiling import CompileTimes, ShapeRouted, held_out_scorer, settle_compile
from .config import TrainConfig
from .metrics import MetricsLog, NoMetricsLog, flat_hparams, plot_losses, read_metrics, require_loggers
from .progress import Progress
from .run_config import CONFIG_NAME, changed_model_options, format_run_config, resolved_settings
from .run_folder import claimed_by_rank0, restore_set_aside
from .state import RunState, resume_run, start_run
from .stopping import DISK_FULL, Kept, TrainingDiverged, stop_on_signals
from .trained import sample_text

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"
SUMMARY_NAME = "summary.json"


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    step: int
    total_steps: int
    tokens_seen: int
    elapsed: float                  # wall seconds of the whole run (all sessions), final evaluation included
    num_parameters: int
    final: Optional[Score]          # the task's held-out score; None when the run stopped before its last step
    sample: Optional[str]           # the prompt and its continuation, when one was asked for
    model: torch.nn.Module
    tokenizer: object
    data: object                    # the RunData (prepared data, tokenizer, fingerprint)
    interrupted: bool = False       # stopped by Ctrl-C / SIGTERM before the last step

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


def train(config: Optional[TrainConfig] = None, *, resume: Optional[Union[str, Path]] = None,
          changes: Optional[dict] = None, device: Union[str, torch.device, None] = "auto",
          compile: Union[bool, str, None] = None, stop_after: Optional[int] = None, overwrite: bool = False,
          fsdp: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> TrainResult:
    """Train a language model as `config` says, or continue the run saved at `resume` (a checkpoint file or
    run folder) with its saved settings, but for `changes` (state.RESUME_CHANGES: compile, activation
    checkpointing, the sample, the data's new place), on `device` ("auto": a GPU when there is one). `compile`
    ("off", "on", "auto"; True / False) sets torch.compile for either (training/compiling.py).
    `stop_after` ends the session after that step with a checkpoint, as an interruption would. Everything is
    checked before anything is written; the run folder is then owned by this process until train() returns.
    Under torchrun every process calls train() the same way and they train one model (module docstring); `fsdp`
    shards it over them instead of replicating it."""
    t_start = time.perf_counter()
    if stop_after is not None and not (isinstance(stop_after, int) and stop_after >= 1):
        raise ConfigError(f"stop_after must be an integer >= 1, got {stop_after!r}")
    with join_process_group(device, fsdp=fsdp) as dist:
        if not dist.is_main:                          # rank 0 prints; the other processes train quietly
            progress, log = False, _silent
        session: Optional[_Session] = None
        try:
            # the first process of each machine sets up first (it prepares the data into the machine's cache)
            run = dist.first_on_each_machine(lambda: _open_run(config, resume, changes, dist, compile, overwrite,
                                                               progress, log))
            settle_compile(run)                       # compile "on", or "auto" decided now (before DDP wraps it)
            run.spread()
            dist.check_same(run.identity(), hint=" (every process must start the same run or resume the same "
                                                 "checkpoint)")
            session = _Session(run, t_start, progress=progress, log=log)
            if session.budget is not None:
                session.budget.before_start()             # a first step that cannot fit is refused here
            # whether a run is there, and whether it is still the one resumed, is decided under the claim
            with claimed_by_rank0(run.out_dir, dist, new_run=not run.resumed, overwrite=overwrite,
                                  resumes=run.resumed_from) as folder:
                replacing = folder.replacing
                session.on_first_save = folder.discard_previous if replacing else None
                try:
                    session.open_log()
                    interrupted = session.steps(stop_after)
                    return session.finish(interrupted)
                except BaseException as err:
                    if replacing and session.on_first_save is not None:      # no checkpoint of the new run yet
                        log(folder.restore_previous())
                    if isinstance(err, OSError) and err.errno in DISK_FULL:
                        raise session.kept.write_failed(err) from None
                    raise
                finally:
                    session.metrics.close()
        except Exception as err:
            lost = dist.lost_peer(err)
            if lost is None:
                raise
            kept = session.kept if session is not None else Kept(Path(), None)
            raise PeerLost(f"{lost}; {kept.after_lost_peer(dist.is_main)}") from None


def _open_run(config, resume, changes, dist, compile, overwrite, progress, log) -> RunState:
    """The run this process takes part in: resumed from `resume`, or started from `config`."""
    if resume is not None:
        changes = {**(changes or {}), **({"compile": compile} if compile is not None else {})}
        if dist.is_main:
            note = restore_set_aside(resume)      # a run set aside by an interrupted --overwrite comes back first
            if note:
                log(note)
        run = resume_run(resume, device=dist.device, changes=changes, progress=progress, log=log, dist=dist)
        require_loggers(run.config.log)
        return run
    config = config if config is not None else TrainConfig()
    if compile is not None:
        config = TrainConfig.from_dict({**config.to_dict(), "compile": compile})
    require_loggers(config.log)
    return start_run(config, device=dist.device, overwrite=overwrite, progress=progress, log=log, dist=dist)


def _silent(text: str) -> None:
    pass


class _Session:
    """One process's stretch of a run: the loop, the checks, the saves and the end. The loop calls two helpers after
    every step: `budget`, which keeps a time-budgeted run to its plan (training/budget.py; also called after every
    periodic check), and `compile_times`, which measures what compiling cost (training/compiling.py)."""

    def __init__(self, run: RunState, t_start: float, *, progress: bool, log: Callable[[str], None]) -> None:
        self.run, self.cfg, self.t_start, self.log = run, run.config, t_start, log
        self.bar = Progress(run.total_steps, initial=run.step, enabled=progress)
        self.note = self.bar.write if progress else log     # what the run decides on the way (plans, stops)
        self.intervals = _Intervals(run.config, run.total_steps)
        self.scorer, self.eval_batch = held_out_scorer(run)      # compiled for full batches when the run compiles
        self.step_times: list[float] = []     # seconds per optimizer step, this session
        self.wall = run.elapsed_before        # run seconds at the end of the last step, by rank 0's clock
        self.metrics = (MetricsLog if run.dist.is_main else NoMetricsLog)(run.out_dir / METRICS_NAME)
        self.on_first_save: Optional[Callable[[], None]] = None
        self.kept = Kept(run.out_dir, run.step if run.resumed else None)      # the last checkpoint
        self.compile_times = CompileTimes(self)
        self.budget = TimeBudget(self, self.cfg.time_budget) if self.cfg.time_budget is not None else None

    def elapsed(self) -> float:
        return self.run.elapsed_before + time.perf_counter() - self.t_start

    def open_log(self) -> None:
        run, cfg = self.run, self.cfg
        if not run.dist.is_main:
            return
        if run.resumed:
            self.metrics.truncate_after(run.step)
            self.log(f"resuming {run.checkpoint_path} at step {run.step}/{run.total_steps}")
        else:
            self.metrics.path.unlink(missing_ok=True)
        settings = resolved_settings(cfg, run.model_config)
        text = format_run_config(settings, title=f"the settings of the run in {run.out_dir}, resolved: flashgau "
                                 "train --config THIS_FILE --out NEW_DIR repeats it")
        atomic_write(run.out_dir / CONFIG_NAME, text)
        self.metrics.open_sinks(cfg.log, hparams=flat_hparams(settings), config_text=text, name=run.out_dir.name,
                                step=run.step)
        length = f"{run.total_steps} steps" if run.total_steps else f"time budget {cfg.time_budget:g} s"
        options = "".join(f", {k}={v}" for k, v in changed_model_options(cfg).items())
        micro, accumulation = cfg.split(run.dist.world_size)
        processes = f"{run.dist.world_size} processes x " if run.dist.world_size > 1 else ""
        self.log(f"{cfg.arch} ({cfg.preset}{options}, {run.model.num_parameters():,} parameters) | "
                 f"{run.data.describe()} | {run.data.tokenizer.kind} tokenizer (V={run.data.tokenizer.vocab_size}) | "
                 f"context {cfg.context} | {cfg.windows_per_step} windows/step ({processes}{micro} x "
                 f"{accumulation}) | {length} | out {run.out_dir}")
        self.log(f"device {describe_device(run.device)} | precision {run.precision.describe()}"
                 + (" | torch.compile" if run.compiled is not None else "")
                 + (" | activation checkpointing" if cfg.checkpoint_activations else "")
                 + (f" | {run.dist.describe()}" if run.dist.world_size > 1 else ""))
        if run.compile_choice is not None:
            self.log(run.compile_choice.describe())

    # ------------------------------------------------------------------------------------------ the loop
    def steps(self, stop_after: Optional[int]) -> bool:
        """Train until the last step, a stop request or `stop_after`; True when interrupted before the end."""
        run = self.run
        run.model.train()
        try:
            with stop_on_signals(self.bar.write) as stop:
                while ((run.total_steps is None or run.step < run.total_steps) and not stop.requested
                       and (stop_after is None or run.step < stop_after)):
                    t_step = time.perf_counter()
                    lr = run.schedule.apply(run.optimizer, run.step)
                    loss, grad_norm, n_tokens = _optimizer_step(run)
                    if not math.isfinite(loss):
                        raise self.diverged(f"training diverged at step {run.step + 1} (loss {loss})")
                    # what every process takes: the slowest one's step time, rank 0's clock, a stop asked anywhere
                    dt, self.wall, stopping = run.dist.max([time.perf_counter() - t_step,
                                                             self.elapsed() if run.dist.is_main else -math.inf,
                                                             float(stop.requested)])
                    stop.requested = stopping > 0
                    self.step_times.append(dt)
                    run.step += 1
                    run.tokens_seen += n_tokens
                    run.train_seconds += dt
                    self.metrics.append({"kind": "train", "step": run.step, "loss": loss, "lr": lr,
                                         "grad_norm": grad_norm, "tokens": run.tokens_seen,
                                         "tokens_per_s": round(n_tokens / max(dt, 1e-9), 1),
                                         "elapsed": round(self.elapsed(), 3),
                                         "train_seconds": round(run.train_seconds, 3)})
                    self.bar.update(run.step, loss, n_tokens / dt)
                    self.compile_times.after_step()
                    if self.budget is not None:
                        self.budget.after_step()
                    if self.intervals.eval_due(run.step, run.total_steps):
                        self.periodic_check()
                    if self.intervals.save_due(run.step, run.total_steps):
                        self.checkpoint()
                return stop.requested and (run.total_steps is None or run.step < run.total_steps)
        finally:
            self.bar.close()

    def periodic_check(self) -> None:
        run = self.run
        t_eval = time.perf_counter()
        result = self.score(run.plan.periodic_windows if run.plan else self.cfg.eval_windows)
        window_seconds = (time.perf_counter() - t_eval) / result.windows
        self.check_finite(result)
        self.metrics.append({"kind": "eval", "step": run.step, "elapsed": round(self.elapsed(), 3),
                             **result.record()})
        self.bar.write(f"step {run.step}: {result.brief()} ({result.windows} fixed windows)")
        if self.budget is not None:
            self.budget.after_check(window_seconds)

    def set_length(self, total: int, *, record: bool = True) -> None:
        """The run's new length (the time budget's plan): the schedule, the progress bar and, when `record`, the
        metrics log follow; the check and save intervals are fixed when the length is first known."""
        run = self.run
        run.plan.total_steps = total
        run.schedule.set_total(total)
        if not self.intervals.known:
            self.intervals = _Intervals(self.cfg, total)
        self.bar.set_total(total)
        if record:
            self.metrics.append({"kind": "plan", "step": run.step, "elapsed": round(self.elapsed(), 3),
                                 **run.plan.to_dict()})

    # ------------------------------------------------------------------------------ scoring, sampling, saving
    def checkpoint(self) -> None:
        """Rank 0 writes the checkpoint (every process takes part: FSDP gathers the shards)."""
        run = self.run
        if not run.dist.all_finite(run.model.parameters()):
            raise self.diverged(f"the weights became NaN or infinite by step {self.run.step}: the model diverged")
        state = run.checkpoint_dict(self.elapsed())
        if run.dist.is_main:
            save_checkpoint(state, run.checkpoint_path)
        self.kept.saved_step = run.step
        if self.on_first_save is not None:
            self.on_first_save()
            self.on_first_save = None

    def check_finite(self, result: Score) -> None:
        if not math.isfinite(result.loss):
            raise self.diverged(f"the held-out loss is {result.loss} at step {self.run.step}: the model diverged")

    def diverged(self, what: str) -> TrainingDiverged:
        return self.kept.diverged(what, self.cfg)

    def score(self, limit: Optional[int]) -> Score:
        return self.run.heldout.evaluate(self.scorer, batch_size=self.eval_batch, precision=self.run.precision,
                                         limit=limit, dist=self.run.dist)

    def window_seconds(self, windows: int) -> float:
        """Seconds per held-out window, timed on `windows` of them (a compiled scorer compiles first, untimed)."""
        if isinstance(self.scorer, ShapeRouted) and self.scorer.first_seconds is None:
            self.score(windows)
        t0 = time.perf_counter()
        self.score(windows)
        return (time.perf_counter() - t0) / windows

    def sample(self, max_new_tokens: int, seed: int) -> str:
        """The continuation of the run's prompt (every process writes it: with FSDP decoding needs them all)."""
        run = self.run
        with run.dist.full_weights(run.model):
            return sample_text(run.model, run.data.tokenizer, run.sample_prompt, max_new_tokens=max_new_tokens,
                               seed=seed, precision=run.precision)

    # --------------------------------------------------------------------------------------------- the end
    def finish(self, interrupted: bool) -> TrainResult:
        """The last checkpoint; then, for a finished run, the final held-out score and the sample; the plot and
        summary.json either way."""
        run, cfg = self.run, self.cfg
        if run.total_steps is None:          # stopped while still timing the first steps: the length is what ran
            run.schedule.set_total(max(run.step, 1))
        self.checkpoint()
        final = sample = None
        if run.step >= run.total_steps:
            t_eval, end_of_training = time.perf_counter(), self.elapsed()
            final = self.score(run.plan.final_windows if run.plan else None)
            self.metrics.append({"kind": "final", "step": run.step, "elapsed": round(end_of_training, 3),
                                 "eval_seconds": round(time.perf_counter() - t_eval, 3), **final.record(),
                                 **final.to_dict()})
            self.log(final.describe())
            self.check_finite(final)
            if cfg.sample_tokens:
                sample = run.sample_prompt + self.sample(cfg.sample_tokens, seed=cfg.seed)
                self.log(f"--- sample (prompt, then {cfg.sample_tokens} generated tokens) ---\n{sample}\n---")
        else:
            self.log(f"stopped at step {run.step}/{run.total_steps}; continue with: flashgau train --resume "
                     f"{run.out_dir}")
        if run.dist.is_main:
            plot_losses(read_metrics(self.metrics.path), run.out_dir / PLOT_NAME,
                        title=f"{cfg.arch} {cfg.preset}, {run.data.tokenizer.kind}, context {cfg.context}")
        result = TrainResult(out_dir=run.out_dir, checkpoint=run.checkpoint_path, step=run.step,
                             total_steps=run.total_steps, tokens_seen=run.tokens_seen, elapsed=self.elapsed(),
                             num_parameters=run.model.num_parameters(), final=final, sample=sample, model=run.model,
                             tokenizer=run.data.tokenizer, data=run.data, interrupted=interrupted)
        if run.dist.is_main:
            _write_summary(result, run, time.perf_counter() - self.t_start, self.compile_times.record())
        return result


# ------------------------------------------------------------------------------------------------ one step

def _optimizer_step(run: RunState) -> tuple[float, float, int]:
    """Draw this process's micro-batches of one step, accumulate gradients, clip, update. Returns (loss, grad
    norm, input tokens) of the whole step, all processes included."""
    cfg, dist = run.config, run.dist
    micro, accumulation = cfg.split(dist.world_size)
    batches = [run.sampler.next_batch(micro) for _ in range(accumulation)]
    counts = [b.num_targets for b in batches]
    total_targets = int(dist.sum([sum(counts)])[0])
    # Each micro-batch's loss is weighted by its share of the step's targets on all processes. DDP and FSDP average
    # the processes' gradients, so each process's loss counts world_size times: the update follows the gradient
    # of the token-weighted mean loss of the whole step, as one process taking all its windows would.
    loss_sum = torch.zeros((), device=run.device)
    for i, (batch, count) in enumerate(zip(batches, counts)):
        batch = batch.to(run.device)
        with dist.no_sync(run.forward, last=i == len(batches) - 1):
            with run.precision.autocast():
                out = run.forward(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                                  segment_ids=batch.segment_ids)
            loss = out.loss.float() * (count / total_targets)
            scaled = loss * dist.world_size if dist.world_size > 1 else loss
            (run.scaler.scale(scaled) if run.scaler is not None else scaled).backward()
        loss_sum += loss.detach()
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    params = [p for p in run.model.parameters() if p.requires_grad]
    grad_norm = as_float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    loss, tokens = dist.sum([float(loss_sum), sum(b.num_tokens for b in batches)])
    return loss, grad_norm, int(tokens)


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

def _write_summary(result: TrainResult, run: RunState, session_seconds: float, compiled: dict) -> None:
    summary = {"step": result.step, "total_steps": result.total_steps, "tokens_seen": result.tokens_seen,
               "num_parameters": result.num_parameters, "train_elapsed_s": round(result.elapsed, 1),
               "train_step_s": round(run.train_seconds, 1),
               "session_s": round(session_seconds, 1), "time_budget_s": run.config.time_budget,
               "device": str(run.device), "precision": run.precision.to_dict(),
               "model_options": run.config.model, "model_config": run.model_config.to_dict(),
               "plan": run.plan.to_dict() if run.plan else None,
               "compile_seconds": compiled["compile_seconds"], "compile": compiled,
               "final": result.final.to_dict() if result.final else None, "sample": result.sample}
    atomic_write(run.out_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
