"""Held-out evaluation of a language model: loss per token, bits per byte and perplexity on fixed windows.

The metric lives with its task (tasks/lm.py; the masked-LM one in tasks/mlm.py); this module keeps its old name."""

from ..tasks.lm import EvalResult, evaluate

__all__ = ["EvalResult", "evaluate"]
