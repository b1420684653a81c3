"""FlashgauConfig: a flashgau ModelConfig as a Hugging Face PretrainedConfig (model_type "flashgau").

Every ModelConfig field is an attribute of the same name and default, and config.json always holds all of them (a
later change of a default cannot change what a saved model means). HF's standard names read and write the same
values: hidden_size = d_model, num_hidden_layers = n_layers, num_attention_heads = n_heads,
max_position_embeddings = max_seq_len, tie_word_embeddings = tie_embeddings. Values are checked by ModelConfig on
construction (a bad one raises flashgau.errors.ConfigError, a ValueError).
"""

from __future__ import annotations

import dataclasses

from transformers import PretrainedConfig

from ..config import ModelConfig
from .remote_code import copy_code_files

MODEL_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ModelConfig))


class FlashgauConfig(PretrainedConfig):
    """FlashgauConfig(arch="flash", vocab_size=256, ..., use_cache=True, pad_token_id=None, ...): the fields of
    flashgau.ModelConfig (see its docstring) plus HF's generation settings. Build one from a ModelConfig with
    `FlashgauConfig.from_model_config(cfg)`; `config.to_model_config()` gives it back."""

    model_type = "flashgau"
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                     "max_position_embeddings": "max_seq_len", "tie_word_embeddings": "tie_embeddings"}

    def __init__(self, use_cache: bool = True, pad_token_id=None, bos_token_id=None, eos_token_id=None, **kwargs):
        for alias, name in self.attribute_map.items():     # hidden_size=... sets d_model, and is checked with it
            if alias in kwargs:
                kwargs[name] = kwargs.pop(alias)
        fields = {f.name: kwargs.pop(f.name, f.default) for f in dataclasses.fields(ModelConfig)}
        resolved = ModelConfig(**fields)            # validate: one clear ConfigError for a bad value
        for name in fields:                         # as resolved (token_shift=None: the arch's value), so that
            setattr(self, name, getattr(resolved, name))   # config.json reads back as the same config
        self.use_cache = use_cache
        self.pad_token_id, self.bos_token_id, self.eos_token_id = pad_token_id, bos_token_id, eos_token_id
        super().__init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "FlashgauConfig":
        """A config.json read back (from_pretrained, AutoConfig): its ModelConfig fields as ModelConfig.from_dict
        reads a saved config, so a folder written by an earlier flashgau, without a field whose default has changed
        since (config.DEFAULTS_BEFORE), keeps the model it was saved with."""
        saved = {name: config_dict[name] for name in MODEL_FIELDS if name in config_dict}
        return super().from_dict({**config_dict, **ModelConfig.from_dict(saved).to_dict()}, **kwargs)

    @classmethod
    def from_model_config(cls, config: ModelConfig, **kwargs) -> "FlashgauConfig":
        """The HF config of a flashgau ModelConfig; kwargs set HF fields (pad_token_id, use_cache, ...)."""
        return cls(**config.to_dict(), **kwargs)

    def to_model_config(self) -> ModelConfig:
        return ModelConfig(**{name: getattr(self, name) for name in MODEL_FIELDS})

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        """PretrainedConfig.save_pretrained, plus the code files its auto_map names (a config of a folder written by
        `flashgau export`, or loaded from one): a folder that loaded by path alone still does once saved again."""
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        copy_code_files(save_directory)
