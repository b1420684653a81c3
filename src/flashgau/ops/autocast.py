"""`autocast_off(device)`: a context in which autocast is off on `device`, so the code inside runs in the dtypes
of its inputs. Ops that promise fp32 arithmetic (FAVOR+, GAU attention with attention_precision="fp32") cast
their inputs to fp32 and run inside it: under autocast a matmul of fp32 tensors would otherwise run in bf16."""

from __future__ import annotations

import contextlib

import torch


def autocast_off(device: torch.device):
    """torch.autocast(device.type, enabled=False), or a null context where autocast does not exist (meta)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
