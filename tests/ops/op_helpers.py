"""Helpers shared by the op tests: right-padding masks, and the comparison of a fast op with its reference (outputs
and the gradient of every input)."""

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor


def right_padding(lengths, T: int) -> Tensor:
    """(B, T) bool key mask: row b holds lengths[b] real tokens, then padding."""
    return torch.arange(T)[None, :] < torch.as_tensor(lengths)[:, None]


def random_right_padding(B: int, T: int, seed: int = 3) -> Tensor:
    """Right padding with random lengths in [1, T]; row 0 is full."""
    lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(seed))
    lengths[0] = T
    return right_padding(lengths, T)


def assert_forward_backward_close(fast: Callable[..., Tensor], ref: Callable[..., Tensor], inputs: Sequence[Tensor],
                                  *, names: Optional[Sequence[str]] = None, real: Optional[Tensor] = None,
                                  **tol) -> None:
    """fast(*inputs) and ref(*inputs), each on its own leaf copies of `inputs`, give close outputs and close
    gradients for every input, under one random output gradient (drawn from its own seed: the same whatever ran
    before). real (broadcastable to the output, bool): only
    those outputs count (padded outputs are ignored)."""
    runs = []
    for fn in (fast, ref):
        leaves = [t.clone().requires_grad_() for t in inputs]
        out = fn(*leaves)
        runs.append((out if real is None else torch.where(real, out, 0), leaves))
    (out, leaves), (want, ref_leaves) = runs
    torch.testing.assert_close(out, want, **tol)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out.dtype)
    (out * grad).sum().backward()
    (want * grad).sum().backward()
    for i, (a, b) in enumerate(zip(leaves, ref_leaves)):
        name = names[i] if names else f"input {i}"
        assert a.grad is not None, f"{name} gets no gradient"
        torch.testing.assert_close(a.grad, b.grad, **tol, msg=lambda m, n=name: f"grad of {n}: {m}")


def with_inputs(fn: Callable[..., Tensor], inputs: Sequence[Tensor], used: Sequence[int]) -> Callable[..., Tensor]:
    """fn as a function of inputs[used] only, the other inputs held fixed: for comparing gradients where an op
    option leaves some inputs unread (they get no gradient from the fast op, zeros from a reference)."""
    def call(*given: Tensor) -> Tensor:
        full = list(inputs)
        for i, x in zip(used, given):
            full[i] = x
        return fn(*full)
    return call
