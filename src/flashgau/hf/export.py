"""A flashgau model as a Hugging Face folder: config.json, model.safetensors, generation_config.json, the tokenizer
files, a short README.md model card and the small code files that let transformers load it by path alone. What
`flashgau export RUN OUT` writes. The folder is written all or none (files.write_files): a full disk, a kill or a
second export into the same folder never leaves a config.json without its weights.

The folder follows transformers' convention for a model that lives outside it: `auto_map` in config.json and
tokenizer_config.json names classes in code files of the folder (flashgau.hf.remote_code), so that
`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` (or AutoModelForMaskedLM, AutoConfig,
AutoTokenizer, pipeline(...)) works in any process where flashgau is installed, without importing it first; one that
has imported flashgau.hf loads it without trust_remote_code as well.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from safetensors import SafetensorError
from transformers.utils import logging as hf_logging

from ..data.tokenizers import Tokenizer
from ..errors import ConfigError, FlashgauError
from ..files import atomic_write, write_failure, write_files
from ..model import LanguageModel
from .modeling import FlashgauForCausalLM, FlashgauForMaskedLM
from .remote_code import config_auto_map, copy_code_files, tokenizer_auto_map
from .tokenization import to_hf_tokenizer


def save_pretrained_folder(model: LanguageModel, tokenizer: Tokenizer, out: Union[str, Path], *,
                           card: Optional[str] = None, overwrite: bool = False) -> Path:
    """Write `model` (causal: FlashgauForCausalLM, bidirectional: FlashgauForMaskedLM) and `tokenizer` to the
    folder `out`, with the code files that load it by path (add_remote_code), plus `card` as README.md; returns the
    folder. A folder that already holds files is refused unless overwrite (files of the same names are then
    replaced, others kept). Everything is written beside `out` first and moved into place when whole: a failure (a
    full disk: FlashgauError, one line) leaves `out` as it was."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; give a folder to write the model to")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already holds files; choose an empty folder or pass --overwrite")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size}")
    hf_tokenizer = to_hf_tokenizer(tokenizer, model_max_length=model.config.max_seq_len)
    cls = FlashgauForCausalLM if model.config.causal else FlashgauForMaskedLM
    hf_model = cls.from_language_model(model, pad_token_id=hf_tokenizer.pad_token_id)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()               # one small file: no "Writing model shards" bar on stderr

    def write(folder: Path) -> None:
        hf_model.save_pretrained(folder)
        hf_tokenizer.save_pretrained(folder)
        add_remote_code(folder)
        if card is not None:
            (folder / "README.md").write_text(card, encoding="utf-8")

    try:
        write_files(out, write, replace=overwrite)
    except Exception as err:
        # a failed write: an OSError, safetensors' SafetensorError, the tokenizers library's plain Exception
        if not isinstance(err, (OSError, SafetensorError)) and "os error" not in str(err):
            raise
        raise FlashgauError(f"cannot write {out}: {write_failure(err, out.parent)}; nothing was written there") \
            from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return out


def add_remote_code(folder: Union[str, Path]) -> Path:
    """Make a folder saved by `save_pretrained` from flashgau's HF classes load by path in a process that never
    imported flashgau (with trust_remote_code=True and flashgau installed): name the classes of
    flashgau.hf.remote_code in `auto_map` (AutoConfig and AutoModelForCausalLM or AutoModelForMaskedLM, as the model
    is causal or not, in config.json; AutoTokenizer in tokenizer_config.json when the folder holds a flashgau
    tokenizer) and copy their code files beside. Returns the folder."""
    folder = Path(folder).expanduser()
    config = _json_object(folder / "config.json")
    if config.get("model_type") != "flashgau":
        raise ConfigError(f"{folder / 'config.json'} is not a flashgau model's config (model_type "
                          f"{config.get('model_type')!r}); save a flashgau model there with save_pretrained first")
    config["auto_map"] = config_auto_map(bool(config.get("causal", True)))
    _write_json(folder / "config.json", config)
    tokenizer_file = folder / "tokenizer_config.json"
    if tokenizer_file.exists():
        tokenizer_config = _json_object(tokenizer_file)
        tokenizer_class = tokenizer_config.get("tokenizer_class")
        if tokenizer_class in ("FlashgauByteTokenizer", "FlashgauBPETokenizer"):
            tokenizer_config["auto_map"] = tokenizer_auto_map(tokenizer_class)
            _write_json(tokenizer_file, tokenizer_config)
    copy_code_files(folder)
    return folder


