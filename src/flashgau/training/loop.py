"""train(): the training loop, from a TrainConfig or from a checkpoint to resume.

One optimizer step = `accumulation_steps` micro-batches of random windows (see data.batching), each loss weighted
by its share of the step's scored tokens, then gradient clipping and an AdamW step at the learning rate of the
warm-up + cosine schedule. Every step is logged to metrics.jsonl; every `eval_every` steps the model is scored on a
fixed subset of held-out windows; every `save_every` steps and at the end a checkpoint is written atomically. At the
end the whole held-out set is scored and loss.png is drawn.

Resuming restores the weights, optimizer, schedule, window sampler and RNG state, so the continued run takes the
same steps as an uninterrupted one. Ctrl-C stops after the current step and saves a checkpoint (twice: abort).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from ..config import ModelConfig
from ..data.tokenizers import tokenizer_from_dict
from ..errors import CheckpointError, ConfigError, FlashgauError
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, load_model_state, resolve_checkpoint_path, save_checkpoint
from .config import TrainConfig
from .evaluate import EvalResult, autocast, evaluate
from .metrics import MetricsLog, plot_losses, read_metrics
from .optim import WarmupCosine, make_optimizer
from .progress import Progress
from .setup import RunData, build_model, model_config_for, prepare_data

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"


class TrainingDiverged(FlashgauError):
    """The loss became NaN or infinite."""


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
    model: torch.nn.Module
    tokenizer: object
    data: RunData
    interrupted: bool = False       # stopped by Ctrl-C (SIGINT) before the last step

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


def train(config: Optional[TrainConfig] = None, *, resume: Optional[Union[str, Path]] = None,
          compile: Optional[bool] = None, stop_after: Optional[int] = None, overwrite: bool = False,
          progress: bool = True, log: Callable[[str], None] = print) -> TrainResult:
    """Train a language model as `config` says, or continue the run saved at `resume` (a checkpoint file or
    run folder; its saved settings are used, `compile` may be switched). `stop_after` ends the session after that
    step with a checkpoint, as an interruption would. Everything is checked before anything is written."""
    t_start = time.perf_counter()
    state = None
    if resume is not None:
        ckpt_path = resolve_checkpoint_path(resume)
        state = load_checkpoint(ckpt_path)
        try:
            config = TrainConfig.from_dict(state["train_config"])
        except (ConfigError, TypeError) as err:
            raise CheckpointError(f"{ckpt_path}: saved training settings are not valid here: {err}") from None
        config = replace(config, out=str(ckpt_path.parent))
    elif config is None:
        config = TrainConfig()
    if compile is not None:
        config = replace(config, compile=compile)
    if stop_after is not None and stop_after < 1:
        raise ConfigError(f"stop_after must be >= 1, got {stop_after}")

    # --- everything that can fail on bad input happens before the output folder is touched ---
    tokenizer = tokenizer_from_dict(state["tokenizer"]) if state else None
    data = prepare_data(config, tokenizer)
    sampler = data.sampler(config.context, config.seed)
    heldout = data.heldout(config.context)
    if state:
        if state["data"].get("fingerprint") != data.fingerprint:
            raise CheckpointError(f"the data ({config.data or 'default corpus'}) differs from the data this run "
                                  "was trained on; resume needs the same text")
        try:
            model_cfg = ModelConfig.from_dict(state["model_config"])
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"saved model config is not valid for this flashgau: {err}") from None
    else:
        model_cfg = model_config_for(config, data.tokenizer.vocab_size)
    out_dir = Path(config.out_dir)
    ckpt_file = out_dir / CHECKPOINT_NAME
    if state is None and ckpt_file.exists() and not overwrite:
        raise ConfigError(f"{out_dir} already holds a run; continue it with --resume {out_dir}, start over with "
                          "--overwrite, or choose another --out")

    model = build_model(model_cfg, config.seed)
    optimizer = make_optimizer(model, lr=config.lr, weight_decay=config.weight_decay,
                               betas=(config.beta1, config.beta2))
    forward = torch.compile(model) if config.compile else model
    byte_lengths = data.tokenizer.token_byte_lengths()
    eval_batch = max(1, config.micro_batch_tokens // config.context)

    if state:
        load_model_state(model, state["model"], ckpt_path)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{ckpt_path}: optimizer state does not fit the model: {err}") from None
        schedule = WarmupCosine.from_state_dict(state["schedule"])
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng"]["torch"])
        step, tokens_seen, elapsed_before = int(state["step"]), int(state["tokens_seen"]), float(state["elapsed"])
        log(f"resuming {ckpt_file} at step {step}/{schedule.total_steps}")
    else:
        step, tokens_seen, elapsed_before = 0, 0, 0.0
        total = config.steps or _steps_for_budget(config, data, forward, model, heldout, eval_batch, t_start, log)
        schedule = WarmupCosine(config.lr, total, config.warmup_steps, config.min_lr_ratio)
    total = schedule.total_steps
    eval_every = config.eval_every or max(1, total // 10)
    save_every = config.save_every or max(1, total // 5)

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(out_dir / METRICS_NAME)
    if state:
        metrics.truncate_after(step)
    else:
        metrics.path.unlink(missing_ok=True)
    log(f"{model_cfg.arch} ({config.preset}, {model.num_parameters():,} parameters) | {data.split.describe()} | "
        f"{config.tokenizer} tokenizer (V={data.tokenizer.vocab_size}) | context {config.context} | "
        f"{config.windows_per_step} windows/step ({config.micro_batch_size} x {config.accumulation_steps}) | "
        f"{total} steps | {config.precision}{' + compile' if config.compile else ''} | out {out_dir}")

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_start

    def checkpoint() -> None:
        save_checkpoint({
            "model_config": model_cfg.to_dict(), "model": model.state_dict(), "tokenizer": data.tokenizer.to_dict(),
            "train_config": config.to_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "step": step, "tokens_seen": tokens_seen, "elapsed": elapsed(), "sampler": sampler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "data": {"fingerprint": data.fingerprint, "heldout_documents": [d.name for d in data.split.heldout]},
        }, ckpt_file)

    bar = Progress(total, initial=step, enabled=progress)
    params = [p for p in model.parameters() if p.requires_grad]
    speed = None
    interrupted = False
    model.train()
    try:
        with _stop_on_ctrl_c(bar.write) as stop:
            while step < total and not stop.requested and (stop_after is None or step < stop_after):
                t_step = time.perf_counter()
                lr = schedule.apply(optimizer, step)
                loss, grad_norm, n_tokens = _optimizer_step(forward, optimizer, params, sampler, config)
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"training diverged at step {step + 1} (loss {loss}); the last "
                                           f"checkpoint is kept; try a lower --lr (now {config.lr})")
                step += 1
                tokens_seen += n_tokens
                rate = n_tokens / (time.perf_counter() - t_step)
                speed = rate if speed is None else 0.9 * speed + 0.1 * rate
                metrics.append({"kind": "train", "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                                "tokens": tokens_seen, "elapsed": round(elapsed(), 3)})
                bar.update(step, loss, speed)
                if step % eval_every == 0 or step == total:
                    result = evaluate(model, heldout, byte_lengths, batch_size=eval_batch,
                                      precision=config.precision, limit=config.eval_windows)
                    metrics.append({"kind": "eval", "step": step, "elapsed": round(elapsed(), 3),
                                    "heldout_loss": result.loss, "heldout_bpb": result.bits_per_byte})
                    bar.write(f"step {step}: held-out loss {result.loss:.4f}, {result.bits_per_byte:.4f} bits/byte "
                              f"({config.eval_windows} fixed windows)")
                if step % save_every == 0 and step < total:
                    checkpoint()
            interrupted = stop.requested and step < total
    finally:
        bar.close()
    checkpoint()
    final = None
    if step >= total:
        t_eval, end_of_training = time.perf_counter(), elapsed()
        final = evaluate(model, heldout, byte_lengths, batch_size=eval_batch, precision=config.precision)
        metrics.append({"kind": "final", "step": step, "elapsed": round(end_of_training, 3),
                        "eval_seconds": round(time.perf_counter() - t_eval, 3), "heldout_loss": final.loss,
                        "heldout_bpb": final.bits_per_byte, **final.to_dict()})
        log(final.describe())
    else:
        log(f"stopped at step {step}/{total}; continue with: flashgau train --resume {out_dir}")
    plot_losses(read_metrics(metrics.path), out_dir / PLOT_NAME,
                title=f"{model_cfg.arch} {config.preset}, {config.tokenizer}, context {config.context}")
    return TrainResult(out_dir=out_dir, checkpoint=ckpt_file, step=step, total_steps=total, tokens_seen=tokens_seen,
                       elapsed=elapsed(), num_parameters=model.num_parameters(), final=final, model=model,
                       tokenizer=data.tokenizer, data=data, interrupted=interrupted)


def _optimizer_step(forward, optimizer, params, sampler, config: TrainConfig) -> tuple[float, float, int]:
    """Draw one step's micro-batches, accumulate gradients, clip, update. Returns (loss, grad norm, tokens)."""
    batches = [sampler.next_batch(config.micro_batch_size) for _ in range(config.accumulation_steps)]
    total_targets = sum(b.num_targets for b in batches)
    loss_sum = 0.0
    for batch in batches:
        weight = batch.num_targets / total_targets
        with autocast(config.precision):
            out = forward(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
        (out.loss.float() * weight).backward()
        loss_sum += float(out.loss.detach()) * weight
    max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm, total_targets


def _steps_for_budget(config: TrainConfig, data: RunData, forward, model, heldout, eval_batch: int,
                      t_start: float, log: Callable[[str], None]) -> int:
    """Time a few forward/backward passes (on windows from a separate stream, so the training stream is untouched;
    no optimizer step, so the weights are untouched) and one held-out batch, then fit the step count into
    `config.time_budget` together with the periodic and final evaluations."""
    probe = data.sampler(config.context, seed=config.seed + 1_000_003)

    def passes() -> None:
        for _ in range(config.accumulation_steps):
            batch = probe.next_batch(config.micro_batch_size)
            with autocast(config.precision):
                out = forward(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
            out.loss.float().backward()
        model.zero_grad(set_to_none=True)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    # The median of three timings: one moment of competition for the CPU (another process) must not shrink the run.
    rng = torch.get_rng_state()
    passes()  # warm-up (and compilation)
    step_time = sorted(timed(passes) for _ in range(3))[1] * 1.1  # + optimizer step, logging, saves
    score = lambda: evaluate(model, heldout, data.tokenizer.token_byte_lengths(),  # noqa: E731
                             batch_size=eval_batch, precision=config.precision, limit=eval_batch)
    per_window = min(timed(score) for _ in range(2)) / min(eval_batch, len(heldout))
    torch.set_rng_state(rng)
    eval_time = per_window * (len(heldout) + 10 * min(config.eval_windows, len(heldout)))
    left = config.time_budget - (time.perf_counter() - t_start) - eval_time - 3.0  # 3 s: saves and the plot
    steps = max(1, int(left / step_time))
    log(f"time budget {config.time_budget:.0f} s: {step_time:.2f} s/step, ~{eval_time:.0f} s of held-out "
        f"evaluation -> {steps} steps")
    return steps


class _StopFlag:
    requested = False


@contextmanager
def _stop_on_ctrl_c(say: Callable[[str], None]):
    """First Ctrl-C: finish the current step, save, return. Second: abort at once."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        say("stopping after this step and saving a checkpoint (Ctrl-C again to abort without saving)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
