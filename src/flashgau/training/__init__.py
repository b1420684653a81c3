"""Training, evaluation and use of language models: what `flashgau train | eval | sample | fill` call.

    from flashgau.training import TrainConfig, train, evaluate_checkpoint, load_trained, sample_text, fill_masks
    result = train(TrainConfig(arch="flash", preset="small", steps=1000, out="runs/mine"), device="auto")
    print(result.final.bits_per_byte)
    mlm = train(TrainConfig(objective="mlm", out="runs/mlm"))         # a bidirectional model, masked-token loss
    print(fill_masks(mlm.model, mlm.tokenizer, "To be, or n<mask>t to be").text)

Modules: config (TrainConfig), state (a run's state: start, resume, the checkpoint layout), loop (train()),
budget (fitting a run into a time budget), evaluate (held-out scoring of LM; every objective's metric lives with
its task in flashgau.tasks), trained (using a finished run),
checkpoint (the file), optim, metrics, progress, setup (data and model of a run).
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluate import EvalResult, evaluate
from .trained import FillResult, evaluate_checkpoint, fill_masks, load_trained, sample_text
from .loop import TrainResult, train

__all__ = ["TrainConfig", "train", "TrainResult", "evaluate", "EvalResult", "evaluate_checkpoint", "load_trained",
           "sample_text", "fill_masks", "FillResult", "load_checkpoint", "save_checkpoint"]
