"""Decoding: prefill a prompt in parallel, then one token per step from explicit per-layer states.

FLASH keeps a fixed-size FlashState per layer (running sum of finished chunks' summaries + the open chunk's
buffer; with first_to_all also the first chunk's keys and values); FLASH-Quad and the Transformers keep a
KVCache. Rows of a batch may sit at different positions (prompts of different lengths, right-padded). A
DecodeState is plain data: keep it and pass it back to continue a stream.
Decoding runs in torch.inference_mode (no autograd bookkeeping: the per-token cost is many small ops).

Every function here takes the model as an argument and uses only its `config`, `blocks` (each with forward,
prefill, step and supports_cache), `embed_tokens` and `logits_from_hidden`; model.py imports this module, never
the reverse. Shapes: B batch, T tokens, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from .inputs import check_inputs
from .layers import Context
from .layers.positions import StepPositions


@dataclass
class DecodeState:
    """layers: one state per block (FlashState, KVCache, ...; written in place by each step);
    pos: (B,) int64, position of each row's next token: the only position, passed to every block's step and
    advanced once per token (the layer states hold none);
    last_logits: (B, V) logits of each row's last token (what the next token is sampled from)."""

    layers: list[Any]
    pos: Tensor
    last_logits: Tensor
    finished: Optional[Tensor] = field(default=None)
    model: Optional[str] = field(default=None)      # model_signature() of the model that made it

    def nbytes(self) -> int:
        """Bytes held by the layer states (what grows, or does not, with the position)."""
        return sum(s.nbytes() for s in self.layers)

    def select(self, rows: Tensor) -> "DecodeState":
        """A new state holding the rows `rows` (a (B',) int64 tensor, which may reorder, repeat or drop rows, or a
        (B,) bool mask) of every layer state, pos, last_logits and finished: what beam search needs after it
        picks the beams to continue. The rows are copies; this state is left as it was."""
        rows = rows.to(self.pos.device)
        return DecodeState(layers=[s.select(rows) for s in self.layers], pos=self.pos[rows],
                           last_logits=self.last_logits[rows],
                           finished=None if self.finished is None else self.finished[rows], model=self.model)


def model_signature(model) -> str:
    """What a decoding state must match to be stepped by `model`: arch and every shape of its layers."""
    c = model.config
    return (f"{c.arch}, {c.n_layers} layers, d_model {c.d_model}, vocab {c.vocab_size}, qk_dim {c.qk_dim}, "
            f"expansion {c.expansion}, heads {c.n_heads}, chunk {c.chunk_size}, token shift {c.token_shift}"
            + (", first-to-all" if c.first_to_all else ""))


def supports_cache(model) -> bool:
    """Whether every block can decode from a state (False only for FLASH-Quad with the paper normaliser)."""
    return all(getattr(b, "supports_cache", False) for b in model.blocks)


def _check_cache(model) -> None:
    if not supports_cache(model):
        raise ValueError(f"arch {model.config.arch!r} with normalizer={model.config.normalizer!r} has no decoding "
                         "state: its outputs depend on the final length. Use normalizer='fixed' (see "
                         "docs/normalisers.md); generate() falls back to re-running the sequence")


def _parallel(model, input_ids: Tensor, mask: Optional[Tensor], *, want_state: bool,
              block_inputs: Optional[list] = None):
    """One parallel pass: (logits (B, T, V), each block's decoding state (empty unless want_state), Context);
    block_inputs, a list, receives the input of each block, then the last block's output."""
    ctx = Context(positions=torch.arange(input_ids.shape[1], device=input_ids.device), key_mask=mask,
                  causal=model.config.causal)
    x = model.embed_tokens(input_ids, ctx.positions)
    states = []
    for block in model.blocks:
        if block_inputs is not None:
            block_inputs.append(x)
        if want_state:
            x, state = block.prefill(x, ctx)
            states.append(state)
        else:
            x = block(x, ctx)
    if block_inputs is not None:
        block_inputs.append(x)
    return model.logits_from_hidden(x), states, ctx


