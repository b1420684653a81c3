"""Errors the user caused (bad path, empty corpus, bad option, corrupt checkpoint...).

The command line prints their message as one line and exits non-zero; library callers can catch them.
Anything else that escapes is a bug and keeps its traceback.
"""


class FlashgauError(Exception):
    """Base class: a problem with the user's input, explained in one line."""


class CorpusError(FlashgauError):
    """No readable text at a path, an empty corpus, a corpus too small to split."""


class TokenizerError(FlashgauError):
    """Text the tokenizer cannot encode, or a saved tokenizer that cannot be read."""


class ConfigError(FlashgauError, ValueError):
    """An option that is out of range or inconsistent with another one (a ValueError too, so callers that catch
    ValueError for a bad ModelConfig keep working)."""


class CheckpointError(FlashgauError):
    """A missing, corrupt or incompatible checkpoint."""
