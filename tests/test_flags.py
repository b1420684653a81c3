"""`flashgau train`'s options generated from TrainConfig's fields (flashgau/flags.py): every field the command offers
is an option with the field's help and default, and options left out leave TrainConfig's defaults."""

import dataclasses

from flashgau.cli import CLI_SAMPLE_TOKENS, OWN_OPTIONS, TRAIN_OPTIONS, build_parser, new_run_config
from flashgau.flags import given_settings, option_name
from flashgau.training.config import TrainConfig

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def parse(*argv):
    return build_parser().parse_args(["train", *argv])


def offered() -> list[str]:
    names = [name for group in TRAIN_OPTIONS.values() for entry in group
             for name in (entry if isinstance(entry, tuple) else (entry,))]
    return [name for name in names if name not in OWN_OPTIONS]


def test_every_field_has_help_and_every_option_shows_it_with_the_default():
    assert all(f.metadata.get("help") for f in FIELDS.values())
    assert set(FIELDS) - set(offered()) == {"min_lr_ratio", "beta1", "beta2", "heldout_fraction", "model"}
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    actions = {action.dest: action for action in train._actions}
    for name in offered():
        field, action = FIELDS[name], actions[name]
        assert option_name(name) in action.option_strings and action.default is None, name
        help_text = action.help.replace("%%", "%")
        assert help_text.startswith(field.metadata["help"]), name
        if name == "sample_tokens":                    # the command's own default (an LM run writes a sample)
            assert help_text.endswith(f"(default: {CLI_SAMPLE_TOKENS})")
        elif "default_text" in field.metadata:
            assert help_text.endswith(f"(default: {field.metadata['default_text']})"), name
        elif field.default is False:
            assert help_text.endswith("(default: off)") or "(default" not in help_text, name
        elif field.default is not None:
            assert help_text.endswith(f"(default: {field.default})"), name


def test_no_options_leave_train_configs_defaults():
    assert given_settings(parse()) == {}
    assert new_run_config(parse()) == TrainConfig(sample_tokens=CLI_SAMPLE_TOKENS)
    assert new_run_config(parse("--objective", "mlm")) == TrainConfig(objective="mlm")


def test_options_set_their_fields():
    args = parse("--lr", "0.01", "--steps", "5", "--prompt", "KING.", "--compile", "--pack-documents",
                 "--no-checkpoint-activations", "--out", "somewhere", "--model.qk_dim", "64")
    assert given_settings(args) == dict(lr=0.01, steps=5, sample_prompt="KING.", compile="on", pack_documents=True,
                                        checkpoint_activations=False, out="somewhere")
    assert new_run_config(args) == TrainConfig(lr=0.01, steps=5, sample_prompt="KING.", compile="on",
                                               pack_documents=True, out="somewhere", sample_tokens=CLI_SAMPLE_TOKENS,
                                               model={"qk_dim": 64})
