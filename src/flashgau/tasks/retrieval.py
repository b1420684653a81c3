"""The retrieval tasks: passkey and multi-key recall over the plays (data/retrieval.py; docs/qa.md). A causal model
reads K facts "The key of the <key> is <value>." hidden in a window of a play and answers a question about one or
more of them with one token.

The objectives (`flashgau train --objective NAME`), one task each:

    passkey              one fact, asked after the text
    multikey4/16/64      K = 4, 16, 64 facts, QUERIES of them asked after the text, one line each
    <any of them>-first  the question before the text, "Answer: " and the value after it (one question)

Every example is exactly T inputs (the filler takes what the facts and questions leave), so there is no padding;
the labels are -100 but at the answers. K = 64 needs a context of about 2K byte tokens or more (a fact is about 27
bytes).

- Training: example i of the stream is drawn with its own generator, seeded with (the task, the run's seed, i),
  from the training documents with training keys; the stream's state is the number of examples
  drawn (exact resume); rank r of W processes takes examples r, r + W, ... of each step's share.
- Held-out: HELDOUT_EXAMPLES examples drawn with a fixed seed from the held-out documents with held-out keys: they
  depend on the held-out text, the tokenizer, T and the task, never on the run or the model.
- Score: the answer loss (teacher forcing; `loss`); the accuracy (`accuracy`): the value the model finds likeliest
  at each question (the argmax of its next-token logits over the 36 values) against the answer, in all and by
  distance between the fact and the question in chunks of the model's `chunk_size` (FLASH's C; for the other
  archs the preset's value, which a comparison should set alike): in the question's own chunk, 1-2 chunks back,
  3 back, 4 or more back; and `greedy`, the accuracy of the likeliest next token of all (greedy decoding's exact
  match; below the accuracy only while the model still writes other tokens after " is "). Beside them the floors
  on the same questions: a random value, the most frequent answer, and the value of a random fact of the
  example (data/retrieval.py: floors).

Shapes: B batch, T tokens, V vocabulary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..data import retrieval
from ..data.batching import IGNORE_INDEX, Batch, TokenDocuments, evenly_spaced, shared_batches
from ..data.run_data import RunData
from ..data.tokenizers import Tokenizer
from ..errors import ConfigError
from ..runtime import Distributed, Precision
from .base import ExampleStream, Score, Task, shared_logits

HELDOUT_EXAMPLES = 200
HELDOUT_SEED = 37
FLOOR_SEED = 0
QUERIES = 4                  # questions per example of the after form (at most K)
FACTS = (1, 4, 16, 64)       # K of the objectives


def filler_source(docs: TokenDocuments, side: str):
    """filler(rng, n): n consecutive tokens of one of `docs` (drawn in proportion to its length among those at
    least n long, at a random offset); a ValueError when none is long enough."""
    lengths = docs.lengths.tolist()

    def filler(rng: random.Random, n: int) -> list[int]:
        long_enough = [i for i, length in enumerate(lengths) if length >= n]
        if not long_enough:
            raise ValueError(f"no {side} document holds {n} tokens of filler; give a shorter context")
        doc = rng.choices(long_enough, weights=[lengths[i] for i in long_enough])[0]
        start = rng.randrange(lengths[doc] - n + 1)
        return docs.tokens(doc, start, start + n).tolist()

    return filler


def pack(examples: Sequence[retrieval.RetrievalExample]) -> Batch:
    """Examples (T + 1 ids each) as a Batch: inputs ids[:-1], labels -100 but at each answer."""
    inputs = torch.tensor([e.ids[:-1] for e in examples], dtype=torch.long)
    labels = torch.full_like(inputs, IGNORE_INDEX)
    for r, e in enumerate(examples):
        for q in e.queries:
            labels[r, q.answer_at - 1] = e.ids[q.answer_at]
    return Batch(inputs, labels)


class RetrievalStream(ExampleStream):
    """The training examples of a retrieval run (module docstring)."""

    def __init__(self, task: "RetrievalTask", docs: TokenDocuments, tokenizer: Tokenizer, context: int, seed: int, *,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__(rank=rank, world_size=world_size)
        self.task, self.context, self.seed = task, context, seed
        self.phrases = task.phrases(tokenizer)
        self.filler = filler_source(docs, "training")
        self.example(0)                                            # fails here, before training, if T cannot fit

    def example(self, i: int) -> retrieval.RetrievalExample:
        rng = random.Random(f"flashgau retrieval {self.task.name} training {self.seed} {i}")
        return self.task.make(rng, self.context, "train", self.phrases, self.filler)

    def batch(self, indices: list[int]) -> Batch:
        return pack([self.example(i) for i in indices])


@dataclass
class RetrievalScore(Score):
    loss: float                       # mean nats per answer (teacher forcing)
    accuracy: float                   # percent of questions whose likeliest value is the answer
    greedy: float                     # percent of questions whose likeliest next token (any) is the answer
    same_chunk: Optional[float]       # the same by distance (None: no question at that distance)
    near: Optional[float]             # 1-2 chunks back
    three_back: Optional[float]       # 3 chunks back
    far: Optional[float]              # 4 or more chunks back
    counts: list                      # questions in each of the four buckets
    floor_random: float               # a random value
    floor_frequent: float             # the most frequent answer, always
    floor_fact: float                 # the value of a random fact of the example
    chunk: int                        # the chunk length of the buckets (the model's chunk_size)
    facts: int                        # K
    form: str                         # "after" or "first"
    questions: int                    # questions scored
    windows: int                      # examples scored
    all_windows: bool = True

    RECORD = {"heldout_loss": "loss", "heldout_accuracy": "accuracy", "heldout_greedy": "greedy",
              "heldout_same_chunk": "same_chunk", "heldout_near": "near", "heldout_three_back": "three_back",
              "heldout_far": "far"}
    BRIEF = "answer loss {loss:.4f}, accuracy {accuracy:.1f} ({by_distance}), greedy {greedy:.1f}"
    HEADLINE = "{task}: accuracy {accuracy:.1f} ({by_distance}; greedy {greedy:.1f}; floors: {floors})"
    DESCRIBE = ("answer loss {loss:.4f} nats | accuracy {accuracy:.1f} | {by_distance} | greedy {greedy:.1f} | "
                "floors: {floors} "
                "({questions:,} questions in {windows:,} examples{subset})")
    REPORT = ("task: {task}\nanswer loss: {loss:.4f} nats\naccuracy (likeliest value): {accuracy:.2f}\n"
              "greedy (likeliest token): {greedy:.2f}\n"
              "by distance (chunks of {chunk} tokens): {by_distance}\n"
              "floors: {floors}\nquestions: {questions:,}  examples: {windows:,}")

    def by_distance(self) -> dict:
        """Accuracy (None: no question) and count of each distance bucket, by the bucket's name."""
        accs = (self.same_chunk, self.near, self.three_back, self.far)
        return {name: (acc, n) for name, acc, n in zip(retrieval.BUCKETS, accs, self.counts)}

    def metrics(self) -> dict:
        """Score.metrics, with `by_distance` (the buckets in words), `floors` (in words; the random fact's value
        only where K > 1: with one fact it is the answer) and `task` (K and the form)."""
        text = ", ".join(f"{name} {'-' if acc is None else f'{acc:.1f}'} (n={n})"
                         for name, (acc, n) in self.by_distance().items())
        form = "question first" if self.form == "first" else "question after"
        floors = f"random value {self.floor_random:.1f}, most frequent value {self.floor_frequent:.1f}"
        if self.facts > 1:
            floors += f", random fact's value {self.floor_fact:.1f}"
        return {**super().metrics(), "by_distance": text, "floors": floors, "task": f"K = {self.facts}, {form}"}


