"""Fitting a run into a wall-clock budget (`flashgau train --time-budget S`) on whatever machine it lands on.

By default the budget covers the whole run: setup, training steps, the periodic held-out checks, the final
held-out score, the sample, the checkpoints and the plot. Nothing is assumed about the machine; everything is
timed on it:

1. Before the first step, one forward + backward on a single window (no optimizer step, random tokens, weights
   untouched) estimates a step. If one step would take more than half the budget, the run stops there and says
   what to change (`StepDoesNotFit`), instead of running for an hour.
2. The first steps are real training steps (inside the learning-rate warm-up, which does not depend on the run's
   length). Their median time, one held-out batch, a short decode and the first checkpoint write are timed.
3. `plan_budget` (a pure function of those timings) splits what is left: evaluation gets at most a quarter (the
   periodic checks at most a tenth), the rest goes to training steps. When the whole held-out set cannot be scored
   in its share, the final score uses a fixed, evenly spaced subset of windows, and says so.
4. At every periodic check the step count is refitted to the measured step time (`refit_steps`), and training
   stops at the deadline whatever happens, so the run ends within a few percent of the budget even when the
   machine slows down.

With `covers="training"` (TrainConfig.time_budget_covers) the budget counts training-step time only: the seconds
inside the optimizer steps, summed. Held-out scoring, checkpoints, the sample and setup are not charged, so runs
of archs whose evaluation costs differ get the same training seconds (what the quality and ablation benchmarks
compare). The plan then gives every remaining training second to steps, scores the periodic checks on the
requested windows and the final score on the whole held-out set, and the deadline is a training-time one.

`plan_budget` and `refit_steps` are pure functions of timings; `TimeBudget` applies them to one session of a run:
the loop (training/loop.py) calls it before the first step, after every step and after every periodic check.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from ..errors import ConfigError

EVAL_SHARE = 0.25        # at most this share of the time left goes to held-out scoring (periodic + final)
PERIODIC_SHARE = 0.10    # of which the periodic checks take at most this share
PERIODIC_CHECKS = 10     # held-out checks during a run
MIN_WINDOWS = 2          # never score fewer windows than this in a check
MARGIN = 0.03            # share of the budget kept free for what is not timed (process exit, the last print)
COVERS = ("run", "training")   # what a time budget counts: the whole run, or the training steps only
TIMED_STEPS = 4          # a run times this many steps (the first excluded) before fixing its length


class StepDoesNotFit(ConfigError):
    """One training step takes longer than the time budget allows."""


@dataclass
class BudgetPlan:
    """total_steps: optimizer steps of the run; deadline: the clock reading (run seconds, or training seconds when
    covers="training") at which training stops at the latest; periodic_windows: held-out windows per periodic
    check; final_windows: windows of the final score (None: all); and the timings the plan was made from
    (seconds)."""

    total_steps: int
    deadline: float
    periodic_windows: int
    final_windows: Optional[int]
    step_seconds: float
    window_seconds: float
    final_seconds: float
    reserve_seconds: float
    covers: str = "run"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BudgetPlan":
        return cls(**data)

    def describe(self, budget: float, heldout_windows: int) -> str:
        final = ("all held-out windows" if self.final_windows is None else
                 f"a fixed subset of {self.final_windows} of the {heldout_windows} held-out windows (the whole set "
                 "does not fit the budget)")
        what = " of training steps" if self.covers == "training" else ""
        return (f"time budget {budget:.0f} s{what}: {self.step_seconds:.2f} s/step -> {self.total_steps} steps; "
                f"held-out checks on {self.periodic_windows} windows, final score on {final}")


def check_first_step(estimate: float, budget: float, *, windows_per_step: int, context: int,
                     precision: str) -> None:
    """Refuse a run whose first step would take more than half of the budget (`estimate` seconds)."""
    if estimate <= 0.5 * budget:
        return
    need = math.ceil(2.5 * estimate / 10) * 10
    raise StepDoesNotFit(
        f"one training step takes about {estimate:.0f} s here ({windows_per_step} windows of {context} tokens, "
        f"{precision}), more than half of the {budget:.0f} s time budget; raise --time-budget to {need:.0f} or "
        "more, or make a step cheaper (--batch-tokens, --context, --preset tiny)")


def plan_budget(*, budget: float, elapsed: float, steps_done: int, step_seconds: float, window_seconds: float,
                heldout_windows: int, periodic_windows: int, sample_seconds: float, save_seconds: float,
                saves: int = 6, covers: str = "run") -> BudgetPlan:
    """Split the time left (`budget` - `elapsed`) between training steps and held-out scoring (see the module
    docstring). `periodic_windows` is the requested size of the periodic checks; `saves` the checkpoints still to
    write. With covers="training", `elapsed` is the training seconds so far and all that is left goes to steps."""
    if covers not in COVERS:
        raise ValueError(f"covers must be one of {COVERS}, got {covers!r}")
    if covers == "training":
        total = max(steps_done + int(max(budget - elapsed, 0.0) / step_seconds), steps_done, 1)
        return BudgetPlan(total_steps=total, deadline=budget, periodic_windows=min(periodic_windows, heldout_windows),
                          final_windows=None, step_seconds=step_seconds, window_seconds=window_seconds,
                          final_seconds=heldout_windows * window_seconds, reserve_seconds=0.0, covers=covers)
    reserve = sample_seconds + saves * save_seconds + MARGIN * budget + 1.0      # 1 s: the plot and summary
    left = max(budget - elapsed - reserve, 0.0)
    eval_time = EVAL_SHARE * left
    per_check = max(MIN_WINDOWS, min(periodic_windows, int(PERIODIC_SHARE * left / PERIODIC_CHECKS
                                                           / max(window_seconds, 1e-9))))
    per_check = min(per_check, heldout_windows)
    periodic_time = PERIODIC_CHECKS * per_check * window_seconds
    final_fit = int(max(eval_time - periodic_time, 0.0) / max(window_seconds, 1e-9))
    final = None if final_fit >= heldout_windows else max(min(heldout_windows, MIN_WINDOWS), final_fit)
    final_time = (heldout_windows if final is None else final) * window_seconds
    train_time = max(left - periodic_time - final_time, 0.0)
    total = max(steps_done + int(train_time / step_seconds), steps_done, 1)
    deadline = budget - reserve - final_time
    return BudgetPlan(total_steps=total, deadline=deadline, periodic_windows=per_check, final_windows=final,
                      step_seconds=step_seconds, window_seconds=window_seconds, final_seconds=final_time,
                      reserve_seconds=reserve)


def refit_steps(plan: BudgetPlan, *, step: int, elapsed: float, step_seconds: float, checks_left: int,
                tolerance: float = 0.03) -> int:
    """The step count that ends training at the plan's deadline at the measured `step_seconds` (the periodic
    checks still to come included, unless the budget covers training only: then `elapsed` is training seconds);
    the planned count when that is within `tolerance` of it."""
    checks = 0.0 if plan.covers == "training" else checks_left * plan.periodic_windows * plan.window_seconds
    time_left = plan.deadline - elapsed - checks
    total = max(step + int(max(time_left, 0.0) / step_seconds), step)
    if abs(total - plan.total_steps) <= tolerance * plan.total_steps:
        return plan.total_steps
    return total


def one_window_seconds(run) -> float:
    """One forward + backward of `run`'s eager model (training/state.py's RunState) on one window of random tokens
    (no optimizer step; gradients discarded; the global RNG is restored): what a step costs, before one is taken."""
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


class TimeBudget:
    """Keeps one session of a time-budgeted run to its `seconds` (steps 1, 2 and 4 of the module docstring). It acts
    through `loop`, the session of training/loop.py: its run, clock (`elapsed`, `wall`: rank 0's run seconds at the
    end of the last step) and `step_times`; its held-out scoring (`window_seconds`), `sample` and `checkpoint`, timed
    for the plan; `note`; and `set_length`, which moves the run's length. Under torchrun rank 0's timings decide."""

    def __init__(self, loop, seconds: float) -> None:
        self.loop, self.run, self.seconds = loop, loop.run, seconds
        self.eval_times: list[float] = []     # seconds per held-out window in the periodic checks

    def clock(self, *, agreed: bool = False) -> float:
        """What the budget counts: the run's wall seconds (`agreed`: rank 0's at the end of the last step, the same
        on every process), or its training-step seconds (the slowest process's, summed) when the budget covers
        training only (TrainConfig.time_budget_covers)."""
        if self.run.config.time_budget_covers == "training":
            return self.run.train_seconds
        return self.loop.wall if agreed else self.loop.elapsed()

    def before_start(self) -> None:
        """Refuse a run whose first step (not taken yet) cannot fit (StepDoesNotFit), before anything is written."""
        run, cfg = self.run, self.run.config
        if run.plan is not None or run.step > 0:
            return
        micro, accumulation = cfg.split(run.dist.world_size)       # this process's windows of a step
        estimate = run.dist.max([one_window_seconds(run)])[0] * micro * accumulation
        if estimate > 0.5 * self.seconds:     # the first pass pays one-time costs (allocations, thread pools)
            estimate = run.dist.max([one_window_seconds(run)])[0] * micro * accumulation
        check_first_step(estimate, self.seconds, windows_per_step=cfg.windows_per_step, context=cfg.context,
                         precision=run.precision.name)

    def after_step(self) -> None:
        """Plan once the first steps are timed; stop at the deadline whatever the plan said."""
        run, loop = self.run, self.loop
        if run.plan is None:
            if self._timed_enough(loop.step_times, compiled=run.compiled is not None):
                self._plan()
            return
        if run.step < run.total_steps and self.clock(agreed=True) + statistics.median(loop.step_times[-20:]) \
                > run.plan.deadline:
            loop.note(f"time budget: training stops at step {run.step} of {run.total_steps} planned (steps took "
                      "longer than timed)")
            loop.set_length(run.step, record=False)

    def after_check(self, window_seconds: float) -> None:
        """Re-fit the plan to what the machine does now: the held-out scoring time measured in the checks
        (`window_seconds` per window in this one) moves the deadline (the final score must still fit), the step
        time of the last 50 steps sets the step count."""
        run, loop = self.run, self.loop
        self.eval_times.append(window_seconds)
        plan = run.plan
        if plan is None or run.step >= run.total_steps:
            return
        plan.window_seconds = statistics.median(self.eval_times)
        final_seconds = (plan.final_windows or len(run.heldout)) * plan.window_seconds
        if plan.covers == "run":                 # a training-time deadline does not pay for the final score
            plan.deadline += plan.final_seconds - final_seconds
        plan.final_seconds = final_seconds
        recent = statistics.median(loop.step_times[-50:])
        checks_left = max(0, (run.total_steps - run.step) // loop.intervals.eval_every)
        total = refit_steps(plan, step=run.step, elapsed=self.clock(), step_seconds=recent,
                            checks_left=checks_left)
        run.plan, total = run.dist.broadcast((plan, total))      # rank 0's measurements decide for every process
        if total != run.total_steps and total > run.step:
            loop.note(f"time budget: {total} steps instead of {run.total_steps} (steps take {recent:.2f} s, "
                      f"planned {run.plan.step_seconds:.2f} s)")
            loop.set_length(total)

    def _timed_enough(self, step_times: list[float], compiled: bool) -> bool:
        """Enough steps timed to plan: TIMED_STEPS after the first (which pays one-time costs), or fewer when they
        already used a tenth of the budget. A compiled first step (the compile) never stands for a step alone."""
        return len(step_times) > TIMED_STEPS or (len(step_times) >= 2 and sum(step_times) > 0.1 * self.seconds) \
            or (step_times[0] > 0.25 * self.seconds and not compiled)

    def _plan(self) -> None:
        """Time one held-out batch, a short decode and a checkpoint write, then fit the run into the budget."""
        run, cfg, loop = self.run, self.run.config, self.loop
        window_seconds = loop.window_seconds(min(loop.eval_batch, len(run.heldout)))
        sample_seconds = 0.0
        if cfg.sample_tokens:
            t0 = time.perf_counter()
            probe = min(8, cfg.sample_tokens)
            loop.sample(probe, seed=0)
            sample_seconds = (time.perf_counter() - t0) / probe * cfg.sample_tokens
            run.model.train()
        t0 = time.perf_counter()
        loop.checkpoint()
        save_seconds = time.perf_counter() - t0
        timed = loop.step_times[1:] or loop.step_times
        run.plan = run.dist.broadcast(                     # rank 0's timings decide for every process
            plan_budget(budget=self.seconds, elapsed=self.clock(), steps_done=run.step,
                        step_seconds=statistics.median(timed), window_seconds=window_seconds,
                        heldout_windows=len(run.heldout), periodic_windows=cfg.eval_windows,
                        sample_seconds=sample_seconds, save_seconds=save_seconds, covers=cfg.time_budget_covers))
        loop.set_length(run.plan.total_steps)
        loop.note(run.plan.describe(self.seconds, len(run.heldout)))
