"""The retrieval examples (passkey and multi-key recall): facts at the asked distances, the layout of both forms,
one-token answers in both tokenizers, held-out keys never in training examples, and the scorer and
floors against hand-made cases."""

import random

import pytest

from flashgau.data import retrieval
from flashgau.data.retrieval import Phrases, Query, RetrievalExample, RetrievalSpec
from flashgau.data.tokenizers import ByteTokenizer, make_tokenizer

TOK = ByteTokenizer()
PHRASES = Phrases(TOK)
FILLER = TOK.encode("O Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name. " * 8)


@pytest.fixture(scope="module")
def bpe():
    return make_tokenizer("bpe", ["The key of the chest is 7. What is the key of the door?\nAnswer: Q"
                      + "O Romeo, wherefore art thou Romeo? " * 50], 300)


def test_facts_sit_at_the_asked_distances_after_the_text():
    facts = [("bavo", "Q"), ("kime", "7"), ("sulo", "A")]
    backs = [0, 100, len(FILLER)]
    ex = retrieval.build(FILLER, facts, backs, [1, 0], "after", PHRASES)
    text = TOK.decode(ex.ids)
    assert text.startswith("\nThe key of the sulo is A.\n")                         # back = whole filler: first
    for q in ex.queries:
        assert ex.ids[q.fact_at] == ex.ids[q.answer_at] == PHRASES.value_ids[q.value]
        prefix = ex.ids[q.fact_at - len(PHRASES.fact_prefix(q.key)):q.fact_at]
        assert TOK.decode(prefix) == f"\nThe key of the {q.key} is "
        assert TOK.decode(ex.ids[:q.answer_at]).endswith(f"The key of the {q.key} is ")
    kime, bavo = ex.queries
    assert (kime.key, bavo.key) == ("kime", "bavo")
    # bavo (back 0) is the last thing before the questions: its ".\n", then kime's question prefix
    assert bavo.distance == len(PHRASES.fact_end) + len(PHRASES.fact_prefix("kime")) + 1 \
        + len(PHRASES.fact_prefix("bavo"))
    # kime has 100 filler tokens and bavo's whole fact after it
    assert kime.distance == len(PHRASES.fact_end) + 100 + len(PHRASES.fact("bavo", "Q")) \
        + len(PHRASES.fact_prefix("kime"))
    assert text.endswith("The key of the kime is 7\nThe key of the bavo is Q")


def test_the_first_form_asks_before_the_text_and_answers_at_the_end():
    ex = retrieval.build(FILLER, [("bavo", "Q")], [40], [0], "first", PHRASES)
    text = TOK.decode(ex.ids)
    assert text.startswith("What is the key of the bavo?\n") and text.endswith("\nAnswer: Q")
    (q,) = ex.queries
    assert q.answer_at == len(ex.ids) - 1 and q.distance == len(PHRASES.fact_end) + 40 + len(PHRASES.answer_prefix)


def test_examples_are_exactly_the_context_and_deterministic():
    def filler(rng, n):
        start = rng.randrange(len(FILLER) - n + 1)
        return FILLER[start:start + n]

    for spec in (RetrievalSpec(1, 1, "after"), RetrievalSpec(4, 4, "after"), RetrievalSpec(4, 1, "first")):
        a = retrieval.make_example(random.Random(5), spec, 300, "train", PHRASES, filler)
        b = retrieval.make_example(random.Random(5), spec, 300, "train", PHRASES, filler)
        assert a == b and len(a.ids) == 301 and len(a.queries) == spec.asked
        assert len({k for k, _ in a.facts}) == spec.facts
    with pytest.raises(ValueError, match="longer context or fewer facts"):
        retrieval.make_example(random.Random(0), RetrievalSpec(16, 4), 300, "train", PHRASES, filler)


