"""torch.compile in a training run: off, on, or "auto" (on where a compiler is present and the run is long enough to
repay the compile time), the compile time measured, and held-out scoring through the compiled model.

`decide_compile` is the "auto" rule, a pure function. Compiling pays when the seconds it saves exceed the seconds it
costs: a run of R eager training seconds takes about C + R / s compiled (C: the compile, paid in the first step and
the first held-out check; s: eager step time / compiled step time), so it pays when R > C * s / (s - 1), the
break-even. C and s are measured (below); on the machine they were measured on, passes of one window ran slower
compiled, so "auto" never compiles those, and passes of several windows need ~700 s of training to repay it. The
run length R is the time budget's training share when the run has one, else its steps times an eager step timed on
one window at the start (`expected_run_seconds`). `settle_compile` applies the mode to a run when a session starts.

`ShapeRouted` is what held-out scoring calls while the run compiles (`held_out_scorer`): the compiled model for
batches of the shape it was compiled for (the training micro-batch: the run scores in batches of that size, so all
but perhaps the last batch of a scoring pass have it), the eager model for any other shape (so a short last batch or
a small periodic check never triggers a recompile, nor dynamic-shape kernels). Eval mode and no_grad make a second
graph beside the training one; both stay cached, so switching between training and scoring does not recompile
(measured, docs/training.md). Generation (decoding from a cache, one token at a time) stays eager. `CompileTimes`
measures what compiling cost a session (summary.json "compile").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import ConfigError
from ..runtime import compiler_status
from .budget import EVAL_SHARE, one_window_seconds

COMPILE_MODES = ("off", "on", "auto")

# Measured on AMD EPYC, AVX2, 2 cores (2 threads), torch 2.13.0 CPU, cold inductor cache, small preset FLASH, fp32,
# forward + backward + AdamW step (benchmarks/compile_cost.py; command and table in docs/training.md, "Compiling"):
#   context 512, 8 windows per pass (the default run's): compile 54.4 s, eager 1.84 s, compiled 1.63 s: 1.13x
#   context 512, 1 window:                                compile 61.4 s, eager 0.225 s, compiled 0.302 s: 0.74x
#   context 8192, 1 window:                               compile 55.7 s, eager 4.31 s, compiled 4.78 s: 0.90x
#   the scoring graph (eval mode, no_grad) compiles once more: 24-27 s; then no recompiles between steps and checks.
COMPILE_SECONDS = 80.0           # what compiling costs a run: the training graph (~55 s) + the scoring graph (~25 s)
COMPILED_SPEEDUP = 1.13          # eager / compiled step time, passes of several windows (8 x 512 measured)
COMPILED_SPEEDUP_ONE_WINDOW = 0.90   # passes of one window: compiled was slower (0.74x at 512, 0.90x at 8192)
# On CUDA nothing was measured (no GPU where this was written): the CPU figures stand in, which errs towards off.


@dataclass(frozen=True)
class CompileChoice:
    """What "auto" chose and why (one line of the run's log: `describe()`)."""

    on: bool
    reason: str

    def describe(self) -> str:
        return f"compile auto: {'on' if self.on else 'off'} ({self.reason})"


def break_even_seconds(compile_seconds: float = COMPILE_SECONDS, speedup: float = COMPILED_SPEEDUP) -> float:
    """Eager training seconds beyond which compiling saves more than it costs: C * s / (s - 1); inf when s <= 1."""
    if speedup <= 1.0:
        return float("inf")
    return compile_seconds * speedup / (speedup - 1.0)


def measured_speedup(windows_per_pass: int) -> float:
    """The measured eager / compiled step time for forward passes of `windows_per_pass` windows (constants above)."""
    return COMPILED_SPEEDUP if windows_per_pass > 1 else COMPILED_SPEEDUP_ONE_WINDOW


def decide_compile(*, compiler: bool, compiler_note: str, device_type: str, run_seconds: Optional[float],
                   compile_seconds: float = COMPILE_SECONDS, speedup: float = COMPILED_SPEEDUP) -> CompileChoice:
    """The "auto" rule: off without a compiler for `device_type` (`compiler_note` says what is missing), off where
    compiled steps are no faster (`speedup` <= 1, e.g. `measured_speedup(1)`), off when the run's expected eager
    training seconds (`run_seconds`; None: unknown) do not exceed the break-even of `compile_seconds` against
    `speedup`, on otherwise."""
    if not compiler:
        return CompileChoice(False, compiler_note)
    if device_type not in ("cpu", "cuda"):
        return CompileChoice(False, f"torch.compile is not tried on {device_type} devices")
    if speedup <= 1.0:
        return CompileChoice(False, f"compiled steps were measured no faster than eager for passes of this shape "
                                    f"({speedup:.2f}x)")
    if run_seconds is None:
        return CompileChoice(False, "the run's length is not known before it starts")
    even = break_even_seconds(compile_seconds, speedup)
    cost = (f"compiling costs ~{compile_seconds:.0f} s and makes steps {speedup:.2f}x faster: it pays back after "
            f"~{even:.0f} s of training")
    if run_seconds <= even:
        return CompileChoice(False, f"run of ~{run_seconds:.0f} s of training; {cost}")
    return CompileChoice(True, f"run of ~{run_seconds:.0f} s of training; {cost}")


def expected_run_seconds(*, time_budget: Optional[float], covers: str, spent: float, steps_left: Optional[int],
                         step_seconds: Optional[float], eval_share: float) -> Optional[float]:
    """The eager training seconds a run still has: its time budget's training share when it has a budget (`spent`:
    the budget's clock so far; a budget of the whole run gives at most 1 - `eval_share` of what is left to
    training), else `steps_left` x `step_seconds`; None when neither is known."""
    if time_budget is not None:
        left = max(time_budget - spent, 0.0)
        return left if covers == "training" else left * (1.0 - eval_share)
    if steps_left is None or step_seconds is None:
        return None
    return steps_left * step_seconds


def compile_model(model: torch.nn.Module) -> Any:
    """The model under torch.compile (a wrapper sharing its parameters)."""
    return torch.compile(model)


def settle_compile(run) -> None:
    """Apply the compile mode to `run` (training/state.py's RunState) once per session, before `run.spread()` (DDP
    then wraps the compiled model): "on" compiles; "auto" decides first, by the rule above: a compiler for the
    device, and a run long enough to repay the compile (its time budget's training share, or its steps left times
    an eager step timed on one window, as TimeBudget.before_start times it). Rank 0's choice holds for every
    process; it is kept in `run.compile_choice` (what "auto" chose and why). "on" where the device has no compiler
    torch.compile needs (runtime.compiler_status: a C++ compiler on CPUs, triton on CUDA) is one ConfigError line,
    raised before anything is compiled or written."""
    cfg = run.config
    on = cfg.compile == "on"
    if on and run.device.type in ("cpu", "cuda"):
        ok, note = compiler_status(run.device.type)
        if not ok:
            raise ConfigError(f"--compile on cannot compile here: {note}; train with --compile off (or auto, which "
                              "compiles only where it can)")
    if cfg.compile == "auto":
        ok, note = compiler_status(run.device.type)
        micro, accumulation = cfg.split(run.dist.world_size)
        speedup = measured_speedup(micro)
        steps_left = None if run.total_steps is None else run.total_steps - run.step
        step_seconds = None
        if ok and speedup > 1.0 and cfg.time_budget is None and steps_left:
            buffers = {name: b.clone() for name, b in run.model.named_buffers()}   # counters (Performer's redraws)
            step_seconds = one_window_seconds(run) * micro * accumulation
            # the first pass pays one-time costs: when it says compiling pays, time a second pass
            if steps_left * step_seconds > break_even_seconds(speedup=speedup):
                step_seconds = min(step_seconds, one_window_seconds(run) * micro * accumulation)
            with torch.no_grad():
                for name, b in run.model.named_buffers():
                    b.copy_(buffers[name])
        spent = run.train_seconds if cfg.time_budget_covers == "training" else run.elapsed_before
        seconds = expected_run_seconds(time_budget=cfg.time_budget, covers=cfg.time_budget_covers, spent=spent,
                                       steps_left=steps_left, step_seconds=step_seconds, eval_share=EVAL_SHARE)
        run.compile_choice = run.dist.broadcast(decide_compile(compiler=ok, compiler_note=note,
                                                               device_type=run.device.type, run_seconds=seconds,
                                                               speedup=speedup))
        on = run.compile_choice.on
    if on:
        run.compiled = run.forward = compile_model(run.model)


class ShapeRouted:
    """The eager model, but for calls whose input_ids have `shape`: those go to `compiled` (the same module under
    torch.compile). Every other attribute (eval(), train(), parameters(), generate(), ...) is the eager model's.
    `first_seconds`: wall seconds of the first compiled call (it compiles the scoring graph); `second_seconds`: of
    the next one."""

    def __init__(self, model: torch.nn.Module, compiled: Any, shape: tuple[int, ...]) -> None:
        self.model, self.compiled, self.shape = model, compiled, tuple(shape)
        self.first_seconds: Optional[float] = None
        self.second_seconds: Optional[float] = None

    def __call__(self, input_ids: torch.Tensor, *args, **kwargs):
        if tuple(input_ids.shape) != self.shape:
            return self.model(input_ids, *args, **kwargs)
        if self.second_seconds is not None:
            return self.compiled(input_ids, *args, **kwargs)
        t0 = time.perf_counter()
        out = self.compiled(input_ids, *args, **kwargs)
        seconds = time.perf_counter() - t0
        if self.first_seconds is None:
            self.first_seconds = seconds
        else:
            self.second_seconds = seconds
        return out

    @property
    def compile_seconds(self) -> Optional[float]:
        """The first compiled call's seconds beyond the second's (the scoring graph's compile); None before two."""
        if self.first_seconds is None or self.second_seconds is None:
            return None
        return max(self.first_seconds - self.second_seconds, 0.0)

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def held_out_scorer(run) -> tuple[Any, int]:
    """What held-out scoring of `run` calls, and its batch size in windows: the model, in batches of
    micro_batch_tokens // context windows; while the run compiles (and is not sharded), a ShapeRouted in batches of
    the training micro-batch, so that full batches go through the compiled model."""
    cfg = run.config
    if run.compiled is not None and not run.dist.fsdp:
        batch = cfg.split(run.dist.world_size)[0]
        return ShapeRouted(run.model, run.compiled, (batch, cfg.context)), batch
    return run.model, max(1, cfg.micro_batch_tokens // cfg.context)


class CompileTimes:
    """What compiling cost one session, measured through `loop` (the session of training/loop.py: its run,
    `step_times`, `scorer`, `note` and `metrics`): the training graph's compile, a compiled session's first step
    beyond its second (logged, and kept in metrics.jsonl "compile"), and the scoring graph's (the ShapeRouted
    scorer's). `record()` is summary.json's "compile"."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self.first_step_seconds: Optional[float] = None
        self.compile_seconds: Optional[float] = None

    def after_step(self) -> None:
        loop, times = self.loop, self.loop.step_times
        if loop.run.compiled is None or len(times) > 2:
            return
        if len(times) == 1:
            self.first_step_seconds = times[0]
            return
        self.compile_seconds = max(times[0] - times[1], 0.0)
        loop.note(f"torch.compile: first step took {times[0]:.1f} s ({self.compile_seconds:.1f} s compile, then "
                  f"{times[1]:.2f} s/step)")
        loop.metrics.append({"kind": "compile", "step": loop.run.step, "first_step_seconds": round(times[0], 3),
                             "compile_seconds": round(self.compile_seconds, 3)})

    def record(self) -> dict:
        """The mode asked for, whether this session compiled and why ("auto"), and the compile times measured
        (seconds; None when not measured: no compile, or a single step)."""
        run, scorer = self.loop.run, self.loop.scorer
        choice = run.compile_choice
        return {"mode": run.config.compile, "on": run.compiled is not None,
                "reason": choice.reason if choice is not None else None,
                "compile_seconds": None if self.compile_seconds is None else round(self.compile_seconds, 3),
                "first_step_seconds": None if self.first_step_seconds is None else round(self.first_step_seconds, 3),
                "eval_compile_seconds": (round(scorer.compile_seconds, 3) if isinstance(scorer, ShapeRouted)
                                         and scorer.compile_seconds is not None else None)}
