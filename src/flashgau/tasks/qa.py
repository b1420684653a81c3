"""The question-answering task (`--objective qa`): who speaks this line? flashgau's stand-in for the paper's TriviaQA
fine-tuning, built from the plays of the run's data (data/qa.py; docs/qa.md). A causal model; usually started from a
pre-trained language model (`flashgau train --objective qa --init-from RUN`).

An example is tokenized as prompt + target: the question and a line break, the window of the play, a line break and
"Answer: ", then the answer (the speaker tag) and a line break, which ends the answer. The model's inputs are all
but the last token and its labels the next tokens, as in language modelling, with -100 everywhere but on the
target's tokens: the loss counts the answer tokens (and the line break that ends it) only. Each example is padded
on the right to the run's context T. The window of the play gets what T leaves after the question and the answer:
about (T x characters per token x 0.95 - RESERVE_CHARS) characters, the characters per token measured on the
first 50,000 characters of the documents with the run's tokenizer; an example that still does not fit (a long
question) loses tokens from the left of the window, never from the question or the answer (`truncated` counts them
in the score).

- Training: the plays are decoded from the run's token documents into memory once (the task is made for corpora
  of plays, a few MB). Example i of the stream is drawn from the training plays (the training side of the split) by a
  generator seeded with (the run's seed, i); the stream's state is the number of examples drawn, saved in the
  checkpoint, so a resumed run sees exactly the examples an uninterrupted one would. Several processes (rank r of
  W) take examples r, r + W, ... of each step's share.
- Held-out: HELDOUT_EXAMPLES examples from the held-out side only, drawn with HELDOUT_SEED: they depend on the
  held-out text, the tokenizer and T, never on the run, its seed or the model.
- Score: the answer-token loss (teacher forcing; `loss`, what the curves compare), and the exact match and token
  F1 (percent) of the answers the model writes itself: greedy decoding of the prompt with flashgau's decoder
  (generation.py: prefill, then one token per step from the decoding state) up to the first line break; and the
  choice accuracy (percent): each distinct speaker tag of the window scored by the model's log-likelihood of the
  tag and its line break after the prompt (one forward pass over prompt + tag per tag), the likeliest one taken as
  the answer and compared as EM compares. Greedy EM reads 0 for a model that writes a name of its own; the choice
  still ranks such models against each other and against the floors. Beside them the two floors on the same
  examples: always the window's most frequent speaker, and a random speaker of the window. With several processes
  the teacher-forced batches are shared out as for LM (shared_logits), the examples to generate and to choose for
  split by rank, and the counts summed.

Shapes: B batch, T tokens, V vocabulary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..data import qa
from ..data.batching import IGNORE_INDEX, Batch, TokenDocuments, evenly_spaced, shared_batches
from ..data.run_data import RunData
from ..data.tokenizers import Tokenizer
from ..errors import ConfigError
from ..runtime import Distributed, Precision
from .base import ExampleStream, Score, Task, eval_mode, shared_logits

HELDOUT_EXAMPLES = 200      # the fixed held-out set
HELDOUT_SEED = 15           # its examples are drawn with this seed
FLOOR_SEED = 0              # the random-speaker floor's draws
RESERVE_CHARS = 160         # characters of a context T left for the question, "Answer: " and the answer
MIN_WINDOW_CHARS = 256      # a shorter window holds too few speeches to ask about
MEASURE_CHARS = 50_000      # characters per token measured on this much of the documents
SAMPLES = 5                 # answers shown beside the score (this process's first ones)
ANSWER_SLACK = 8            # greedy decoding writes at most the longest held-out answer + this many tokens


# ------------------------------------------------------------------------------------------------ examples

@dataclass(frozen=True)
class TextDocument:
    name: str
    text: str


def decoded(docs: TokenDocuments, tokenizer: Tokenizer, names: Optional[Sequence[str]] = None) -> list[TextDocument]:
    """The text of each token document (the plays of a side of the run's split)."""
    return [TextDocument(names[i] if names is not None and i < len(names) else f"document {i}",
                         tokenizer.decode(docs.tokens(i).tolist())) for i in range(len(docs))]


def window_chars(context: int, tokenizer: Tokenizer, documents: Sequence[TextDocument]) -> int:
    """Characters of play per example at context T (module docstring); a ConfigError when T is too short."""
    sample = ""
    for doc in documents:
        sample += doc.text[:MEASURE_CHARS - len(sample)]
        if len(sample) >= MEASURE_CHARS:
            break
    ratio = len(sample) / max(1, len(tokenizer.encode(sample))) if sample else 1.0
    chars = int(context * ratio * 0.95) - RESERVE_CHARS
    if chars < MIN_WINDOW_CHARS:
        need = math.ceil((MIN_WINDOW_CHARS + RESERVE_CHARS) / (0.95 * ratio))
        raise ConfigError(f"the QA task needs a longer context: {context} tokens leave {max(chars, 0)} characters "
                          f"for the play's window (at least {MIN_WINDOW_CHARS}); give --context {need} or more")
    return chars


def plays_of(documents: Sequence[TextDocument], side: str) -> qa.Plays:
    try:
        return qa.Plays(documents)
    except ValueError:
        raise ConfigError(f"the QA task needs plays (speaker tags on their own line before each speech) among the "
                          f"{side} documents, and found none; train it on the default corpus or on plays") from None


@dataclass(frozen=True)
class Encoded:
    """An example's token ids: the prompt (question, window, "Answer: ") and the target (answer, line break)."""

    prompt: list[int]
    target: list[int]
    truncated: bool          # the window lost tokens on its left to fit T


def encode_example(example: qa.QAExample, tokenizer: Tokenizer, context: int) -> Encoded:
    """The example's prompt and target ids, the window cut on its left so that prompt + target - 1 <= T."""
    question = tokenizer.encode(example.question + "\n")
    window = tokenizer.encode(example.context)
    prefix = tokenizer.encode("\n" + qa.ANSWER_PREFIX)
    target = tokenizer.encode(example.target)
    over = len(question) + len(window) + len(prefix) + len(target) - 1 - context
    if over > 0:
        if over >= len(window):
            raise ConfigError(f"a QA example's question and answer alone exceed the context {context}; give a longer "
                              "--context")
        window = window[over:]
    return Encoded(question + window + prefix, target, over > 0)


@dataclass(frozen=True)
class Choices:
    """What the choice score picks an example's answer among: the distinct speaker tags of its window (sorted), each
    as the ids of the tag and its line break, and the prompt they are scored after: the example's own, its window
    cut further on the left when the longest tag would not fit in T (the same prompt for every tag)."""

    prompt: list[int]
    tags: tuple[str, ...]
    ids: tuple[list[int], ...]


def choices_of(example: qa.QAExample, encoded: Encoded, tokenizer: Tokenizer, context: int) -> Choices:
    """The Choices of an example encoded for context T (`encoded`: encode_example's)."""
    tags = tuple(sorted(set(example.speakers)))
    ids = tuple(tokenizer.encode(f"{tag}\n") for tag in tags)
    longest = max(range(len(tags)), key=lambda k: len(ids[k]))
    prompt = encoded.prompt
    if len(prompt) + len(ids[longest]) - 1 > context:
        prompt = encode_example(dataclasses.replace(example, answer=tags[longest]), tokenizer, context).prompt
    return Choices(prompt, tags, ids)


def pack(encoded: Sequence[Encoded], context: int) -> Batch:
    """Examples as a Batch of T inputs each (right-padded), labels -100 but on the target's tokens."""
    n = len(encoded)
    inputs = torch.zeros(n, context, dtype=torch.long)
    labels = torch.full((n, context), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(n, context, dtype=torch.bool)
    for r, e in enumerate(encoded):
        seq = e.prompt + e.target
        length = len(seq) - 1
        inputs[r, :length] = torch.tensor(seq[:-1])
        labels[r, len(e.prompt) - 1:length] = torch.tensor(e.target)
        mask[r, :length] = True
    return Batch(inputs, labels, None if bool(mask.all()) else mask)


# ------------------------------------------------------------------------------------------------ training

class QAStream(ExampleStream):
    """The training examples of a QA run (module docstring): example i drawn by its own seeded generator."""

    def __init__(self, plays: qa.Plays, tokenizer: Tokenizer, context: int, chars: int, seed: int, *,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__(rank=rank, world_size=world_size)
        self.plays, self.tokenizer, self.context, self.chars, self.seed = plays, tokenizer, context, chars, seed

    def example(self, i: int) -> qa.QAExample:
        return self.plays.example(random.Random(f"flashgau qa training {self.seed} {i}"), self.chars)

    def batch(self, indices: list[int]) -> Batch:
        return pack([encode_example(self.example(i), self.tokenizer, self.context) for i in indices], self.context)


# ------------------------------------------------------------------------------------------------ held-out

@dataclass
class QAEvalResult(Score):
    loss: float                  # mean nats per answer token (teacher forcing)
    exact_match: float           # percent of examples whose greedy answer is the tag (qa.exact_match)
    f1: float                    # mean token F1, percent
    choice: float                # percent of examples whose likeliest speaker of the window is the tag (EM's way)
    floor_frequent_em: float     # always the window's most frequent speaker
    floor_frequent_f1: float
    floor_random_em: float       # a random speaker of the window
    floor_random_f1: float
    perplexity: float            # exp(loss), per answer token
    tokens: int                  # answer tokens scored
    windows: int                 # examples scored
    truncated: int               # of them, examples whose window lost tokens on its left
    all_windows: bool = True
    samples: list = field(default_factory=list)   # the first SAMPLES scored: {answer, predicted, chosen, speakers}

    RECORD = {"heldout_loss": "loss", "heldout_exact_match": "exact_match", "heldout_f1": "f1",
              "heldout_choice": "choice"}
    BRIEF = "answer loss {loss:.4f}, EM {exact_match:.1f}, F1 {f1:.1f}, choice {choice:.1f}"
    HEADLINE = ("QA: EM {exact_match:.1f} F1 {f1:.1f} choice {choice:.1f} (floors: most frequent speaker EM "
                "{floor_frequent_em:.1f} F1 {floor_frequent_f1:.1f}, random speaker EM {floor_random_em:.1f} F1 "
                "{floor_random_f1:.1f})")
    DESCRIBE = ("answer loss {loss:.4f} nats/token | exact match {exact_match:.1f} | F1 {f1:.1f} | choice "
                "{choice:.1f} | floors: most frequent speaker EM {floor_frequent_em:.1f} F1 {floor_frequent_f1:.1f}, "
                "random speaker EM {floor_random_em:.1f} F1 {floor_random_f1:.1f} ({windows:,} examples, "
                "{tokens:,} answer tokens{subset})")
    REPORT = ("answer loss: {loss:.4f} nats/token\nexact match: {exact_match:.2f}\nF1: {f1:.2f}\n"
              "choice (likeliest speaker of the window): {choice:.2f}\n"
              "floor, most frequent speaker: EM {floor_frequent_em:.2f}  F1 {floor_frequent_f1:.2f}\n"
              "floor, random speaker: EM {floor_random_em:.2f}  F1 {floor_random_f1:.2f}\n"
              "examples: {windows:,}  answer tokens: {tokens:,}  truncated windows: {truncated:,}{sample_lines}")

    def metrics(self) -> dict:
        """Score.metrics, and `sample_lines`: the answers of the first examples, one line each."""
        return {**super().metrics(), "sample_lines": "".join(
            f"\n  answer {x['answer']!r}, written {x['predicted']!r}, chosen {x['chosen']!r}" for x in self.samples)}


class QAHeldout:
    """The fixed held-out examples of a QA run, encoded for context T (module docstring)."""

    def __init__(self, examples: Sequence[qa.QAExample], tokenizer: Tokenizer, context: int) -> None:
        self.examples = list(examples)
        self.tokenizer, self.context = tokenizer, context
        self.encoded = [encode_example(e, tokenizer, context) for e in self.examples]
        self.choices = [choices_of(e, enc, tokenizer, context) for e, enc in zip(self.examples, self.encoded)]
        newline = tokenizer.encode("\n")
        self.newline = newline[0] if len(newline) == 1 else None     # stops decoding where the answer ends
        self.max_new = max(len(e.target) for e in self.encoded) + ANSWER_SLACK
        self.longest_prompt = max(len(e.prompt) for e in self.encoded)

    def __len__(self) -> int:
        return len(self.examples)

    def selection(self, limit: Optional[int] = None) -> torch.Tensor:
        """The numbers of the examples scored: all, or with `limit` an evenly spaced fixed subset of them."""
        return evenly_spaced(len(self), limit)

    def batches(self, batch_size: int, limit: Optional[int] = None, *, rank: int = 0, world_size: int = 1):
        """Teacher-forced batches of `selection(limit)`; process `rank` of `world_size` takes batches rank,
        rank + world_size, ..."""
        for sel in shared_batches(self.selection(limit).tolist(), batch_size, rank, world_size):
            batch = pack([self.encoded[j] for j in sel], self.context)
            batch.index = torch.tensor(sel, dtype=torch.long)
            yield batch

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, index: Sequence[int], *, batch_size: int = 8,
                precision: Optional[Precision] = None, stop_early: bool = True) -> list[str]:
        """The answers `model` writes to examples `index`: greedy decoding of each prompt (generation.generate: a
        prefill, then one token per step from the decoding state), cut at the first line break. Every batch decodes
        the same number of steps, unless `stop_early` ends it when each of its rows has written a line break."""
        device = next(model.parameters()).device
        answers = []
        for start in range(0, len(index), batch_size):
            prompts = [self.encoded[j].prompt for j in index[start:start + batch_size]]
            width = max(len(p) for p in prompts)
            ids = torch.zeros(len(prompts), width, dtype=torch.long)
            mask = torch.zeros(len(prompts), width, dtype=torch.bool)
            for r, p in enumerate(prompts):
                ids[r, :len(p)] = torch.tensor(p)
                mask[r, :len(p)] = True
            new = max(0, min(self.max_new, model.config.max_seq_len - self.longest_prompt))
            with precision.autocast() if precision is not None else contextlib.nullcontext():
                out = model.generate(ids.to(device), new, temperature=0,
                                     eos_token_id=self.newline if stop_early else None,
                                     attention_mask=mask.to(device))
            for r, p in enumerate(prompts):
                text = self.tokenizer.decode(out[r, len(p):len(p) + new].tolist())
                answers.append(text.split("\n")[0])
        return answers

    @torch.no_grad()
    def likelihoods(self, model: torch.nn.Module, index: Sequence[int], *, batch_size: int = 8,
                    precision: Optional[Precision] = None) -> list[list[float]]:
        """For each example of `index`, the log-likelihood (nats) `model` gives each of its choices (Choices: a
        speaker tag and its line break) after the choices' prompt: one forward pass over prompt + tag per tag,
        `batch_size` of them per pass."""
        rows = self.choice_rows(index)
        scores = {j: [0.0] * len(self.choices[j].tags) for j in index}
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            for (j, k), nats in zip(part, self._choice_pass(model, part, precision)):
                scores[j][k] = nats
        return [scores[j] for j in index]

    def choose(self, model: torch.nn.Module, index: Sequence[int], *, batch_size: int = 8,
               precision: Optional[Precision] = None) -> list[str]:
        """The tag `model` chooses for each example of `index`: the likeliest of its choices (the first in sorted
        order on a tie)."""
        return [self.choices[j].tags[max(range(len(s)), key=s.__getitem__)]
                for j, s in zip(index, self.likelihoods(model, index, batch_size=batch_size, precision=precision))]

    def choice_rows(self, index: Sequence[int]) -> list[tuple[int, int]]:
        """(example, choice) of every choice of the examples `index`, in order: one sequence each."""
        return [(j, k) for j in index for k in range(len(self.choices[j].tags))]

    def _choice_pass(self, model: torch.nn.Module, rows: Sequence[tuple[int, int]],
                     precision: Optional[Precision]) -> list[float]:
        """One forward pass over prompt + tag of each (example, choice) of `rows`, packed as training examples are
        (pack: right padded, labels on the tag's tokens); the summed log-probabilities of each tag's tokens."""
        device = next(model.parameters()).device
        encoded = [Encoded(self.choices[j].prompt, self.choices[j].ids[k], False) for j, k in rows]
        batch = pack(encoded, max(len(e.prompt) + len(e.target) - 1 for e in encoded))
        mask = None if batch.attention_mask is None else batch.attention_mask.to(device)
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            logits = model(batch.input_ids.to(device), attention_mask=mask).logits
        nats = F.cross_entropy(logits.float().transpose(1, 2), batch.labels.to(device), reduction="none",
                               ignore_index=IGNORE_INDEX)                     # 0 where a label is ignored
        return (-nats.sum(1)).tolist()

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, *, batch_size: int = 8, precision: Optional[Precision] = None,
                 limit: Optional[int] = None, dist: Optional[Distributed] = None) -> QAEvalResult:
        dist = dist if dist is not None else Distributed()
        nats, tokens, count = 0.0, 0, 0

        def batches(rank: int, world_size: int):
            return self.batches(batch_size, limit, rank=rank, world_size=world_size)

        for batch, logits in shared_logits(model, self, batches, batch_size, limit, precision, dist):
            scored = batch.labels != IGNORE_INDEX
            nats += float(F.cross_entropy(logits[scored], batch.labels[scored], reduction="sum"))
            tokens += int(scored.sum())
            count += batch.labels.shape[0]
        index = self.selection(limit).tolist()
        mine = index[dist.rank::dist.world_size]
        with dist.full_weights(model), eval_mode(model):
            answers = self.predict(model, mine, batch_size=batch_size, precision=precision,
                                   stop_early=not dist.fsdp)
            if dist.fsdp:       # every process decodes as many batches of as many steps (a model without a
                most = -(-len(index) // dist.world_size)    # decoding state re-runs its collective forward)
                extra = -(-most // batch_size) - -(-len(mine) // batch_size)
                for _ in range(extra):
                    self.predict(model, index[:1], batch_size=1, precision=precision, stop_early=False)
        with eval_mode(model):
            chosen = self.choose(model, mine, batch_size=batch_size, precision=precision)
            if dist.fsdp:       # the same number of (collective) forward passes on every process
                passes = lambda part: -(-len(self.choice_rows(part)) // batch_size)  # noqa: E731
                for _ in range(max(passes(index[r::dist.world_size]) for r in range(dist.world_size)) - passes(mine)):
                    self._choice_pass(model, self.choice_rows(index[:1])[:1], precision)
        em = sum(qa.exact_match(a, self.examples[j].answer) for a, j in zip(answers, mine))
        f1 = sum(qa.token_f1(a, self.examples[j].answer) for a, j in zip(answers, mine))
        choice = sum(qa.exact_match(c, self.examples[j].answer) for c, j in zip(chosen, mine))
        nats, tokens, count, em, f1, choice = dist.sum([nats, tokens, count, em, f1, choice])
        tokens, count = int(tokens), int(count)
        scored = [self.examples[j] for j in index]
        floors = qa.floors(scored, seed=FLOOR_SEED)
        frequent, drawn = floors["most_frequent_speaker"], floors["random_speaker"]
        loss = nats / max(tokens, 1)
        return QAEvalResult(loss=loss, exact_match=100 * em / max(count, 1), f1=100 * f1 / max(count, 1),
                            choice=100 * choice / max(count, 1),
                            floor_frequent_em=frequent["exact_match"], floor_frequent_f1=frequent["f1"],
                            floor_random_em=drawn["exact_match"], floor_random_f1=drawn["f1"],
                            perplexity=math.exp(min(loss, 700.0)), tokens=tokens, windows=count,
                            truncated=sum(self.encoded[j].truncated for j in index),
                            all_windows=limit is None or limit >= len(self),
                            samples=[dict(answer=self.examples[j].answer, predicted=a, chosen=c,
                                          speakers=list(self.examples[j].speakers))
                                     for a, c, j in list(zip(answers, chosen, mine))[:SAMPLES]])


# ------------------------------------------------------------------------------------------------ the task

class QATask(Task):
    name = "qa"
    causal = True
    generates = False
    describe = ("question answering, who speaks this line (a stand-in for TriviaQA): loss on the answer tokens, "
                "scored by greedy decoding (exact match, F1) and by the likeliest speaker of the window (choice)")
    no_sample = "(its score writes the answers itself): leave sample_tokens at 0"

    def training_stream(self, data: RunData, *, context: int, seed: int, pack_documents: bool = False,
                        rank: int = 0, world_size: int = 1) -> QAStream:
        docs = decoded(data.train_docs, data.tokenizer, data.prepared.names("train"))
        chars = window_chars(context, data.tokenizer, docs)
        return QAStream(plays_of(docs, "training"), data.tokenizer, context, chars, seed, rank=rank,
                        world_size=world_size)

    def heldout(self, docs: TokenDocuments, tokenizer: Tokenizer, context: int) -> QAHeldout:
        texts = decoded(docs, tokenizer)
        chars = window_chars(context, tokenizer, texts)
        plays_of(texts, "held-out")
        try:
            examples = qa.make_examples(texts, HELDOUT_EXAMPLES, seed=HELDOUT_SEED, context_chars=chars)
        except ValueError as err:
            raise ConfigError(f"the QA task's held-out examples: {err}") from None
        return QAHeldout(examples, tokenizer, context)
