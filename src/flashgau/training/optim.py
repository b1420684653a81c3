"""AdamW with decoupled weight decay on the right parameters, and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float,
                 no_decay_names: Iterable[str] | None = None) -> list[dict]:
    """Two AdamW groups: decayed weight matrices, and everything in `no_decay_names` (norms, biases, GAU
    scale/offset, position tables). By default the names come from `model.no_weight_decay_names()`, the model's
    own statement of what must not be decayed (see docs/contract.md)."""
    if no_decay_names is None:
        no_decay_names = model.no_weight_decay_names()
    no_decay = set(no_decay_names)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unknown = no_decay - {n for n, _ in model.named_parameters()}
    if unknown:
        raise ValueError(f"no_weight_decay_names() lists parameters the model does not have: {sorted(unknown)[:5]}")
    return [
        {"params": [p for n, p in named if n not in no_decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n in no_decay], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                   no_decay_names: Iterable[str] | None = None) -> torch.optim.AdamW:
    groups = [g for g in param_groups(model, weight_decay, no_decay_names) if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)


class WarmupCosine:
    """Learning rate at step s (0-based, the step about to be taken): linear warm-up from peak/warmup to peak over
    `warmup` steps, then cosine decay to peak * min_ratio at the last step. A pure function of the step and these
    numbers, so its state is just them.

    The run's length may be unknown at first (`total_steps` None: a time-budgeted run times its first steps before
    fixing it): until `set_total`, steps follow the warm-up, which does not depend on the length. The warm-up is
    capped at a fifth of the run when the length is first set, and kept when a time-budgeted run refits it."""

    def __init__(self, peak: float, total_steps: Optional[int], warmup: int, min_ratio: float = 0.1) -> None:
        self.peak, self.min_ratio, self.warmup = peak, min_ratio, warmup
        self.total_steps: Optional[int] = None
        if total_steps is not None:
            self.set_total(total_steps)

    def set_total(self, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if self.total_steps is None:
            self.warmup = min(self.warmup, total_steps // 5)
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        if self.total_steps is None:
            return self.peak
        decay_steps = max(self.total_steps - 1 - self.warmup, 1)
        progress = min(max(step - self.warmup, 0) / decay_steps, 1.0)
        return self.peak * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup,
                "min_ratio": self.min_ratio}

    @classmethod
    def from_state_dict(cls, state: dict) -> "WarmupCosine":
        sched = cls(state["peak"], None, state["warmup"], state["min_ratio"])
        sched.total_steps = state["total_steps"]
        return sched
