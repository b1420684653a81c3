"""Switches of the fast paths: faster forms of FLASH's hot loops, each beside the plain form it replaces.

Every fast path computes what its plain form computes (tests/ops/test_fastpath.py compares them, forward and
backward, in fp32 and bf16); the plain form stays in the code as its reference and as the "before" of the speed
report's changes table, which times both in one process (docs/benchmarks.md). All are on by default.

    causal_blocks      ops/local_blocks.py: the causal local part of mixed chunk attention computes only the
                       sub-blocks of each chunk's C x C square at or below the diagonal (3/4 of it at C = 256), forward
                       and backward, instead of the whole square with the upper half masked
    fused_projection   ops/projection.py: GAU's uvz product and its epilogue (SiLU, split, the scale/offset maps
                       and RoPE) as one autograd function: the product in three parts written contiguous, RoPE
                       without `cat`, its backward written out (no saved copies)
    rope_nocat         ops/rope.py: RoPE (every arch's queries and keys) as one autograd function writing the
                       rotated halves in place, no `cat`
    lean_global        ops/mixed_chunk.py: the causal global part's exclusive prefix sum over chunks in one pass
                       (no zero block concatenated, no flips in backward; ops/chunks.py), and its product added into
                       the local part's output in place (no copy of it)
    local_summaries    ops/local_blocks.py: the causal global part's chunk summaries lin_k^T v computed in the causal
                       local part's autograd node (needs causal_blocks), so v's two gradients meet in one buffer
    global_trim        ops/global_trim.py: the causal global part skips the products whose result is zero or unused:
                       chunk 0's global term (it sees no summary) and the last chunk's summary (no chunk sees it; it
                       is computed when the decoding state is asked for), forward and backward: half of the global
                       part's products at context 512 with chunk 256
    shift_nocat        ops/shift.py: token shift's channel shift (layers/token_shift.py) as one autograd function
                       writing one output forward and one gradient backward, no `cat`, no zero-filled slice buffers

`plain(*names)` turns the named ones (all when none is named) off inside a `with` block. The switches are read when
a layer runs; under torch.compile every one reads as off (the compiler fuses the plain forms).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

FAST_PATHS: dict[str, str] = {
    "causal_blocks": "causal local part: only the sub-blocks at or below the diagonal",
    "fused_projection": "GAU projection and epilogue in one autograd function, RoPE without cat",
    "rope_nocat": "RoPE as one autograd function, no cat (every arch)",
    "lean_global": "causal global part: one-pass exclusive prefix sum over chunks, added in place",
    "local_summaries": "chunk summaries from the causal local part's node: v's gradients summed in place",
    "shift_nocat": "token shift as one autograd function, no cat",
    "global_trim": "causal global part: no product for chunk 0's term nor for the last chunk's summary",
}

_enabled = dict.fromkeys(FAST_PATHS, True)


def enabled(name: str) -> bool:
    """Whether the fast path `name` (one of FAST_PATHS) is on. Never while torch.compile traces: the compiler fuses
    the plain forms itself, and the fast forms' `out=` writes into slices would break its graph."""
    return _enabled[name] and not torch.compiler.is_compiling()


def _check(names) -> None:
    unknown = sorted(set(names) - set(FAST_PATHS))
    if unknown:
        raise ValueError(f"unknown fast path(s) {', '.join(unknown)}; known: {', '.join(FAST_PATHS)}")


def set_enabled(**flags: bool) -> None:
    """Turn fast paths on or off, e.g. set_enabled(causal_blocks=False)."""
    _check(flags)
    _enabled.update({k: bool(v) for k, v in flags.items()})


@contextlib.contextmanager
def plain(*names: str) -> Iterator[None]:
    """Run the plain forms of the named fast paths (all of them when none is named) inside the block."""
    _check(names)
    names = names or tuple(FAST_PATHS)
    saved = dict(_enabled)
    _enabled.update(dict.fromkeys(names, False))
    try:
        yield
    finally:
        _enabled.clear()
        _enabled.update(saved)
