"""TrainConfig: every setting of a training run, validated on construction.

It is stored in the checkpoint, so `--resume` continues with exactly the settings the run started with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import ConfigError

PRECISIONS = ("bf16", "fp32")
TOKENIZERS = ("bytes", "bpe")
DEFAULT_TIME_BUDGET = 300.0  # seconds, used when neither steps nor time_budget is given


@dataclass
class TrainConfig:
    """Settings of one training run.

    arch, preset:       the model (flashgau.ARCHS; a ModelConfig preset name).
    context:            T, tokens per training and held-out window.
    steps:              optimizer steps; or time_budget: seconds for the whole run (training, held-out evaluation
                        and saving), turned into a step count by timing a few steps before training starts.
                        Neither given: time_budget = 300.
    batch_tokens:       tokens per optimizer step (rounded up to whole windows); reached with gradient
                        accumulation over micro-batches of at most micro_batch_tokens.
    lr, min_lr_ratio:   peak learning rate; the cosine decays it to lr * min_lr_ratio at the last step.
    warmup_steps:       linear warm-up length (capped at a fifth of the run).
    weight_decay:       decoupled AdamW decay of weight matrices (never of norms, biases, scale/offset).
    beta1, beta2, grad_clip: AdamW betas and the global gradient-norm clip (0 = off).
    precision:          "bf16" (autocast; master weights and optimizer stay fp32) or "fp32".
    compile:            wrap the model in torch.compile.
    data:               None for the default corpus (Shakespeare), else a text file or a folder.
    heldout_fraction:   share of the corpus (by characters, whole documents) held out.
    tokenizer:          "bytes" or "bpe" (trained on the training split, bpe_vocab_size ids).
    eval_every:         steps between held-out evaluations on eval_windows fixed windows (None: ~10 per run).
    save_every:         steps between checkpoints (None: ~5 per run); one is always written at the end.
    seed:               model initialisation and the order of training windows.
    out:                output folder (checkpoint.pt, metrics.jsonl, loss.png); None: runs/<arch>-<preset>.
    """

    arch: str = "flash"
    preset: str = "small"
    context: int = 512
    steps: Optional[int] = None
    time_budget: Optional[float] = None
    batch_tokens: int = 4096
    micro_batch_tokens: int = 8192
    lr: float = 4e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0
    precision: str = "bf16"
    compile: bool = False
    data: Optional[str] = None
    heldout_fraction: float = 0.1
    tokenizer: str = "bytes"
    bpe_vocab_size: int = 4096
    eval_every: Optional[int] = None
    eval_windows: int = 32
    save_every: Optional[int] = None
    seed: int = 0
    out: Optional[str] = None

    def __post_init__(self) -> None:
        from .. import config as model_config  # only the names of archs and presets

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        archs = getattr(model_config, "ARCHS", ())
        need(self.arch in archs, f"unknown arch {self.arch!r}; choose one of {', '.join(archs)}")
        presets = getattr(model_config, "PRESETS", {})
        need(self.preset in presets, f"unknown preset {self.preset!r}; choose one of {', '.join(presets)}")
        for name in ("context", "batch_tokens", "micro_batch_tokens", "eval_windows", "bpe_vocab_size"):
            value = getattr(self, name)
            need(_is_int(value) and value >= 1, f"{_opt(name)} must be a positive integer, got {value!r}")
        for name in ("steps", "eval_every", "save_every"):
            value = getattr(self, name)
            need(value is None or (_is_int(value) and value >= 1),
                 f"{_opt(name)} must be a positive integer, got {value!r}")
        need(_is_int(self.warmup_steps) and self.warmup_steps >= 0, f"--warmup-steps must be >= 0")
        need(_is_int(self.seed), f"--seed must be an integer, got {self.seed!r}")
        need(not (self.steps is not None and self.time_budget is not None),
             "give either --steps or --time-budget, not both")
        need(self.time_budget is None or self.time_budget > 0, f"--time-budget must be > 0 seconds")
        need(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        need(0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0, "AdamW betas must be in [0, 1)")
        need(self.grad_clip >= 0, f"--grad-clip must be >= 0 (0 turns it off), got {self.grad_clip}")
        need(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, "
                                           f"got {self.precision!r}")
        need(self.tokenizer in TOKENIZERS, f"--tokenizer must be one of {', '.join(TOKENIZERS)}, "
                                           f"got {self.tokenizer!r}")
        need(self.tokenizer != "bpe" or self.bpe_vocab_size > 256,
             f"--bpe-vocab-size must be > 256, got {self.bpe_vocab_size}")
        need(0.0 < self.heldout_fraction < 1.0, f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if self.steps is None and self.time_budget is None:
            self.time_budget = DEFAULT_TIME_BUDGET

    @property
    def out_dir(self) -> str:
        return self.out if self.out is not None else f"runs/{self.arch}-{self.preset}"

    @property
    def windows_per_step(self) -> int:
        return -(-self.batch_tokens // self.context)

    @property
    def micro_batch_size(self) -> int:
        """Windows per forward pass: the largest divisor of windows_per_step within micro_batch_tokens."""
        cap = max(1, self.micro_batch_tokens // self.context)
        return max(d for d in range(1, min(cap, self.windows_per_step) + 1) if self.windows_per_step % d == 0)

    @property
    def accumulation_steps(self) -> int:
        return self.windows_per_step // self.micro_batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _opt(name: str) -> str:
    return "--" + name.replace("_", "-")
