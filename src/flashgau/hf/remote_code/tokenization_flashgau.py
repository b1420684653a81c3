"""FlashgauByteTokenizer and FlashgauBPETokenizer for transformers' remote-code loading (see
flashgau.hf.remote_code): flashgau's own tokenizer classes, from the installed flashgau package."""

try:
    from flashgau.hf.tokenization import FlashgauBPETokenizer as _FlashgauBPETokenizer
    from flashgau.hf.tokenization import FlashgauByteTokenizer as _FlashgauByteTokenizer
except ModuleNotFoundError as err:
    if err.name not in ("flashgau", "flashgau.hf"):
        raise
    raise ImportError("this model's code is in the flashgau package, which is not installed: "
                      "pip install 'flashgau[hf]', then load the model again") from None


class FlashgauByteTokenizer(_FlashgauByteTokenizer):
    """flashgau.hf.FlashgauByteTokenizer, as named by this folder's auto_map."""


class FlashgauBPETokenizer(_FlashgauBPETokenizer):
    """flashgau.hf.FlashgauBPETokenizer, as named by this folder's auto_map."""
