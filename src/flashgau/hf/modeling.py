"""FlashgauForCausalLM and FlashgauForMaskedLM: flashgau's LanguageModel behind Hugging Face's PreTrainedModel.

Each holds one LanguageModel (`.model`, built from the config or handed in) and adds only HF's conventions around
it; every number comes from LanguageModel's pieces (embed, blocks, norm, head), prefill and decode_step:

- `labels=input_ids` for the causal model: the shift is done inside (the target of position t is token t + 1; the
  last position and padded targets score nothing), -100 is ignored, and the loss is the mean cross-entropy (or, when
  HF's Trainer passes `num_items_in_batch`, the sum over that many targets, as HF's own models do).
  `shift_labels` (targets already aligned with the logits, what sequence parallelism hands each rank) replaces
  labels in the loss.
- Outputs are `CausalLMOutputWithPast` / `MaskedLMOutput`: indexable, `.loss`, `.logits`, `.cache` (HF's name for
  past_key_values since transformers 5; `past_key_values` is accepted as an argument and read as an attribute).
  `output_hidden_states` (or config.output_hidden_states) adds `hidden_states`: the input of each block and the final
  normed output, (B, T, d) each. `output_attentions` adds `attentions`, (B, H, T, T) per block, for the archs whose
  attention has a weight matrix (Transformer+/++ softmax, FLASH-Quad's relu^2); FLASH's mixed chunk attention and the
  other linear baselines have none, and asking for it is a ValueError naming the arch.
- Padding on either side for the causal model. Each row's real tokens (attention_mask 1) are that row's sequence,
  at positions 0, 1, ...: a left-padded batch (how HF pads decoder-only prompts) is moved to the right-padded layout
  flashgau takes, run, and its logits, hidden states and attentions put back in the columns of the input (a batch
  already right-padded is returned as computed). Values at padded columns are not meaningful, except the last
  column of the logits, which always holds the logits after each row's last real token: what `generate` reads, so
  that it continues every row from its own end whichever side it was padded on.
  Traced, compiled or exported, the forward reads no tensor value on the host (the checks that would are eager only).
- `generate`: the first call prefills (flashgau's prefill; rows sit at their own positions) into a FlashgauCache,
  later calls feed one token per row through decode_step: FLASH's state keeps a fixed size however many tokens
  are generated. Beam search reorders the cache with DecodeState.select. A model without a decoding state (FLASH-Quad
  with normalizer="paper", whose outputs depend on the final length) generates by re-running the whole sequence
  for every token, as flashgau's own generate does, and so does generate with output_attentions (the weights of a
  step are those of the whole sequence); handing such a model a cache is an error.
- Activation checkpointing is transformers' own: each block runs through a FlashgauLayer (a
  GradientCheckpointingLayer), so `activation_checkpointing_enable(...)` / `gradient_checkpointing_enable(...)` and
  Trainer's gradient_checkpointing apply with their options (use_reentrant, offload, every_n_layers).

Shapes: B batch, T tokens, d width, H heads, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast, MaskedLMOutput

from ..inputs import check_inputs
from ..model import LanguageModel
from .cache import FlashgauCache
from .configuration import FlashgauConfig

# Arguments HF models take that flashgau has no meaning for: refused when set rather than silently ignored.
_UNSUPPORTED = {"inputs_embeds": "give input_ids", "position_ids": "each row's positions count from its first real "
                "token", "token_type_ids": "there are no token types"}


class FlashgauLayer(GradientCheckpointingLayer):
    """One block of the LanguageModel as transformers sees it: HF's activation checkpointing wraps this layer's
    forward. The layer holds its block without owning it: the block's weights keep their one name,
    model.blocks.<i>, in state dicts and saved folders."""

    def __init__(self, block: nn.Module):
        super().__init__()
        object.__setattr__(self, "block", block)       # not a submodule: no second name for the same weights

    def forward(self, x: Tensor, ctx) -> Tensor:
        return self.block(x, ctx)


class FlashgauPreTrainedModel(PreTrainedModel):
    """Shared by the causal and the masked LM: the LanguageModel, its embeddings, loading, the loss scaling."""

    config_class = FlashgauConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["FlashgauLayer"]
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
        self.layers = nn.ModuleList(FlashgauLayer(block) for block in self.model.blocks)
        self.post_init()

    @classmethod
    def from_language_model(cls, model: LanguageModel, **config_kwargs) -> "FlashgauPreTrainedModel":
        """The HF model around an existing LanguageModel (its weights shared, not copied); config_kwargs set HF
        fields of the config (pad_token_id, ...)."""
        return cls(FlashgauConfig.from_model_config(model.config, **config_kwargs), language_model=model)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """PreTrainedModel.from_pretrained, refusing a folder whose weights do not cover the model: flashgau's
        modules initialise themselves when built, so a missing weight would silently keep a random value. With
        output_loading_info=True nothing is refused: (model, info) is returned, and info["missing_keys"] lists
        what the folder lacked, as transformers does."""
        if kwargs.get("output_loading_info"):
            return super().from_pretrained(*args, **kwargs)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            raise ValueError(f"the saved weights lack {len(missing)} tensor(s) of this model: "
                             f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
                             "(from_pretrained(..., output_loading_info=True) loads it anyway and lists them)")
        return model

    def _init_weights(self, module) -> None:
        """Nothing: LanguageModel initialises its own weights when built (from_pretrained then loads them all)."""

    # ------------------------------------------------------------------ embeddings
    def get_input_embeddings(self):
        return self.model.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the token embedding (resize_token_embeddings does): the model's vocabulary, and so the range of
        token ids and labels it accepts, follows its size."""
        self.model.embed = value
        if value.num_embeddings != self.model.config.vocab_size:
            self.model.config = dataclasses.replace(self.model.config, vocab_size=value.num_embeddings)

    def get_output_embeddings(self):
        """The output head, or None when it is the input embedding itself (tie_embeddings: one tensor, nothing to
        tie, resize or save twice)."""
        return self.model.head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        if self.model.head is None:
            raise ValueError("this model's output head is its input embedding (tie_embeddings=True): "
                             "use set_input_embeddings")
        self.model.head = value

    # ------------------------------------------------------------------ shared by the forward passes
    @staticmethod
    def _refuse_unsupported(kwargs: dict) -> None:
        for name, why in _UNSUPPORTED.items():
            if kwargs.get(name) is not None and kwargs.get(name) is not False:
                raise ValueError(f"flashgau models take no {name} ({why})")

    def _wanted(self, output_hidden_states: Optional[bool], output_attentions: Optional[bool]) -> tuple[bool, bool]:
        """(hidden states wanted, attentions wanted), from the arguments or else the config; an arch without
        attention weights refuses the second in one line."""
        hidden = bool(getattr(self.config, "output_hidden_states", False) if output_hidden_states is None
                      else output_hidden_states)
        attentions = bool(getattr(self.config, "output_attentions", False) if output_attentions is None
                          else output_attentions)
        if attentions and not all(getattr(b, "has_attention_weights", False) for b in self.model.blocks):
            arch = self.model.config.arch
            why = ("FLASH's mixed chunk attention (relu^2 within chunks plus linear attention across them)"
                   if arch == "flash" else "its attention") + " has no (T, T) weight matrix"
            raise ValueError(f"output_attentions is not available for arch {arch!r}: {why}; "
                             "output_hidden_states is")
        return hidden, attentions

    def _attentions(self, block_inputs: list, ids: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, ...]:
        """Each block's attention weights (B, H, T, T) from its input, in the layout ids and mask are in."""
        ctx = self.model.context(ids, mask)
        return tuple(block.attention_weights(x, ctx) for block, x in zip(self.model.blocks, block_inputs))

    def _hidden_states(self, block_inputs: list) -> tuple[Tensor, ...]:
        """block_inputs (each block's input, then the last block's output) -> HF's hidden_states: each block's
        input and the final normed output."""
        return (*block_inputs[:-1], self.model.norm(block_inputs[-1]))

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
    _is_stateful = True             # a state cannot be rolled back: no assisted generation (generate refuses it)
    # generate's arguments that roll the cache back past rejected draft tokens
    _ROLLS_BACK = ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit")

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False                # the model makes its own FlashgauCache on its first forward pass

    def __init__(self, config: FlashgauConfig, language_model: Optional[LanguageModel] = None):
        super().__init__(config, language_model)
        if not self.model.supports_cache:
            self.generation_config.use_cache = False

    def generate(self, *args, **kwargs):
        """GenerationMixin.generate, less assisted and prompt-lookup decoding, refused in one line: both verify
        drafted tokens and roll the cache back past the rejected ones, and a decoding state (FLASH's running chunk
        sums; every arch's state lives in one FlashgauCache) cannot be rolled back."""
        config = kwargs.get("generation_config") or self.generation_config
        for name in self._ROLLS_BACK:
            if kwargs.get(name) is not None or getattr(config, name, None) is not None:
                raise ValueError(f"flashgau models do not support {name} (assisted and prompt-lookup decoding): "
                                 "they roll the cache back past rejected draft tokens, and a flashgau decoding "
                                 "state cannot be rolled back")
        return super().generate(*args, **kwargs)

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                labels: Optional[Tensor] = None, cache: Optional[FlashgauCache] = None,
                use_cache: Optional[bool] = None, return_dict: Optional[bool] = None,
                num_items_in_batch=None, past_key_values: Optional[FlashgauCache] = None,
                output_hidden_states: Optional[bool] = None, output_attentions: Optional[bool] = None,
                shift_labels: Optional[Tensor] = None, **kwargs) -> CausalLMOutputWithPast:
        """input_ids (B, T); attention_mask (B, T) 1 = real token, padding on either side; labels (B, T) (usually
        input_ids; shifted inside, -100 ignored) or shift_labels (B, T), the target of each position as it is;
        cache: the FlashgauCache of earlier calls, to feed input_ids on top of (no padding then). use_cache
        (default: config.use_cache in eval mode without gradients or labels) prefills and returns a cache. Logits
        are (B, T, V)."""
        self._refuse_unsupported(kwargs)
        if past_key_values is not None:
            if cache is not None:
                raise ValueError("give cache or past_key_values, not both")
            cache = past_key_values
        if input_ids is None:
            raise ValueError("input_ids are required")
        want_hidden, want_attentions = self._wanted(output_hidden_states, output_attentions)
        if cache is not None and not isinstance(cache, FlashgauCache):
            raise ValueError(f"a flashgau model takes a FlashgauCache, got {type(cache).__name__}")
        if cache is not None and not self.model.supports_cache:
            self._refuse_cache()
        if cache is not None and cache.state is not None:
            if labels is not None or shift_labels is not None:
                raise ValueError("labels cannot be scored on top of a cache; call the model on the whole sequence")
            if want_attentions:
                raise ValueError("output_attentions is not available on top of a cache (a decoding state keeps no "
                                 "weight matrix); call the model on the whole sequence")
            return self._result(self._decode(input_ids, attention_mask, cache, want_hidden), return_dict)
        if use_cache is None:
            use_cache = (self.config.use_cache and not self.training and not torch.is_grad_enabled()
                         and labels is None and shift_labels is None)
        use_cache = use_cache and self.model.supports_cache

        any_padding = dataclasses.replace(self.model.config, causal=False)   # padding may be on either side
        check_inputs(any_padding, input_ids, attention_mask, labels)
        if shift_labels is not None:
            check_inputs(any_padding, input_ids, attention_mask, shift_labels)
        ids, mask, order = _right_padded(input_ids, attention_mask)
        if shift_labels is not None:
            targets = shift_labels.to(torch.long) if order is None else shift_labels.to(torch.long).gather(1, order)
        else:
            targets = None if labels is None else _next_token_targets(labels, mask, order)
        block_inputs = [] if want_hidden or want_attentions else None
        key_mask = check_inputs(self.model.config, ids, mask, targets)
        if use_cache:
            logits, state = self.model.prefill(ids, mask, block_inputs=block_inputs)
            logits = logits.clone()                 # ordinary tensors (prefill runs in inference mode)
            block_inputs = None if block_inputs is None else [h.clone() for h in block_inputs]
            cache = cache if cache is not None else FlashgauCache()
            cache.state, cache.seen = state, input_ids.shape[1]
        else:
            logits = self.model.logits_from_hidden(
                self.model.hidden(ids, key_mask, layers=self.layers, block_inputs=block_inputs))
            cache = None
        loss = None if targets is None else LanguageModel.loss(logits, targets, key_mask)
        attentions = self._attentions(block_inputs, ids, key_mask) if want_attentions else None
        hidden_states = self._hidden_states(block_inputs) if want_hidden else None
        if order is not None:
            logits = _in_input_columns(logits, order, mask)
            moved = torch.compiler.is_compiling() or not bool((order == torch.arange(order.shape[1],
                                                                                    device=order.device)).all())
            if moved and hidden_states is not None:
                hidden_states = tuple(_in_input_columns(h, order) for h in hidden_states)
            if moved and attentions is not None:
                attentions = tuple(_square_in_input_columns(a, order) for a in attentions)
        loss = None if targets is None else self._scaled(loss, targets, mask, num_items_in_batch)
        return self._result(CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache,
                                                   hidden_states=hidden_states, attentions=attentions), return_dict)

    def _decode(self, input_ids: Tensor, attention_mask: Optional[Tensor], cache: FlashgauCache,
                want_hidden: bool) -> CausalLMOutputWithPast:
        """Feed input_ids (B, n) on top of the cache's state, one column at a time: (B, n, V) logits (and the
        hidden states of those n columns)."""
        n = input_ids.shape[1]
        if (attention_mask is not None and not torch.compiler.is_compiling()
                and not bool((attention_mask[:, -n:] != 0).all())):
            raise ValueError("tokens fed on top of a cache must all be real (attention_mask 1): pad the prompt, "
                             "not the continuation")
        steps, hidden = [], []
        for t in range(n):
            block_inputs = [] if want_hidden else None
            steps.append(self.model.decode_step(input_ids[:, t], cache.state, block_inputs=block_inputs)[0])
            if want_hidden:
                hidden.append([h.clone() for h in block_inputs])
        cache.seen += n
        hidden_states = None
        if want_hidden:
            hidden_states = self._hidden_states([torch.cat(column, 1) for column in zip(*hidden)])
        return CausalLMOutputWithPast(logits=torch.stack(steps, 1).clone(), cache=cache, hidden_states=hidden_states)

    def _refuse_cache(self):
        c = self.model.config
        raise ValueError(f"arch {c.arch!r} with normalizer={c.normalizer!r} has no decoding state (its outputs depend "
                         "on the final length): call it without a cache; generate re-runs the sequence for each "
                         "token")

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, cache=None, **kwargs):
        rerun = not self.model.supports_cache or bool(kwargs.get("output_attentions"))
        if rerun:                                   # no decoding state: re-run the whole sequence every step
            if cache is not None and not self.model.supports_cache:
                self._refuse_cache()
            next_sequence_length, kwargs["use_cache"], cache = None, False, None
        return super().prepare_inputs_for_generation(input_ids, next_sequence_length=next_sequence_length,
                                                     cache=cache, **kwargs)


