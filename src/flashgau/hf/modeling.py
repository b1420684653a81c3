"""FlashgauForCausalLM and FlashgauForMaskedLM: flashgau's LanguageModel behind Hugging Face's PreTrainedModel.

Each holds one LanguageModel (`.model`, built from the config or handed in) and adds only HF's conventions around
it; every number comes from LanguageModel's forward, prefill and decode_step:

- `labels=input_ids` for the causal model: the shift is done inside (the target of position t is token t + 1; the
  last position and padded targets score nothing), -100 is ignored, and the loss is the mean cross-entropy (or, when
  HF's Trainer passes `num_items_in_batch`, the sum over that many targets, as HF's own models do).
- Outputs are `CausalLMOutputWithPast` / `MaskedLMOutput`: indexable, `.loss`, `.logits`, `.cache` (HF's name for
  past_key_values since transformers 5; `past_key_values` is accepted as an argument and read as an attribute).
- Padding on either side for the causal model. Each row's real tokens (attention_mask 1) are that row's sequence,
  at positions 0, 1, ...: a left-padded batch (how HF pads decoder-only prompts) is moved to the right-padded layout
  flashgau takes, run, and its logits put back in the columns of the input. Logits at padded columns are not
  meaningful, except the last column, which always holds the logits after each row's last real token: what
  `generate` reads, so that it continues every row from its own end whichever side it was padded on.
- `generate`: the first call prefills (flashgau's prefill; rows sit at their own positions) into a FlashgauCache,
  later calls feed one token per row through decode_step: FLASH's state keeps a fixed size however many tokens
  are generated. Beam search reorders the cache with DecodeState.select. A model without a decoding state (FLASH-Quad
  with normalizer="paper", whose outputs depend on the final length) generates by re-running the whole sequence
  for every token, as flashgau's own generate does; handing it a cache is an error.
- `activation_checkpointing_enable()` / `gradient_checkpointing_enable()` (and HF Trainer's gradient_checkpointing)
  switch LanguageModel's own per-block checkpointing (LanguageModel.set_activation_checkpointing): every block,
  non-reentrant; other checkpoint options (reentrant, offload, every_n_layers > 1) are refused, not ignored.

Shapes: B batch, T tokens, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast, MaskedLMOutput

from ..inputs import check_inputs
from ..model import LanguageModel
from .cache import FlashgauCache
from .configuration import FlashgauConfig

# Arguments HF models take that flashgau has no meaning for: refused when set rather than silently ignored.
_UNSUPPORTED = {"inputs_embeds": "give input_ids", "position_ids": "each row's positions count from its first real "
                "token", "token_type_ids": "there are no token types", "output_attentions": "not available",
                "output_hidden_states": "not available"}


class FlashgauPreTrainedModel(PreTrainedModel):
    """Shared by the causal and the masked LM: the LanguageModel, its embeddings, loading, the loss scaling."""

    config_class = FlashgauConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    causal: bool = True

    def __init__(self, config: FlashgauConfig, language_model: Optional[LanguageModel] = None):
        super().__init__(config)
        model_config = config.to_model_config()
        if model_config.causal != self.causal:
            want = "FlashgauForCausalLM" if model_config.causal else "FlashgauForMaskedLM"
            raise ValueError(f"this config is {'causal' if model_config.causal else 'bidirectional'}: load it with "
                             f"{want} (AutoModelFor{'CausalLM' if model_config.causal else 'MaskedLM'})")
        if language_model is not None and language_model.config != model_config:
            raise ValueError("language_model was built from another ModelConfig than this config's")
        self.model = language_model if language_model is not None else LanguageModel(model_config)
        # validates input the way the model does, but with padding allowed on either side (see module docstring)
        self._any_padding = dataclasses.replace(model_config, causal=False)
        self.post_init()

    @classmethod
    def from_language_model(cls, model: LanguageModel, **config_kwargs) -> "FlashgauPreTrainedModel":
        """The HF model around an existing LanguageModel (its weights shared, not copied); config_kwargs set HF
        fields of the config (pad_token_id, ...)."""
        return cls(FlashgauConfig.from_model_config(model.config, **config_kwargs), language_model=model)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """PreTrainedModel.from_pretrained, refusing a folder whose weights do not cover the model: flashgau's
        modules initialise themselves when built, so a missing weight would be left as whatever memory held."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            raise ValueError(f"the saved weights lack {len(missing)} tensor(s) of this model: "
                             f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        return (model, info) if want_info else model

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=checkpoint,
                                    every_n_layers: int = 1) -> None:
        """What HF's activation_checkpointing_enable / _disable call: LanguageModel's per-block checkpointing, which
        uses its own non-reentrant torch.utils.checkpoint (aware of its recompute: layers/recompute.py). HF's
        function is accepted only when it is that same plain checkpoint (HF's default); anything else is refused."""
        if enable:
            func = gradient_checkpointing_func
            plain = func is checkpoint or (isinstance(func, functools.partial) and func.func is checkpoint
                                           and not func.args and func.keywords == {"use_reentrant": False})
            if not plain:
                raise ValueError("flashgau checkpoints every block with non-reentrant torch.utils.checkpoint and no "
                                 "other options: call activation_checkpointing_enable() without "
                                 "activation_checkpointing_kwargs (or with {'use_reentrant': False}) and offload")
            if every_n_layers != 1:
                raise ValueError(f"flashgau checkpoints every block; every_n_layers={every_n_layers} is not supported")
        self.model.set_activation_checkpointing(bool(enable))

    def _init_weights(self, module) -> None:
        """Nothing: LanguageModel initialises its own weights when built (from_pretrained then loads them all)."""

    def get_input_embeddings(self):
        return self.model.embed

    def set_input_embeddings(self, value) -> None:
        self.model.embed = value

    def get_output_embeddings(self):
        """The output head, or None when it is the input embedding itself (tie_embeddings: one tensor, nothing to
        tie or save twice)."""
        return self.model.head

    # ------------------------------------------------------------------ shared by the forward passes
    @staticmethod
    def _refuse_unsupported(kwargs: dict) -> None:
        for name, why in _UNSUPPORTED.items():
            if kwargs.get(name) is not None and kwargs.get(name) is not False:
                raise ValueError(f"flashgau models take no {name} ({why})")

    @staticmethod
    def _scaled(loss: Optional[Tensor], targets: Tensor, mask: Optional[Tensor], num_items_in_batch):
        """The mean loss, or (HF Trainer's gradient accumulation) its sum over `num_items_in_batch` targets."""
        if loss is None or num_items_in_batch is None:
            return loss
        scored = targets != -100 if mask is None else (targets != -100) & mask
        return loss * scored.sum() / torch.as_tensor(num_items_in_batch, device=loss.device)

    @staticmethod
    def _result(output, return_dict: Optional[bool]):
        return output if return_dict is None or return_dict else output.to_tuple()


