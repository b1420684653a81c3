"""The `flashgau` command: prepare | train | eval | sample | fill | export | bench.

Each subcommand is one entry of COMMANDS: a help line, a function that adds its options to an argparse parser,
and a function that runs it and returns the exit code. A new subcommand (e.g. `bench`) is one more entry.
Errors the user caused (FlashgauError) print one line on stderr and exit with status 1; argparse usage errors
exit with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .errors import ConfigError, FlashgauError


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ----------------------------------------------------------------------------------------------------- train

# TrainConfig fields set by options of the same name; on --resume none of them may be given (the run continues
# with the settings saved in its checkpoint).
TRAIN_FIELDS = ("arch", "preset", "context", "steps", "time_budget", "time_budget_covers", "batch_tokens",
                "micro_batch_tokens", "lr", "warmup_steps", "weight_decay", "grad_clip", "precision", "data",
                "tokenizer", "bpe_vocab_size", "pack_documents", "eval_every", "eval_windows", "save_every",
                "sample_tokens", "sample_prompt", "seed", "objective", "init_from", "checkpoint_activations")
CLI_SAMPLE_TOKENS = 300   # an LM run of the command writes a sample after training unless told otherwise (the
                          # library: none; an MLM run: none, it has `flashgau fill`)


def add_runtime_arguments(p: argparse.ArgumentParser, *, precision_default: str = "auto") -> None:
    """--device and --precision, the same on every command."""
    from .runtime import PRECISIONS

    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto (a CUDA GPU when PyTorch sees one, "
                   "else the CPU), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--precision", choices=PRECISIONS, help="auto: bf16 autocast where this device is fast at it "
                   "(a GPU with bf16, a CPU with AMX/AVX512-BF16 that a sub-second probe confirms), fp32 elsewhere; "
                   f"fp16 needs a CUDA device (default: {precision_default})")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from . import ARCHS
    from .config import PRESET_NAMES
    from .tasks import OBJECTIVES
    from .training.budget import COVERS
    from .training.compiling import COMPILE_MODES
    from .training.config import DEFAULT_TIME_BUDGET, TrainConfig

    d = TrainConfig.__dataclass_fields__

    def default(name: str) -> str:
        return f"(default: {d[name].default})"

    model = p.add_argument_group("model")
    model.add_argument("--arch", choices=ARCHS, help=f"architecture {default('arch')}")
    model.add_argument("--preset", choices=PRESET_NAMES, help="model size; with -paper (small-paper) the paper's "
                       f"exact model at that size, whatever the defaults {default('preset')}")
    model.add_argument("--objective", choices=OBJECTIVES, help="lm: a causal language model, next-token loss; mlm: "
                       "a bidirectional model, masked language modelling (BERT corruption: 15%% of the tokens "
                       "chosen, 80%% masked, 10%% random, 10%% kept; loss on the chosen ones; the tokenizer gains a "
                       "mask token; fill masks with `flashgau fill`); qa: who speaks this line, a causal model "
                       "trained on the answer tokens and scored by greedy answers (exact match, F1), usually with "
                       f"--init-from a language model (docs/qa.md) {default('objective')}")
    data = p.add_argument_group("data")
    data.add_argument("--data", metavar="PATH", help="a folder made by `flashgau prepare` (read through memory "
                      "maps), or a UTF-8 text file, a folder of them (each file one document), JSON lines / Parquet "
                      "/ Arrow files (each record one document), prepared on the fly into the cache "
                      "($FLASHGAU_CACHE, default ~/.cache/flashgau) the first time; whole documents are held out "
                      "for evaluation (default: Shakespeare's works from the 'shakespeare' package)")
    data.add_argument("--tokenizer", metavar="bytes|bpe|FILE.json", help="bytes (V=256), byte-level BPE trained on "
                      "the training split, or a byte-level BPE tokenizer.json (e.g. GPT-2's); saved in the "
                      f"checkpoint; a prepared --data brings its own {default('tokenizer')}")
    data.add_argument("--bpe-vocab-size", type=int, metavar="V", help=f"BPE vocabulary {default('bpe_vocab_size')}")
    data.add_argument("--context", type=int, metavar="T", help=f"tokens per window {default('context')}")
    data.add_argument("--pack-documents", action="store_true", default=None, help="let training windows cross "
                      "document boundaries (documents back to back); held-out windows never do")
    lengths = p.add_argument_group("length (give one)")
    length = lengths.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="number of optimizer steps")
    length.add_argument("--time-budget", type=float, metavar="SECONDS", help="wall-clock seconds for the whole "
                        "run including held-out evaluation; the step count is fitted to it by timing a few steps "
                        f"first (default when neither is given: {DEFAULT_TIME_BUDGET:.0f})")
    lengths.add_argument(
        "--time-budget-covers", choices=COVERS, help="what --time-budget counts: the whole run, or the seconds of the "
        f"training steps only (evaluation, checkpoints and the sample on top) {default('time_budget_covers')}")
    opt = p.add_argument_group("optimization")
    opt.add_argument("--batch-tokens", type=int, metavar="N", help="tokens per optimizer step, reached by gradient "
                     f"accumulation {default('batch_tokens')}")
    opt.add_argument("--micro-batch-tokens", type=int, metavar="N", help="at most this many tokens per forward "
                     f"pass {default('micro_batch_tokens')}")
    opt.add_argument("--lr", type=float, help=f"peak learning rate of AdamW {default('lr')}")
    opt.add_argument("--warmup-steps", type=int, metavar="N", help="linear warm-up steps before the cosine decay, "
                     f"at most a fifth of the run {default('warmup_steps')}")
    opt.add_argument("--weight-decay", type=float, help="decoupled weight decay of weight matrices (never norms, "
                     f"biases, scale/offset) {default('weight_decay')}")
    opt.add_argument("--grad-clip", type=float, help=f"max global gradient norm, 0 = off {default('grad_clip')}")
    opt.add_argument("--compile", nargs="?", const="on", choices=COMPILE_MODES, metavar="off|on|auto",
                     help="torch.compile: on (--compile alone) trains and scores full held-out batches through the "
                     "compiled model; auto turns it on where a compiler is present and the run is long enough to "
                     "repay the compile time (decided at the start, with a line saying why); the compile time is "
                     "logged and written to summary.json; may change on --resume (default: off)")
    opt.add_argument("--seed", type=int, help=f"seed of initialisation and window order {default('seed')}")
    hardware = p.add_argument_group("hardware (may change on --resume)")
    add_runtime_arguments(hardware)
    hardware.add_argument("--fsdp", action="store_true", help="under torchrun: shard parameters, gradients and "
                          "optimizer state over the processes (PyTorch FSDP2, fully_shard) instead of a copy of "
                          "the model per process (DDP); for models that do not fit one device")
    hardware.add_argument("--checkpoint-activations", action=argparse.BooleanOptionalAction, default=None,
                          help="recompute each block's activations in the backward pass instead of keeping them: "
                          "a training step's activation memory falls to about one block's (long contexts), for "
                          "about one more forward pass of time; the same loss and gradients (default: off)")
    run = p.add_argument_group("run")
    run.add_argument("--out", metavar="DIR", help="output folder: checkpoint.pt, metrics.jsonl, loss.png, "
                     "summary.json (default: runs/<arch>-<preset>)")
    run.add_argument("--resume", nargs="?", const="", metavar="PATH", help="continue the run saved at PATH "
                     "(a checkpoint or run folder; without PATH: --out or the default folder) with its saved settings")
    run.add_argument("--init-from", metavar="RUN", help="start from the weights of the run at RUN (a run folder or "
                     "checkpoint file): new optimizer and schedule from step 0, any --objective and --data; the model "
                     "and tokenizer are RUN's (options that conflict with them are refused); e.g. fine-tune a "
                     "language model on the QA task with --objective qa (docs/qa.md)")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    run.add_argument("--stop-after", type=int, metavar="STEP", help="stop after this step with a checkpoint, as "
                     "an interruption would; continue later with --resume")
    run.add_argument("--eval-every", type=int, metavar="N", help="steps between held-out checks (default: ~10 per run)")
    run.add_argument("--eval-windows", type=int, metavar="N", help="fixed held-out windows per check "
                     f"{default('eval_windows')}; the final evaluation uses all of them")
    run.add_argument("--save-every", type=int, metavar="N", help="steps between checkpoints (default: ~5 per run)")
    run.add_argument("--sample-tokens", type=int, metavar="N", help="tokens to generate after training, 0 = none "
                     f"(default: {CLI_SAMPLE_TOKENS}); checked, with its prompt, before training starts")
    run.add_argument("--prompt", dest="sample_prompt", metavar="TEXT", help="prompt of that sample (default: the "
                     "first line of a held-out document)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    add_model_arguments(p)


# ------------------------------------------------------------------------------------ model options of `train`

MODEL_OPTION = "model."     # --model.qk_dim 512 -> args "model.qk_dim"


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model-config FILE.json and one --model.FIELD option per ModelConfig field (but those a run sets itself),
    generated from the dataclass: typed from its annotations, documented by its docstring."""
    import typing

    from .config import CHOICES, PRESETS, ModelConfig, field_docs
    from .training.config import NOT_MODEL_OPTIONS

    group = p.add_argument_group("model options (on top of --preset; the paper's values and why: "
                                 "docs/model_options.md)")
    group.add_argument("--model-config", metavar="FILE.json", help="a JSON object of model options, e.g. "
                       '{"qk_dim": 512, "chunk_size": 128}; --model.FIELD options given too win')
    docs, hints = field_docs(), typing.get_type_hints(ModelConfig)
    sized = {name for preset in PRESETS.values() for name in preset} | {"n_layers"}
    for name, f in ModelConfig.__dataclass_fields__.items():
        if name in NOT_MODEL_OPTIONS:
            continue
        if name == "quad_norm_len":
            default = "--context for flash-quad"
        elif name in sized:
            default = "set by --preset"
        else:
            default = "none" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) \
                else f.default
        group.add_argument(f"--{MODEL_OPTION}{name}", dest=MODEL_OPTION + name, default=argparse.SUPPRESS,
                           type=_model_value(name, hints[name]), choices=CHOICES.get(name),
                           metavar=_metavar(name, hints[name]),
                           help=f"{docs[name]} (default: {default})".replace("%", "%%"))


