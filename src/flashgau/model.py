"""LanguageModel: token embeddings (+ scaled sinusoid) -> blocks -> final norm -> head.

Causal (language modelling) or bidirectional (an encoder for masked language modelling), for every arch in
config.ARCHS; the block of each arch comes from layers.BLOCKS. Shapes: B batch, T tokens, d width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import generation
from .config import ModelConfig
from .layers import Context, make_block
from .layers.gau import GAUBase
from .layers.norms import ScaleNorm
from .layers.positions import RelPosBias, ScaledSinusoid


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
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, input_ids: Tensor, attention_mask: Optional[Tensor],
                      labels: Optional[Tensor]) -> Optional[Tensor]:
        cfg = self.config
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be a 2-D tensor (batch, tokens), got {shape}; "
                             "add a batch dimension with input_ids[None]")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise ValueError(f"input_ids must be an integer tensor of token ids, got dtype {input_ids.dtype}")
        B, T = input_ids.shape
        if B == 0 or T == 0:
            raise ValueError(f"input_ids is empty (shape {(B, T)}); give at least one token per row")
        if T > cfg.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds max_seq_len {cfg.max_seq_len}; "
                             "raise ModelConfig.max_seq_len or feed shorter windows")
        # the value checks read tensor data: under torch.compile they would split the graph, so they run eagerly only
        values = not torch.compiler.is_compiling()
        if values:
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= cfg.vocab_size:
                raise ValueError(f"token ids must lie in [0, {cfg.vocab_size}), got values in [{lo}, {hi}]")
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
                if cfg.causal and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
                    raise ValueError("a causal model needs right padding: in each row of attention_mask the 1s "
                                     "must come first, then the 0s")
                if bool(mask.all()):
                    mask = None         # no padding: the unmasked fast path
        if labels is not None:
            if not isinstance(labels, Tensor) or labels.shape != input_ids.shape:
                shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
                raise ValueError(f"labels must have the shape of input_ids {(B, T)}, got {shape}")
            if labels.dtype.is_floating_point or labels.dtype == torch.bool:
                raise ValueError(f"labels must be integer token ids (-100 = ignore), got dtype {labels.dtype}")
            if values:
                bad = (labels != -100) & ((labels < 0) | (labels >= cfg.vocab_size))
                if bool(bad.any()):
                    raise ValueError(f"labels must lie in [0, {cfg.vocab_size}) or be -100 (ignored), got "
                                     f"{int(labels[bad][0])}")
        return mask

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
                labels: Optional[Tensor] = None):
        """Logits (B, T, V) without labels; LMOutput(logits, loss) with labels.

        labels[b, t] is the target of logits[b, t] (for language modelling pass the inputs shifted by one);
        -100 and padded positions (attention_mask 0) are ignored.
        """
        mask = self._check_inputs(input_ids, attention_mask, labels)
        T = input_ids.shape[1]
        ctx = Context(positions=torch.arange(T, device=input_ids.device), key_mask=mask, causal=self.config.causal)
        x = self.embed_tokens(input_ids, ctx.positions)
        for block in self.blocks:
            x = block(x, ctx)
        logits = self.logits_from_hidden(x)
        if labels is None:
            return logits
        return LMOutput(logits=logits, loss=self.loss(logits, labels, mask))

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
        return all(getattr(b, "supports_cache", False) for b in self.blocks)

    # ------------------------------------------------------------------ decoding (see generation.py)
    def prefill(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, *, capacity: int = 0):
        """(logits (B, T, V), DecodeState) after the prompt; causal models with a decoding state only."""
        return generation.prefill(self, input_ids, attention_mask, capacity=capacity)

    def decode_step(self, token_ids: Tensor, state: "generation.DecodeState"):
        """Feed one token per row; (logits (B, V), state)."""
        return generation.decode_step(self, token_ids, state)

    def generate(self, input_ids: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None, eos_token_id: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, attention_mask: Optional[Tensor] = None, **kwargs):
        """Prefill the prompt in parallel, then sample one token per step; see generation.generate."""
        return generation.generate(self, input_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                   top_p=top_p, eos_token_id=eos_token_id, generator=generator,
                                   attention_mask=attention_mask, **kwargs)
