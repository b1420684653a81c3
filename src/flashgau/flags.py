"""`flashgau train`'s options generated from the dataclasses they set, so that a setting's name, type, default and
help are written once: a TrainConfig field's option from the field (its help and what the option needs in the
field's metadata, training/config.py), and one --model.FIELD option per ModelConfig field (its help from
ModelConfig's docstring). And the settings given, read back from the parsed options."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Callable, Optional

from .config import CHOICES, CONTEXT_AUTO, PRESETS, ModelConfig, field_docs
from .errors import ConfigError
from .training.config import NOT_MODEL_OPTIONS, TrainConfig

TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
TRAIN_TYPES = typing.get_type_hints(TrainConfig)
MODEL_OPTION = "model."     # --model.qk_dim 512 -> args "model.qk_dim"


# ------------------------------------------------------------------------------------------- TrainConfig fields

def option_name(name: str) -> str:
    """The option of TrainConfig field `name`: --NAME with dashes, or its metadata's "flag"."""
    return "--" + TRAIN_FIELDS[name].metadata.get("flag", name).replace("_", "-")


def add_setting_option(group, name: str, **overrides: Any) -> None:
    """Add the option of TrainConfig field `name` to `group`: typed from the field's annotation, its help the
    field's with the default at the end, and the argparse keywords of its metadata; `overrides` replace metadata
    entries (a command's own choices or default_text). A switch (a bool field) is --NAME, and --no-NAME too where
    the field is "negatable". Not given, the option's value is None (TrainConfig sets the default)."""
    field = TRAIN_FIELDS[name]
    option = {**field.metadata, **overrides}
    help_text = option.pop("help")
    option.pop("flag", None)
    kind, negatable, shown = _kind(TRAIN_TYPES[name]), option.pop("negatable", False), field.default
    if kind is bool:
        option["action"] = argparse.BooleanOptionalAction if negatable else "store_true"
        shown = ("on" if field.default else "off") if negatable else None     # a plain switch: off unless given
    elif kind in (int, float):
        option["type"] = kind
    shown = option.pop("default_text", shown)
    if shown is not None:
        help_text += f" (default: {shown})"
    group.add_argument(option_name(name), dest=name, default=None, help=help_text.replace("%", "%%"), **option)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given as options (each option's dest is its field's name)."""
    return {name: getattr(args, name) for name in TRAIN_FIELDS if getattr(args, name, None) is not None}


# --------------------------------------------------------------------------------------------- model options

def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model-config FILE.json and one --model.FIELD option per ModelConfig field (but those a run sets itself),
    generated from the dataclass: typed from its annotations, documented by its docstring."""
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


def model_options(args: argparse.Namespace) -> dict:
    """The model options given: --model-config's file, then the --model.FIELD options (which win)."""
    options = {}
    if getattr(args, "model_config", None):
        options.update(_read_model_config(args.model_config))
    options.update({key[len(MODEL_OPTION):]: value for key, value in vars(args).items()
                    if key.startswith(MODEL_OPTION)})
    return options


def model_option_names(args: argparse.Namespace) -> list[str]:
    """The model options given, as typed: --model-config, --model.FIELD."""
    return ((["--model-config"] if getattr(args, "model_config", None) else [])
            + [f"--{key}" for key in vars(args) if key.startswith(MODEL_OPTION)])


def _model_value(name: str, hint) -> Callable[[str], object]:
    """Parse the text of --model.NAME into the field's type: bool (true/false), int, float, str; None for
    'none' where the field is Optional; 'auto' where the run's context resolves it."""
    optional = type(None) in typing.get_args(hint)
    kind = _kind(hint)

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
    if name in CHOICES:
        return None                                   # argparse lists the choices
    word = {bool: "true|false", int: "N", float: "X"}.get(_kind(hint), "TEXT")
    if name in CONTEXT_AUTO:
        word += "|auto"
    return word + ("|none" if type(None) in typing.get_args(hint) else "")


def _kind(hint):
    """The type of a field annotated `hint`: X for Optional[X]."""
    args = typing.get_args(hint)
    return next((a for a in args if a is not type(None)), hint) if args else hint


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