def _model_value(name: str, hint) -> Callable[[str], object]:
    """Parse the text of --model.NAME into the field's type: bool (true/false), int, float, str; None for
    'none' where the field is Optional; 'auto' where the run's context resolves it."""
    import typing

    from .config import CONTEXT_AUTO

    args = typing.get_args(hint)
    optional = type(None) in args
    kind = next((a for a in args if a is not type(None)), hint) if args else hint

    def parse(text: str):
        word = text.strip().lower()
        if optional and word in ("none", "null"):
            return None
        if name in CONTEXT_AUTO and word == "auto":
            return "auto"
        if kind is bool:
            if word in ("true", "1", "yes", "on"):
                return True
            if word in ("false", "0", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        try:
            return kind(text) if kind in (int, float) else text
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got "
                                             f"{text!r}") from None
    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _metavar(name: str, hint) -> Optional[str]:
    import typing

    from .config import CHOICES, CONTEXT_AUTO

    if name in CHOICES:
        return None                                   # argparse lists the choices
    args = typing.get_args(hint)
    kind = next((a for a in args if a is not type(None)), hint) if args else hint
    word = {bool: "true|false", int: "N", float: "X"}.get(kind, "TEXT")
    if name in CONTEXT_AUTO:
        word += "|auto"
    return word + ("|none" if type(None) in args else "")


