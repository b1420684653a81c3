"""What every task supplies, and the pieces their evaluations share.

A task is what a run learns. The training loop (training/loop.py), the run state (training/state.py) and the run
settings (training/config.py) know nothing of any objective: they ask the run's task for

    task.causal                       the model's direction (a causal LM, or a bidirectional encoder)
    task.generates                    whether the end-of-run sample (text continued from a prompt) makes sense
    task.tokenizer(data_tokenizer)    the run's tokenizer, from the data's (MLM: + the mask token)
    task.check_settings(sample_tokens=)
                                      a ConfigError for run settings the objective cannot serve
    task.training_stream(data, context=, seed=, pack_documents=, rank=, world_size=)
                                      a TrainingStream drawn from the run's data (data/run_data.py): next_batch(n) ->
                                      Batch (input_ids, labels with -100 where nothing is scored, attention_mask),
                                      state_dict() / load_state_dict() (saved in the checkpoint as "sampler":
                                      resume is exact)
    task.heldout(docs, tokenizer, context)
                                      a HeldoutSet: len() units (windows, examples) and evaluate(model, *,
                                      batch_size, precision, limit, dist) -> Score, on fixed units (limit: a fixed,
                                      evenly spaced subset) that do not depend on the model, the run or its seed;
                                      with dist (several processes) each scores its share and the sums are reduced

The loss of a training batch is the model's own: mean cross-entropy over the labels that are not -100 (every
micro-batch weighted by its count of scored labels). A Score carries `loss` (what the curves, the plots and the
quality benchmark compare), `windows` (units scored) and the task's own metric; it says itself what it is
(record, brief, headline, describe, report, all written from its `metrics()`), so no caller needs to know which
task made it.

A new task is one more module with one Task subclass and one entry in tasks.TASKS; nothing in the loop changes. The
QA task (qa.py: labels on the answer tokens only, scored by generating the answer greedily, EM / F1) is one.
Shapes: B batch, T tokens, V vocabulary.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from typing import Callable, ClassVar, Iterable, Iterator, Optional, Protocol

import torch

from ..data.batching import Batch, HeldoutWindows, TokenDocuments
from ..data.run_data import RunData
from ..data.tokenizers import Tokenizer
from ..errors import ConfigError
from ..runtime import Distributed, Precision


class TrainingStream(Protocol):
    def next_batch(self, batch_size: int) -> Batch: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class ExampleStream:
    """A training stream of generated examples numbered 0, 1, ... in the run's one order: of a step's batch of B
    per process, process `rank` of `world_size` takes every world_size-th, so N processes draw what one would.
    Subclasses give `batch(indices)`; the state a checkpoint keeps is how many examples were drawn."""

    def __init__(self, *, rank: int = 0, world_size: int = 1) -> None:
        self.rank, self.world_size = rank, world_size
        self.drawn = 0                       # examples of the run's one stream drawn so far (all processes)

    def batch(self, indices: list[int]) -> Batch:
        raise NotImplementedError

    def next_batch(self, batch_size: int) -> Batch:
        W = self.world_size
        indices = [self.drawn + j * W + self.rank for j in range(batch_size)]
        self.drawn += batch_size * W
        return self.batch(indices)

    def state_dict(self) -> dict:
        return {"examples_drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        drawn = state["examples_drawn"]
        if not isinstance(drawn, int) or isinstance(drawn, bool) or drawn < 0:
            raise ValueError(f"examples_drawn is {drawn!r}")
        self.drawn = drawn


class Score:
    """A held-out score: each task's is a dataclass of its figures, and its class says how they are written, in
    format strings over `metrics()`; every view is then written alike for every task."""

    loss: float            # mean nats per scored token: the number every curve and comparison uses
    windows: int           # units scored
    all_windows: bool      # False: a fixed subset of the held-out set

    RECORD: ClassVar[dict[str, str]]    # a held-out record's fields in metrics.jsonl ("heldout_loss", ...): metric
    BRIEF: ClassVar[str]                # a periodic check's line, after "held-out "
    HEADLINE: ClassVar[str]             # the one line `flashgau train` ends with, after "held-out "
    DESCRIBE: ClassVar[str]             # the final score, in full, on one line, after "held-out "
    REPORT: ClassVar[str]               # what `flashgau eval` prints, one figure per line

    def metrics(self) -> dict:
        """The figures by name (the dataclass's fields), and `subset`: what a fixed subset of the held-out set adds
        to a description."""
        return {**asdict(self), "subset": "" if self.all_windows else ", a fixed subset of the held-out set"}

    def to_dict(self) -> dict:
        return asdict(self)

    def record(self) -> dict:
        metrics = self.metrics()
        return {name: metrics[metric] for name, metric in self.RECORD.items()}

    def brief(self) -> str:
        return "held-out " + self.BRIEF.format_map(self.metrics())

    def headline(self) -> str:
        return "held-out " + self.HEADLINE.format_map(self.metrics())

    def describe(self) -> str:
        return "held-out " + self.DESCRIBE.format_map(self.metrics())

    def report(self) -> str:
        return self.REPORT.format_map(self.metrics())


class HeldoutSet(Protocol):
    def __len__(self) -> int: ...
    def evaluate(self, model: torch.nn.Module, *, batch_size: int = 8, precision: Optional[Precision] = None,
                 limit: Optional[int] = None, dist: Optional[Distributed] = None) -> Score: ...


class Task:
    """What one objective supplies (see the module docstring). Instances hold no state: one per objective."""

    name: ClassVar[str]
    causal: ClassVar[bool]
    generates: ClassVar[bool]
    describe: ClassVar[str]
    no_sample: ClassVar[str] = ""      # a task that does not generate: why it writes no sample, and what to do

    def check_settings(self, *, sample_tokens: int) -> None:
        """A ConfigError for run settings this objective cannot serve: an end-of-run sample of a task that does not
        generate."""
        if sample_tokens and not self.generates:
            raise ConfigError(f"objective {self.name} writes no sample {self.no_sample}")

    def tokenizer(self, data_tokenizer: Tokenizer) -> Tokenizer:
        """The run's tokenizer, made from the data's (what the checkpoint stores; its vocabulary sizes the model)."""
        return data_tokenizer

    def training_stream(self, data: RunData, *, context: int, seed: int, pack_documents: bool = False,
                        rank: int = 0, world_size: int = 1) -> TrainingStream:
        """This process's share (rank of world_size) of the run's training batches: windows of `context` tokens
        drawn from `data` with `seed`, crossing document boundaries when `pack_documents`."""
        raise NotImplementedError

    def heldout(self, docs: TokenDocuments, tokenizer: Tokenizer, context: int) -> HeldoutSet:
        raise NotImplementedError


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """The model in eval mode, without gradients; its training mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def scored_logits(model: torch.nn.Module, batches: Iterable[Batch],
                  precision: Optional[Precision]) -> Iterator[tuple[Batch, torch.Tensor]]:
    """(batch, fp32 logits (B, T, V)) for each batch, run on the device of the model's parameters in `precision`
    (None: the model's own dtype, no autocast), the model in eval mode meanwhile."""
    device = next(model.parameters(), torch.empty(0)).device
    with eval_mode(model):
        for batch in batches:
            batch = batch.to(device)
            with precision.autocast() if precision is not None else contextlib.nullcontext():
                packed = {} if batch.segment_ids is None else {"segment_ids": batch.segment_ids}
                out = model(batch.input_ids, attention_mask=batch.attention_mask, **packed)
            yield batch, out.logits.float()


def shared_logits(model: torch.nn.Module, windows: HeldoutWindows, batches: Callable[[int, int], Iterable[Batch]],
                  batch_size: int, limit: Optional[int], precision: Optional[Precision],
                  dist: Distributed) -> Iterator[tuple[Batch, torch.Tensor]]:
    """scored_logits of this process's share of the held-out batches (`batches(rank, world_size)`: batches rank,
    rank + world_size, ... of the ones one process would score). A sharded (FSDP) model's forward is a collective:
    a process with fewer batches than the others runs its first one again, unscored, until all ran as many."""
    mine = 0
    for batch, logits in scored_logits(model, batches(dist.rank, dist.world_size), precision):
        mine += 1
        yield batch, logits
    if dist.fsdp:
        total = -(-len(windows.selection(limit)) // batch_size)
        extra = -(-total // dist.world_size) - mine
        if extra > 0:
            idle = next(iter(batches(0, 1)))
            for _ in scored_logits(model, [idle] * extra, precision):
                pass

