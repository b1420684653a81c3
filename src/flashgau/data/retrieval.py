"""Retrieval from a long context: passkey and multi-key recall, built on the plays as filler text.

K facts, each "The key of the <key> is <value>.", are written into a window of a play, and the model is asked for
the value of one or more of the keys. Two forms:

    after (causal reading)                        first (the question before the text)
    <play ... The key of the bavo is Q. ...>      What is the key of the bavo?
    <... play ...>                                <play ... The key of the bavo is Q. ...>
    The key of the bavo is Q                      Answer: Q

After the text, the model reads the question last and must look back for the fact; with the question first (the
form first-to-all is for: every chunk can read the question), it must know what to look for while it reads. The
after form asks `queries` of the K keys, one line each; the first form asks one.

Everything is built in token ids, so lengths and distances are exact for any tokenizer:

- a fact is encode("\\nThe key of the <key> is ") + [value id] + encode(".\\n"); a query of the after form is the
  same prefix followed by the answer; the first form's question is encode("What is the key of the <key>?\\n") and
  its answer follows encode("\\nAnswer: ");
- a value is one character of VALUES, written as its own single token (a byte, or the byte's token of a byte-level
  BPE, whose alphabet holds every byte), so every answer is one token in both tokenizers;
- keys are made-up two-syllable words (KEYS: none is an English word of the plays, so no fact is known
  beforehand).

Held out: the keys are split once (`keys(side)`; side "train" or "heldout") and never shared: a training example
uses training keys and the training documents, a scored one held-out keys and the held-out documents (the caller
passes each side's documents, the run's split of whole plays), so no fact of the scoring set was seen in training.
The values are the same 36 on both sides, drawn uniformly and independently per fact: a value never written as a
training answer is one a small model trained from scratch never learns to write (measured, docs/qa.md: the same
checkpoint scored 82% on held-out plays and keys with training values, and chance with values held out too).

Distances. Each fact is inserted into the filler with `back` filler tokens after it, drawn log-uniformly between 0
and the filler's length (every scale of distance is drawn as often, so short and long distances are both
scored for any chunk size). An example records, for each query, the position of the queried fact's value token
and the position that reads the answer (the input whose next-token prediction is the answer); their difference is
the query's distance in tokens.
"""

from __future__ import annotations

import math
import random
import string
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

from .tokenizers import Tokenizer

VALUES = string.digits + string.ascii_uppercase          # 36 one-character values, of both sides
_ONSETS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
FACT = "\nThe key of the {key} is "
FACT_END = ".\n"
QUESTION = "What is the key of the {key}?\n"
ANSWER_PREFIX = "\nAnswer: "
FORMS = ("after", "first")
# bumped whenever the same seed draws other examples (saved benchmark runs name it): 2, values shared by both sides
TASK_VERSION = 2


@lru_cache(maxsize=None)
def _all_keys() -> tuple[str, ...]:
    syllables = [c + v for c in _ONSETS for v in _VOWELS]
    return tuple(a + b for a in syllables for b in syllables)


def is_heldout_key(key: str) -> bool:
    """A fixed fifth of the keys, chosen by a stable hash of the word, is held out for scoring."""
    return zlib.crc32(key.encode()) % 5 == 0


@lru_cache(maxsize=None)
def keys(side: str) -> tuple[str, ...]:
    """The keys of a side ("train" or "heldout"): disjoint, 4,900 words in all (about 980 held out)."""
    _check_side(side)
    return tuple(k for k in _all_keys() if is_heldout_key(k) == (side == "heldout"))


def _check_side(side: str) -> None:
    if side not in ("train", "heldout"):
        raise ValueError(f"side must be 'train' or 'heldout', got {side!r}")


