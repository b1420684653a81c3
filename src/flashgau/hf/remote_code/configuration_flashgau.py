"""FlashgauConfig for transformers' remote-code loading (see flashgau.hf.remote_code): flashgau's own config class,
from the installed flashgau package."""

try:
    from flashgau.hf.configuration import FlashgauConfig as _FlashgauConfig
except ModuleNotFoundError as err:
    if err.name not in ("flashgau", "flashgau.hf"):
        raise
    raise ImportError("this model's code is in the flashgau package, which is not installed: "
                      "pip install 'flashgau[hf]', then load the model again") from None


class FlashgauConfig(_FlashgauConfig):
    """flashgau.hf.FlashgauConfig, as named by this folder's auto_map."""

    def __init__(self, **kwargs):
        # its own __init__: transformers replaces a config subclass's missing one by its dataclass fields'
        super().__init__(**kwargs)
