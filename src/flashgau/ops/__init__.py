"""Attention math as pure functions of tensors (no parameters); dense references live in ops.reference.

One contract for every op (modelled on flash-linear-attention's ops):

- parallel form, for training and prefill:
      o, final_state = op(<inputs (B, H, T, .)>, *, <options>, output_final_state=False)
  Always a pair; final_state is None unless output_final_state=True (causal attention only; a ValueError
  otherwise), and then it is the decoding state after each row's last real token (key_mask, right padding).
  Every option is keyword-only.
- step form, for decoding one token per row:
      o, state = op_step(<inputs of the token (B, H, 1, .)>, state, pos, *, <options>)
  at positions pos (B,) int64, the position of each row's token (favor's step needs none and takes none).
- state: one dataclass per op (FlashState, FlashFirstToAllState, KVCache, CombinerState or its CombinerPoolState,
  FavorState, SoftmaxChunkState), a subclass of state.State: (B, ...) tensors, with clone(), select(rows) and
  nbytes().
- variant: a variant of an op is an op of its own in a file beside it, with the same contract (mixed_chunk.py and
  mixed_chunk_first_to_all.py), composing the plain op's steps.

The one update rule. A state does not hold the position: the caller owns it (generation.DecodeState.pos, one (B,)
tensor for the whole model, advanced once per token after every layer has stepped) and passes it to each step. A
step writes the token into the state it is given, in place (its slot of a buffer, the running sums), and returns
that same object: cheap per token, and the caller clones a state it wants to keep. A step never grows a state:
growing states (KVCache, CombinerState) must first have room for position pos, `state.reserve(pos + 1,
exact=False)` (generation.decode_step reserves every layer's state once per token; fixed-size states ignore it).

Chunk plumbing shared by the chunked ops is in chunks.py.
"""

from .combiner import (CombinerPoolState, CombinerState, combiner_attention, combiner_attention_step,
                       empty_combiner_state)
from .favor import FavorState, empty_favor_state, favor_attention, favor_attention_step
from .kv_cache import KVCache
from .mixed_chunk import FlashState, empty_flash_state, mixed_chunk_attention, mixed_chunk_attention_step
from .mixed_chunk_first_to_all import (FlashFirstToAllState, empty_flash_first_to_all_state,
                                       mixed_chunk_first_to_all_attention, mixed_chunk_first_to_all_attention_step)
from .mixed_chunk_softmax import (SoftmaxChunkState, empty_softmax_chunk_state, mixed_chunk_softmax_attention,
                                  mixed_chunk_softmax_attention_step)
from .quad import relu2_attention, relu2_attention_step, relu2_attention_weights
from .softmax import softmax_attention, softmax_attention_step, softmax_attention_weights
from .state import State

__all__ = ["State", "FlashState", "FlashFirstToAllState", "KVCache", "CombinerState", "CombinerPoolState", "FavorState",
           "SoftmaxChunkState",
           "mixed_chunk_attention", "mixed_chunk_attention_step", "empty_flash_state",
           "mixed_chunk_first_to_all_attention", "mixed_chunk_first_to_all_attention_step",
           "empty_flash_first_to_all_state",
           "relu2_attention", "relu2_attention_step", "relu2_attention_weights", "softmax_attention",
           "softmax_attention_step", "softmax_attention_weights",
           "combiner_attention", "combiner_attention_step", "empty_combiner_state",
           "favor_attention", "favor_attention_step", "empty_favor_state",
           "mixed_chunk_softmax_attention", "mixed_chunk_softmax_attention_step", "empty_softmax_chunk_state"]
