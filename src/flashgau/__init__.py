"""flashgau: FLASH ("Transformer Quality in Linear Time", Hua et al., ICML 2022) in PyTorch.

Not FlashAttention: FLASH is a model architecture (the Gated Attention Unit with mixed chunk attention).
"""

from .config import ARCHS, ModelConfig
from .generation import DecodeState
from .model import LanguageModel, LMOutput

__all__ = ["ARCHS", "DecodeState", "ModelConfig", "LanguageModel", "LMOutput"]
__version__ = "0.1.0"
