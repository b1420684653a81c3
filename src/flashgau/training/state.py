"""One run's state: what a training run carries from step to step, how a fresh run and a resumed run produce it, and
the checkpoint layout (written by `RunState.checkpoint_dict`, read by `resume_run`, both here and nowhere else).

Checkpoint contents (a dict; flashgau.training.checkpoint writes it atomically and reads it safely):

    model_config, train_config    ModelConfig / TrainConfig as dicts (train_config.init_from: the run whose weights
                                  this one started from, training/init_from.py; resume never reads it again)
    model                         the model's state_dict (fp32 master weights)
    tokenizer                     the tokenizer's to_dict() (a trained BPE included)
    optimizer, grad_scaler        AdamW state_dict; the fp16 gradient scaler's state (None otherwise)
    schedule                      WarmupCosine state_dict (peak, total steps, warm-up, floor)
    plan                          the time-budget plan (training/budget.py), None for a run given in steps
    step, tokens_seen, elapsed    optimizer steps done, training tokens consumed, wall seconds so far
    train_seconds                 seconds spent inside optimizer steps so far (the clock of a time budget that
                                  covers training only); absent in checkpoints of flashgau 0.1.0 written
                                  before the training-only budget existed: read as 0
    sampler                       the training stream's state (the task's: the window sampler's generator state and
                                  windows drawn; for MLM also the masking generator's state)
    rng                           torch's global CPU RNG state (and the CUDA one when the run used a GPU)
    data                          fingerprint of the training/held-out split, the held-out document names (the
                                  first 1000)
    runtime                       the precision that ran (name, reason), the device it ran on, the number of
                                  processes and whether FSDP sharded the model (information only: a checkpoint
                                  saved by N processes resumes on M, or on one, in the same layout)

Everything that can fail on bad input (data, settings, the output folder, the sample prompt) is checked by
`start_run` / `resume_run` before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from ..config import ModelConfig
from ..data.run_data import RunData
from ..errors import CheckpointError, ConfigError
from ..model import LanguageModel
from ..runtime import Distributed, Precision, resolve_precision
from ..tasks import HeldoutSet, TrainingStream, get_task
from .budget import BudgetPlan
from .compiling import CompileChoice
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, load_model_state, resolve_checkpoint_path, saved_settings
from .config import TrainConfig
from .init_from import read_init_source
from .optim import WarmupCosine, make_optimizer
from .run_folder import check_new_run, check_not_set_aside, check_writable, file_stamp
from .setup import (absolute_data_path, absolute_tokenizer, build_model, config_for_data, model_config_for,
                    prepare_data, prepare_run_data)


@dataclass
class RunState:
    """A run between two steps. Persistent parts go into the checkpoint; `data`, `heldout`, `forward`, `device`,
    `dist` and `out_dir` are rebuilt from them. `sampler` and `heldout` come from the run's task (flashgau.tasks).
    Under torchrun every process holds one (`dist`: who it is; the sampler draws its share of the windows;
    `forward` is the DDP-wrapped or FSDP-sharded model). start_run / resume_run leave the model uncompiled:
    training/compiling.py's settle_compile applies the compile mode (`compiled`, `compile_choice`)."""

    config: TrainConfig
    model_config: ModelConfig
    data: RunData
    heldout: HeldoutSet
    sampler: TrainingStream
    model: LanguageModel
    forward: Any                       # what a training step calls: the model, compiled and spread as the run says
    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    schedule: WarmupCosine
    precision: Precision
    device: torch.device
    out_dir: Path
    sample_prompt: str
    plan: Optional[BudgetPlan] = None
    step: int = 0
    tokens_seen: int = 0
    elapsed_before: float = 0.0        # wall seconds of the earlier sessions of this run
    train_seconds: float = 0.0         # seconds inside optimizer steps, all sessions
    resumed: bool = False
    resumed_from: Optional[tuple[Path, tuple]] = None   # the checkpoint read and its file stamp (run_folder.file_stamp)
    dist: Distributed = field(default_factory=Distributed)
    compiled: Any = None               # the model's torch.compile wrapper when the run compiles, else None
    compile_choice: Optional[CompileChoice] = None     # what --compile auto chose and why

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    @property
    def total_steps(self) -> Optional[int]:
        """The run's length; None while a time-budgeted run is still timing its first steps."""
        return self.schedule.total_steps

    def spread(self) -> None:
        """Spread the model over the run's processes, every process together (runtime.distributed): DDP wraps the
        forward; FSDP shards the model, and the optimizer is made again over the shards with the state it had.
        Nothing for one process. start_run / resume_run leave it to the caller: their setup has no collectives."""
        if self.dist.world_size == 1:
            return
        if self.dist.fsdp and self.precision.name == "fp16":
            raise ConfigError("--fsdp with fp16 (a gradient scaler over sharded gradients) is not supported; use bf16 "
                              "or fp32")
        saved = self.optimizer.state_dict()
        self.forward = self.dist.parallel(self.model, self.forward)
        if self.dist.fsdp:
            self.optimizer = _optimizer(self.model, self.config)
            if saved["state"]:
                self.dist.load_optimizer_state(self.model, self.optimizer, saved)

    def identity(self) -> dict:
        """What every process of a run must hold alike: its settings, data, progress and place in the stream of
        training windows (compared across processes: runtime.Distributed.check_same)."""
        return {"its settings": json.dumps(self.config.to_dict(), sort_keys=True, default=str),
                "its data": self.data.fingerprint, "its step": self.step,
                "its place in the training windows": _digest(self.sampler.state_dict())}

    def checkpoint_dict(self, elapsed: float) -> dict:
        """The checkpoint's contents; on rank 0 (with FSDP every process must call it: the shards are gathered)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model_config": self.model_config.to_dict(), "train_config": self.config.to_dict(),
            "model": self.dist.model_state(self.model), "tokenizer": self.data.tokenizer.to_dict(),
            "optimizer": self.dist.optimizer_state(self.model, self.optimizer),
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "schedule": self.schedule.state_dict(), "plan": self.plan.to_dict() if self.plan else None,
            "step": self.step, "tokens_seen": self.tokens_seen, "elapsed": elapsed,
            "train_seconds": self.train_seconds,
            "sampler": self.sampler.state_dict(), "rng": rng,
            "data": {"fingerprint": self.data.fingerprint, "heldout_documents": self.data.heldout_names()},
            "runtime": {"precision": self.precision.to_dict(), "device": str(self.device),
                        "processes": self.dist.world_size, "fsdp": self.dist.fsdp},
        }


def start_run(config: TrainConfig, *, device: torch.device, overwrite: bool = False, progress: bool = False,
              log: Callable[[str], None] = lambda s: None, dist: Optional[Distributed] = None) -> RunState:
    """A fresh run: data, tokenizer, model, optimizer; the schedule's length is None for a time budget. With
    `config.init_from` the model and tokenizer are those of that run, its weights loaded (training/init_from.py).
    The data and tokenizer-file paths are stored absolute, so `eval` and `--resume` work from any folder. Preparing
    the data on the fly (the first time) shows its progress when `progress`. `dist`: this process's place among the
    run's processes (default: the only one); the caller spreads the model over them (`RunState.spread`). A folder
    that holds a run is refused here unless `overwrite`, and again when the caller claims it (run_folder.py)."""
    dist = dist if dist is not None else Distributed(device=device)
    config.split(dist.world_size)
    config = TrainConfig.from_dict({**config.to_dict(), "data": absolute_data_path(config.data),
                                    "tokenizer": absolute_tokenizer(config.tokenizer)})
    source = read_init_source(config.init_from) if config.init_from is not None else None
    if source is not None:
        config = source.settle(config)
    check_writable(Path(config.out_dir))
    data = prepare_data(config, source.data_tokenizer if source is not None else None, progress=progress, log=log)
    config = config_for_data(config, data)
    if source is not None:
        source.check_vocabulary(data.tokenizer)
        causal = get_task(config.objective).causal
        model_cfg = source.model_config_for(config, data.tokenizer.vocab_size, causal)
        log(source.describe(causal))
    else:
        model_cfg = model_config_for(config, data.tokenizer.vocab_size)
    out_dir = Path(config.out_dir)
    check_new_run(out_dir, overwrite)       # early, to fail before the work below; decided when the folder is claimed
    precision = resolve_precision(config.precision, device)
    sampler, heldout = _windows(config, data, dist)
    prompt = _sample_prompt(config, data, model_cfg)
    model = build_model(model_cfg, config.seed)
    if source is not None:
        source.load_into(model)
    model.to(device).set_activation_checkpointing(config.checkpoint_activations)
    return RunState(config=config, model_config=model_cfg, data=data, heldout=heldout, sampler=sampler, model=model,
                    forward=model, optimizer=_optimizer(model, config), scaler=precision.grad_scaler(),
                    precision=precision, device=device, out_dir=out_dir, sample_prompt=prompt, dist=dist,
                    schedule=WarmupCosine(config.lr, config.steps, config.warmup_steps, config.min_lr_ratio))


# settings a resumed run may change: they do not change what the run computes (moved data must hold the same text;
# checkpointed activations are recomputed, not changed)
RESUME_CHANGES = ("compile", "checkpoint_activations", "sample_tokens", "sample_prompt", "data", "log")


def resume_run(path: Union[str, Path], *, device: torch.device, changes: Optional[dict] = None,
               progress: bool = False, log: Callable[[str], None] = lambda s: None,
               dist: Optional[Distributed] = None) -> RunState:
    """The run saved at `path` (a checkpoint or its folder), on `device`, with its saved settings but for `changes`
    (only RESUME_CHANGES). Its data must be the data it was trained on (checked by fingerprint). `dist`: this
    process's place among the run's processes, as many as the run was saved with or not (each process reads the
    checkpoint: on several machines it must be at the same path on each)."""
    dist = dist if dist is not None else Distributed(device=device)
    changes = dict(changes or {})
    refused = sorted(set(changes) - set(RESUME_CHANGES))
    if refused:
        raise ConfigError(f"{', '.join(refused)} cannot change on resume: a resumed run keeps the settings saved in "
                          f"its checkpoint (may change: {', '.join(RESUME_CHANGES)})")
    check_not_set_aside(path)
    ckpt_path = resolve_checkpoint_path(path)
    stamp = file_stamp(ckpt_path)
    state = load_checkpoint(ckpt_path)
    where = str(ckpt_path)
    config, model_cfg, tokenizer = saved_settings(state, where)
    if "data" in changes:
        changes["data"] = absolute_data_path(changes["data"])
    try:
        config = TrainConfig.from_dict({**config.to_dict(), **changes, "out": str(ckpt_path.parent)})
        config.split(dist.world_size)
    except ConfigError as err:
        raise ConfigError(f"resuming {where}: {err}") from None
    data = prepare_run_data(config, tokenizer, _get(state, "data", dict, where).get("fingerprint"), "resume",
                            progress=progress, log=log)
    precision = _resumed_precision(state, config, device, where)
    sampler, heldout = _windows(config, data, dist)
    model = build_model(model_cfg, config.seed)
    load_model_state(model, state["model"], ckpt_path)
    model.to(device).set_activation_checkpointing(config.checkpoint_activations)
    optimizer = _optimizer(model, config)
    scaler = precision.grad_scaler()
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])
        schedule = WarmupCosine.from_state_dict(_get(state, "schedule", dict, where))
        plan = BudgetPlan.from_dict(state["plan"]) if state.get("plan") else None
        sampler.load_state_dict(_get(state, "sampler", dict, where))
        torch.set_rng_state(_get(state, "rng", dict, where)["torch"])
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{where}: saved training state does not fit this run: {err}") from None
    step, tokens, elapsed = (_get(state, "step", int, where), _get(state, "tokens_seen", int, where),
                             _get(state, "elapsed", (int, float), where))
    trained = state.get("train_seconds", 0.0)       # absent in early checkpoints of flashgau 0.1.0
    total = schedule.total_steps
    if (step < 0 or (total is not None and step > total) or tokens < 0 or not 0 <= elapsed < math.inf
            or isinstance(trained, bool) or not isinstance(trained, (int, float)) or not 0 <= trained < math.inf):
        raise CheckpointError(f"{where}: saved progress is out of range (step {step} of {total}, {tokens} tokens, "
                              f"{elapsed} s, {trained!r} s of training)")
    return RunState(config=config, model_config=model_cfg, data=data, heldout=heldout, sampler=sampler, model=model,
                    forward=model, optimizer=optimizer, scaler=scaler, schedule=schedule, precision=precision,
                    device=device, out_dir=ckpt_path.parent,
                    sample_prompt=_sample_prompt(config, data, model_cfg), plan=plan, step=step, tokens_seen=tokens,
                    elapsed_before=float(elapsed), train_seconds=float(trained), resumed=True, dist=dist,
                    resumed_from=(ckpt_path, stamp))


def _digest(state) -> str:
    """A short hash of a training stream's state_dict (nested dicts of tensors and numbers)."""
    h = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, dict):
            for key in sorted(value):
                h.update(str(key).encode())
                feed(value[key])
        elif isinstance(value, torch.Tensor):
            h.update(value.cpu().numpy().tobytes())
        else:
            h.update(repr(value).encode())

    feed(state)
    return h.hexdigest()[:16]


