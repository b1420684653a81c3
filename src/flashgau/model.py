"""LanguageModel: token embeddings (+ scaled sinusoid) -> blocks -> final norm -> head.

Causal (language modelling) or bidirectional (an encoder for masked language modelling), for every arch in
config.ARCHS; the block of each arch comes from layers.BLOCKS. `set_activation_checkpointing(True)` recomputes each
block's activations in the backward pass instead of keeping them (layers/recompute.py): less memory, the same
function and gradients; a setting of the module like train()/eval(), not of its ModelConfig.
Shapes: B batch, T tokens, d width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import generation
from .config import ModelConfig
from .documents import split_documents
from .inputs import check_inputs, check_segment_ids
from .layers import Context, make_block
from .layers.gau import GAUBase
from .layers.init import init_weights
from .layers.norms import ScaleNorm
from .layers.positions import RelPosBias, ScaledSinusoid
from .layers.recompute import checkpointed


@dataclass
class LMOutput:
    logits: Tensor                  # (B, T, V)
    loss: Optional[Tensor] = None   # mean cross-entropy over the labels that count


class LanguageModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"LanguageModel takes a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.sinusoid = ScaledSinusoid(config.d_model) if config.scaled_sinusoid else None
        self.blocks = nn.ModuleList(make_block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model) if config.norm == "layernorm" else ScaleNorm()
        self.head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        # activation checkpointing per block, in training mode with gradients only; HF's attribute name, so that
        # PreTrainedModel.is_activation_checkpointing sees it (hf/modeling.py)
        self.gradient_checkpointing = False
        self._init_weights()

    def set_activation_checkpointing(self, enabled: bool = True) -> "LanguageModel":
        """Recompute each block's activations in the backward pass (True) or keep them (False); returns self.
        Applies to training-mode forward passes with gradients; eval, no_grad and decoding are unchanged."""
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be True or False, got {enabled!r}")
        self.gradient_checkpointing = enabled
        return self

    def _init_weights(self) -> None:
        init_weights(self, self.config)

    # ------------------------------------------------------------------ forward
    def embed_tokens(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        """(B, T) ids and positions (T,) or (B, T) -> (B, T, d)."""
        x = self.embed(input_ids)
        if self.sinusoid is not None:
            x = x + self.sinusoid(positions).to(x.dtype)
        return x

    def logits_from_hidden(self, h: Tensor) -> Tensor:
        h = self.norm(h)
        return F.linear(h, self.embed.weight) if self.head is None else self.head(h)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None,
                labels: Optional[Tensor] = None, segment_ids: Optional[Tensor] = None) -> LMOutput:
        """LMOutput(logits (B, T, V), loss): loss is None without labels.

        labels[b, t] is the target of logits[b, t] (for language modelling pass the inputs shifted by one);
        -100 and padded positions (attention_mask 0) are ignored. segment_ids (B, T) integers: packed documents,
        a document being a run of equal consecutive ids; each is computed as a row of its own, so no token sees
        another document (documents.py).
        """
        mask = check_inputs(self.config, input_ids, attention_mask, labels)
        check_segment_ids(input_ids, segment_ids)
        pieces = None if segment_ids is None else split_documents(segment_ids.to(input_ids.device), mask)
        if pieces is None:
            logits = self.logits_from_hidden(self.hidden(input_ids, mask))
        else:
            logits = pieces.scatter(self.logits_from_hidden(self.hidden(pieces.gather(input_ids), pieces.key_mask)))
        return LMOutput(logits=logits, loss=None if labels is None else self.loss(logits, labels, mask))

    def context(self, input_ids: Tensor, key_mask: Optional[Tensor]) -> Context:
        """What every block is told about checked ids (B, T) with key mask (B, T) bool or None."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return Context(positions=positions, key_mask=key_mask, causal=self.config.causal)

    def hidden(self, input_ids: Tensor, key_mask: Optional[Tensor], *, layers=None,
               block_inputs: Optional[list] = None) -> Tensor:
        """The last block's output (B, T, d) for checked ids (B, T) and key mask (B, T) bool or None.

        layers: callables (x, ctx) -> x to run in place of the blocks, one per block, each calling its block (the
        Hugging Face face runs every block through a transformers layer, which checkpoints it itself); without
        them a block is checkpointed by set_activation_checkpointing. block_inputs: a list that receives the input
        of each block (B, T, d), in order, then the last block's output (n_layers + 1 tensors)."""
        ctx = self.context(input_ids, key_mask)
        x = self.embed_tokens(input_ids, ctx.positions)
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled() and layers is None
        for i, block in enumerate(self.blocks):
            if block_inputs is not None:
                block_inputs.append(x)
            if layers is not None:
                x = layers[i](x, ctx)
            else:
                x = checkpointed(block, x, ctx) if recompute else block(x, ctx)
        if block_inputs is not None:
            block_inputs.append(x)
        return x

    @staticmethod
    def loss(logits: Tensor, labels: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Mean cross-entropy (fp32) over labels != -100 at real positions."""
        labels = labels.to(torch.long)
        if mask is not None:
            labels = labels.masked_fill(~mask, -100)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

    # ------------------------------------------------------------------ bookkeeping
    def num_parameters(self) -> int:
        """All trainable parameters (a tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def no_weight_decay_names(self) -> set[str]:
        """Names of parameters not to decay: norms, biases, GAU scale/offset, position tables, sinusoid scale."""
        names = set()
        for mod_name, module in self.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            for p_name, _ in module.named_parameters(recurse=False):
                if (isinstance(module, (nn.LayerNorm, ScaleNorm, RelPosBias, ScaledSinusoid)) or p_name == "bias"
                        or (isinstance(module, GAUBase) and p_name in ("gamma", "beta"))):
                    names.add(prefix + p_name)
        return names

    @property
    def supports_cache(self) -> bool:
        """Whether every block can decode from a state (False only for FLASH-Quad with the paper normaliser)."""
        return generation.supports_cache(self)

    # ------------------------------------------------------------------ decoding (see generation.py)
    def prefill(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, *, capacity: int = 0,
                block_inputs: Optional[list] = None):
        """(logits (B, T, V), DecodeState) after the prompt; causal models with a decoding state only.
        block_inputs, a list, receives the input of each block and the last block's output (as in hidden)."""
        return generation.prefill(self, input_ids, attention_mask, capacity=capacity, block_inputs=block_inputs)

    def decode_step(self, token_ids: Tensor, state: "generation.DecodeState", *, block_inputs: Optional[list] = None):
        """Feed one token per row; (logits (B, V), state). block_inputs: as in prefill, (B, 1, d) each."""
        return generation.decode_step(self, token_ids, state, block_inputs=block_inputs)

    def generate(self, input_ids: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None, eos_token_id: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, attention_mask: Optional[Tensor] = None, **kwargs):
        """Prefill the prompt in parallel, then sample one token per step; see generation.generate."""
        return generation.generate(self, input_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                   top_p=top_p, eos_token_id=eos_token_id, generator=generator,
                                   attention_mask=attention_mask, **kwargs)