class RetrievalHeldout:
    """The fixed held-out examples of a retrieval task at context T."""

    def __init__(self, task: "RetrievalTask", examples: Sequence[retrieval.RetrievalExample],
                 phrases: retrieval.Phrases) -> None:
        self.task, self.examples, self.phrases = task, list(examples), phrases
        self.values = sorted(retrieval.VALUES)
        self.value_ids = torch.tensor([phrases.value_ids[v] for v in self.values])

    def __len__(self) -> int:
        return len(self.examples)

    def selection(self, limit: Optional[int] = None) -> torch.Tensor:
        return evenly_spaced(len(self), limit)

    def batches(self, batch_size: int, limit: Optional[int] = None, *, rank: int = 0, world_size: int = 1):
        for sel in shared_batches(self.selection(limit).tolist(), batch_size, rank, world_size):
            batch = pack([self.examples[j] for j in sel])
            batch.index = torch.tensor(sel, dtype=torch.long)
            yield batch

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, *, batch_size: int = 8, precision: Optional[Precision] = None,
                 limit: Optional[int] = None, dist: Optional[Distributed] = None) -> RetrievalScore:
        dist = dist if dist is not None else Distributed()
        chunk = int(model.config.chunk_size)
        nats, count = 0.0, 0
        right, greedy = [0] * len(retrieval.BUCKETS), 0
        asked = [0] * len(retrieval.BUCKETS)

        def batches(rank: int, world_size: int):
            return self.batches(batch_size, limit, rank=rank, world_size=world_size)

        for batch, logits in shared_logits(model, self, batches, batch_size, limit, precision, dist):
            scored = batch.labels != IGNORE_INDEX
            nats += float(F.cross_entropy(logits[scored], batch.labels[scored], reduction="sum"))
            best = logits.argmax(-1)
            chosen = logits[..., self.value_ids.to(logits.device)].argmax(-1)
            count += batch.labels.shape[0]
            for r, j in enumerate(batch.index.tolist()):
                for q in self.examples[j].queries:
                    b = retrieval.BUCKETS.index(retrieval.bucket(q, chunk))
                    asked[b] += 1
                    right[b] += self.values[int(chosen[r, q.answer_at - 1])] == q.value
                    greedy += self.phrases.value_of.get(int(best[r, q.answer_at - 1])) == q.value
        sums = dist.sum([nats, count, greedy, *right, *asked])
        nats, count, greedy = sums[0], int(sums[1]), int(sums[2])
        right, asked = [int(x) for x in sums[3:3 + len(right)]], [int(x) for x in sums[3 + len(right):]]
        questions = sum(asked)
        index = self.selection(limit).tolist()
        floors = retrieval.floors([self.examples[j] for j in index], seed=FLOOR_SEED)
        accs = [100 * r / n if n else None for r, n in zip(right, asked)]
        spec = self.task.spec
        return RetrievalScore(loss=nats / max(questions, 1), accuracy=100 * sum(right) / max(questions, 1),
                              greedy=100 * greedy / max(questions, 1),
                              same_chunk=accs[0], near=accs[1], three_back=accs[2], far=accs[3], counts=asked,
                              floor_random=floors["random_value"], floor_frequent=floors["most_frequent_value"],
                              floor_fact=floors["random_fact"], chunk=chunk, facts=spec.facts, form=spec.form,
                              questions=questions, windows=count,
                              all_windows=limit is None or limit >= len(self))


