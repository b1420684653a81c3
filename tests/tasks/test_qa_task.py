"""The QA task (who speaks this line): labels on the answer tokens only, training examples from the training plays
and held-out examples from the held-out plays only, everything deterministic from its seed, the training stream's
exact resume and its split across processes, the score of a perfect "model" (its answers written by the decoder's
path, the generation stubbed), the choice score (the likeliest speaker of the window: a brute-force recomputation,
a model made to prefer the right or a wrong tag) and the held-out score shared out over processes."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from flashgau import LanguageModel, ModelConfig
from flashgau.data import qa
from flashgau.data.batching import IGNORE_INDEX, TokenDocuments, tokenize_documents
from flashgau.data.corpus import load_split
from flashgau.data.tokenizers import ByteTokenizer
from flashgau.errors import ConfigError
from flashgau.runtime import Distributed
from flashgau.tasks.qa import QAHeldout, QAStream, QATask, encode_example, pack, window_chars

TOK = ByteTokenizer()
T = 512


@pytest.fixture(scope="module")
def split():
    return load_split(None, 0.1)


@pytest.fixture(scope="module")
def heldout_docs(split):
    return TokenDocuments.from_tensors(tokenize_documents([d.text for d in split.heldout], TOK))


@pytest.fixture(scope="module")
def heldout(heldout_docs):
    return QATask().heldout(heldout_docs, TOK, T)


@pytest.fixture(scope="module")
def plays(split):
    return qa.Plays(split.train), window_chars(T, TOK, split.train)


def stream(plays, seed=3, rank=0, world_size=1):
    return QAStream(plays[0], TOK, T, plays[1], seed, rank=rank, world_size=world_size)


def test_labels_are_the_answer_tokens_only():
    example = qa.QAExample('Who speaks the line "Who is there, standing so late?"?', "Ber.\nWho is there, standing "
                           "so late?\n\nFran.\nNay, answer me.", "Ber.", ("Ber.", "Fran."), "d", 0)
    enc = encode_example(example, TOK, 200)
    batch = pack([enc], 200)
    scored = batch.labels[0] != IGNORE_INDEX
    assert TOK.decode(batch.labels[0][scored].tolist()) == "Ber.\n"                 # the answer and its end
    start = len(enc.prompt) - 1
    assert scored.nonzero().flatten().tolist() == list(range(start, start + len(enc.target)))
    assert TOK.decode(batch.input_ids[0, :start + 1].tolist()) == example.prompt  # the input at the first label
    assert not batch.attention_mask[0, start + len(enc.target):].any() and batch.attention_mask[0, :10].all()
    # too long for T: the window loses tokens on its left, never the question or the answer
    short = encode_example(example, TOK, len(enc.prompt) + len(enc.target) - 1 - 5)
    assert short.truncated and short.target == enc.target
    assert TOK.decode(short.prompt).startswith(example.question + "\n" + example.context[5:])
    with pytest.raises(ConfigError, match="question and answer alone exceed the context"):
        encode_example(example, TOK, 60)


def test_training_batches_are_answers_of_training_plays_and_deterministic(split, plays):
    s = stream(plays)
    batch = s.next_batch(4)
    train_texts = [d.text for d in split.train]
    for r, i in enumerate(range(4)):
        e = s.example(i)
        assert any(e.context in t for t in train_texts)
        assert e.document in {d.name for d in split.train}
        scored = batch.labels[r] != IGNORE_INDEX
        assert TOK.decode(batch.labels[r][scored].tolist()) == e.target
    again = stream(plays).next_batch(4)
    assert torch.equal(again.input_ids, batch.input_ids) and torch.equal(again.labels, batch.labels)
    other = stream(plays, seed=4).next_batch(4)
    assert not torch.equal(other.input_ids, batch.input_ids)


def test_the_training_stream_resumes_exactly_and_splits_across_processes(plays):
    s = stream(plays)
    s.next_batch(2)
    saved = s.state_dict()
    want = [s.next_batch(2) for _ in range(2)]
    again = stream(plays)
    again.load_state_dict(saved)
    for a, b in zip(want, (again.next_batch(2) for _ in range(2))):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    whole = stream(plays, seed=1).next_batch(4)
    parts = [stream(plays, seed=1, rank=r, world_size=2) for r in range(2)]
    for rank, part in enumerate(parts):
        got = part.next_batch(2)
        assert torch.equal(got.input_ids, whole.input_ids[rank::2]) and torch.equal(got.labels, whole.labels[rank::2])
    assert parts[0].state_dict() == parts[1].state_dict() == {"examples_drawn": 4}


def test_heldout_examples_come_from_the_heldout_plays_only_and_are_fixed(split, heldout, heldout_docs):
    held = [d.text for d in split.heldout]
    trained = [d.text for d in split.train]
    assert len(heldout) == 200
    for e in heldout.examples:
        assert any(e.context in t for t in held) and not any(e.context in t for t in trained)
    again = QATask().heldout(heldout_docs, TOK, T)
    assert again.examples == heldout.examples
    assert [e.prompt for e in again.encoded] == [e.prompt for e in heldout.encoded]
    assert all(len(e.prompt) + len(e.target) - 1 <= T for e in heldout.encoded)


def test_a_context_too_short_for_the_task_is_refused(heldout_docs):
    with pytest.raises(ConfigError, match="the QA task needs a longer context: 256 tokens"):
        QATask().heldout(heldout_docs, TOK, 256)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return LanguageModel(ModelConfig.preset("tiny", arch="flash", vocab_size=256, max_seq_len=1024)).eval()


def answering(heldout, *, right=True):
    """A generate() that writes each prompt's true answer (or a wrong one), as the decoder would lay it out."""
    answers = {tuple(enc.prompt): e.target if right else "Nobody.\n"
               for e, enc in zip(heldout.examples, heldout.encoded)}

    def generate(input_ids, max_new_tokens, attention_mask=None, **kwargs):
        out = torch.zeros(input_ids.shape[0], input_ids.shape[1] + max_new_tokens, dtype=torch.long)
        for r in range(input_ids.shape[0]):
            n = int(attention_mask[r].sum())
            prompt = input_ids[r, :n].tolist()
            text = TOK.encode(answers[tuple(prompt)] + "junk after the line break")[:max_new_tokens]
            out[r, :n] = input_ids[r, :n]
            out[r, n:n + len(text)] = torch.tensor(text)
        return out
    return generate


