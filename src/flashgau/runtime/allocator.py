"""Host memory for CPU training: keep freed blocks for the next step instead of handing them back to the OS.

PyTorch's CPU tensors come from the C library's malloc. glibc serves every block above its mmap threshold (which
grows with use but never past 32 MiB on 64-bit Linux) with a fresh mmap and unmaps it on free. A training step at a
long context allocates many activations above that size ((batch x T, e) fp32 at T = 16384, e = 512 is 32 MiB), so
every step faults in and zero-fills all of them again, in the kernel. On a 2-core AMD EPYC Zen 5 (AVX-512), FLASH's
small-preset fp32 step at T = 16384 took 6.9 s with 685,000 page faults, and 4.3 s with 4 once freed memory was
kept (benchmarks/results/avx512/allocator.md; docs/training.md).

`keep_freed_memory()` sets glibc's malloc so that it never maps a block of its own (M_MMAP_MAX = 0: large blocks
come from the heap) and never trims the heap (M_TRIM_THRESHOLD = SIZE_MAX): a freed activation is reused by the
next step. The price: the process keeps the memory of its largest step until it exits (its resident set stays at
its peak, plus what fragmentation adds). The `flashgau` command calls it at start; a program that imports flashgau
may call it too. It changes nothing and returns False where the C library is not glibc (musl, macOS, Windows),
when FLASHGAU_MALLOC=system asks for the C library's own behaviour, or when the user has tuned glibc's malloc
already (MALLOC_* variables, glibc.malloc tunables).
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV = "FLASHGAU_MALLOC"
M_TRIM_THRESHOLD = -1           # mallopt parameters (malloc.h)
M_MMAP_MAX = -4
_NEVER = -1                     # glibc reads the trim threshold as a size_t: -1 is SIZE_MAX, never trim


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (see the module docstring); whether it did."""
    if os.environ.get(ENV, "").strip().lower() == "system" or _user_tuned(os.environ):
        return False
    mallopt = glibc_mallopt()
    return mallopt is not None and mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, _NEVER) == 1


def glibc_mallopt():
    """glibc's mallopt(int, int) -> int on Linux; None under any other C library or system."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        # glibc only: other C libraries read mallopt differently. The lookup raises AttributeError where the
        # symbol is missing (musl, ...), which is the point; the value itself is not needed.
        _ = libc.gnu_get_libc_version
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def _user_tuned(environ) -> bool:
    """Whether the environment sets glibc's malloc itself (which then wins)."""
    return any(name.startswith("MALLOC_") for name in environ) or "glibc.malloc" in environ.get("GLIBC_TUNABLES", "")
