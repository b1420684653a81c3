"""Training, evaluation and use of language models: what `flashgau train | eval | sample | fill` call.

    from flashgau.training import TrainConfig, train, evaluate_checkpoint, load_trained, sample_text, fill_masks
    result = train(TrainConfig(arch="flash", preset="small", steps=1000, out="runs/mine"), device="auto")
    print(result.final.bits_per_byte)
    mlm = train(TrainConfig(objective="mlm", out="runs/mlm"))         # a bidirectional model, masked-token loss
    print(fill_masks(mlm.model, mlm.tokenizer, "To be, or n<mask>t to be").text)

Modules: config (TrainConfig), setup (the data and model of a run), state (a run's state: start, resume, the
checkpoint layout), init_from (starting from another run's weights), loop (train()), budget (fitting a run into a
time budget), compiling (--compile auto), trained (using a finished run), checkpoint (the file and the settings it
holds), run_folder, stopping (Ctrl-C and SIGTERM), optim, metrics, progress. Every objective's metric lives with
its task (flashgau.tasks).
"""

from ..tasks.mlm import FillResult, fill_masks
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .loop import TrainResult, train
from .trained import evaluate_checkpoint, load_trained, sample_text

__all__ = ["TrainConfig", "train", "TrainResult", "evaluate_checkpoint", "load_trained", "sample_text", "fill_masks",
           "FillResult", "load_checkpoint", "save_checkpoint"]