@torch.inference_mode()
def prefill(model, input_ids: Tensor, attention_mask: Optional[Tensor] = None, *, capacity: int = 0,
            block_inputs: Optional[list] = None) -> tuple[Tensor, DecodeState]:
    """Run the prompt in parallel; returns (logits (B, T, V), DecodeState after each row's last real token).
    capacity reserves room in growing caches for that many positions; block_inputs, a list, receives the input
    (B, T, d) of each block, then the last block's output."""
    if not model.config.causal:
        raise ValueError("decoding needs a causal model (ModelConfig(causal=True))")
    _check_cache(model)
    mask = check_inputs(model.config, input_ids, attention_mask)
    logits, states, ctx = _parallel(model, input_ids, mask, want_state=True, block_inputs=block_inputs)
    for s in states:
        s.reserve(capacity)                       # growing states only; fixed-size ones ignore it
    B = input_ids.shape[0]
    lengths = ctx.lengths(B)
    last = logits[torch.arange(B, device=logits.device), lengths - 1]
    return logits, DecodeState(layers=states, pos=lengths.to(torch.long).clone(), last_logits=last,
                               model=model_signature(model))


@torch.inference_mode()
def decode_step(model, token_ids: Tensor, state: DecodeState, *,
                block_inputs: Optional[list] = None) -> tuple[Tensor, DecodeState]:
    """Feed one token per row (token_ids (B,) or (B, 1)); returns (logits (B, V), state updated in place).
    block_inputs, a list, receives the input (B, 1, d) of each block, then the last block's output."""
    if not isinstance(state, DecodeState):
        raise ValueError(f"decode_step takes the DecodeState that prefill() returned, got {type(state).__name__}")
    if state.model != model_signature(model):
        raise ValueError(f"this DecodeState belongs to another model ({state.model}), not to this one "
                         f"({model_signature(model)}); step it with the model that prefilled it")
    if not isinstance(token_ids, Tensor):
        raise ValueError(f"token_ids must be a tensor of token ids, got {type(token_ids).__name__}")
    token_ids = token_ids.reshape(-1)
    if token_ids.shape[0] != state.pos.shape[0]:
        raise ValueError(f"decode_step got {token_ids.shape[0]} tokens for a state of {state.pos.shape[0]} rows")
    last = int(state.pos.max())
    if last >= model.config.max_seq_len:
        raise ValueError(f"position {last} reaches max_seq_len {model.config.max_seq_len}")
    check_inputs(model.config, token_ids[:, None])
    for s in state.layers:
        s.reserve(last + 1, exact=False)          # room for this token in growing states (doubling)
    x = model.embed_tokens(token_ids[:, None], state.pos[:, None])
    step = StepPositions(state.pos)               # what the layers derive from the positions, once per step
    for i, block in enumerate(model.blocks):
        if block_inputs is not None:
            block_inputs.append(x)
        x, state.layers[i] = block.step(x, state.layers[i], state.pos, step)
    if block_inputs is not None:
        block_inputs.append(x)
    state.pos += 1
    state.last_logits = model.logits_from_hidden(x)[:, 0]
    return state.last_logits, state


GREEDY_BELOW = 1e-5     # temperatures below this are greedy (vLLM's rule): dividing by them overflows float32


def sample_next(logits: Tensor, *, temperature: float = 1.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """(B, V) logits -> (B,) token ids. A temperature of 0, or below GREEDY_BELOW, is greedy (argmax)."""
    if temperature < GREEDY_BELOW:
        return logits.argmax(-1)
    logits = logits.float()
    # shift by the row maximum before dividing: at tiny temperatures the quotient would overflow (inf - inf = nan)
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p            # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    if generator is not None:
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).reshape(-1).to(logits.device)