def test_a_perfect_model_scores_100_and_a_wrong_one_0_beside_the_floors(heldout, monkeypatch):
    model = tiny_model()
    monkeypatch.setattr(model, "generate", answering(heldout))
    result = heldout.evaluate(model, batch_size=8, limit=24)
    assert result.exact_match == 100.0 and result.f1 == 100.0 and result.windows == 24 and not result.all_windows
    assert 0 < result.floor_random_em <= 100 and 0 < result.floor_frequent_em <= 100
    assert result.tokens == sum(len(heldout.encoded[j].target) for j in heldout.selection(24).tolist())
    assert result.record() == {"heldout_loss": result.loss, "heldout_exact_match": 100.0, "heldout_f1": 100.0,
                               "heldout_choice": result.choice}
    assert "exact match: 100.00" in result.report() and "floors" in result.describe()
    first = heldout.examples[0]
    assert result.samples[0] == dict(answer=first.answer, predicted=first.answer, chosen=result.samples[0]["chosen"],
                                     speakers=list(first.speakers))
    assert result.samples[0]["chosen"] in first.speakers
    assert len(result.samples) == 5 and f"written {first.answer!r}" in result.report()
    monkeypatch.setattr(model, "generate", answering(heldout, right=False))
    assert heldout.evaluate(model, batch_size=8, limit=24).exact_match == 0.0


def test_real_greedy_decoding_answers_one_line(heldout):
    answers = heldout.predict(tiny_model(), [0, 1, 2], batch_size=2)
    assert len(answers) == 3 and all("\n" not in a for a in answers)


def brute_force_choice(model, heldout, j):
    """The tag of example j's window whose tag + line break the model finds likeliest after the prompt: one unpadded
    forward pass per tag, the prompt the example's own unless the longest tag needs its window cut further."""
    e = heldout.examples[j]
    tags = sorted(set(e.speakers))
    longest = max(tags, key=lambda tag: len(TOK.encode(tag + "\n")))
    prompt = encode_example(dataclasses.replace(e, answer=longest), TOK, T).prompt
    scores = {}
    for tag in tags:
        target = TOK.encode(tag + "\n")
        with torch.no_grad():
            logp = model(torch.tensor([prompt + target])).logits[0].log_softmax(-1)
        scores[tag] = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(target))
    return max(tags, key=scores.__getitem__), scores


def test_the_choice_score_of_an_untrained_model_is_its_likeliest_speaker(heldout):
    model = tiny_model(seed=1)
    index = heldout.selection(8).tolist()
    want = [brute_force_choice(model, heldout, j) for j in index]
    got = heldout.likelihoods(model, index, batch_size=3)          # batches mix examples and prompt lengths
    for j, (_, scores), mine in zip(index, want, got):
        assert list(heldout.choices[j].tags) == list(scores) and len(mine) == len(scores)
        assert mine == pytest.approx(list(scores.values()), abs=1e-3)
    assert heldout.choose(model, index, batch_size=3) == [tag for tag, _ in want]
    result = heldout.evaluate(model, batch_size=4, limit=8)
    expected = 100 * sum(qa.exact_match(tag, heldout.examples[j].answer) for j, (tag, _) in zip(index, want)) / 8
    assert 0 <= result.choice <= 100 and result.choice == pytest.approx(expected)
    assert [x["chosen"] for x in result.samples] == [tag for tag, _ in want[:5]]


