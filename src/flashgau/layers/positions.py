"""Position signals: RoPE, the scaled absolute sinusoid, and GAU's relative position bias.

Positions are explicit integer tensors, so the same code serves training (positions 0..T-1) and decoding (one
position per row).
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..ops import fastpath, rope
from ..ops.autocast import cast


def _inv_freq(half: int, device: torch.device) -> Tensor:
    """inv_freq_i = 10000^(-i/half), i = 0..half-1 (decreasing)."""
    return torch.pow(10000.0, -torch.arange(half, device=device, dtype=torch.float32) / half)


@functools.lru_cache(maxsize=32)
def _inv_freq_cached(half: int, device: torch.device) -> Tensor:
    """_inv_freq computed once per width and device (eager mode)."""
    with torch.inference_mode(False), torch.no_grad():
        return _inv_freq(half, device)


def _angles(pos: Tensor, dim: int) -> Tensor:
    """pos (...,) integers -> angles (..., dim/2) in fp32. Under torch.compile the frequencies are computed in the
    graph (a constant the compiler folds) instead of read from the cache, which it cannot trace."""
    inv = _inv_freq if torch.compiler.is_compiling() else _inv_freq_cached
    return cast(pos, torch.float32)[..., None] * inv(dim // 2, pos.device)


def rope_tables(pos: Tensor, dims: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos, sin of the angles of a dims-wide rotation at positions pos (T,) or (B, T): (T, dims/2) or
    (B, 1, T, dims/2), in `dtype` (the angles themselves in fp32)."""
    ang = _angles(pos, dims)
    if pos.dim() == 2:          # (B, T, half) -> (B, 1, T, half)
        ang = ang[:, None]
    return cast(ang.cos(), dtype), cast(ang.sin(), dtype)


def apply_rope(x: Tensor, pos: Tensor, dims: Optional[int] = None) -> Tensor:
    """Rotate the last dim of x (B, H, T, dim) by positions pos (T,) or (B, T); half-split layout
    [x1 cos - x2 sin, x2 cos + x1 sin]. dims (even): rotate only the first `dims` channels (partial RoPE, the
    frequencies those of a dims-wide rotation) and pass the others through; None: all. ops/rope.py does the
    arithmetic (without `cat` unless the rope_nocat fast path is off)."""
    dims = x.shape[-1] if dims is None else dims
    if dims == 0:
        return x
    cos, sin = rope_tables(pos, dims, x.dtype)
    if fastpath.enabled("rope_nocat"):
        return rope.rotate(x, cos, sin, dims)
    return rope.rotate_plain(x, cos, sin, dims)


class StepPositions:
    """One decoding step's positions pos (B,) and what the layers derive from them, each computed once per step:
    generation.decode_step makes one per step and hands it to every block's step (a block stepped alone makes its
    own). Nothing outlives the step.

    host(): pos as a list of ints (one read to the host per step); rope_tables(dims, dtype): the cos, sin tables
    (B, 1, dims/2) of a dims-wide rotation at pos, what rope_tables(pos[:, None], dims, dtype) gives without its
    head axis."""

    def __init__(self, pos: Tensor):
        self.pos = pos
        self._host: Optional[list[int]] = None
        self._tables: dict[tuple[int, torch.dtype], tuple[Tensor, Tensor]] = {}

    def host(self) -> list[int]:
        if self._host is None:
            self._host = self.pos.tolist()
        return self._host

    def rope_tables(self, dims: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (dims, dtype)
        if key not in self._tables:
            cos, sin = rope_tables(self.pos[:, None], dims, dtype)      # (B, 1, 1, half)
            self._tables[key] = cos[:, 0], sin[:, 0]
        return self._tables[key]


class ScaledSinusoid(nn.Module):
    """cat[sin(p f), cos(p f)] times one learnable scalar initialised to 1/sqrt(d), added to the embeddings."""

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.scale = nn.Parameter(torch.tensor(1.0 / math.sqrt(d_model)))

    def forward(self, pos: Tensor) -> Tensor:
        """pos (T,) or (B, T) -> (T, d) or (B, T, d) in fp32."""
        ang = _angles(pos, self.d_model - self.d_model % 2)
        emb = torch.cat([ang.sin(), ang.cos()], dim=-1)
        if self.d_model % 2:
            emb = torch.nn.functional.pad(emb, (0, 1))
        return emb * self.scale


class RelPosBias(nn.Module):
    """The paper's relative position bias b[i, j], a function of j - i only.

    "toeplitz": one learned weight per offset, offsets clipped to +-(span - 1) with span = min(max_span, 512)
    (the table is centred, so an offset keeps its weight at every length). "rope": b = rope(a, i) . rope(b, j)
    with two learned vectors a, b of width qk_dim. "none": zero.
    """

    def __init__(self, kind: str, max_span: int, qk_dim: int, init_std: float = 0.02):
        super().__init__()
        self.kind = kind
        if kind == "toeplitz":
            self.span = min(max_span, 512)
            self.weight = nn.Parameter(torch.randn(2 * self.span - 1) * init_std)
        elif kind == "rope":
            self.a = nn.Parameter(torch.randn(qk_dim) * init_std)
            self.b = nn.Parameter(torch.randn(qk_dim) * init_std)
        elif kind != "none":
            raise ValueError(f"unknown relative position bias {kind!r}")

    def forward(self, pos_q: Tensor, pos_k: Tensor) -> Tensor:
        """pos_q (Tq,) or (B, Tq), pos_k (Tk,) -> bias (Tq, Tk) or (B, 1, Tq, Tk); fp32."""
        if self.kind == "none":
            shape = (*pos_q.shape, pos_k.shape[-1])
            bias = torch.zeros(shape, device=pos_q.device)
        elif self.kind == "toeplitz":
            offset = (pos_k - pos_q[..., None]).clamp(-(self.span - 1), self.span - 1) + self.span - 1
            bias = self.weight.float()[offset]
        else:
            qa = apply_rope(self.a.float().expand(*pos_q.shape, -1)[None, None] if pos_q.dim() == 1
                            else self.a.float().expand(*pos_q.shape, -1)[:, None], pos_q)
            kb = apply_rope(self.b.float().expand(pos_k.shape[-1], -1)[None, None], pos_k)
            bias = (qa @ kb.transpose(-1, -2))
            return bias[0, 0] if pos_q.dim() == 1 else bias
        return bias if pos_q.dim() == 1 else bias[:, None]

    def chunk_row(self, slot: Union[Tensor, int], width: int, device: Optional[torch.device] = None) -> Tensor:
        """The bias of one query per row, at slot (B,) of a chunk (0 <= slot < width), against the `width` slots of
        its chunk: (B, 1, 1, width) fp32, what forward(slot[:, None], arange(width)) gives, in fewer ops (decoding
        asks for it once per layer and token); slot an int (every row at that slot): (1, 1, 1, width), which
        broadcasts over the rows (device: where it goes). Toeplitz with width <= span clips no offset, so the row of
        slot i is the slice weight[span - 1 - i : span - 1 - i + width]: a view of the table for an int slot, else
        one gather from the table's sliding windows."""
        if self.kind == "toeplitz" and width <= self.span:
            if isinstance(slot, int):
                start = self.span - 1 - slot
                return self.weight.float()[start:start + width].view(1, 1, 1, width)
            windows = self.weight.float().unfold(0, width, 1)            # windows[r] = weight[r : r + width]
            return windows[self.span - 1 - slot][:, None, None]
        if isinstance(slot, int):
            slot = torch.tensor([slot], device=device)
        return self.forward(slot[:, None], torch.arange(width, device=slot.device))
