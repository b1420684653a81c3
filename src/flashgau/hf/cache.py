"""FlashgauCache: flashgau's decoding state (generation.DecodeState) as a Hugging Face `Cache`.

One cache holds the state of every layer, whatever its kind: FLASH's fixed-size FlashState (running sum of the
finished chunks plus the open chunk), the KV caches of FLASH-Quad and the Transformers, the states of the
baselines. flashgau's own prefill and decode_step write it; this class only lets HF's `generate` carry it from step to
step, reorder it for beam search and count what it has seen.

Positions. A flashgau state holds no position: `state.pos` (B,) is each row's own count of real tokens, so rows with
padding decode at their own positions. HF counts columns instead (padding included): `get_seq_length()` is the
number of columns fed so far, which is what `generate` compares with input_ids to find the new tokens.
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers.cache_utils import Cache

from ..generation import DecodeState


class FlashgauCache(Cache):
    """Empty until the model's first forward pass prefills it; then `state` is the DecodeState."""

    is_compileable = False

    def __init__(self, state: Optional[DecodeState] = None, seen: int = 0) -> None:
        super().__init__(layers=[])
        self.state = state
        self.seen = seen            # columns fed so far (HF's sequence length, padding included)

    def __repr__(self) -> str:
        if self.state is None:
            return "FlashgauCache(empty)"
        kinds = sorted({type(s).__name__ for s in self.state.layers})
        return (f"FlashgauCache({len(self.state.layers)} layers of {', '.join(kinds)}, batch {self.batch_size}, "
                f"{self.seen} columns seen, {self.nbytes()} bytes)")

    def __len__(self) -> int:
        return 0 if self.state is None else len(self.state.layers)

    def nbytes(self) -> int:
        """Bytes held by the layer states: constant for FLASH whatever the number of tokens decoded."""
        return 0 if self.state is None else self.state.nbytes()

    # ------------------------------------------------------------------ what generate asks
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def get_max_length(self, layer_idx: Optional[int] = None) -> int:
        return -1                   # no fixed maximum (the model's max_seq_len is checked when decoding)

    @property
    def is_linear(self) -> list[bool]:
        return [False]              # HF must count columns with get_seq_length to find the tokens not yet fed

    @property
    def is_initialized(self) -> bool:
        return self.state is not None

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def batch_size(self) -> int:
        return -1 if self.state is None else int(self.state.pos.shape[0])

    def reset(self) -> None:
        self.state, self.seen = None, 0

    # ------------------------------------------------------------------ rows (beam search, repeated samples)
    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep the rows beam_idx (beam search's choice of beams to continue), in that order."""
        self.batch_select_indices(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.state is not None:
            self.state = self.state.select(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.state is not None:
            rows = torch.arange(self.batch_size, device=self.state.pos.device)
            self.state = self.state.select(rows.repeat_interleave(repeats))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a flashgau cache cannot be rolled back (FLASH's state has folded the tokens in); "
                                  "assisted generation and other rollbacks are not supported")