def _json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no {path.name} in {path.parent}; save the model there with save_pretrained first") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")     # as transformers


def export_run(run: Union[str, Path], out: Union[str, Path], *, overwrite: bool = False) -> Path:
    """The model and tokenizer of a training run (a run folder or checkpoint file) as a Hugging Face folder, with a
    model card that gives the run's final held-out score (bits per byte; masked-token loss and accuracy for a masked
    LM) when its summary.json records it."""
    from ..training.trained import load_trained

    trained = load_trained(run, device="cpu")
    summary = _summary(trained.path.parent / "summary.json")
    return save_pretrained_folder(trained.model, trained.tokenizer, out, overwrite=overwrite,
                                  card=model_card(trained, summary))


def _summary(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def model_card(trained, summary: dict) -> str:
    """README.md of an exported run: what the model is, how it was trained, its held-out score, how to load it."""
    cfg, train = trained.model.config, trained.train_config
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    final = final if summary.get("step") == trained.step else {}                        # of this very checkpoint
    bpb, loss, accuracy = final.get("bits_per_byte"), final.get("loss"), final.get("accuracy")
    if isinstance(bpb, (int, float)):
        score = f"{bpb:.4f} bits per byte on the held-out split (the run's final evaluation)"
    elif isinstance(loss, (int, float)) and isinstance(accuracy, (int, float)):
        score = (f"masked-token loss {loss:.4f} nats, accuracy {accuracy:.2%} on fixed masked positions of the "
                 "held-out split (the run's final evaluation)")
    else:
        score = "not recorded (no summary.json with a final evaluation of this checkpoint)"
    task = "AutoModelForCausalLM" if cfg.causal else "AutoModelForMaskedLM"
    pipe = "text-generation" if cfg.causal else "fill-mask"
    kind = "causal language model" if cfg.causal else "bidirectional (masked) language model"
    facts = [f"architecture: {cfg.arch}, {cfg.n_layers} layers, d_model {cfg.d_model}, chunk size {cfg.chunk_size}, "
             f"context up to {cfg.max_seq_len} tokens",
             f"tokenizer: {trained.tokenizer.kind} ({trained.tokenizer.vocab_size} ids"
             + (f", mask token {trained.tokenizer.mask_token}" if trained.tokenizer.mask_token else "") + ")",
             f"training: {trained.step} steps of {'masked' if not cfg.causal else 'causal'} language modelling on "
             f"{train.data or 'the default corpus (Shakespeare)'}, windows of {train.context} tokens",
             f"held-out score: {score}"]
    return f"""---
library_name: transformers
pipeline_tag: {pipe}
tags: [flashgau, flash, gated-attention-unit]
---

# flashgau {cfg.arch} ({trained.model.num_parameters():,} parameters)

A {kind} trained with flashgau, an implementation of FLASH (Hua et al. 2022, "Transformer Quality in Linear Time":
the Gated Attention Unit and mixed chunk attention) and its baselines. FLASH is not FlashAttention.

{chr(10).join("- " + fact for fact in facts)}

## Use

With flashgau installed (`pip install 'flashgau[hf]'`), transformers loads this folder by path; its
code files (`configuration_flashgau.py`, `modeling_flashgau.py`, `tokenization_flashgau.py`) import flashgau's
classes:

```python
from transformers import {task}, AutoTokenizer, pipeline

model = {task}.from_pretrained("path/to/this/folder", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder", trust_remote_code=True)
pipe = pipeline("{pipe}", model="path/to/this/folder", trust_remote_code=True)
```

After `import flashgau.hf` the same calls work without `trust_remote_code`.
"""
