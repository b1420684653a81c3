"""Training, evaluation and sampling of language models: what `flashgau train | eval | sample` call.

    from flashgau.training import TrainConfig, train, evaluate_checkpoint, load_trained, sample_text
    result = train(TrainConfig(arch="flash", preset="small", steps=1000, out="runs/mine"), device="auto")
    print(result.final.bits_per_byte)

Modules: config (TrainConfig), state (a run's state: start, resume, the checkpoint layout), loop (train()),
budget (fitting a run into a time budget), evaluate (held-out scoring), trained (using a finished run),
checkpoint (the file), optim, metrics, progress, setup (data and model of a run).
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluate import EvalResult, evaluate
from .trained import evaluate_checkpoint, load_trained, sample_text
from .loop import TrainResult, train

__all__ = ["TrainConfig", "train", "TrainResult", "evaluate", "EvalResult", "evaluate_checkpoint", "load_trained",
           "sample_text", "load_checkpoint", "save_checkpoint"]
