"""What a run needs before its first step, built the same way for a fresh run, a resumed run and `eval`:
the split corpus and its token windows, the tokenizer, and the model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..config import ModelConfig
from ..data.batching import HeldoutWindows, WindowSampler, tokenize_documents
from ..data.corpus import DEFAULT_CORPUS, CorpusSplit, load_split
from ..data.tokenizers import Tokenizer, make_tokenizer
from ..errors import CheckpointError, CorpusError
from ..model import LanguageModel
from .config import TrainConfig


@dataclass
class RunData:
    split: CorpusSplit
    tokenizer: Tokenizer
    train_docs: list[torch.Tensor]
    heldout_docs: list[torch.Tensor]
    fingerprint: str

    def sampler(self, context: int, seed: int) -> WindowSampler:
        return WindowSampler(self.train_docs, context, seed)

    def heldout(self, context: int) -> HeldoutWindows:
        return HeldoutWindows(self.heldout_docs, context)


def prepare_data(cfg: TrainConfig, tokenizer: Optional[Tokenizer] = None) -> RunData:
    """Read and split the corpus, make the tokenizer (BPE: trained on the training split only) unless one is
    given, and tokenize both sides. Raises CorpusError / ConfigError for unusable data."""
    split = load_split(cfg.data, cfg.heldout_fraction)
    if tokenizer is None:
        tokenizer = make_tokenizer(cfg.tokenizer, [d.text for d in split.train], cfg.bpe_vocab_size)
    train_docs = tokenize_documents([d.text for d in split.train], tokenizer)
    heldout_docs = tokenize_documents([d.text for d in split.heldout], tokenizer)
    if not train_docs or not heldout_docs:
        raise CorpusError("the corpus is too small: training or held-out text has fewer than 2 tokens")
    return RunData(split, tokenizer, train_docs, heldout_docs, split_fingerprint(split))


def prepare_run_data(cfg: TrainConfig, tokenizer: Tokenizer, fingerprint: Optional[str], purpose: str) -> RunData:
    """The data a saved run was trained on, checked against its fingerprint (`purpose`: "resume" or "eval")."""
    try:
        data = prepare_data(cfg, tokenizer)
    except CorpusError as err:
        if cfg.data is not None and not Path(cfg.data).exists():
            hint = ("--resume PATH --data NEW_PLACE" if purpose == "resume" else "--train-data NEW_PLACE (or score "
                    "other text with --data)")
            raise CorpusError(f"the data this run was trained on is no longer at {cfg.data}; if it moved, give "
                              f"its new place: {hint}") from None
        raise err
    if fingerprint != data.fingerprint:
        raise CheckpointError(f"the data at {cfg.data or 'the default corpus'} differs from the data this run was "
                              f"trained on (its text or split changed); {purpose} needs the same text")
    return data


def absolute_data_path(data: Optional[str]) -> Optional[str]:
    """A user's data path made absolute (the default corpus stays None / its name)."""
    if data is None or data == DEFAULT_CORPUS:
        return data
    return str(Path(data).expanduser().resolve())


def split_fingerprint(split: CorpusSplit) -> str:
    """SHA-256 over the names and texts of both sides of the split: changes if the data changes."""
    digest = hashlib.sha256()
    for side, docs in (("train", split.train), ("heldout", split.heldout)):
        for doc in docs:
            digest.update(f"{side}\0{doc.name}\0{len(doc.text)}\0".encode("utf-8"))
            digest.update(doc.text.encode("utf-8"))
    return digest.hexdigest()


def model_config_for(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    """The run's model: the preset of `cfg` with its model options, a causal language model over `vocab_size` ids,
    built for its context by ModelConfig.for_context (FLASH-Quad divides by the training length)."""
    return cfg.model_config(vocab_size)


def build_model(model_cfg: ModelConfig, seed: int) -> LanguageModel:
    """A freshly initialised model; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return LanguageModel(model_cfg)
