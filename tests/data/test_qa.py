"""The who-speaks-this-line task: speeches parsed from the plays, examples that are answerable from their context,
deterministic from a seed, built only from the documents given (training or held-out plays), and the scores."""

import pytest

from flashgau.data import qa
from flashgau.data.corpus import Document, load_split

PLAY = """THE TRAGEDY OF A TEST

ACT I.

SCENE I. A platform.

[Enter Bernardo and Francisco.]

Ber.
Who's there, standing so late upon the platform?

Fran.
Nay, answer me: stand, and unfold yourself.

KING HENRY.
Long live the king, and all his loyal subjects here.
Another line of the same royal speech goes on.

[Exit Ghost.]

THESEUS
Now, fair Hippolyta, our nuptial hour draws on apace.

LEONTES.
                   Stay your thanks a while, good brother.
"""


def test_speeches_are_tags_then_lines_and_headings_are_not():
    found = qa.speeches(PLAY)
    assert [s.tag for s in found] == ["Ber.", "Fran.", "KING HENRY.", "THESEUS", "LEONTES."]
    king = found[2]
    assert [line for _, line in king.lines] == ["Long live the king, and all his loyal subjects here.",
                                                "Another line of the same royal speech goes on."]
    assert PLAY[king.start:king.start + len("KING HENRY.")] == "KING HENRY."
    assert all(PLAY[o:o + len(t)] == t for s in found for o, t in s.lines)
    for line in ("ACT I.", "SCENE I. A platform.", "[Exit Ghost.]", "", "This is a sentence of prose, not a tag."):
        assert not qa.is_tag(line)


@pytest.fixture(scope="module")
def split():
    return load_split(None, 0.1)


def test_examples_quote_the_first_line_of_a_speech_answerable_from_their_context(split):
    examples = qa.make_examples(split.train, 60, seed=3, context_chars=2000)
    for e in examples:
        quoted = e.question.split('"')[1]
        assert e.context.count(quoted) == 1                    # the line is in the window, once
        upto = e.context[:e.context.index(quoted) + len(quoted)]
        assert qa.speeches("\n" + upto + "\n")[-1].tag == e.answer    # the tag of the speech holding the line
        above, indent = upto[:-len(quoted)].split("\n")[-2:]
        assert above.strip() == e.answer and not indent.strip()    # ... on the line right above it
        assert e.answer in e.speakers and len(e.context) <= 2000
        assert e.prompt.startswith(e.question) and e.prompt.endswith(qa.ANSWER_PREFIX)
        assert e.target == e.answer + "\n"


@pytest.mark.parametrize("chars", [700, 1500, 3000])
def test_windows_end_on_a_line_of_text_never_on_a_speech_tag_whose_speech_is_cut_off(split, chars):
    texts = {d.name: d.text for d in split.heldout}
    for e in qa.make_examples(split.heldout, 200, seed=15, context_chars=chars):
        text = texts[e.document]
        end = e.offset + len(e.context)
        lines = e.context.split("\n")
        assert text[e.offset:end] == e.context and text[end] == "\n" and lines[-1].strip()
        assert not (qa.is_tag(lines[-1].strip()) and lines[-2].strip() == ""), lines[-3:]
        assert not [s for s in qa.speeches(text) if e.offset <= s.start < end < s.lines[0][0]]


def test_examples_are_deterministic_and_come_only_from_the_given_plays(split):
    a = qa.make_examples(split.heldout, 30, seed=7, context_chars=1500)
    assert a == qa.make_examples(split.heldout, 30, seed=7, context_chars=1500)
    assert a != qa.make_examples(split.heldout, 30, seed=8, context_chars=1500)
    held = {d.name for d in split.heldout}
    assert {e.document for e in a} <= held
    assert not {e.document for e in qa.make_examples(split.train, 30, seed=7)} & held


def test_documents_without_plays_are_refused():
    with pytest.raises(ValueError, match="no play with speaker tags"):
        qa.make_examples([Document("sonnet", "Shall I compare thee to a summer's day?\n" * 50)], 3, seed=0)


def test_scores_and_floors():
    assert qa.exact_match("hor.", "Hor.") == 1.0 and qa.exact_match("Ham.", "Hor.") == 0.0
    assert qa.token_f1("First Clown.", "Second Clown.") == pytest.approx(0.5)
    assert qa.token_f1("", "Hor.") == 0.0
    examples = [qa.QAExample("q", "c", "Hor.", ("Hor.", "Ham.", "Hor."), "d", 0),
                qa.QAExample("q", "c", "Ham.", ("Hor.", "Ham.", "Hor."), "d", 0)]
    result = qa.score(["Hor.", "Hor."], examples)
    assert result["exact_match"] == 50.0 and result["examples"] == 2
    f = qa.floors(examples)
    assert f["most_frequent_speaker"]["exact_match"] == 50.0               # always "Hor."
    assert 0.0 <= f["random_speaker"]["exact_match"] <= 100.0
    with pytest.raises(ValueError, match="one prediction per example"):
        qa.score(["Hor."], examples)
