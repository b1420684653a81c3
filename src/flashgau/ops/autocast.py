"""`autocast_off(device)`: a context in which autocast is off on `device`, so the code inside runs in the dtypes
of its inputs. Ops that promise fp32 arithmetic (FAVOR+, GAU attention with attention_precision="fp32") cast
their inputs to fp32 and run inside it: under autocast a matmul of fp32 tensors would otherwise run in bf16.

`cast(t, dtype)`: t in dtype, t itself when it already is, without a call into torch (the decoding step's casts)."""

from __future__ import annotations

import contextlib

import torch


def cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t.to(dtype), but t itself without a dispatch when it already has that dtype: Tensor.to costs ~1.3 us even
    then (a 2-core Xeon, inference mode), and one FLASH decoding step called it ~130 times a token (~4% of it)."""
    return t if t.dtype == dtype else t.to(dtype)


def autocast_off(device: torch.device):
    """torch.autocast(device.type, enabled=False), or a null context where autocast does not exist (meta)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
