"""The `flashgau` command: prepare | train | eval | sample | fill | export | bench.

Each subcommand is one entry of COMMANDS: a help line, a function that adds its options to an argparse parser,
and a function that runs it and returns the exit code. A new subcommand (e.g. `bench`) is one more entry.
Errors the user caused (FlashgauError) print one line on stderr and exit with status 1; argparse usage errors
exit with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from .errors import ConfigError, FlashgauError
from .signals import ctrl_c_held, quiet_ctrl_c_at_exit

if TYPE_CHECKING:
    from .training.config import TrainConfig


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ----------------------------------------------------------------------------------------------------- train

# `flashgau train`'s options, group by group in --help's order. A name is a TrainConfig field, whose option is
# generated from the field (flags.add_setting_option; on --resume only state.RESUME_CHANGES may be given); a pair is
# two fields of which one may be given; the other names are options that set no field (OWN_OPTIONS).
TRAIN_OPTIONS = {
    "settings file": ("config",),
    "model": ("arch", "preset", "objective"),
    "data": ("data", "tokenizer", "bpe_vocab_size", "context", "pack_documents"),
    "length (give one)": (("steps", "time_budget"), "time_budget_covers"),
    "optimization": ("batch_tokens", "micro_batch_tokens", "lr", "warmup_steps", "weight_decay", "grad_clip",
                     "compile", "seed"),
    "hardware (all but --precision may change on --resume)": ("device", "precision", "fsdp", "checkpoint_activations"),
    "run": ("out", "resume", "init_from", "overwrite", "stop_after", "eval_every", "eval_windows", "save_every",
            "sample_tokens", "sample_prompt", "log", "no_progress"),
}
# options of the commands that set no TrainConfig field, by name (--device, --no-progress: of several commands)
OWN_OPTIONS = {
    "config": dict(metavar="FILE", help="the run's settings from a TOML file (top-level keys: the settings below, "
                   "with underscores; a [model] table: the model options), e.g. a run folder's config.toml, which "
                   "repeats that run, or a bundled one by name (lm-512, ...: configs/); options given too win "
                   "(docs/training.md)"),
    "device": dict(default="auto", metavar="DEVICE", help="auto (a CUDA GPU when PyTorch sees one, else the CPU), "
                   "cpu, cuda or cuda:N (default: auto)"),
    "fsdp": dict(action="store_true", help="under torchrun: shard parameters, gradients and optimizer state over the "
                 "processes (PyTorch FSDP2, fully_shard) instead of a copy of the model per process (DDP); for models "
                 "that do not fit one device"),
    "resume": dict(nargs="?", const="", metavar="PATH", help="continue the run saved at PATH (a checkpoint or run "
                   "folder; without PATH: --out or the default folder) with its saved settings"),
    "overwrite": dict(action="store_true", help="replace a run already in --out"),
    "stop_after": dict(type=int, metavar="STEP", help="stop after this step with a checkpoint, as an interruption "
                       "would; continue later with --resume"),
    "no_progress": dict(action="store_true", help="no progress bar or progress lines"),
}
CLI_SAMPLE_TOKENS = 300   # an LM run of the command writes a sample after training unless told otherwise (the
                          # library: none; an MLM run: none, it has `flashgau fill`)


def _own_option(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--" + name.replace("_", "-"), **OWN_OPTIONS[name])


def add_runtime_arguments(p: argparse.ArgumentParser, *, precision_default: str = "auto") -> None:
    """--device and --precision, the same on every command."""
    from .flags import add_setting_option

    _own_option(p, "device")
    add_setting_option(p, "precision", default_text=precision_default)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from .flags import add_model_options, add_setting_option

    command_says = {"sample_tokens": dict(default_text=CLI_SAMPLE_TOKENS)}
    for title, names in TRAIN_OPTIONS.items():
        group = p.add_argument_group(title)
        for name in names:
            if isinstance(name, tuple):
                one_of = group.add_mutually_exclusive_group()
                for field in name:
                    add_setting_option(one_of, field)
            elif name in OWN_OPTIONS:
                _own_option(group, name)
            else:
                add_setting_option(group, name, **command_says.get(name, {}))
    add_model_options(p)


def run_train(args: argparse.Namespace) -> int:
    from .flags import given_settings, model_option_names, model_options, option_name
    from .runtime.launch import launch_rank
    from .training.config import TrainConfig
    from .training.loop import train
    from .training.state import RESUME_CHANGES

    t0 = time.perf_counter()
    common = dict(device=args.device, stop_after=args.stop_after, progress=not args.no_progress, fsdp=args.fsdp)
    if args.resume is not None:
        given = given_settings(args)
        out = given.pop("out", None)
        changes = {name: given.pop(name) for name in RESUME_CHANGES if name in given}
        if given or model_options(args) or args.config:
            names = ", ".join([option_name(name) for name in given] + model_option_names(args)
                              + (["--config"] if args.config else []))
            raise ConfigError(f"{names} cannot be given with --resume: a resumed run keeps the settings saved in "
                              "its checkpoint (--device, --fsdp, --compile, --[no-]checkpoint-activations, "
                              "--sample-tokens, --prompt, --log and --data, the same text in a new place, may change)")
        result = train(resume=args.resume or out or TrainConfig().out_dir, changes=changes, **common)
    else:
        result = train(new_run_config(args), overwrite=args.overwrite, **common)
    if result.final and launch_rank() == 0:            # under torchrun rank 0 reports
        print(f"{result.final.headline()} | wall time {(time.perf_counter() - t0) / 60:.1f} min | output in "
              f"{result.out_dir}/ (checkpoint.pt, metrics.jsonl, loss.png, summary.json)")
    return 130 if result.interrupted else 0


def new_run_config(args: argparse.Namespace) -> TrainConfig:
    """The settings of a new run: the TrainConfig fields and model options given, over those of --config's file,
    TrainConfig's defaults for the rest, but a sample of CLI_SAMPLE_TOKENS where the objective writes text."""
    from .data.prepared import check_tokenizer_request
    from .flags import given_settings, model_options
    from .tasks import get_task
    from .training.config import TrainConfig
    from .training.init_from import check_request
    from .training.run_config import merge_settings, read_run_config

    given = given_settings(args)
    file = read_run_config(args.config) if args.config else {}
    # the tokenizer and model options typed here must agree with the data and run they name, wherever those are set
    typed = {**{k: file[k] for k in ("data", "init_from") if k in file}, **given}
    check_tokenizer_request(typed)
    check_request(typed)
    settings = merge_settings(file, given, model_options(args))
    if get_task(settings.get("objective", TrainConfig.objective)).generates:
        settings.setdefault("sample_tokens", CLI_SAMPLE_TOKENS)
    return TrainConfig(**settings)


