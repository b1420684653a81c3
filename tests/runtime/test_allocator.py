"""keep_freed_memory: under glibc, a large tensor comes from the heap and its memory stays there when it is freed,
for the next step to reuse, instead of being mapped afresh and unmapped (then faulted in again); it stays off where
asked (FLASHGAU_MALLOC=system) or where the user tuned malloc."""

import json
import os
import subprocess
import sys

import pytest

from flashgau.runtime import allocator

PROBE = """
import json, re, torch
from flashgau.runtime.allocator import keep_freed_memory
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
kept = keep_freed_memory()
x = torch.ones(16 * 2**20)              # 64 MiB, every page written
ptr, held = x.data_ptr(), rss()
heap = [line.split()[0].split("-") for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
in_heap = any(int(a, 16) <= ptr < int(b, 16) for a, b in heap)
del x
print(json.dumps([kept, in_heap, held - rss()]))
"""


def _probe(**env) -> tuple[bool, bool, int]:
    """In a fresh process: whether keep_freed_memory applied, whether a 64 MiB tensor came from the heap (not a
    mapping of its own), and how many bytes its free gave back to the OS."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != allocator.ENV}
    proc = subprocess.run([sys.executable, "-c", PROBE], env=dict(clean, **env), capture_output=True, text=True,
                          check=True)
    return tuple(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(allocator.glibc_mallopt() is None, reason="glibc's malloc only")
def test_a_freed_large_tensor_stays_in_the_heap_for_reuse_instead_of_going_back_to_the_os():
    kept, in_heap, returned = _probe()
    assert kept is True and in_heap is True and returned < 2**20, returned
    system, in_heap, returned = _probe(FLASHGAU_MALLOC="system")  # glibc's own: a mapping of its own, unmapped on free
    assert system is False and in_heap is False and returned > 60 * 2**20, returned


def test_it_stays_off_when_asked_or_when_the_user_tuned_malloc(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "system")
    assert allocator.keep_freed_memory() is False
    monkeypatch.delenv(allocator.ENV)
    assert allocator._user_tuned({"MALLOC_ARENA_MAX": "2"})
    assert allocator._user_tuned({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"})
    assert not allocator._user_tuned({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F", "PATH": "/bin"})
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert allocator.keep_freed_memory() is False
