"""flashgau: FLASH ("Transformer Quality in Linear Time", Hua et al., ICML 2022) in PyTorch.

Not FlashAttention: FLASH is a model architecture (the Gated Attention Unit with mixed chunk attention).

The public API, loaded on first use (so `import flashgau` does not wait for torch; the command imports it while
holding a Ctrl-C, cli.main):
ModelConfig, ARCHS, LanguageModel, LMOutput, DecodeState.
"""

import importlib

__version__ = "0.3.0"
__all__ = ["ARCHS", "DecodeState", "ModelConfig", "LanguageModel", "LMOutput"]
_HOME = {"ARCHS": "config", "ModelConfig": "config", "DecodeState": "generation", "LanguageModel": "model",
         "LMOutput": "model"}


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flashgau' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