class FlashgauForMaskedLM(FlashgauPreTrainedModel):
    """A bidirectional flashgau LanguageModel (causal=False) for HF: labels are the targets of their own
    positions (-100 everywhere but the masked tokens), as HF's masked-LM collator makes them; padding on either
    side (each row's real tokens run at positions 0, 1, ... whichever side the tokenizer pads)."""

    causal = False

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                labels: Optional[Tensor] = None, return_dict: Optional[bool] = None, num_items_in_batch=None,
                output_hidden_states: Optional[bool] = None, output_attentions: Optional[bool] = None,
                **kwargs) -> MaskedLMOutput:
        self._refuse_unsupported(kwargs)
        if kwargs.get("shift_labels") is not None:
            raise ValueError("a masked LM takes no shift_labels: its labels are already the targets of their own "
                             "positions")
        if input_ids is None:
            raise ValueError("input_ids are required")
        want_hidden, want_attentions = self._wanted(output_hidden_states, output_attentions)
        check_inputs(self.model.config, input_ids, attention_mask, labels)
        ids, mask, order = _right_padded(input_ids, attention_mask)   # padding on either side, as the causal LM
        targets = labels if labels is None or order is None else labels.to(torch.long).gather(1, order)
        key_mask = check_inputs(self.model.config, ids, mask, targets)
        block_inputs = [] if want_hidden or want_attentions else None
        logits = self.model.logits_from_hidden(
            self.model.hidden(ids, key_mask, layers=self.layers, block_inputs=block_inputs))
        loss = None if targets is None else LanguageModel.loss(logits, targets, key_mask)
        loss = None if targets is None else self._scaled(loss, targets, mask, num_items_in_batch)
        attentions = self._attentions(block_inputs, ids, key_mask) if want_attentions else None
        hidden_states = self._hidden_states(block_inputs) if want_hidden else None
        if order is not None:
            logits = _in_input_columns(logits, order)
            hidden_states = None if hidden_states is None else tuple(_in_input_columns(h, order) for h in hidden_states)
            attentions = None if attentions is None else tuple(_square_in_input_columns(a, order) for a in attentions)
        return self._result(MaskedLMOutput(loss=loss, logits=logits, hidden_states=hidden_states,
                                           attentions=attentions), return_dict)


