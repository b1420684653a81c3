"""FlashgauConfig for transformers' remote-code loading (see flashgau.hf.remote_code): flashgau's own config class,
from the installed flashgau package."""

try:
    from flashgau.hf.configuration import FlashgauConfig as _FlashgauConfig
except ModuleNotFoundError as err:
    if err.name != "flashgau":
        raise
    raise ImportError("this model's code is in the flashgau package, which is not installed here: install it "
                      "(pip install '.[hf]' in a flashgau checkout), then load the model again") from None


class FlashgauConfig(_FlashgauConfig):
    """flashgau.hf.FlashgauConfig, as named by this folder's auto_map."""
