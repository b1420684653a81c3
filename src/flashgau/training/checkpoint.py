"""Checkpoint files: one file holding everything needed to continue a run, written atomically, read with clear
errors. What goes inside is the run state's business (training/state.py); this module knows the file, and reads
back the settings every checkpoint holds (`saved_settings`: the training settings, model config and tokenizer).

The file is a dict saved with torch.save (plus "format" and "version") and read back with `weights_only=True`, so
loading runs no pickled code. `save_checkpoint` writes it with files.atomic_write (a temporary file beside the
target, flushed to disk, renamed over it): a crash or kill during a save leaves the previous file intact.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Union

import torch

from ..config import ModelConfig
from ..data.tokenizers import Tokenizer, tokenizer_from_dict
from ..errors import CheckpointError, ConfigError, TokenizerError
from ..files import atomic_write, write_failure
from .config import TrainConfig

CHECKPOINT_FORMAT = "flashgau-checkpoint"
CHECKPOINT_VERSION = 2          # 2 added the time-budget plan, the precision that ran and the gradient scaler
# version 1 (written by early flashgau 0.1.0) reads as a run with no plan, its precision chosen afresh
READABLE_VERSIONS = (1, 2)
CHECKPOINT_NAME = "checkpoint.pt"
REQUIRED_KEYS = ("model_config", "model", "tokenizer", "train_config", "optimizer", "schedule", "step",
                 "tokens_seen", "elapsed", "sampler", "rng", "data")


def save_checkpoint(state: dict[str, Any], path: Union[str, Path]) -> Path:
    """Write `state` (plus format and version) to `path` atomically; returns the path. A write that fails (a full
    disk, a vanished folder) raises CheckpointError, saying whether a previous checkpoint is kept, and leaves it as it
    was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    try:
        return atomic_write(path, lambda handle: torch.save(payload, handle))
    except (OSError, RuntimeError) as err:
        kept = "the previous checkpoint is kept" if path.exists() else "no checkpoint is written yet"
        raise CheckpointError(f"cannot write {path}: {write_failure(err, path.parent)}; {kept}") from None


def resolve_checkpoint_path(path: Union[str, Path]) -> Path:
    """A checkpoint file, or a run folder holding checkpoint.pt."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """Read and check a checkpoint; raises CheckpointError (one clear line) if it is missing, corrupt or
    incompatible with this version of flashgau."""
    path = resolve_checkpoint_path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a readable flashgau checkpoint (not a PyTorch archive: corrupt, "
                              "truncated or another kind of file)")
    _verify_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} is not a readable flashgau checkpoint: it holds Python objects that "
                              "flashgau checkpoints never contain (refusing to unpickle them)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, UnicodeDecodeError, AttributeError,
            KeyError, IndexError, TypeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable flashgau checkpoint (corrupt or truncated?): "
                              f"{reason[:200]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a flashgau checkpoint")
    if state.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{path} has checkpoint format version {state.get('version')!r}; this flashgau "
                              f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it lacks {', '.join(missing)}")
    return state


def _verify_archive(path: Path) -> None:
    """Check every member of the archive against its CRC-32 (torch.load itself does not): flipped bytes in a
    checkpoint are refused instead of loaded as other numbers."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt: {str(err)[:200] or type(err).__name__}") from None
    if bad is not None:
        raise CheckpointError(f"{path} is corrupt: its member {bad} fails its checksum (bytes changed on disk "
                              "or in a copy); use another copy or an earlier checkpoint")


def load_model_state(model: torch.nn.Module, weights: dict, path: Union[str, Path] = "checkpoint") -> None:
    """`model.load_state_dict(weights)` with a one-line error when the shapes or names do not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if tuple(own[k].shape) != tuple(weights[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                 for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if names]
        raise CheckpointError(f"{path}: weights do not fit the saved model config ({'; '.join(parts)})")
    model.load_state_dict(weights)


def saved_settings(state: dict, where: str) -> tuple[TrainConfig, ModelConfig, Tokenizer]:
    """The training settings, model config and tokenizer a checkpoint holds, each checked (CheckpointError)."""
    try:
        config = TrainConfig.from_dict(state["train_config"])
        model_cfg = ModelConfig.from_dict(state["model_config"])
    except (ConfigError, ValueError, TypeError) as err:
        raise CheckpointError(f"{where}: saved settings are not valid for this flashgau: {err}") from None
    try:
        tokenizer = tokenizer_from_dict(state["tokenizer"])
    except TokenizerError as err:
        raise CheckpointError(f"{where}: {err}") from None
    return config, model_cfg, tokenizer
