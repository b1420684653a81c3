"""Attention math as pure functions of tensors (no parameters). Each op has a parallel form (training, prefill)
and a step form (decoding) that share one explicit state type; dense references live in ops.reference."""

from .kv_cache import KVCache
from .mixed_chunk import FlashState, empty_flash_state, mixed_chunk_attention, mixed_chunk_step
from .quad import relu2_attention, relu2_attention_step
from .softmax import softmax_attention, softmax_attention_step

__all__ = ["KVCache", "FlashState", "empty_flash_state", "mixed_chunk_attention", "mixed_chunk_step",
           "relu2_attention", "relu2_attention_step", "softmax_attention", "softmax_attention_step"]