def _check_sampling(max_new_tokens, temperature, top_k, top_p) -> None:
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 0):
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and not (isinstance(top_k, int) and top_k >= 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


@torch.no_grad()
def generate(model, input_ids: Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: Optional[int] = None, top_p: Optional[float] = None, eos_token_id: Optional[int] = None,
             generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
             attention_mask: Optional[Tensor] = None, pad_token_id: Optional[int] = None,
             state: Optional[DecodeState] = None, return_state: bool = False):
    """Continue each row of input_ids (B, T) by up to max_new_tokens tokens.

    Rows of different lengths: right-pad and pass attention_mask; row b's output is its real prompt tokens, then its
    new tokens, then pad_token_id (default: eos_token_id, else 0) to the common width T + max_new_tokens. A row stops
    after it emits eos_token_id; generation stops when every row has. temperature 0 is greedy; generator (or seed)
    makes sampling reproducible. With `state` (from an earlier call with return_state=True), input_ids are fed on top
    of that state instead of being prefilled (continuing a stream), and must not be padded.
    Returns the tokens, or (tokens, DecodeState) with return_state. The tokens are an ordinary tensor (usable in
    autograd later); the state's tensors are inference tensors, for further decoding only.
    """
    with torch.inference_mode():
        result = _generate(model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id, generator,
                           seed, attention_mask, pad_token_id, state, return_state)
    if return_state:
        return result[0].clone(), result[1]
    return result.clone()


def _generate(model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id, generator, seed,
              attention_mask, pad_token_id, state, return_state):
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2 ** 63):
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    for name, value in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if value is not None and not (isinstance(value, int) and 0 <= value < model.config.vocab_size):
            raise ValueError(f"{name} must be a token id in [0, {model.config.vocab_size}) or None, got {value!r}")
    if generator is None and seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(seed)
    pad = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else 0)
    was_training = model.training
    model.eval()
    try:
        if not supports_cache(model):
            if state is not None or return_state:
                _check_cache(model)
            return _generate_by_recompute(model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id,
                                          generator, attention_mask, pad)
        mask = check_inputs(model.config, input_ids, attention_mask)
        B, T = input_ids.shape
        lengths = mask.sum(1) if mask is not None else torch.full((B,), T, device=input_ids.device)
        if state is None:
            need = T + max_new_tokens
            if need > model.config.max_seq_len:
                raise ValueError(f"prompt ({T} tokens) + max_new_tokens {max_new_tokens} exceeds max_seq_len "
                                 f"{model.config.max_seq_len}")
            _, state = prefill(model, input_ids, mask, capacity=need)
        else:
            if mask is not None:
                raise ValueError("continuing from a state takes unpadded input_ids (no attention_mask)")
            if int(state.pos.max()) + T + max_new_tokens > model.config.max_seq_len:
                raise ValueError("the stream would exceed max_seq_len")
            for t in range(T):
                decode_step(model, input_ids[:, t], state)
        out = torch.full((B, T + max_new_tokens), pad, dtype=torch.long, device=input_ids.device)
        out[:, :T] = input_ids if mask is None else input_ids.masked_fill(~mask, pad)
        finished = state.finished if state.finished is not None else torch.zeros(B, dtype=torch.bool,
                                                                                 device=input_ids.device)
        rows = torch.arange(B, device=input_ids.device)
        for i in range(max_new_tokens):
            nxt = sample_next(state.last_logits, temperature=temperature, top_k=top_k, top_p=top_p,
                              generator=generator)
            nxt = nxt.masked_fill(finished, pad)
            out[rows, lengths + i] = nxt
            if eos_token_id is not None:
                finished = finished | (nxt == eos_token_id)
            if i + 1 < max_new_tokens or return_state:   # the returned state covers every output token
                decode_step(model, nxt, state)
            if bool(finished.all()):
                break
        state.finished = finished
        return (out, state) if return_state else out
    finally:
        model.train(was_training)


def _generate_by_recompute(model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id, generator,
                           attention_mask, pad) -> Tensor:
    """Fallback for models without a decoding state: re-run the whole sequence for every new token."""
    mask = check_inputs(model.config, input_ids, attention_mask)
    B, T = input_ids.shape
    if T + max_new_tokens > model.config.max_seq_len:
        raise ValueError(f"prompt ({T} tokens) + max_new_tokens {max_new_tokens} exceeds max_seq_len "
                         f"{model.config.max_seq_len}")
    lengths = mask.sum(1) if mask is not None else torch.full((B,), T, device=input_ids.device)
    out = torch.full((B, T + max_new_tokens), pad, dtype=torch.long, device=input_ids.device)
    out[:, :T] = input_ids if mask is None else input_ids.masked_fill(~mask, pad)
    finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    rows = torch.arange(B, device=input_ids.device)
    for i in range(max_new_tokens):
        width = int(lengths.max()) + i
        cols = torch.arange(width, device=input_ids.device)
        real = cols[None, :] < (lengths + i)[:, None]
        logits = _parallel(model, out[:, :width], check_inputs(model.config, out[:, :width], real),
                           want_state=False)[0]
        nxt = sample_next(logits[rows, lengths + i - 1], temperature=temperature, top_k=top_k, top_p=top_p,
                          generator=generator).masked_fill(finished, pad)
        out[rows, lengths + i] = nxt
        if eos_token_id is not None:
            finished = finished | (nxt == eos_token_id)
            if bool(finished.all()):
                break
    return out
