"""`--init-from RUN`: start a new run from the weights of a finished (or stopped) one, e.g. fine-tune a pre-trained
language model on the QA task (tasks/qa.py).

Weights only: the new run has its own optimizer (fresh AdamW moments), its own warm-up + cosine schedule, step 0,
and may train another objective on other data. What it takes from the source run, and why:

- the model: the source's saved ModelConfig, exactly (arch, sizes, every option; FLASH-Quad's quad_norm_len stays the
  source's training length), so the weights fit. The run's arch, preset and model options are recorded as the
  source's; model options given for the new run must agree with the source's model (an option that conflicts is
  refused with one line: the weights could not load into another model). The new context must be within the
  source's max_seq_len.
- the tokenizer: the source's (the model's vocabulary), so new data is tokenized with it (a BPE is not trained
  again); the run's tokenizer setting is recorded as the source's.
- the direction: the new objective's. A causal source may start a bidirectional (MLM) run and the reverse: the
  weights of a causal and a bidirectional model of one config have the same names and shapes (the mask is not a
  parameter), so they load; what the attention learned under one mask is only a starting point under the other
  (expect a worse start than from a source of the same direction). The log says so.
- the vocabulary: the new objective's tokenizer may differ from the source's by the mask token alone (MLM adds
  one id at the end): LM -> MLM copies the source's rows of the embedding (and of an untied head) and keeps the new
  model's fresh initialisation for the mask token's row; MLM -> LM or QA drops the mask token's row. Any other
  difference of vocabulary is refused.

The source is read once, when the run starts; the new run's checkpoint holds its own weights and records where it
started (TrainConfig.init_from, an absolute path), so `--resume` never needs the source again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from ..config import ModelConfig
from ..data.tokenizers import Tokenizer, tokenizer_digest
from ..errors import CheckpointError, ConfigError
from ..model import LanguageModel
from .checkpoint import load_checkpoint, resolve_checkpoint_path, saved_settings
from .config import TrainConfig
from .run_folder import check_not_set_aside
from .setup import absolute_tokenizer

# TrainConfig fields the source run decides (what its model and tokenizer were built from)
FROM_SOURCE = ("arch", "preset", "model", "tokenizer", "bpe_vocab_size")


@dataclass
class InitSource:
    """What a new run takes from the run it starts from."""

    path: Path                       # the source's checkpoint file
    train_config: TrainConfig
    model_config: ModelConfig
    tokenizer: Tokenizer
    weights: dict
    step: int

    @property
    def data_tokenizer(self) -> Tokenizer:
        """The tokenizer the source's data was tokenized with (its own, less a mask token)."""
        return self.tokenizer.without_mask_token()

    def settle(self, config: TrainConfig) -> TrainConfig:
        """`config` with the model and tokenizer settings of the source (FROM_SOURCE) and init_from absolute; a
        ConfigError when a model option of `config` conflicts with the source's model."""
        src = self.model_config.to_dict()
        for name, value in sorted(config.model.items()):
            if name in src and src[name] != value:
                raise ConfigError(f"--model.{name} {value} conflicts with the model of the run given to --init-from "
                                  f"({self.path.parent}: {name} {src[name]}); a run started from another keeps its "
                                  "model: leave the option out")
        source = self.train_config.to_dict()
        return TrainConfig.from_dict({**config.to_dict(), **{k: source[k] for k in FROM_SOURCE},
                                      "init_from": str(self.path)})

    def model_config_for(self, config: TrainConfig, vocab_size: int, causal: bool) -> ModelConfig:
        """The new run's model: the source's, in the new objective's direction and over its vocabulary (the
        source's, or the source's with or without the mask token: see `check_vocabulary`)."""
        cfg = ModelConfig.from_dict({**self.model_config.to_dict(), "causal": causal, "vocab_size": vocab_size})
        if config.context > cfg.max_seq_len:
            raise ConfigError(f"context {config.context} exceeds the max_seq_len {cfg.max_seq_len} of the model given "
                              "to --init-from; give a shorter --context")
        return cfg

    def check_vocabulary(self, tokenizer: Tokenizer) -> None:
        """The new run's tokenizer must be the source's, give or take the mask token."""
        if tokenizer_digest(tokenizer.without_mask_token()) != tokenizer_digest(self.data_tokenizer):
            raise ConfigError(f"the tokenizer of this run differs from that of the run given to --init-from "
                              f"({self.path.parent}); a run started from another uses its tokenizer")

    def load_into(self, model: LanguageModel) -> None:
        """Copy the source's weights into `model` (a fresh model of `model_config_for`): every tensor whole, but for
        the vocabulary rows of the embedding and head when the vocabularies differ by the mask token (module
        docstring). A CheckpointError, one line, when names or other shapes do not match."""
        own = model.state_dict()
        missing = sorted(set(own) - set(self.weights))
        unexpected = sorted(set(self.weights) - set(own))
        V_new, V_src = model.config.vocab_size, self.model_config.vocab_size
        wrong = []
        for name in sorted(set(own) & set(self.weights)):
            a, b = own[name], self.weights[name]
            if tuple(a.shape) == tuple(b.shape):
                continue
            if (V_new != V_src and a.dim() == b.dim() and a.shape[0] == V_new and b.shape[0] == V_src
                    and tuple(a.shape[1:]) == tuple(b.shape[1:])):
                continue
            wrong.append(name)
        if missing or unexpected or wrong:
            parts = [f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                     for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                     if names]
            raise CheckpointError(f"{self.path}: the weights of the run given to --init-from do not fit the new "
                                  f"run's model ({'; '.join(parts)})")
        merged = {}
        for name, mine in own.items():
            theirs = self.weights[name].to(mine.dtype)
            if tuple(mine.shape) != tuple(theirs.shape):
                rows = min(V_new, V_src)
                theirs = torch.cat([theirs[:rows], mine[rows:]]) if V_new > V_src else theirs[:rows]
            merged[name] = theirs
        model.load_state_dict(merged)

    def describe(self, causal: bool) -> str:
        turned = ""
        if causal != self.model_config.causal:
            turned = (f"; its {'causal' if self.model_config.causal else 'bidirectional'} weights now run "
                      f"{'causal' if causal else 'bidirectional'} (a starting point only)")
        return (f"weights from {self.path} (step {self.step}, objective {self.train_config.objective}); new "
                f"optimizer and schedule from step 0{turned}")


