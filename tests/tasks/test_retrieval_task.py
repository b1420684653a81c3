"""The retrieval tasks (passkey, multi-key): the objectives' names, labels on the answers only, training examples from
the training documents with training keys and held-out ones from the held-out documents with held-out keys, the
training stream's determinism and exact resume, the score of a model that knows every answer and of one that always
writes one value (the most-frequent floor), and a tiny end-to-end run with `eval` repeating its score.
"""

from types import SimpleNamespace

import pytest
import torch

from flashgau.data import retrieval
from flashgau.data.batching import IGNORE_INDEX, TokenDocuments, tokenize_documents
from flashgau.data.corpus import load_split
from flashgau.data.tokenizers import ByteTokenizer
from flashgau.errors import ConfigError
from flashgau.tasks import get_task
from flashgau.tasks.retrieval import RetrievalStream, pack

TOK = ByteTokenizer()
T = 512


@pytest.fixture(scope="module")
def split():
    return load_split(None, 0.1)


def token_docs(docs):
    return TokenDocuments.from_tensors(tokenize_documents([d.text for d in docs], TOK))


@pytest.fixture(scope="module")
def heldout_docs(split):
    return token_docs(split.heldout)


@pytest.fixture(scope="module")
def train_docs(split):
    return token_docs(split.train[:6])


def test_the_objectives_and_their_specs():
    assert get_task("passkey").spec == retrieval.RetrievalSpec(1, 1, "after")
    assert get_task("multikey16").spec == retrieval.RetrievalSpec(16, 4, "after")
    assert get_task("multikey64-first").spec.asked == 1 and get_task("passkey-first").causal
    with pytest.raises(ConfigError, match="multikey16"):
        get_task("multikey8")


def test_heldout_examples_come_from_heldout_text_and_keys(heldout_docs, split):
    held = get_task("multikey4").heldout(heldout_docs, TOK, T)
    assert len(held) == 200
    train_text = "".join(d.text for d in split.train)
    for ex in held.examples[:40]:
        assert len(ex.ids) == T + 1 and len(ex.queries) == 4
        assert all(k in retrieval.keys("heldout") and v in retrieval.VALUES for k, v in ex.facts)
        text = TOK.decode(ex.ids)
        pieces = [p for p in text.split("\n") if len(p) > 60 and "The key of the" not in p]
        for piece in pieces[:2]:                            # filler lines are held-out text, absent from training
            assert piece in "".join(d.text for d in split.heldout) and piece not in train_text
    again = get_task("multikey4").heldout(heldout_docs, TOK, T)
    assert [e.ids for e in again.examples] == [e.ids for e in held.examples]


def test_training_stream_labels_answers_only_and_resumes_exactly(train_docs):
    task = get_task("passkey")
    stream = RetrievalStream(task, train_docs, TOK, 256, seed=3)
    first = stream.next_batch(4)
    assert first.input_ids.shape == (4, 256) and first.attention_mask is None
    assert first.num_targets == 4
    for r in range(4):
        (pos,) = (first.labels[r] != IGNORE_INDEX).nonzero().flatten().tolist()
        key = TOK.decode(first.input_ids[r, :pos + 1].tolist()).split("The key of the ")[-1].split(" ")[0]
        assert key in retrieval.keys("train")
        assert TOK.decode(first.input_ids[r, :pos + 1].tolist()).endswith(" is ")
        value = TOK.decode([int(first.labels[r, pos])])
        assert value in retrieval.VALUES
        assert f" is {value}.\n" in TOK.decode(first.input_ids[r].tolist())      # the fact is in the text
    state = stream.state_dict()
    second = stream.next_batch(4)
    resumed = RetrievalStream(task, train_docs, TOK, 256, seed=3)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.next_batch(4).input_ids, second.input_ids)
    other = RetrievalStream(task, train_docs, TOK, 256, seed=4).next_batch(4)
    assert not torch.equal(other.input_ids, first.input_ids)
    shards = [RetrievalStream(task, train_docs, TOK, 256, seed=3, rank=r, world_size=2).next_batch(2)
              for r in range(2)]
    assert torch.equal(torch.stack([shards[0].input_ids[0], shards[1].input_ids[0], shards[0].input_ids[1],
                                    shards[1].input_ids[1]]), first.input_ids)


def test_a_context_too_short_for_the_facts_is_refused(train_docs):
    with pytest.raises(ConfigError, match="multikey64 task at context 512.*longer context"):
        RetrievalStream(get_task("multikey64"), train_docs, TOK, 512, seed=0)


class Oracle(torch.nn.Module):
    """Logits 30 on `answer(input_ids, position)` (None: token 0), and 40 on `above` where it is given."""

    def __init__(self, answer, chunk, above=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(chunk_size=chunk)
        self.answer, self.above = answer, above

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, 256)
        for r in range(input_ids.shape[0]):
            for p in range(input_ids.shape[1]):
                logits[r, p, self.answer(input_ids[r], p) or 0] = 30.0
        if self.above is not None:
            logits[..., self.above] = 40.0
        return SimpleNamespace(logits=logits + self.w)


def test_the_score_of_a_model_that_knows_and_of_one_that_writes_one_value(heldout_docs):
    held = get_task("multikey4").heldout(heldout_docs, TOK, T)
    labels = {tuple(e.ids[:-1]): pack([e]).labels[0] for e in held.examples}
    def answer(ids, p):
        return max(0, int(labels[tuple(ids.tolist())][p]))

    knows = held.evaluate(Oracle(answer, 64), limit=40)
    assert knows.accuracy == knows.greedy == 100.0 and knows.questions == 160 and knows.windows == 40
    assert not knows.all_windows
    assert sum(knows.counts) == 160 and knows.chunk == 64 and knows.loss < 1e-6
    assert all(acc in (None, 100.0) for acc, _ in knows.by_distance().values())
    frequent = retrieval.floors([held.examples[j] for j in held.selection(40).tolist()])["most_frequent_value"]
    value = max(retrieval.VALUES, key=lambda v: sum(q.value == v for j in held.selection(40).tolist()
                                                            for q in held.examples[j].queries))
    constant = held.evaluate(Oracle(lambda ids, p: TOK.encode(value)[0], 64), limit=40)
    assert constant.accuracy == pytest.approx(frequent) == pytest.approx(knows.floor_frequent)
    assert "random fact's value" in constant.describe() and "4+ chunks back" in constant.report()
    # a model that writes another token first but ranks the right value above the other values
    biased = held.evaluate(Oracle(answer, 64, above=TOK.encode("z")[0]), limit=40)
    assert biased.greedy == 0.0 and biased.accuracy == 100.0


def test_a_tiny_run_end_to_end(small_corpus, tmp_path):
    from flashgau.cli import main
    from flashgau.training.trained import evaluate_checkpoint

    out = tmp_path / "run"
    code = main(["train", "--objective", "passkey-first", "--arch", "transformer+", "--preset", "tiny",
                 "--data", str(small_corpus), "--context", "256", "--steps", "3", "--batch-tokens", "1024",
                 "--eval-every", "3", "--eval-windows", "8", "--precision", "fp32", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    again, _ = evaluate_checkpoint(out)
    assert again.windows == 200 and again.facts == 1 and again.form == "first"
    assert 0 <= again.accuracy <= 100 and again.floor_random > 0