def test_distances_cover_every_scale():
    n = 2000
    backs = [retrieval.log_uniform(random.Random(i), n) for i in range(2000)]
    assert min(backs) == 0 and max(backs) > n // 2 and all(0 <= b <= n for b in backs)
    assert sum(b < 16 for b in backs) > 300 and sum(b >= 256 for b in backs) > 300      # short and long alike


def test_heldout_keys_never_meet_training_ones():
    train_keys, held_keys = set(retrieval.keys("train")), set(retrieval.keys("heldout"))
    assert not train_keys & held_keys and len(held_keys) >= 64 * 10 and len(train_keys) > len(held_keys)

    def filler(rng, n):
        return FILLER[:n]

    rng = random.Random(1)
    seen = set()
    for side, other_keys in (("train", held_keys), ("heldout", train_keys)):
        for _ in range(50):
            ex = retrieval.make_example(rng, RetrievalSpec(4, 4), 400, side, PHRASES, filler)
            assert not {k for k, _ in ex.facts} & other_keys
            seen |= {v for _, v in ex.facts}
    assert seen == set(retrieval.VALUES)                          # values: the same 36 on both sides


def test_every_value_is_one_token_in_both_tokenizers(bpe):
    for tokenizer in (TOK, bpe):
        phrases = Phrases(tokenizer)
        for v in retrieval.VALUES:
            assert tokenizer.encode(v) == [phrases.value_ids[v]]
        ex = retrieval.build(tokenizer.encode("Deny thy father. " * 20), [("bavo", "Q")], [7], [0], "after", phrases)
        assert ex.ids[ex.queries[0].answer_at] == tokenizer.encode("Q")[0]
        assert tokenizer.decode(ex.ids).endswith("The key of the bavo is Q")


def test_buckets_count_chunks_of_absolute_position():
    def q(fact_at, reads_at):
        return Query("k", "A", reads_at + 1, fact_at)

    assert retrieval.bucket(q(16, 31), 16) == "same chunk"
    assert retrieval.bucket(q(15, 16), 16) == "1-2 chunks back"                 # one token apart, across a border
    assert retrieval.bucket(q(0, 47), 16) == "1-2 chunks back"
    assert retrieval.bucket(q(0, 48), 16) == "3 chunks back"
    assert retrieval.bucket(q(0, 64), 16) == "4+ chunks back"


def test_accuracy_by_bucket_against_hand_counts():
    queries = [Query("a", "A", 31 + 1, 20), Query("b", "B", 31 + 1, 20), Query("c", "C", 100 + 1, 0),
               Query("d", "D", 100 + 1, 1)]
    acc = retrieval.accuracy(["A", "X", "C", None], queries, 16)
    assert acc["all"] == (50.0, 4) and acc["same chunk"] == (50.0, 2) and acc["4+ chunks back"] == (50.0, 2)
    assert acc["1-2 chunks back"] == (None, 0)


def test_floors_against_hand_counts():
    def ex(facts, asked):
        return RetrievalExample([], tuple(facts), tuple(Query(facts[i][0], facts[i][1], 0, 0) for i in asked))

    examples = [ex([("a", "0"), ("b", "3")], [0]), ex([("c", "0")], [0]), ex([("d", "3"), ("e", "6")], [1, 0])]
    floors = retrieval.floors(examples, seed=0)
    assert floors["most_frequent_value"] == 50.0              # "0" and "3" twice each of four: the first sorted
    one = retrieval.floors([ex([("c", "X")], [0])] * 10, seed=0)
    assert one["random_fact"] == 100.0 and one["most_frequent_value"] == 100.0
    many = retrieval.floors([ex([("c", "X")], [0])] * 3600, seed=0)
    assert 100 / 36 - 1 < many["random_value"] < 100 / 36 + 1    # one of the 36 values


def test_a_bad_spec_is_refused():
    with pytest.raises(ValueError, match="form"):
        RetrievalSpec(1, 1, "middle")
    with pytest.raises(ValueError, match="queries"):
        RetrievalSpec(2, 3, "after")
