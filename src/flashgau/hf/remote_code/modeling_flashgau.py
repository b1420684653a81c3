"""FlashgauForCausalLM and FlashgauForMaskedLM for transformers' remote-code loading (see flashgau.hf.remote_code):
flashgau's own model classes, from the installed flashgau package."""

from .configuration_flashgau import FlashgauConfig

try:
    from flashgau.hf.modeling import FlashgauForCausalLM as _FlashgauForCausalLM
    from flashgau.hf.modeling import FlashgauForMaskedLM as _FlashgauForMaskedLM
except ModuleNotFoundError as err:
    if err.name not in ("flashgau", "flashgau.hf"):
        raise
    raise ImportError("this model's code is in the flashgau package, which is not installed: "
                      "pip install 'flashgau[hf]', then load the model again") from None


class FlashgauForCausalLM(_FlashgauForCausalLM):
    """flashgau.hf.FlashgauForCausalLM, as named by this folder's auto_map."""

    config_class = FlashgauConfig


class FlashgauForMaskedLM(_FlashgauForMaskedLM):
    """flashgau.hf.FlashgauForMaskedLM, as named by this folder's auto_map."""

    config_class = FlashgauConfig