class FlashgauForCausalLM(FlashgauPreTrainedModel, GenerationMixin):
    """A causal flashgau LanguageModel for HF: `labels=input_ids`, padding on either side, `generate` (greedy,
    sampling, beam search) through flashgau's decoding state in a FlashgauCache."""

    causal = True
    _is_stateful = True             # a state cannot be rolled back: no assisted generation

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False                # the model makes its own FlashgauCache on its first forward pass

    def __init__(self, config: FlashgauConfig, language_model: Optional[LanguageModel] = None):
        super().__init__(config, language_model)
        if not self.model.supports_cache:
            self.generation_config.use_cache = False

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                labels: Optional[Tensor] = None, cache: Optional[FlashgauCache] = None,
                use_cache: Optional[bool] = None, return_dict: Optional[bool] = None,
                num_items_in_batch=None, past_key_values: Optional[FlashgauCache] = None,
                **kwargs) -> CausalLMOutputWithPast:
        """input_ids (B, T); attention_mask (B, T) 1 = real token, padding on either side; labels (B, T) (usually
        input_ids; shifted inside, -100 ignored); cache: the FlashgauCache of earlier calls, to feed input_ids on
        top of (no padding then). use_cache (default: config.use_cache in eval mode without gradients or labels)
        prefills and returns a cache. Logits are (B, T, V)."""
        self._refuse_unsupported(kwargs)
        if past_key_values is not None:
            if cache is not None:
                raise ValueError("give cache or past_key_values, not both")
            cache = past_key_values
        if input_ids is None:
            raise ValueError("input_ids are required")
        if cache is not None and not isinstance(cache, FlashgauCache):
            raise ValueError(f"a flashgau model takes a FlashgauCache, got {type(cache).__name__}")
        if cache is not None and not self.model.supports_cache:
            self._refuse_cache()
        if cache is not None and cache.state is not None:
            return self._result(self._decode(input_ids, attention_mask, labels, cache), return_dict)
        if use_cache is None:
            use_cache = (self.config.use_cache and not self.training and not torch.is_grad_enabled()
                         and labels is None)
        use_cache = use_cache and self.model.supports_cache

        check_inputs(self._any_padding, input_ids, attention_mask, labels)
        ids, mask, order = _right_padded(input_ids, attention_mask)
        targets = None if labels is None else _next_token_targets(labels, mask, order)
        if use_cache:
            logits, state = self.model.prefill(ids, mask)
            logits = logits.clone()                 # an ordinary tensor (prefill runs in inference mode)
            loss = None
            if targets is not None:
                check_inputs(self.model.config, ids, mask, targets)
                loss = LanguageModel.loss(logits, targets, mask)
            cache = cache if cache is not None else FlashgauCache()
            cache.state, cache.seen = state, input_ids.shape[1]
        else:
            out = self.model(ids, mask, labels=targets)
            logits, loss, cache = out.logits, out.loss, None
        if order is not None:
            logits = _in_input_columns(logits, order, mask)
        loss = None if targets is None else self._scaled(loss, targets, mask, num_items_in_batch)
        return self._result(CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache), return_dict)

    def _decode(self, input_ids: Tensor, attention_mask: Optional[Tensor], labels: Optional[Tensor],
                cache: FlashgauCache) -> CausalLMOutputWithPast:
        """Feed input_ids (B, n) on top of the cache's state, one column at a time: (B, n, V) logits."""
        if labels is not None:
            raise ValueError("labels cannot be scored on top of a cache; call the model on the whole sequence")
        n = input_ids.shape[1]
        if attention_mask is not None and not bool((attention_mask[:, -n:] != 0).all()):
            raise ValueError("tokens fed on top of a cache must all be real (attention_mask 1): pad the prompt, "
                             "not the continuation")
        steps = [self.model.decode_step(input_ids[:, t], cache.state)[0] for t in range(n)]
        cache.seen += n
        return CausalLMOutputWithPast(logits=torch.stack(steps, 1).clone(), cache=cache)

    def _refuse_cache(self):
        c = self.model.config
        raise ValueError(f"arch {c.arch!r} with normalizer={c.normalizer!r} has no decoding state (its outputs depend "
                         "on the final length): call it without a cache; generate re-runs the sequence for each "
                         "token")

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, cache=None, **kwargs):
        if not self.model.supports_cache:           # no decoding state: re-run the whole sequence every step
            if cache is not None:
                self._refuse_cache()
            next_sequence_length, kwargs["use_cache"] = None, False
        return super().prepare_inputs_for_generation(input_ids, next_sequence_length=next_sequence_length,
                                                     cache=cache, **kwargs)


