"""Helpers of the Hugging Face tests: the sharpened tiny models of tests/models (model_helpers) and their HF face."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))

from model_helpers import VOCAB, build_model, tokens  # noqa: E402,F401

NEEDS_HF = "transformers is not installed (pip install 'flashgau[hf]')"


def hf_causal(model, **config):
    """The HF causal model around a flashgau LanguageModel (weights shared), in eval mode."""
    from flashgau.hf import FlashgauForCausalLM

    return FlashgauForCausalLM.from_language_model(model, **{"pad_token_id": 0, **config}).eval()

# `flashgau train` options of a run that takes seconds: the tiny preset, 4 steps of 4 windows of 32 tokens
TINY_RUN = ["--preset", "tiny", "--context", "32", "--batch-tokens", "128", "--lr", "1e-2", "--precision", "fp32",
            "--eval-windows", "4", "--no-progress", "--sample-tokens", "0", "--steps", "4"]
