"""What a run needs before its first step, built the same way for a fresh run, a resumed run and `eval`: its data
(data.run_data.RunData: the split corpus as memory-mapped token documents, and the run's tokenizer) and the model.

The data of a run is always a prepared dataset (data/prepared.py): `--data DIR` naming a prepared folder is opened
as it is; the default corpus and plain text are prepared on the fly into the cache (data/cache.py,
$FLASHGAU_CACHE) the first time, and opened from there afterwards. Start-up then costs time in the number of
documents, not of tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from ..config import ModelConfig
from ..data.cache import prepared_cached
from ..data.prepared import is_prepared, open_prepared
from ..data.run_data import RunData
from ..data.sources import DEFAULT_CORPUS
from ..data.tokenizers import Tokenizer, is_tokenizer_file, tokenizer_digest
from ..errors import CheckpointError, CorpusError
from ..model import LanguageModel
from ..tasks import get_task
from .config import TrainConfig


def prepare_data(cfg: TrainConfig, tokenizer: Optional[Tokenizer] = None, *, progress: bool = False,
                 log: Callable[[str], None] = lambda s: None) -> RunData:
    """The run's data: `cfg.data` opened if it is a prepared folder, else prepared on the fly (cached) with the
    tokenizer `cfg.tokenizer` asks for (BPE: trained on the training split), or with `tokenizer` when one is given
    (a resumed run's). Its tokenizer is the run's: the data's, as the objective's task makes it (MLM: with the mask
    token, which the data never holds). Raises CorpusError / ConfigError for unusable data."""
    if tokenizer is not None:
        tokenizer = tokenizer.without_mask_token()
    if is_prepared(cfg.data):
        prepared = open_prepared(cfg.data)
        if tokenizer is not None and tokenizer_digest(tokenizer) != tokenizer_digest(prepared.tokenizer):
            raise CheckpointError(f"the prepared data at {cfg.data} was tokenized with another tokenizer than this "
                                  "run's; give the data prepared for this run (or its text)")
    else:
        if tokenizer is None:
            spec, accept = cfg.tokenizer, None
        elif cfg.tokenizer == "bpe":               # the cache entry made when the run started has that BPE
            spec, accept = "bpe", tokenizer
        else:
            spec, accept = tokenizer, None
        prepared = prepared_cached(cfg.data, tokenizer=spec, also_accept=accept, bpe_vocab_size=cfg.bpe_vocab_size,
                                   heldout_fraction=cfg.heldout_fraction, progress=progress, log=log)
    return RunData(prepared, get_task(cfg.objective).tokenizer(prepared.tokenizer), prepared.fingerprint)


def prepare_run_data(cfg: TrainConfig, tokenizer: Tokenizer, fingerprint: Optional[str], purpose: str, *,
                     progress: bool = False, log: Callable[[str], None] = lambda s: None) -> RunData:
    """The data a saved run was trained on, checked against its fingerprint (`purpose`: "resume" or "eval")."""
    try:
        data = prepare_data(cfg, tokenizer, progress=progress, log=log)
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


def config_for_data(cfg: TrainConfig, data: RunData) -> TrainConfig:
    """`cfg` with the tokenizer and held-out fraction a prepared folder was made with (the folder decides them)."""
    if not is_prepared(cfg.data):
        return cfg
    manifest = data.prepared.manifest
    tokenizer = data.prepared.tokenizer
    kind = tokenizer.kind
    return TrainConfig.from_dict({**cfg.to_dict(), "tokenizer": kind, "heldout_fraction":
                                  manifest["request"]["heldout_fraction"],
                                  "bpe_vocab_size": tokenizer.vocab_size if kind == "bpe" else cfg.bpe_vocab_size})


def absolute_data_path(data: Optional[str]) -> Optional[str]:
    """A user's data path made absolute (the default corpus stays None / its name)."""
    if data is None or data == DEFAULT_CORPUS:
        return data
    return str(Path(data).expanduser().resolve())


def absolute_tokenizer(tokenizer: str) -> str:
    """A tokenizer file's path made absolute ("bytes" and "bpe" stay)."""
    return str(Path(tokenizer).expanduser().resolve()) if is_tokenizer_file(tokenizer) else tokenizer


def model_config_for(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    """The run's model: the preset of `cfg` with its model options over `vocab_size` ids, causal or not as its
    objective says, built for its context by ModelConfig.for_context (FLASH-Quad divides by the training length)."""
    return cfg.model_config(vocab_size)


def build_model(model_cfg: ModelConfig, seed: int) -> LanguageModel:
    """A freshly initialised model; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return LanguageModel(model_cfg)