def _windows(config: TrainConfig, data: RunData, dist: Distributed) -> tuple[TrainingStream, HeldoutSet]:
    """This process's training stream (its share of the run's one stream) and the held-out set, from the task."""
    task = get_task(config.objective)
    return (task.training_stream(data, context=config.context, seed=config.seed,
                                 pack_documents=config.pack_documents, rank=dist.rank, world_size=dist.world_size),
            task.heldout(data.heldout_docs, data.tokenizer, config.context))


def _optimizer(model: LanguageModel, config: TrainConfig) -> torch.optim.Optimizer:
    return make_optimizer(model, lr=config.lr, weight_decay=config.weight_decay, betas=(config.beta1, config.beta2))


def _resumed_precision(state: dict, config: TrainConfig, device: torch.device, where: str) -> Precision:
    """The precision the run ran in, on the same kind of device; chosen afresh (from the saved request) on
    another kind."""
    saved = (state.get("runtime") or {}).get("precision")
    if isinstance(saved, dict) and saved.get("device_type") == device.type:
        try:
            return Precision(**saved)
        except TypeError:
            raise CheckpointError(f"{where}: saved precision is not readable: {saved!r}") from None
    return resolve_precision(config.precision, device)


def _sample_prompt(config: TrainConfig, data: RunData, model_cfg: ModelConfig) -> str:
    """The prompt of the end-of-run sample, checked now so that a bad one cannot waste a finished run."""
    if config.sample_tokens == 0:
        return ""
    prompt = config.sample_prompt
    if prompt is None:
        prompt = data.first_heldout_line(80) + "\n"
    if not prompt:
        raise ConfigError("the sample prompt is empty; give at least one character, or sample_tokens 0 for no "
                          "sample")
    ids = data.tokenizer.encode(prompt)
    if not ids:
        raise ConfigError(f"the tokenizer turns the sample prompt {prompt!r} into no tokens")
    if len(ids) + config.sample_tokens > model_cfg.max_seq_len:
        raise ConfigError(f"the sample prompt ({len(ids)} tokens) + {config.sample_tokens} sample tokens exceed the "
                          f"model's max_seq_len {model_cfg.max_seq_len}; ask for fewer sample tokens")
    return prompt


def _get(state: dict, key: str, kind, where: str):
    value = state.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CheckpointError(f"{where}: checkpoint field {key!r} is {type(value).__name__}, not what flashgau "
                              "writes there (hand-edited or corrupt?)")
    return value