def model_options(args: argparse.Namespace) -> dict:
    """The model options given: --model-config's file, then the --model.FIELD options (which win)."""
    options = {}
    if getattr(args, "model_config", None):
        options.update(_read_model_config(args.model_config))
    options.update({key[len(MODEL_OPTION):]: value for key, value in vars(args).items()
                    if key.startswith(MODEL_OPTION)})
    return options


def _read_model_config(path: str) -> dict:
    """The JSON object in `path` (ConfigError: missing, unreadable, not JSON, not an object)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--model-config: no file at {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--model-config: cannot read {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"--model-config: {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--model-config: {path} must hold a JSON object of model options, e.g. "
                          '{"qk_dim": 512}')
    return data


def run_train(args: argparse.Namespace) -> int:
    from .runtime.launch import launch_rank
    from .tasks import get_task
    from .training.config import TrainConfig
    from .training.loop import train
    from .training.state import RESUME_CHANGES

    t0 = time.perf_counter()
    given = {name: getattr(args, name) for name in TRAIN_FIELDS if getattr(args, name) is not None}
    model = model_options(args)
    common = dict(device=args.device, stop_after=args.stop_after, progress=not args.no_progress, fsdp=args.fsdp)
    if args.resume is not None:
        changes = {name: given.pop(name) for name in RESUME_CHANGES if name in given}
        if given or model:
            names = ", ".join(["--" + n.replace("_", "-") for n in given]
                              + (["--model-config"] if args.model_config else [])
                              + [f"--{k}" for k in vars(args) if k.startswith(MODEL_OPTION)])
            raise ConfigError(f"{names} cannot be given with --resume: a resumed run keeps the settings saved in "
                              "its checkpoint (--device, --fsdp, --compile, --[no-]checkpoint-activations, "
                              "--sample-tokens, --prompt and --data, the same text in a new place, may change)")
        path = args.resume or args.out or TrainConfig().out_dir
        result = train(resume=path, changes=changes, compile=args.compile, **common)
    else:
        _check_prepared_request(args)
        if "init_from" in given:
            _check_init_source(given)
        if get_task(given.get("objective", TrainConfig.objective)).generates:
            given.setdefault("sample_tokens", CLI_SAMPLE_TOKENS)
        cfg = TrainConfig(**given, compile=args.compile or "off", out=args.out, model=model)
        result = train(cfg, overwrite=args.overwrite, **common)
    if result.final and launch_rank() == 0:            # under torchrun rank 0 reports
        print(f"{result.final.headline()} | wall time {(time.perf_counter() - t0) / 60:.1f} min | output in "
              f"{result.out_dir}/ (checkpoint.pt, metrics.jsonl, loss.png, summary.json)")
    return 130 if result.interrupted else 0


def _check_init_source(given: dict) -> None:
    """--init-from RUN decides the model and tokenizer: an explicit --arch / --preset / --tokenizer /
    --bpe-vocab-size that disagrees with RUN's is refused (the library takes RUN's; model options that conflict are
    refused there)."""
    from .training.init_from import conflicts, read_init_source

    if not {"arch", "preset", "tokenizer", "bpe_vocab_size"} & set(given):
        return
    problem = conflicts(read_init_source(given["init_from"]), given)
    if problem:
        raise ConfigError(problem)


def _check_prepared_request(args: argparse.Namespace) -> None:
    """A prepared --data decides the tokenizer: an explicit --tokenizer / --bpe-vocab-size that disagrees is refused
    (the library takes the folder's silently)."""
    from .data.prepared import is_prepared, open_prepared
    from .data.tokenizers import is_tokenizer_file, load_tokenizer_file, tokenizer_digest

    if not is_prepared(args.data) or (args.tokenizer is None and args.bpe_vocab_size is None):
        return
    prepared = open_prepared(args.data)
    tok = prepared.tokenizer
    asked = args.tokenizer or tok.kind
    same = (tokenizer_digest(load_tokenizer_file(asked)) == tokenizer_digest(tok) if is_tokenizer_file(asked)
            else asked == tok.kind and args.bpe_vocab_size in (None, tok.vocab_size))
    if not same:
        raise ConfigError(f"--data {args.data} was prepared with its own tokenizer ({tok.kind}, V={tok.vocab_size}); "
                          "leave out --tokenizer / --bpe-vocab-size, or prepare the text again with them")


# --------------------------------------------------------------------------------------------------- prepare

def add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    from .data.prepare import DEFAULT_BPE_SAMPLE_BYTES, DEFAULT_SHARD_BYTES

    p.add_argument("data", metavar="DATA", help="a UTF-8 text file, a folder of them (each file one document), JSON "
                   "lines / Parquet / Arrow files or a folder of them (each record one document; Parquet and "
                   "Arrow need pip install 'flashgau[datasets]'), or 'shakespeare' (the default corpus)")
    p.add_argument("--out", required=True, metavar="DIR", help="the prepared folder: token shards, document index, "
                   "tokenizer and manifest.json (written last); train on it with flashgau train --data DIR")
    p.add_argument("--tokenizer", default="bytes", metavar="bytes|bpe|FILE.json", help="bytes (V=256), byte-level "
                   "BPE trained here on the training split (or a sample of it), or a byte-level BPE tokenizer.json "
                   "(default: bytes)")
    p.add_argument("--bpe-vocab-size", type=int, default=4096, metavar="V", help="BPE vocabulary (default: 4096)")
    p.add_argument("--bpe-sample-mb", type=float, default=DEFAULT_BPE_SAMPLE_BYTES / 2**20, metavar="MB",
                   help="train the BPE on all training text up to this many MiB, else on a sample of whole "
                   f"training documents of that size (default: {DEFAULT_BPE_SAMPLE_BYTES / 2**20:g})")
    p.add_argument("--heldout-fraction", type=float, default=0.1, metavar="F", help="share of the characters held "
                   "out, in whole documents (default: 0.1)")
    p.add_argument("--text-field", default="text", metavar="NAME", help="the field (JSON lines) or column "
                   "(Parquet, Arrow) holding the text (default: text)")
    p.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_BYTES / 2**20, metavar="MB", help="close a "
                   f"token shard after the document that takes it past this size (default: "
                   f"{DEFAULT_SHARD_BYTES / 2**20:g})")
    p.add_argument("--overwrite", action="store_true", help="replace a different preparation already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


def run_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare

    for name in ("bpe_sample_mb", "shard_mb"):
        if not getattr(args, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    data = prepare(args.data, args.out, tokenizer=args.tokenizer, bpe_vocab_size=args.bpe_vocab_size,
                   bpe_sample_bytes=max(1, int(args.bpe_sample_mb * 2**20)), heldout_fraction=args.heldout_fraction,
                   text_field=args.text_field, shard_bytes=max(1, int(args.shard_mb * 2**20)),
                   overwrite=args.overwrite, progress=not args.no_progress)
    print(f"ready: flashgau train --data {data.path}")
    return 0


# ------------------------------------------------------------------------------------------------------ eval

def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file or a run folder")
    p.add_argument("--data", metavar="PATH", help="score every document at PATH (a file or folder of text, or a "
                   "prepared folder: both its sides) instead of the held-out split of the training data")
    p.add_argument("--train-data", metavar="PATH", help="where the data the run was trained on is now, if it "
                   "moved (checked against the run's data fingerprint)")
    p.add_argument("--context", type=int, metavar="T", help="window length (default: the training context)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="windows per forward pass (default: 8)")
    add_runtime_arguments(p, precision_default="the precision the run trained in, so the default evaluation "
                          "repeats the run's final score; auto on another kind of device")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run_eval(args: argparse.Namespace) -> int:
    from .training.trained import evaluate_checkpoint

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.data is not None and args.train_data is not None:
        raise ConfigError("give --data (score other text) or --train-data (the training data's new place), not both")
    result, what = evaluate_checkpoint(args.checkpoint, data=args.data, train_data=args.train_data,
                                       context=args.context, batch_size=args.batch_size, precision=args.precision,
                                       device=args.device)
    if args.json:
        print(json.dumps({**result.to_dict(), "evaluated": what}))
    else:
        print(f"evaluated: {what}\n{result.report()}")
    return 0


# ---------------------------------------------------------------------------------------------------- sample

def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file or a run folder")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200, metavar="N", help="tokens to generate (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature, > 0 (default: 0.8)")
    p.add_argument("--top-k", type=int, metavar="K", help="sample only from the K most likely tokens")
    p.add_argument("--top-p", type=float, metavar="P", help="sample only from the smallest set of tokens whose "
                   "probability reaches P (nucleus sampling)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; same seed, same text (default: 0)")
    add_runtime_arguments(p)


def run_sample(args: argparse.Namespace) -> int:
    from .runtime import resolve_device, resolve_precision
    from .training.trained import load_trained, sample_text

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision or "auto", device)
    trained = load_trained(args.checkpoint, device=device)
    text = sample_text(trained.model, trained.tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                       precision=precision)
    print(args.prompt + text)
    return 0


# ------------------------------------------------------------------------------------------------------ fill

def add_fill_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a masked-LM run (flashgau train --objective mlm): its "
                   "folder or checkpoint file")
    p.add_argument("--text", required=True, help="text with mask markers, <mask> (or [MASK]), one per token to "
                   "fill (with byte tokens one per byte: 'To be, or <mask><mask><mask> to be')")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="candidates shown per mask, with their "
                   "probabilities (default: 5)")
    add_runtime_arguments(p)


def run_fill(args: argparse.Namespace) -> int:
    from .runtime import resolve_device, resolve_precision
    from .tasks.mlm import fill_masks
    from .training.trained import load_trained

    device = resolve_device(args.device)
    trained = load_trained(args.checkpoint, device=device)
    result = fill_masks(trained.model, trained.tokenizer, args.text, top_k=args.top_k,
                        precision=resolve_precision(args.precision or "auto", device))
    print(result.describe())
    return 0


# ---------------------------------------------------------------------------------------------------- export

def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_path", metavar="RUN", help="a run folder or checkpoint file")
    p.add_argument("out", metavar="OUT", help="folder to write: config.json, model.safetensors, the tokenizer "
                   "files and a README.md model card (load with transformers' from_pretrained after "
                   "`import flashgau.hf`)")
    p.add_argument("--overwrite", action="store_true", help="write into OUT even if it already holds files")


def run_export(args: argparse.Namespace) -> int:
    try:
        from .hf.export import export_run
    except ImportError as err:
        if "transformers" not in str(err):
            raise
        raise FlashgauError(str(err)) from None
    out = export_run(args.run_path, args.out, overwrite=args.overwrite)
    print(f"wrote {out}/: config.json, model.safetensors, tokenizer files, README.md")
    return 0


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    from .bench.cli import add_arguments
    add_arguments(p)


def run_bench(args: argparse.Namespace) -> int:
    from .bench.cli import run
    return run(args)


COMMANDS: dict[str, Command] = {
    "prepare": Command("tokenize a corpus once into token shards on disk (any size, bounded memory); train on "
                       "them with --data DIR", add_prepare_arguments, run_prepare),
    "train": Command("train a language model (default: small FLASH on Shakespeare, bytes, ~5 minutes), a masked "
                     "language model (--objective mlm), or fine-tune one on question answering (--objective qa "
                     "--init-from RUN)", add_train_arguments, run_train),
    "eval": Command("held-out scores of a checkpoint: loss, bits per byte and perplexity (LM); masked-token loss, "
                    "accuracy and perplexity (MLM); answer loss, exact match, F1 and the two floors (QA)",
                    add_eval_arguments, run_eval),
    "sample": Command("continue a prompt with a trained checkpoint", add_sample_arguments, run_sample),
    "fill": Command("fill the <mask> markers of a text with a masked-LM checkpoint; top candidates with their "
                    "probabilities", add_fill_arguments, run_fill),
    "export": Command("write a run as a Hugging Face folder (transformers' from_pretrained, pipeline, Trainer)",
                      add_export_arguments, run_export),
    "bench": Command("benchmarks: speed, quality, decode, all (reports under benchmarks/results)",
                     add_bench_arguments, run_bench),
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line ("flashgau train: error: ... (see flashgau train --help)"), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flashgau", description="FLASH language models (Hua et al. 2022, "
                                     "'Transformer Quality in Linear Time'; not FlashAttention): train, evaluate, "
                                     "sample, fill masks, export to Hugging Face, benchmark.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; its exit status. Called as the program (argv None: the `flashgau` command, `python -m
    flashgau`), a Ctrl-C after the command is done (while Python shuts down) ends the process at once with 130."""
    command = "flashgau"
    try:
        with _ctrl_c_held():            # start-up: torch's C++ import code aborts the process if interrupted
            import torch  # noqa: F401
            args = build_parser().parse_args(argv)
            command = f"flashgau {args.command}"
        from .runtime.allocator import keep_freed_memory

        keep_freed_memory()             # long-context CPU steps reuse freed activations (runtime/allocator.py)
        return args.run(args)
    except FlashgauError as err:
        _report(command, err)
        return 1
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if argv is None:
            _quiet_ctrl_c_at_exit()


@contextmanager
def _ctrl_c_held():
    """Hold a Ctrl-C (SIGINT) that arrives inside the block and raise it as KeyboardInterrupt when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def _quiet_ctrl_c_at_exit() -> None:
    """From here on a Ctrl-C ends the process at once with status 130, instead of a KeyboardInterrupt traceback from
    an exit handler of torch's. (In Python's last moments of shutdown, after it has put back the system's own
    handler, a Ctrl-C ends the process by the signal, which a shell reports as 130 too.)"""
    if threading.current_thread() is not threading.main_thread():
        return

    def leave(signum, frame):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)

    signal.signal(signal.SIGINT, leave)


def _report(command: str, err: FlashgauError) -> None:
    """The error's one line on stderr. Under torchrun rank 0 reports (the processes of a run fail alike, and an
    error of another process reaches rank 0 as "rank N failed: ..."); the others report only a lost peer, which
    rank 0 may be."""
    from .runtime.distributed import PeerLost
    from .runtime.launch import launch_rank

    rank = launch_rank()
    if rank == 0:
        print(f"{command}: error: {err}", file=sys.stderr)
    elif isinstance(err, PeerLost):
        print(f"{command} (rank {rank}): error: {err}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
