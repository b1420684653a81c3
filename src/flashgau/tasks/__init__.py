"""What a run learns: one Task per objective (base.py says what a task supplies). The training loop serves every
objective; the task supplies the model's direction, the tokenizer, the training batches, the fixed held-out set and
its metric.

    lm    language modelling (lm.py): causal, next-token loss, bits per byte
    mlm   masked language modelling (mlm.py): bidirectional, BERT corruption, masked-token loss and accuracy
    qa    question answering, who speaks this line (qa.py): causal, loss on the answer tokens, exact match and F1 of
          greedy answers; usually fine-tuned from a language model (--init-from)
    passkey, multikey4/16/64 (and each with -first)
          retrieval (retrieval.py): K facts "The key of the <key> is <value>." in a play, a question after the text
          (or before it: -first), loss and accuracy of the one-token answer by distance

    from flashgau.tasks import get_task
    task = get_task("mlm")              # task.causal is False; task.tokenizer(ByteTokenizer()).vocab_size == 257
"""

from ..errors import ConfigError
from .base import HeldoutSet, Score, Task, TrainingStream
from .lm import LMTask
from .mlm import MLMTask
from .qa import QATask
from .retrieval import RetrievalTask
from .retrieval import TASKS as RETRIEVAL_TASKS

TASKS: dict[str, Task] = {task.name: task for task in (LMTask(), MLMTask(), QATask(), *RETRIEVAL_TASKS)}
OBJECTIVES = tuple(TASKS)


def get_task(objective: str) -> Task:
    """The task of an objective name ("lm", "mlm", "qa", "passkey", ...); a ConfigError naming the choices otherwise."""
    try:
        return TASKS[objective]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}") from None


__all__ = ["TASKS", "OBJECTIVES", "get_task", "Task", "TrainingStream", "HeldoutSet", "Score", "LMTask", "MLMTask",
           "QATask", "RetrievalTask"]