# --------------------------------------------------------------------------------------------------- prepare

def add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    from .data.prepare import DEFAULT_BPE_SAMPLE_BYTES, DEFAULT_SHARD_BYTES

    p.add_argument("data", metavar="DATA", nargs="?", help="a UTF-8 text file, a folder of them (each file one "
                   "document), JSON lines / Parquet / Arrow files or a folder of them (each record one document; "
                   "Parquet and Arrow need pip install 'flashgau[datasets]'), or 'shakespeare' (the default corpus)")
    p.add_argument("--out", metavar="DIR", help="the prepared folder: token shards, document index, "
                   "tokenizer and manifest.json (written last); train on it with flashgau train --data DIR")
    p.add_argument("--verify", metavar="DIR", help="instead of preparing: check the prepared folder DIR against its "
                   "manifest, every shard's SHA-256 included; one line per problem")
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
    _own_option(p, "no_progress")


def run_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare

    if args.verify is not None:
        return _verify_prepared(args)
    if args.data is None or args.out is None:
        raise ConfigError("give the DATA to prepare and --out DIR (or --verify DIR to check a prepared folder)")
    for name in ("bpe_sample_mb", "shard_mb"):
        if not getattr(args, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    data = prepare(args.data, args.out, tokenizer=args.tokenizer, bpe_vocab_size=args.bpe_vocab_size,
                   bpe_sample_bytes=max(1, int(args.bpe_sample_mb * 2**20)), heldout_fraction=args.heldout_fraction,
                   text_field=args.text_field, shard_bytes=max(1, int(args.shard_mb * 2**20)),
                   overwrite=args.overwrite, progress=not args.no_progress)
    print(f"ready: flashgau train --data {data.path}")
    return 0


def _verify_prepared(args: argparse.Namespace) -> int:
    from .data.prepared import prepared_problems

    if args.data is not None or args.out is not None:
        raise ConfigError("--verify DIR checks a prepared folder: give no DATA or --out with it")
    count, problems = prepared_problems(args.verify)
    for problem in problems:
        print(f"flashgau prepare: error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.verify}: {count} shards verified")
    return 1 if problems else 0


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
    p.add_argument("--temperature", type=_temperature, default=0.8, help="softmax temperature; 0 (or below 1e-5) "
                   "is greedy: the most likely token every time (default: 0.8)")
    p.add_argument("--top-k", type=int, metavar="K", help="sample only from the K most likely tokens")
    p.add_argument("--top-p", type=float, metavar="P", help="sample only from the smallest set of tokens whose "
                   "probability reaches P (nucleus sampling)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; same seed, same text (default: 0)")
    add_runtime_arguments(p)


def _temperature(text: str) -> float:
    """--temperature: a finite number >= 0 (an argparse usage error otherwise)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (0: greedy), got {text!r}")
    return value


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
                   "files, the code files that load it by path and a README.md model card (load with transformers' "
                   "from_pretrained(OUT, trust_remote_code=True) where flashgau is installed)")
    p.add_argument("--overwrite", action="store_true", help="write into OUT even if it already holds files")


def run_export(args: argparse.Namespace) -> int:
    try:
        from .hf.export import export_run
    except ImportError as err:
        if "transformers" not in str(err):
            raise
        raise FlashgauError(str(err)) from None
    out = export_run(args.run_path, args.out, overwrite=args.overwrite)
    print(f"wrote {out}/: config.json, model.safetensors, tokenizer files, code files (trust_remote_code), README.md")
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
        with ctrl_c_held():            # start-up: torch's C++ import code aborts the process if interrupted
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
            quiet_ctrl_c_at_exit()


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
