"""A run's settings as a TOML file: `flashgau train --config FILE` reads one, and every run folder holds the run's
resolved settings as config.toml, which `--config` reads back to repeat the run.

The file's top-level keys are TrainConfig fields (training/config.py; `flashgau train --help` names them, with
underscores), its [model] table ModelConfig fields set on top of the preset (config.py; the `--model.FIELD` options):

    arch = "flash"
    preset = "small"
    context = 1024
    steps = 2000
    lr = 2e-3

    [model]
    qk_dim = 512

A key that is not a setting, or a value of the wrong type, is a one-line ConfigError that names the key (and the
closest valid one); the values themselves are checked by TrainConfig. A setting left out takes its default, so a
file says only what it changes. TOML has no null: a setting that is None is left out (`config.toml` notes it in a
comment). Paths are relative to the working directory, as on the command line.

TOML because it is in the standard library from Python 3.11 (tomllib; tomli before), typed (an integer, a number,
text and true/false are told apart without guessing: YAML reads `no` as false and `1e-3` as text), and flat
settings with one table is what it writes plainly.

`format_run_config` writes a run's file (every field, the model as built), `read_run_config` reads a file into
TrainConfig's fields, `merge_settings` lays command-line settings over a file's. The bundled files of configs/
(the paper's experiments as flashgau runs them) are found by name: `--config lm-512`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from pathlib import Path
from typing import Any, Union

from ..config import CONTEXT_AUTO, ModelConfig
from ..errors import ConfigError
from .config import NOT_MODEL_OPTIONS, TrainConfig

CONFIG_NAME = "config.toml"
BUNDLED = Path(__file__).resolve().parent.parent / "configs"     # src/flashgau/configs (the repo's configs/)
# settings of which one may be given: a command-line setting replaces the file's other one
EXCLUSIVE = (("steps", "time_budget"),)
# options of `flashgau train` that are not settings of the run, so a config file cannot hold them
COMMAND_OPTIONS = ("device", "fsdp", "resume", "overwrite", "stop_after", "no_progress", "config", "model_config")

TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
TRAIN_TYPES = typing.get_type_hints(TrainConfig)
MODEL_TYPES = typing.get_type_hints(ModelConfig)
MODEL_KEYS = tuple(name for name in MODEL_TYPES if name not in NOT_MODEL_OPTIONS)


def bundled_configs() -> list[str]:
    """The names of the bundled config files (configs/NAME.toml)."""
    return sorted(p.stem for p in BUNDLED.glob("*.toml"))


def config_path(path_or_name: Union[str, Path]) -> Path:
    """The file `path_or_name` names: a path, or the name of a bundled config (configs/NAME.toml)."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    bundled = BUNDLED / f"{path_or_name}.toml"
    if not path.exists() and path.suffix == "" and len(path.parts) == 1 and bundled.is_file():
        return bundled
    if path.exists():
        raise ConfigError(f"--config {path_or_name} is not a file")
    raise ConfigError(f"--config: no file at {path_or_name} (bundled configs, by name: "
                      f"{', '.join(bundled_configs())})")


