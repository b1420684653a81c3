"""Precision: `--precision auto|fp32|bf16|fp16` resolved for a device, with the reason.

"auto" takes bf16 autocast only where it is fast: a CUDA device that supports bf16, or a CPU whose bf16 matrix
products beat fp32 in a sub-second probe (Intel AMX and AVX512-BF16 do; AVX2-only CPUs run bf16 products an order
of magnitude slower than fp32). Everywhere else it takes fp32. Forced choices are checked: fp16 needs a CUDA device
(its training uses a gradient scaler); bf16 on a GPU needs bf16 support. Weights and optimizer state stay fp32 in
every precision (autocast computes in the low precision; master weights do not change type).
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from ..errors import ConfigError
from .device import cpu_flags

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BF16_FAST = 1.2   # auto takes bf16 on a CPU whose bf16 products run at least this much faster than fp32


@dataclass(frozen=True)
class Precision:
    """name: what runs ("fp32", "bf16" or "fp16" autocast); device_type: "cpu" or "cuda"; requested: what was
    asked ("auto" or a name); reason: why this one, in words (printed in run headers, stored with runs)."""

    name: str
    device_type: str
    requested: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of matrix products (fp32 when no autocast)."""
        return _DTYPES[self.name]

    def autocast(self):
        """A context computing in this precision on its device type (nothing for fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        """A gradient scaler for fp16 training (fp16 gradients underflow without one); None otherwise."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision to run on `device` when `requested` ("auto", "fp32", "bf16" or "fp16") is asked for."""
    if requested not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    kind = device.type
    if kind == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            if bf16_ok:
                return Precision("bf16", kind, requested, "auto: this GPU computes bf16 natively")
            return Precision("fp32", kind, requested, "auto: this GPU has no native bf16; --precision fp16 is the "
                                                      "fast option there")
        if requested == "bf16" and not bf16_ok:
            raise ConfigError(f"precision bf16: {device} does not support bf16; use fp16 or fp32")
        return Precision(requested, kind, requested, "asked for" + ("; gradients scaled" if requested == "fp16"
                                                                   else ""))
    if requested == "fp16":
        raise ConfigError("precision fp16 needs a CUDA device; on a CPU use bf16 (where the CPU is fast at it) "
                          "or fp32, or let --precision auto choose")
    if requested == "fp32":
        return Precision("fp32", kind, requested, "asked for")
    probe = cpu_bf16_probe()
    speed = probe["bf16_speedup"]
    isa = "/".join(probe["bf16_flags"]) or torch.backends.cpu.get_cpu_capability()
    verdict = (f"bf16 matrix products {speed:.1f}x faster than fp32 on this {isa} CPU" if speed >= 1 else
               f"bf16 matrix products {1 / speed:.0f}x slower than fp32 on this {isa} CPU")
    if requested == "bf16":
        return Precision("bf16", kind, requested, f"asked for; {verdict}")
    name = "bf16" if speed >= BF16_FAST else "fp32"
    return Precision(name, kind, requested, f"auto: {verdict}")


@functools.lru_cache(maxsize=1)
def cpu_bf16_probe() -> dict:
    """Time square matrix products in fp32 and bf16 on the CPU (well under a second, once per process):
    {"fp32_gflops", "bf16_gflops", "bf16_speedup", "size", "bf16_flags"}. A slow bf16 CPU is recognised after a
    few products; a close call is measured again at a larger size, where AMX units show their speed."""
    flags = sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"})
    size, fp32, bf16 = 256, 0.0, 0.0
    for size in (256, 512):
        fp32 = _gflops(torch.float32, size, budget=0.05)
        bf16 = _gflops(torch.bfloat16, size, budget=0.15)
        if not 0.5 <= bf16 / fp32 <= 2.0:
            break                                         # clearly slower or clearly faster: decided
    return dict(fp32_gflops=fp32, bf16_gflops=bf16, bf16_speedup=bf16 / fp32, size=size, bf16_flags=flags)


def _gflops(dtype: torch.dtype, n: int, budget: float) -> float:
    """Best rate of n x n products over about `budget` seconds (at least 2 timed products after a warm-up)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    a @ b
    best, spent, count = float("inf"), 0.0, 0
    while count < 2 or (spent < budget and count < 50):
        t0 = time.perf_counter()
        a @ b
        dt = time.perf_counter() - t0
        best, spent, count = min(best, dt), spent + dt, count + 1
    return 2 * n ** 3 / best / 1e9
