"""Activation checkpointing of one block: keep its input, recompute its activations in the backward pass.

A training step then holds one (B, T, d) input per block plus the activations of the one block being
recomputed, instead of every block's activations at once: memory for one more forward pass of compute.
torch.utils.checkpoint, non-reentrant (the form DDP, FSDP2's fully_shard and torch.compile all support; the
Context, a dataclass of tensors that need no gradient, passes through it as an ordinary argument). Dropout draws
the same masks in the recompute (checkpoint restores the RNG state), so the gradients are those of the plain pass.

A layer whose forward has a side effect (Performer's feature-redraw counter) asks `recomputing()` to do it once
per step, not again in the recompute. (Under torch.compile the region is traced into the graph, which replays ops,
not Python, so the flag is only needed, and only set, in eager mode.)
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .context import Context

_RECOMPUTING: contextvars.ContextVar[bool] = contextvars.ContextVar("flashgau_recomputing", default=False)


def recomputing() -> bool:
    """True while a checkpointed block's forward runs again during the backward pass (eager mode)."""
    return _RECOMPUTING.get()


@contextlib.contextmanager
def _recompute_scope():
    token = _RECOMPUTING.set(True)
    try:
        yield
    finally:
        _RECOMPUTING.reset(token)


def _contexts():
    """(forward context, recompute context) for torch.utils.checkpoint's context_fn."""
    return contextlib.nullcontext(), _recompute_scope()


def checkpointed(block: nn.Module, x: Tensor, ctx: Context) -> Tensor:
    """block(x, ctx) (x: (B, T, d)), saving only x for the backward pass and recomputing the rest there."""
    if torch.compiler.is_compiling():
        return checkpoint(block, x, ctx, use_reentrant=False)
    return checkpoint(block, x, ctx, use_reentrant=False, context_fn=_contexts)