def read_run_config(path_or_name: Union[str, Path]) -> dict[str, Any]:
    """The TrainConfig fields of the TOML file at `path_or_name` (or of a bundled config, by name), its [model]
    table as "model"; a one-line ConfigError for a missing or unreadable file, invalid TOML, a key that is not a
    setting or a value of the wrong type (the values' ranges are TrainConfig's to check)."""
    path = config_path(path_or_name)
    try:
        import tomllib
    except ModuleNotFoundError:                      # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as err:
        raise ConfigError(f"--config: cannot read {path}: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"--config: {path} is not valid TOML: {err}") from None
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key == "model":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: model must be a table of model options ([model] with one line each, "
                                  "e.g. qk_dim = 512), got " + _describe(value))
            settings["model"] = {name: _model_value(path, name, v) for name, v in value.items()}
        else:
            settings[key] = _train_value(path, key, value)
    return settings


def merge_settings(file: dict[str, Any], given: dict[str, Any], given_model: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig's fields from a config `file` with the settings `given` on the command line (and its model
    options `given_model`) on top: a given setting wins, model options merge key by key, and a given member of an
    EXCLUSIVE pair (--steps) drops the file's other one (time_budget)."""
    merged = dict(file)
    for pair in EXCLUSIVE:
        for name in pair:
            if name in given:
                for other in pair:
                    if other != name:
                        merged.pop(other, None)
    merged.update(given)
    merged["model"] = {**file.get("model", {}), **given_model}
    return merged


def changed_model_options(config: TrainConfig) -> dict[str, Any]:
    """The model options of `config` that change its model from the preset's (a run from a config.toml lists every
    field: the log line names those that matter)."""
    try:
        base = dataclasses.replace(config, model={}).model_config(256).to_dict()
    except ConfigError:                                # the options make a model the preset alone cannot (context)
        return dict(config.model)
    return {k: v for k, v in config.model.items() if base.get(k) != v}


# ------------------------------------------------------------------------------------------------ writing

def resolved_settings(config: TrainConfig, model_config: ModelConfig) -> dict[str, Any]:
    """The settings of a run as its config.toml holds them: every TrainConfig field, and as "model" the fields of
    `model_config`, the model the run built (but those the run sets itself: arch, vocab_size, causal), so that the
    file builds the same model whatever the preset's defaults become. Where the run's context decides a model field
    (FLASH-Quad's quad_norm_len, combiner_chunk_size "auto"), it is left to the context, so a changed --context
    sets it anew (a run started from another keeps the source's model: everything is written)."""
    fields = {k: v for k, v in model_config.to_dict().items() if k not in NOT_MODEL_OPTIONS}
    if config.init_from is None:
        for name in CONTEXT_AUTO:
            if config.model.get(name) == "auto":
                fields[name] = "auto"
        if config.arch == "flash-quad" and "quad_norm_len" not in config.model:
            del fields["quad_norm_len"]            # ModelConfig.for_context sets it to the context
    return {**config.to_dict(), "model": fields}


def format_run_config(settings: dict[str, Any], *, title: str = "") -> str:
    """TrainConfig's fields `settings` (TrainConfig.to_dict(), resolved_settings) as a TOML file that
    read_run_config reads back into the same settings; a None value as a comment."""
    lines = [f"# {title}" if title else "# flashgau train settings",
             "# flashgau train --config FILE reads it; options given with it win (docs/training.md)", ""]
    for table in (None, "model"):
        values = settings.get("model", {}) if table else {k: v for k, v in settings.items() if k != "model"}
        lines += ["", f"[{table}]"] if table else []
        lines += [f"{name} = {_toml(value)}" for name, value in values.items() if value is not None]
        unset = [name for name, value in values.items() if value is None]
        if unset:
            lines.append(f"# not set (None): {', '.join(unset)}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    """One TOML value: text, true/false, an integer, a number, or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        # a JSON string is a TOML basic string but for DEL, which TOML wants escaped
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


# ------------------------------------------------------------------------------------------------ checking

def _train_value(path: Path, key: str, value: Any) -> Any:
    if key not in TRAIN_FIELDS:
        raise ConfigError(f"{path}: {_unknown(key, list(TRAIN_FIELDS), 'setting')}")
    return _typed(path, key, value, TRAIN_TYPES[key])


def _model_value(path: Path, key: str, value: Any) -> Any:
    if key in NOT_MODEL_OPTIONS:
        raise ConfigError(f"{path}: model.{key} is not a model option of a run: {NOT_MODEL_OPTIONS[key]}")
    if key not in MODEL_KEYS:
        raise ConfigError(f"{path}: {_unknown(key, list(MODEL_KEYS), 'model option', table='model.')}")
    hint = MODEL_TYPES[key]
    if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None                                    # as --model.FIELD none
    if key in CONTEXT_AUTO and value == "auto":
        return value
    return _typed(path, f"model.{key}", value, hint)


def _unknown(key: str, valid: list[str], what: str, table: str = "") -> str:
    """The message for a key that is not a `what`: the closest valid one, or where the key belongs."""
    if not table and key in MODEL_KEYS:
        return f"{key} is a model option: put it in the [model] table (after [model] at the end of the file)"
    if table and key in TRAIN_FIELDS:
        return f"model.{key} is a training setting, not a model option: put it above [model]"
    if not table and key.replace("-", "_") in COMMAND_OPTIONS:
        return (f"{key} is an option of the command, not a setting of the run: give --{key.replace('_', '-')} on "
                "the command line")
    close = difflib.get_close_matches(key.replace("-", "_"), valid, n=1, cutoff=0.6)
    hint = f"did you mean {table}{close[0]}?" if close else "see flashgau train --help and docs/training.md"
    return f"unknown {what} {table}{key}; {hint}"


def _typed(path: Path, key: str, value: Any, hint) -> Any:
    """`value` if it has the type of a field annotated `hint` (an integer for a number is made a float); a one-line
    ConfigError otherwise."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if typing.get_origin(hint) is Union and len(args) == 1 else hint
    if typing.get_origin(kind) in (tuple, list):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        expected = "a list of names, e.g. [\"tensorboard\"]"
    elif kind is bool:
        if isinstance(value, bool):
            return value
        expected = "true or false"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        expected = "an integer"
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        expected = "a number"
    elif kind is str:
        if isinstance(value, str):
            return value
        expected = "text in quotes"
    else:
        return value
    raise ConfigError(f"{path}: {key} must be {expected}, got {_describe(value)}")


def _describe(value: Any) -> str:
    kind = {bool: "true/false", int: "an integer", float: "a number", str: "text", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
    shown = _toml(value) if isinstance(value, (bool, int, float, str)) else ""
    return f"{shown} ({kind})" if shown else kind