@dataclass(frozen=True)
class RetrievalSpec:
    """What an example asks: `facts` (K) facts in the text, `queries` of them asked (the after form; the first form
    asks one), the question after the text or before it ("after" / "first")."""

    facts: int = 1
    queries: int = 1
    form: str = "after"

    def __post_init__(self) -> None:
        if not (isinstance(self.facts, int) and self.facts >= 1):
            raise ValueError(f"facts must be an integer >= 1, got {self.facts!r}")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        asked = 1 if self.form == "first" else self.queries
        if not (isinstance(self.queries, int) and 1 <= asked <= self.facts):
            raise ValueError(f"queries must be an integer in [1, facts = {self.facts}], got {self.queries!r}")

    @property
    def asked(self) -> int:
        return 1 if self.form == "first" else self.queries


@dataclass(frozen=True)
class Query:
    key: str
    value: str
    answer_at: int       # position of the answer token in `ids` (the input at answer_at - 1 reads it)
    fact_at: int         # position of the queried fact's value token in `ids`

    @property
    def distance(self) -> int:
        """Tokens from the fact's value to the input that reads the answer."""
        return self.answer_at - 1 - self.fact_at


@dataclass(frozen=True)
class RetrievalExample:
    """A whole example: `ids` (T + 1 token ids: the model reads ids[:-1], and its labels are ids[1:] at the answers
    only), the facts written in it (key, value) and its queries."""

    ids: list[int]
    facts: tuple[tuple[str, str], ...]
    queries: tuple[Query, ...]


