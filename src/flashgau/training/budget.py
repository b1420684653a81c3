"""Fitting a run into a wall-clock budget (`flashgau train --time-budget S`) on whatever machine it lands on.

By default the budget covers the whole run: setup, training steps, the periodic held-out checks, the final held-out score, the
sample, the checkpoints and the plot. Nothing is assumed about the machine; everything is timed on it:

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
"""

from __future__ import annotations

import math
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