class FlashgauForMaskedLM(FlashgauPreTrainedModel):
    """A bidirectional flashgau LanguageModel (causal=False) for HF: labels are the targets of their own
    positions (-100 everywhere but the masked tokens), as HF's masked-LM collator makes them."""

    causal = False

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                labels: Optional[Tensor] = None, return_dict: Optional[bool] = None, num_items_in_batch=None,
                **kwargs) -> MaskedLMOutput:
        self._refuse_unsupported(kwargs)
        if input_ids is None:
            raise ValueError("input_ids are required")
        out = self.model(input_ids, attention_mask, labels=labels)
        mask = None if attention_mask is None else attention_mask != 0
        loss = None if labels is None else self._scaled(out.loss, labels, mask, num_items_in_batch)
        return self._result(MaskedLMOutput(loss=loss, logits=out.logits), return_dict)


def _right_padded(input_ids: Tensor, attention_mask: Optional[Tensor]):
    """(ids, mask, order): each row's real tokens moved to its start, in order (the layout flashgau takes), and
    `order` (B, T), the input column each column of the result came from. Without padding: the input, None, None."""
    if attention_mask is None or bool((attention_mask != 0).all()):
        return input_ids, None, None
    mask = attention_mask != 0
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices     # real columns first, in order
    return input_ids.gather(1, order), mask.gather(1, order), order


def _in_input_columns(logits: Tensor, order: Tensor, mask: Tensor) -> Tensor:
    """Right-padded logits (B, T, V) back in the input's columns; the last column gets each row's last real
    token's logits (right-padded mask: the number of real tokens per row is mask.sum(1))."""
    columns = order.argsort(dim=1)
    columns[:, -1] = mask.sum(1) - 1
    return logits[torch.arange(logits.shape[0], device=logits.device)[:, None], columns]


def _next_token_targets(labels: Tensor, mask: Optional[Tensor], order: Optional[Tensor]) -> Tensor:
    """HF's labels (aligned with input_ids) as flashgau's targets in the right-padded layout: the target of
    position t is the label of t + 1; the last position and positions whose next token is padding get -100."""
    labels = labels.to(torch.long)
    if order is not None:
        labels = labels.gather(1, order)
    nxt = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], dim=1)
    if mask is not None:
        nxt = nxt.masked_fill(~torch.cat([mask[:, 1:], mask.new_zeros((mask.shape[0], 1))], dim=1), -100)
    return nxt
