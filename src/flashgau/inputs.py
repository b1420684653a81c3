"""Validation of what a caller feeds a model: token ids, attention mask and labels, with errors that say what to
change. Used by the model's forward pass and by generation alike (both import it; it imports neither)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .config import ModelConfig


LABEL_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)    # what the checks and loss take


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def check_inputs(config: ModelConfig, input_ids: Tensor, attention_mask: Optional[Tensor] = None,
                 labels: Optional[Tensor] = None) -> Optional[Tensor]:
    """Raise ValueError for input the model `config` cannot take; return the key mask (B, T) bool, or None when
    every token is real (the unmasked fast path).

    input_ids (B, T) int64 or int32 ids in [0, V) (the dtypes the embedding takes: others are refused, integer
    ones with the .long() that converts them); attention_mask (B, T) bool or 0/1, 1 = real token, right padding for
    a causal model; labels (B, T) integer ids or -100 (ignored). The checks that read tensor values run eagerly
    only: under torch.compile they would split the graph.
    """
    if not isinstance(input_ids, Tensor):
        raise ValueError(f"input_ids must be a tensor of shape (B, T) (batch, tokens), got a "
                         f"{type(input_ids).__name__}; make one with torch.tensor(ids)[None] for one sequence")
    if input_ids.dim() != 2:
        hint = "; add a batch dimension with input_ids[None]" if input_ids.dim() == 1 else ""
        raise ValueError(f"input_ids must have shape (B, T) (batch, tokens), got shape {tuple(input_ids.shape)}"
                         + hint)
    if not _is_integer(input_ids.dtype):
        raise ValueError(f"input_ids must be an integer tensor of token ids, got dtype {input_ids.dtype}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must be int64 (or int32) token ids, got dtype {input_ids.dtype}; convert them "
                         "with input_ids.long()")
    B, T = input_ids.shape
    if B == 0 or T == 0:
        raise ValueError(f"input_ids is empty (shape {(B, T)}); give at least one token per row")
    if T > config.max_seq_len:
        raise ValueError(f"sequence of {T} tokens exceeds max_seq_len {config.max_seq_len}; "
                         "raise ModelConfig.max_seq_len or feed shorter windows")
    values = not torch.compiler.is_compiling()
    if values:
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {config.vocab_size}), got values in [{lo}, {hi}]")
    mask = None
    if attention_mask is not None:
        if not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape:
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else attention_mask
            raise ValueError(f"attention_mask must have the shape of input_ids {(B, T)}, got {shape}")
        if values and attention_mask.dtype != torch.bool:
            if bool(((attention_mask != 0) & (attention_mask != 1)).any()):
                raise ValueError("attention_mask must hold only 0/1 (or bool): 1 = real token, 0 = padding")
        mask = attention_mask.to(device=input_ids.device, dtype=torch.bool)
        if values:
            if not bool(mask.any(1).all()):
                raise ValueError("every row needs at least one real token (attention_mask all zero in a row)")
            if config.causal and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
                raise ValueError("a causal model needs right padding: in each row of attention_mask the 1s "
                                 "must come first, then the 0s")
            if bool(mask.all()):
                mask = None         # no padding: the unmasked fast path
    if labels is not None:
        if not isinstance(labels, Tensor) or labels.shape != input_ids.shape:
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"labels must have the shape of input_ids {(B, T)}, got {shape}")
        if labels.dtype not in LABEL_DTYPES:
            raise ValueError(f"labels must be integer token ids (-100 = ignore), got dtype {labels.dtype}"
                             + ("; convert them with labels.long()" if _is_integer(labels.dtype) else ""))
        if values:
            bad = (labels != -100) & ((labels < 0) | (labels >= config.vocab_size))
            if bool(bad.any()):
                raise ValueError(f"labels must lie in [0, {config.vocab_size}) or be -100 (ignored), got "
                                 f"{int(labels[bad][0])}")
            scored = labels != -100 if mask is None else (labels != -100) & mask
            if not bool(scored.any()):
                raise ValueError("labels score no position (every label is -100 or padding): a loss over no "
                                 "token is undefined; give at least one target, or call the model without labels")
    return mask


def check_segment_ids(input_ids: Tensor, segment_ids: Optional[Tensor]) -> None:
    """Raise ValueError unless segment_ids is None or a (B, T) integer tensor like input_ids (a document is a run
    of equal consecutive ids; see documents.py)."""
    if segment_ids is None:
        return
    if not isinstance(segment_ids, Tensor) or segment_ids.shape != input_ids.shape:
        shape = tuple(segment_ids.shape) if isinstance(segment_ids, Tensor) else type(segment_ids).__name__
        raise ValueError(f"segment_ids must have the shape of input_ids {tuple(input_ids.shape)}, got {shape}")
    if not _is_integer(segment_ids.dtype):
        raise ValueError(f"segment_ids must be an integer tensor (the document of each token), got dtype "
                         f"{segment_ids.dtype}")