def _right_padded(input_ids: Tensor, attention_mask: Optional[Tensor]):
    """(ids, mask, order): each row's real tokens moved to its start, in order (the layout flashgau takes), and
    `order` (B, T), the input column each column of the result came from. Without padding: the input, None, None
    (traced or exported, where no tensor value is read on the host, the general path runs whatever the mask)."""
    if attention_mask is None or (not torch.compiler.is_compiling() and bool((attention_mask != 0).all())):
        return input_ids, None, None
    mask = attention_mask != 0
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices     # real columns first, in order
    return input_ids.gather(1, order), mask.gather(1, order), order


def _in_input_columns(values: Tensor, order: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Right-padded values (B, T, ...) back in the input's columns; given the right-padded mask, the last column
    gets each row's last real token's values (the number of real tokens per row is mask.sum(1))."""
    columns = order.argsort(dim=1)
    if mask is not None:
        columns[:, -1] = mask.sum(1) - 1
    return values[torch.arange(values.shape[0], device=values.device)[:, None], columns]


def _square_in_input_columns(weights: Tensor, order: Tensor) -> Tensor:
    """Right-padded attention weights (B, H, T, T) back in the input's columns, on the query and the key axis."""
    columns = order.argsort(dim=1)                                   # (B, T): right-padded column of each input one
    B, H, T, _ = weights.shape
    rows = columns[:, None, :, None].expand(B, H, T, T)
    weights = weights.gather(2, rows)
    return weights.gather(3, columns[:, None, None, :].expand(B, H, T, T))


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
