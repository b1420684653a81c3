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
from transformers.cache_utils import Cache, CacheLayerMixin

from ..generation import DecodeState
from ..ops import KVCache


class FlashgauCacheLayer(CacheLayerMixin):
    """One block's decoding state inside a FlashgauCache, as a transformers cache layer: what code that walks
    `cache.layers` sees. `state` is the block's FlashState, KVCache, ...; `keys` / `values` are a KVCache's
    (B, H, capacity, d) tensors and None for states without them (FLASH's fixed-size sums). flashgau's prefill and
    decode_step write the state; the layer takes no keys and values through `update`, and rows are selected or
    reordered for the whole cache at once (FlashgauCache.reorder_cache)."""

    is_sliding = False

    def __init__(self, cache: "FlashgauCache", index: int) -> None:
        self.cache, self.index = cache, index       # keys, values and is_initialized are read from the state

    def __repr__(self) -> str:
        return f"FlashgauCacheLayer({self.index}, {type(self.state).__name__})"

    @property
    def state(self):
        return self.cache.state.layers[self.index]

    @property
    def is_initialized(self) -> bool:
        return self.cache.state is not None

    @property
    def keys(self):
        return self.state.k if isinstance(self.state, KVCache) else None

    @property
    def values(self):
        return self.state.v if isinstance(self.state, KVCache) else None

    def lazy_initialization(self, key_states, value_states) -> None:
        raise NotImplementedError("a FlashgauCache layer is filled by flashgau's prefill, not from keys and values")

    def update(self, key_states, value_states, *args, **kwargs):
        raise NotImplementedError("a FlashgauCache layer is written by flashgau's decode_step, not from keys and "
                                  "values")

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cache.seen + query_length, 0

    def get_seq_length(self) -> int:
        return self.cache.seen

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        raise NotImplementedError("reset the whole FlashgauCache (cache.reset())")

    def reorder_cache(self, beam_idx) -> None:
        raise NotImplementedError("reorder the whole FlashgauCache (cache.reorder_cache(beam_idx))")


class FlashgauCache(Cache):
    """Empty until the model's first forward pass prefills it; then `state` is the DecodeState and `layers` holds
    one FlashgauCacheLayer per block."""

    is_compileable = False

    def __init__(self, state: Optional[DecodeState] = None, seen: int = 0) -> None:
        super().__init__(layers=[])
        self.state = state
        self.seen = seen            # columns fed so far (HF's sequence length, padding included)

    @property
    def state(self) -> Optional[DecodeState]:
        return self._state

    @state.setter
    def state(self, state: Optional[DecodeState]) -> None:
        self._state = state
        self.layers = [] if state is None else [FlashgauCacheLayer(self, i) for i in range(len(state.layers))]

    def __repr__(self) -> str:
        if self.state is None:
            return "FlashgauCache(empty)"
        kinds = sorted({type(s).__name__ for s in self.state.layers})
        return (f"FlashgauCache({len(self.state.layers)} layers of {', '.join(kinds)}, batch {self.batch_size}, "
                f"{self.seen} columns seen, {self.nbytes()} bytes)")

    def __len__(self) -> int:
        return len(self.layers)

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