def read_init_source(path: Union[str, Path]) -> InitSource:
    """The run at `path` (a run folder or checkpoint file), read for `--init-from`; one-line errors
    (CheckpointError) for a missing or unreadable source."""
    check_not_set_aside(path, prefix="--init-from: ")
    try:
        ckpt = resolve_checkpoint_path(path)
    except CheckpointError:
        raise CheckpointError(f"--init-from: no checkpoint at {path} (give a run folder or its checkpoint.pt)") \
            from None
    state = load_checkpoint(ckpt)
    train_cfg, model_cfg, tokenizer = saved_settings(state, str(ckpt))
    weights, step = state.get("model"), state.get("step")
    if not isinstance(weights, dict) or not isinstance(step, int) or isinstance(step, bool):
        raise CheckpointError(f"{ckpt}: no model weights or step count in this checkpoint (hand-edited?)")
    broken = [k for k, v in weights.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
              and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{ckpt}: the weights hold NaN or infinite values ({', '.join(broken[:3])}): that "
                              "run diverged; start from another checkpoint")
    return InitSource(path=ckpt.resolve(), train_config=train_cfg, model_config=model_cfg, tokenizer=tokenizer,
                      weights=weights, step=step)


def check_request(given: dict) -> None:
    """--init-from RUN decides the model and tokenizer: an arch, preset, tokenizer or bpe_vocab_size in `given` (the
    settings a user typed, on the command line or in a --config file) that disagrees with RUN's is a ConfigError
    (the library itself takes RUN's; model options that conflict are refused by `InitSource.settle`)."""
    if "init_from" not in given or not {"arch", "preset", "tokenizer", "bpe_vocab_size"} & set(given):
        return
    problem = conflicts(read_init_source(given["init_from"]), given)
    if problem:
        raise ConfigError(problem)


def conflicts(source: InitSource, given: dict) -> Optional[str]:
    """The first setting of `given` (TrainConfig fields given on the command line) that disagrees with the source
    run's model or tokenizer, as a message; None when all agree."""
    saved = source.train_config.to_dict()
    for name in ("arch", "preset", "tokenizer", "bpe_vocab_size"):
        if name == "bpe_vocab_size" and saved["tokenizer"] != "bpe":
            continue
        value = absolute_tokenizer(given[name]) if name == "tokenizer" and name in given else given.get(name)
        if name in given and value != saved[name]:
            return (f"--{name.replace('_', '-')} {given[name]} conflicts with the run given to --init-from "
                    f"({source.path.parent}: {name} {saved[name]}); a run started from another keeps its model and "
                    "tokenizer: leave the option out")
    return None