class RetrievalTask(Task):
    """One retrieval objective: K facts, asked after the text or before it (module docstring)."""

    causal = True
    generates = False
    no_sample = "(it answers with one token): leave sample_tokens at 0"

    def __init__(self, facts: int, form: str) -> None:
        self.spec = retrieval.RetrievalSpec(facts, min(facts, QUERIES) if form == "after" else 1, form)
        self.name = ("passkey" if facts == 1 else f"multikey{facts}") + ("-first" if form == "first" else "")
        where = "before the text" if form == "first" else "after the text"
        self.describe = (f"retrieval, {'one fact' if facts == 1 else f'{facts} facts'} in a play, the question "
                         f"{where}: loss and accuracy of the one-token answer, by distance")

    def phrases(self, tokenizer: Tokenizer) -> retrieval.Phrases:
        try:
            return retrieval.Phrases(tokenizer)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def make(self, rng: random.Random, context: int, side: str, phrases: retrieval.Phrases,
             filler) -> retrieval.RetrievalExample:
        try:
            return retrieval.make_example(rng, self.spec, context, side, phrases, filler)
        except ValueError as err:
            raise ConfigError(f"the {self.name} task at context {context}: {err}") from None

    def training_stream(self, data: RunData, *, context: int, seed: int, pack_documents: bool = False,
                        rank: int = 0, world_size: int = 1) -> RetrievalStream:
        return RetrievalStream(self, data.train_docs, data.tokenizer, context, seed, rank=rank,
                               world_size=world_size)

    def heldout(self, docs: TokenDocuments, tokenizer: Tokenizer, context: int) -> RetrievalHeldout:
        phrases = self.phrases(tokenizer)
        filler = filler_source(docs, "held-out")
        rng = random.Random(f"flashgau retrieval {self.name} held-out {HELDOUT_SEED}")
        return RetrievalHeldout(self, [self.make(rng, context, "heldout", phrases, filler)
                                       for _ in range(HELDOUT_EXAMPLES)], phrases)


TASKS = tuple(RetrievalTask(k, form) for form in retrieval.FORMS for k in FACTS)
