"""Use a trained run: rebuild its model and tokenizer from the checkpoint, score held-out text with the metric of
the objective it trained (its task), continue a prompt (LM), fill masks (MLM: tasks.mlm.fill_masks). What
`flashgau eval`, `flashgau sample` and `flashgau fill` call."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from ..data.batching import TokenDocuments, tokenize_documents
from ..data.corpus import read_documents
from ..data.prepared import is_prepared, open_prepared
from ..data.tokenizers import Tokenizer, tokenizer_digest
from ..errors import CheckpointError, ConfigError, TokenizerError
from ..model import LanguageModel
from ..runtime import Precision, resolve_device, resolve_precision
from ..tasks import Score, get_task
from .checkpoint import load_checkpoint, load_model_state, resolve_checkpoint_path, saved_settings
from .config import TrainConfig
from .run_folder import check_not_set_aside
from .setup import absolute_data_path, prepare_run_data


@dataclass
class TrainedModel:
    model: LanguageModel
    tokenizer: Tokenizer
    train_config: TrainConfig
    step: int
    path: Path
    precision: Optional[dict]       # the precision the run trained in (name, reason, ...), if recorded
    data_fingerprint: Optional[str]  # of the training/held-out split it trained on


def load_trained(path: Union[str, Path], *, device: Union[str, torch.device, None] = "cpu") -> TrainedModel:
    """The model (eval mode, fp32 weights, on `device`) and tokenizer of a checkpoint file or run folder (a folder
    whose run is set aside by an interrupted --overwrite: a CheckpointError saying where it is)."""
    check_not_set_aside(path)
    path = resolve_checkpoint_path(path)
    state = load_checkpoint(path)
    train_cfg, model_cfg, tokenizer = saved_settings(state, str(path))
    model = LanguageModel(model_cfg)
    load_model_state(model, state["model"], path)
    broken = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if broken:
        raise CheckpointError(f"{path}: the weights hold NaN or infinite values ({', '.join(broken[:3])}"
                              f"{' ...' if len(broken) > 3 else ''}): the run diverged before this checkpoint")
    model.to(resolve_device(device)).eval()
    precision = (state.get("runtime") or {}).get("precision")
    fingerprint = state["data"].get("fingerprint") if isinstance(state.get("data"), dict) else None
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path}: checkpoint field 'step' is {step!r}, not a step count (hand-edited?)")
    return TrainedModel(model, tokenizer, train_cfg, step, path, precision, fingerprint)


def evaluate_checkpoint(path: Union[str, Path], *, data: Optional[Union[str, Path]] = None,
                        train_data: Optional[Union[str, Path]] = None, context: Optional[int] = None,
                        batch_size: int = 8, precision: Optional[str] = None,
                        device: Union[str, torch.device, None] = "auto") -> tuple[Score, str]:
    """Score a checkpoint on fixed windows with the metric of the objective it trained (LM: loss, bits per byte,
    perplexity; MLM: masked-token loss, accuracy, perplexity on fixed masked positions; QA: answer-token loss, exact
    match and F1 of greedy answers, the two floors, on fixed examples of the held-out plays): by default the held-out
    documents of the data it was trained on (the same split as in training, checked against the run's data
    fingerprint; `train_data` gives that data's new place if it moved); with `data`, every document at that path
    (text, read in memory, or a prepared folder, both of its sides, memory-mapped). Returns the result and a
    description of what was scored. `precision` None: the precision the run trained in where this device is of
    the same kind (so the default repeats the run's final score), else "auto"."""
    device = resolve_device(device)
    trained = load_trained(path, device=device)
    cfg = trained.train_config
    prec = _precision(precision, trained, device)
    context = context if context is not None else cfg.context
    if not (isinstance(context, int) and context >= 1):
        raise ConfigError(f"context must be a positive integer, got {context!r}")
    if context > trained.model.config.max_seq_len:
        raise ConfigError(f"context {context} exceeds the model's max_seq_len {trained.model.config.max_seq_len}")
    if data is None:
        if train_data is not None:
            cfg = TrainConfig.from_dict({**cfg.to_dict(), "data": absolute_data_path(str(train_data))})
        run_data = prepare_run_data(cfg, trained.tokenizer, trained.data_fingerprint, "eval")
        docs, what = run_data.heldout_docs, (f"held-out split of {cfg.data or 'the default corpus'} "
                                             f"({run_data.prepared.manifest['heldout']['documents']} documents)")
    elif is_prepared(data):
        prepared = open_prepared(data)
        if tokenizer_digest(prepared.tokenizer) != tokenizer_digest(trained.tokenizer.without_mask_token()):
            raise ConfigError(f"{data} was prepared with another tokenizer than this model's; prepare that text "
                              "again with the model's tokenizer, or give the text itself")
        docs = TokenDocuments.concat([prepared.train, prepared.heldout])
        what = f"all of the prepared {data} ({len(docs)} documents)"
    else:
        texts = [d.text for d in read_documents(data)]
        docs, what = tokenize_documents(texts, trained.tokenizer), f"all of {data} ({len(texts)} documents)"
    heldout = get_task(cfg.objective).heldout(docs, trained.tokenizer, context)
    result = heldout.evaluate(trained.model, batch_size=batch_size, precision=prec)
    if not math.isfinite(result.loss):
        raise ConfigError(f"the held-out loss is {result.loss} in {prec.name}: the model overflows there; try "
                          "--precision fp32")
    return result, f"{what}, context {context}, {prec.name} on {device}"


def _precision(requested: Optional[str], trained: TrainedModel, device: torch.device) -> Precision:
    saved = trained.precision
    if requested is None and isinstance(saved, dict) and saved.get("device_type") == device.type:
        return Precision(**{**saved, "reason": "the precision the run trained in"})
    return resolve_precision(requested or "auto", device)


def sample_text(model: LanguageModel, tokenizer: Tokenizer, prompt: str, *, max_new_tokens: int = 200,
                temperature: float = 0.8, top_k: Optional[int] = None, top_p: Optional[float] = None,
                seed: int = 0, precision: Optional[Precision] = None) -> str:
    """The text the model writes after `prompt` (the prompt itself not included), on the model's device, in
    `precision` (None: the model's dtype). Same seed, same text."""
    if not model.config.causal:
        raise ConfigError("this is a masked language model (bidirectional): it fills masks rather than continuing "
                          "text; use flashgau fill RUN --text '... <mask> ...' (Python: fill_masks)")
    if not isinstance(prompt, str) or not prompt:
        raise TokenizerError("the prompt is empty; give at least one character to start from")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise TokenizerError(f"the tokenizer turns the prompt {prompt!r} into no tokens")
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
    if not (isinstance(seed, int) and 0 <= seed < 2 ** 63):
        raise ConfigError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    limit = model.config.max_seq_len
    if len(ids) + max_new_tokens > limit:
        raise ConfigError(f"prompt ({len(ids)} tokens) + --max-new-tokens {max_new_tokens} exceeds the model's "
                          f"max_seq_len {limit}")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    with precision.autocast() if precision is not None else contextlib.nullcontext():
        out = model.generate(torch.tensor([ids], dtype=torch.long, device=device), max_new_tokens,
                             temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    return tokenizer.decode(out[0, len(ids):].tolist())
