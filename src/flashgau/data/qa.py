"""Who speaks this line? A long-context question-answering task built from the plays: flashgau's offline stand-in
for the paper's TriviaQA fine-tuning (the questions and passages of TriviaQA cannot be downloaded here).

An example is a window of a play (about `context_chars` characters, cut at line breaks), a question quoting one
line spoken inside the window (the first line of a speech), and its answer, the speaker tag written just above
that line in the window:

    Who speaks the line "Stay! speak, speak! I charge thee speak!"?     <- the question comes first,
    <the window of the play, ~4K characters>                              <- then the context,
    Answer: Hor.                                                          <- then the answer.

The question first means a causal model must carry the quoted line through the whole window, find it far back,
and copy the tag written on the line above it: a long-range retrieval, the point of the paper's experiment.
The quoted line is unique in the window (so the answer is defined) and its speech starts inside the window (so
the tag is there to copy). The window ends on a line of text: never on a blank line, nor on a speaker tag whose
speech it cuts off (it ends before that tag instead, which would otherwise sit right before "Answer: " as a
distractor). Examples are a deterministic function of the documents and a seed; training examples come from
training plays, evaluation examples from held-out plays only (the caller passes the split's sides).

Speeches: in the plays a speech is a speaker tag alone on a line after a blank line ("Hor.", "KING HENRY.", or,
in one play, "THESEUS" without a period), followed by the speech's lines up to the next blank line. Stage
directions ("[Exit Ghost.]") and headings ("SCENE II.", "ACT III.") are not speeches.

Scores: exact match and token F1 of the predicted tag against the true one (case-insensitive words, the final
period ignored), and two floors computed on the same examples: the most frequent speaker in the window, and a
speaker drawn at random from the window's speakers (seeded).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

_TAG = re.compile(r"^(?:[A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,3}\.|[A-Z][A-Z'\-]*(?: [A-Z'\-]+){0,3})$")
_NOT_TAGS = ("ACT ", "SCENE ", "EPILOGUE", "PROLOGUE", "THE END", "FINIS", "DRAMATIS PERSONAE")
MIN_LINE_CHARS = 24          # quoted lines shorter than this are too generic to be found
ANSWER_PREFIX = "Answer: "
# The version of the examples this module draws, bumped whenever the same seed draws other examples (saved benchmark
# runs name it, so a run on older examples is never reused): 2, windows never end on a cut-off speaker tag; 3, the
# quoted line is the first line of its speech, so its tag is on the line right above it.
TASK_VERSION = 3


@dataclass(frozen=True)
class Speech:
    """One speech: its speaker tag as written, where the tag line starts, and the speech's lines (with their
    starting character offsets in the document)."""

    tag: str
    start: int
    lines: tuple[tuple[int, str], ...]

    @property
    def end(self) -> int:
        offset, text = self.lines[-1]
        return offset + len(text)


@dataclass(frozen=True)
class QAExample:
    """question, context and answer texts, the speakers that appear in the context (for the floors), and where it
    came from (document name, character offset of the window)."""

    question: str
    context: str
    answer: str
    speakers: tuple[str, ...]
    document: str
    offset: int

    @property
    def prompt(self) -> str:
        """What the model reads before it answers: question, context, the answer prefix."""
        return f"{self.question}\n{self.context}\n{ANSWER_PREFIX}"

    @property
    def target(self) -> str:
        """What it should write: the tag and a line break (the end of the answer)."""
        return f"{self.answer}\n"


def speeches(text: str) -> list[Speech]:
    """The speeches of a play, in order (see the module docstring for what counts as one)."""
    lines = text.split("\n")
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    out: list[Speech] = []
    i = 1
    while i < len(lines) - 1:
        tag = lines[i].strip()
        if lines[i - 1].strip() == "" and lines[i + 1].strip() and is_tag(tag):
            j = i + 1
            body = []
            while j < len(lines) and lines[j].strip():
                body.append((offsets[j], lines[j]))
                j += 1
            out.append(Speech(tag=tag, start=offsets[i], lines=tuple(body)))
            i = j
        else:
            i += 1
    return out


def is_tag(line: str) -> bool:
    """A speaker tag line: a short capitalised name with a final period, or a short ALL-CAPS name; not a
    heading or a stage direction."""
    if not line or len(line) > 30 or line.startswith("[") or any(line.upper().startswith(h) for h in _NOT_TAGS):
        return False
    return bool(_TAG.match(line)) and any(c.isalpha() for c in line)


def make_examples(documents: Iterable, count: int, *, seed: int, context_chars: int = 4000,
                  min_speeches: int = 8) -> list[QAExample]:
    """`count` examples from `documents` (objects with .name and .text, e.g. a CorpusSplit side), deterministic from
    `seed`: each draws a play (in proportion to its speeches), a window of about context_chars characters starting
    at a line start, and the first line of a speech inside the window, long enough to quote. Plays with fewer than
    `min_speeches` speeches (the poems) are left out."""
    plays = Plays(documents, min_speeches=min_speeches)
    rng = random.Random(seed)
    examples: list[QAExample] = []
    attempts = 0
    while len(examples) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(f"could make only {len(examples)} of {count} examples: windows of {context_chars} "
                             "characters hold too few quotable lines")
        example = plays.attempt(rng, context_chars)
        if example is not None:
            examples.append(example)
    return examples


class Plays:
    """The plays among `documents` with their speeches, parsed once, to draw examples from (make_examples; the QA
    task's training stream draws example i from a generator of its own, tasks/qa.py)."""

    def __init__(self, documents: Iterable, *, min_speeches: int = 8) -> None:
        self.plays = []
        for doc in documents:
            found = speeches(doc.text)
            if len(found) >= min_speeches:
                self.plays.append((doc, found))
        if not self.plays:
            raise ValueError("no play with speaker tags among the documents: the QA task needs plays")
        self.weights = [len(found) for _, found in self.plays]

    def attempt(self, rng: random.Random, context_chars: int) -> Optional[QAExample]:
        """One try at an example (None when the drawn window holds no quotable line)."""
        doc, found = rng.choices(self.plays, weights=self.weights)[0]
        return _one_example(doc, found, rng, context_chars)

    def example(self, rng: random.Random, context_chars: int, *, attempts: int = 1000) -> QAExample:
        """An example, trying until one is made (a ValueError after `attempts` tries)."""
        for _ in range(attempts):
            example = self.attempt(rng, context_chars)
            if example is not None:
                return example
        raise ValueError(f"no example in {attempts} tries: windows of {context_chars} characters hold too few "
                         "quotable lines")


def _one_example(doc, found: Sequence[Speech], rng: random.Random, context_chars: int) -> Optional[QAExample]:
    text = doc.text
    first = rng.randrange(len(found))
    start = found[first].start
    end = _window_end(text, start, text.rfind("\n", start, start + context_chars))
    if end <= start:
        return None
    inside = [s for s in found[first:] if s.end <= end]
    if len(inside) < 2:
        return None
    window = text[start:end]
    firsts = [(s, s.lines[0][1].strip()) for s in inside]
    candidates = [(s, line) for s, line in firsts if len(line) >= MIN_LINE_CHARS and window.count(line) == 1]
    if not candidates:
        return None
    speech, line = candidates[rng.randrange(len(candidates))]
    question = f'Who speaks the line "{line}"?'
    return QAExample(question=question, context=window, answer=speech.tag,
                     speakers=tuple(s.tag for s in inside), document=doc.name, offset=start)


def _window_end(text: str, start: int, end: int) -> int:
    """Where the window text[start:end], cut at a line break, ends so that its last line is a line of text: before
    any trailing blank lines and before a trailing speaker tag (a tag line after a blank line) whose speech the cut
    leaves out, which would otherwise sit right before "Answer: " as a distractor. At most `start` when nothing is
    left."""
    while end > start:
        line_start = max(text.rfind("\n", start, end) + 1, start)
        line = text[line_start:end].strip()
        previous = text[max(text.rfind("\n", start, line_start - 1) + 1, start):line_start - 1] \
            if line_start > start else ""
        if line and not (is_tag(line) and not previous.strip()):
            return end
        end = line_start - 1
    return end


# ------------------------------------------------------------------------------------------------------ scores

def normalize_tag(tag: str) -> list[str]:
    """The words of a tag, lower-cased, the final period ignored ("First Clown." -> ["first", "clown"])."""
    return tag.strip().rstrip(".").lower().split()


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize_tag(prediction) == normalize_tag(answer))


def token_f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_tag(prediction), normalize_tag(answer)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def score(predictions: Sequence[str], examples: Sequence[QAExample]) -> dict:
    """Mean exact match and token F1 (in percent) of predictions against the examples' answers."""
    if len(predictions) != len(examples) or not examples:
        raise ValueError(f"need one prediction per example, got {len(predictions)} for {len(examples)}")
    em = sum(exact_match(p, e.answer) for p, e in zip(predictions, examples)) / len(examples)
    f1 = sum(token_f1(p, e.answer) for p, e in zip(predictions, examples)) / len(examples)
    return {"exact_match": 100 * em, "f1": 100 * f1, "examples": len(examples)}


def floors(examples: Sequence[QAExample], *, seed: int = 0) -> dict:
    """The two floors on the same examples: always the window's most frequent speaker (ties: the first to speak),
    and a speaker of the window drawn at random."""
    rng = random.Random(seed)
    frequent = [Counter(e.speakers).most_common(1)[0][0] for e in examples]
    drawn = [rng.choice(sorted(set(e.speakers))) for e in examples]
    return {"most_frequent_speaker": score(frequent, examples), "random_speaker": score(drawn, examples)}