def preferring(heldout, tags):
    """A forward pass whose logits put every row's mass on the tokens of `tags[question]` + line break after
    "Answer: " (the row's example known by its question)."""
    prefix = TOK.encode("\n" + qa.ANSWER_PREFIX)
    newline = TOK.encode("\n")[0]

    def forward(input_ids, attention_mask=None, **kwargs):
        logits = torch.zeros(*input_ids.shape, TOK.vocab_size)
        for r, row in enumerate(input_ids.tolist()):
            question = TOK.decode(row[:row.index(newline)])
            at = max(i for i in range(len(row)) if row[i:i + len(prefix)] == prefix) + len(prefix)
            for i, t in enumerate(TOK.encode(tags[question] + "\n")):
                if at - 1 + i < len(row):
                    logits[r, at - 1 + i, t] = 10.0
        return SimpleNamespace(logits=logits)
    return forward


def test_a_model_that_prefers_the_right_tag_chooses_100_and_a_wrong_one_0(heldout, monkeypatch):
    model = tiny_model()
    index = heldout.selection(12).tolist()
    right = {heldout.examples[j].question: heldout.examples[j].answer for j in index}
    monkeypatch.setattr(model, "forward", preferring(heldout, right))
    monkeypatch.setattr(model, "generate", answering(heldout, right=False))
    result = heldout.evaluate(model, batch_size=5, limit=12)
    assert result.choice == 100.0 and result.exact_match == 0.0           # greedy writes a wrong name, the choice
    assert all(x["chosen"] == x["answer"] for x in result.samples)       # among the window's speakers is right
    wrong = {}
    for j in index:
        e = heldout.examples[j]
        others = [tag for tag in sorted(set(e.speakers)) if qa.normalize_tag(tag) != qa.normalize_tag(e.answer)]
        wrong[e.question] = others[0] if others else e.answer
    monkeypatch.setattr(model, "forward", preferring(heldout, wrong))
    chosen = heldout.choose(model, index, batch_size=5)
    assert chosen == [wrong[heldout.examples[j].question] for j in index]
    stuck = sum(wrong[heldout.examples[j].question] == heldout.examples[j].answer for j in index)
    assert stuck < 12 and heldout.evaluate(model, batch_size=5, limit=12).choice == pytest.approx(100 * stuck / 12)


def test_the_choice_prompt_is_cut_on_the_left_when_the_longest_tag_would_not_fit():
    example = qa.QAExample('Who speaks the line "Who is there, standing so late?"?', "Ber.\nWho is there, standing "
                           "so late?\n\nFIRST GRAVEDIGGER.\nNay, answer me.", "Ber.",
                           ("Ber.", "FIRST GRAVEDIGGER."), "d", 0)
    fits = encode_example(example, TOK, 200)
    context = len(fits.prompt) + len(fits.target) - 1                      # room for "Ber.\n" only
    held = QAHeldout([example], TOK, context)
    choices = held.choices[0]
    assert choices.tags == ("Ber.", "FIRST GRAVEDIGGER.") and not held.encoded[0].truncated
    assert len(choices.prompt) + len(choices.ids[1]) - 1 == context
    question, drop = len(TOK.encode(example.question + "\n")), len(choices.ids[1]) - len(choices.ids[0])
    full = held.encoded[0].prompt                       # the window loses `drop` tokens on its left, nothing else
    assert drop > 0 and choices.prompt == full[:question] + full[question + drop:]
    assert held.choose(tiny_model(), [0])[0] in choices.tags


class Share(Distributed):
    """Process `rank` of `world_size`, its sums collected instead of reduced."""

    def __init__(self, rank, world_size, sums):
        super().__init__(rank=rank, world_size=world_size)
        self.sums = sums

    def sum(self, values):
        self.sums.append(list(values))
        return list(values)


def test_the_heldout_score_is_shared_out_over_processes(heldout, monkeypatch):
    model = tiny_model(seed=2)
    one = heldout.evaluate(model, batch_size=4, limit=20)
    sums = []
    for rank in range(3):
        heldout.evaluate(model, batch_size=4, limit=20, dist=Share(rank, 3, sums))
    nats, tokens, count, em, f1, choice = (sum(s[i] for s in sums) for i in range(6))
    assert count == one.windows == 20 and tokens == one.tokens
    assert nats / tokens == pytest.approx(one.loss, rel=1e-5)
    assert 100 * em / count == pytest.approx(one.exact_match) and 100 * f1 / count == pytest.approx(one.f1)
    assert 100 * choice / count == pytest.approx(one.choice)