class Phrases:
    """The token ids of the fixed phrases and of the values under one tokenizer."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.value_ids = {}
        for v in VALUES:
            ids = tokenizer.encode(v)
            if len(ids) != 1:
                raise ValueError(f"the value {v!r} is {len(ids)} tokens under this tokenizer; the retrieval task needs "
                                 "one-token values (a byte or byte-level BPE tokenizer)")
            self.value_ids[v] = ids[0]
        self.value_of = {i: v for v, i in self.value_ids.items()}      # a token id -> the value it writes
        self.fact_end = tokenizer.encode(FACT_END)
        self.answer_prefix = tokenizer.encode(ANSWER_PREFIX)

    def fact_prefix(self, key: str) -> list[int]:
        return self.tokenizer.encode(FACT.format(key=key))

    def question(self, key: str) -> list[int]:
        return self.tokenizer.encode(QUESTION.format(key=key))

    def fact(self, key: str, value: str) -> list[int]:
        return self.fact_prefix(key) + [self.value_ids[value]] + self.fact_end


def build(filler: Sequence[int], facts: Sequence[tuple[str, str]], backs: Sequence[int], asked: Sequence[int],
          form: str, phrases: Phrases) -> RetrievalExample:
    """An example from its parts: `filler` tokens with fact i (key, value) inserted so that `backs[i]` filler
    tokens follow it, and the facts `asked` (indices into `facts`) asked in `form`. Its length is what the parts
    make it (make_example sizes the filler so that it is T + 1)."""
    if len(backs) != len(facts) or not all(0 <= b <= len(filler) for b in backs):
        raise ValueError(f"need one back in [0, {len(filler)}] per fact, got {list(backs)}")
    order = sorted(range(len(facts)), key=lambda i: (-backs[i], i))      # earliest insertion first
    head = phrases.question(facts[asked[0]][0]) if form == "first" else []
    ids = list(head)
    value_at = {}
    cursor = 0
    for i in order:
        point = len(filler) - backs[i]
        ids += filler[cursor:point]
        cursor = point
        key, value = facts[i]
        prefix = phrases.fact_prefix(key)
        value_at[i] = len(ids) + len(prefix)
        ids += prefix + [phrases.value_ids[value]] + phrases.fact_end
    ids += filler[cursor:]
    queries = []
    for i in asked:
        key, value = facts[i]
        ids += phrases.answer_prefix if form == "first" else phrases.fact_prefix(key)
        queries.append(Query(key, value, len(ids), value_at[i]))
        ids.append(phrases.value_ids[value])
    return RetrievalExample(ids, tuple(facts), tuple(queries))


def overhead(spec: RetrievalSpec, facts: Sequence[tuple[str, str]], asked: Sequence[int], phrases: Phrases) -> int:
    """Tokens of an example that are not filler."""
    n = sum(len(phrases.fact(k, v)) for k, v in facts)
    if spec.form == "first":
        return n + len(phrases.question(facts[asked[0]][0])) + len(phrases.answer_prefix) + 1
    return n + sum(len(phrases.fact_prefix(facts[i][0])) + 1 for i in asked)


def make_example(rng: random.Random, spec: RetrievalSpec, context: int, side: str, phrases: Phrases,
                 filler: Callable[[random.Random, int], Sequence[int]]) -> RetrievalExample:
    """An example of `context` (T) inputs: keys of `side`, `filler(rng, n)` giving n filler tokens (a
    window of a document of the same side), each fact `back` log-uniformly drawn (module docstring), the asked
    facts drawn among them. A ValueError when the facts and questions leave no room for filler."""
    chosen = rng.sample(keys(side), spec.facts)
    facts = [(k, rng.choice(VALUES)) for k in chosen]
    asked = rng.sample(range(spec.facts), spec.asked)
    n = context + 1 - overhead(spec, facts, asked, phrases)
    if n < 1:
        raise ValueError(f"{spec.facts} fact(s) and {spec.asked} question(s) take {context + 1 - n} of the {context} "
                         "tokens of the context; give a longer context or fewer facts")
    backs = [log_uniform(rng, n) for _ in facts]
    return build(list(filler(rng, n)), facts, backs, asked, spec.form, phrases)


def log_uniform(rng: random.Random, n: int) -> int:
    """An integer in [0, n], log-uniform in (1 + it)."""
    return min(n, int(math.exp(rng.uniform(0.0, math.log(n + 1)))) - 1)


# ------------------------------------------------------------------------------------------------------ scores

BUCKETS = ("same chunk", "1-2 chunks back", "3 chunks back", "4+ chunks back")


def bucket(query: Query, chunk: int) -> str:
    """Where the fact lies from the input that reads the answer, in chunks of `chunk` tokens of absolute position
    (FLASH's chunks): in the same chunk, 1-2 chunks back, 3, or 4 or more."""
    back = (query.answer_at - 1) // chunk - query.fact_at // chunk
    return BUCKETS[0] if back == 0 else BUCKETS[1] if back <= 2 else BUCKETS[2] if back == 3 else BUCKETS[3]


def accuracy(predicted: Sequence[str], queries: Sequence[Query], chunk: int) -> dict:
    """Percent of `predicted` values equal to the queries' values: in all ("all") and by bucket (None where a
    bucket holds no query), with the count of each."""
    if len(predicted) != len(queries):
        raise ValueError(f"need one prediction per query, got {len(predicted)} for {len(queries)}")
    hits: dict[str, list[int]] = {"all": [0, 0], **{b: [0, 0] for b in BUCKETS}}
    for p, q in zip(predicted, queries):
        for name in ("all", bucket(q, chunk)):
            hits[name][0] += p == q.value
            hits[name][1] += 1
    return {name: (100 * right / count if count else None, count) for name, (right, count) in hits.items()}


def floors(examples: Sequence[RetrievalExample], *, seed: int = 0) -> dict:
    """Accuracy (percent) of answers that do not read the facts that are asked, on the same queries: a random value,
    the most frequent value of the queries (the best constant answer), and the value of a random
    fact of the example (knows to copy a value, not which)."""
    rng = random.Random(seed)
    queries = [(e, q) for e in examples for q in e.queries]
    if not queries:
        raise ValueError("no queries to score")
    counts: dict[str, int] = {}
    for _, q in queries:
        counts[q.value] = counts.get(q.value, 0) + 1
    frequent = max(sorted(counts), key=counts.__getitem__)

    def pct(answers) -> float:
        return 100 * sum(a == q.value for a, (_, q) in zip(answers, queries)) / len(queries)

    return {"random_value": pct([rng.choice(VALUES) for _ in queries]),
            "most_frequent_value": pct([frequent] * len(queries)),
            "random_fact": pct([rng.choice(e.facts)[1] for e, _ in queries])}

