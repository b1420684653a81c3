"""Byte and BPE tokenizers: exact round trips, byte counts, save/load, clear errors."""

import pytest

from flashgau.data.tokenizers import (BPETokenizer, ByteTokenizer, load_tokenizer, make_tokenizer,
                                      save_tokenizer, tokenizer_from_dict)
from flashgau.errors import TokenizerError

TRAIN = ["To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"] * 20
ODD = "Héllo  wörld\n\t🙂 ok  \n  x — “quotes” 日本語 \x00 end"


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(TRAIN, vocab_size=300)


def test_bytes_round_trip_and_lengths():
    tok = ByteTokenizer()
    ids = tok.encode(ODD)
    assert ids == list(ODD.encode("utf-8")) and tok.decode(ids) == ODD
    assert sum(tok.token_byte_lengths()[i] for i in ids) == len(ODD.encode("utf-8"))


def test_bpe_learns_merges_and_round_trips_any_text(bpe):
    assert 256 < bpe.vocab_size <= 300
    text = TRAIN[0]
    assert len(bpe.encode(text)) < len(text.encode("utf-8")) / 2  # merges were learned from the training text
    for sample in (text, ODD, " leading space", "trailing  \n\n", ""):
        assert bpe.decode(bpe.encode(sample)) == sample
    assert bpe.encode_batch([text, ODD]) == [bpe.encode(text), bpe.encode(ODD)]


def test_bpe_byte_lengths_count_utf8_bytes(bpe):
    lengths = bpe.token_byte_lengths()
    ids = bpe.encode(ODD + TRAIN[0])
    assert sum(lengths[i] for i in ids) == len((ODD + TRAIN[0]).encode("utf-8"))


def test_save_and_load_same_format(tmp_path, bpe):
    for tok in (ByteTokenizer(), bpe):
        path = tmp_path / f"{tok.kind}.json"
        save_tokenizer(tok, path)
        again = load_tokenizer(path)
        assert type(again) is type(tok) and again.encode(ODD) == tok.encode(ODD)
        assert tokenizer_from_dict(tok.to_dict()).vocab_size == tok.vocab_size


@pytest.mark.parametrize("tok", [ByteTokenizer(), "bpe"])
def test_invalid_unicode_is_a_clear_error(tok, bpe):
    tok = bpe if tok == "bpe" else tok
    with pytest.raises(TokenizerError, match="not valid Unicode"):
        tok.encode("prompt \udcff")  # what a non-UTF-8 byte on the command line turns into


def test_bad_kind_and_corrupt_saved_tokenizer(tmp_path):
    with pytest.raises(TokenizerError, match="unknown tokenizer"):
        make_tokenizer("chars")
    with pytest.raises(TokenizerError, match="cannot be read"):
        tokenizer_from_dict({"kind": "bpe", "tokenizer_json": "{not json"})
    (tmp_path / "t.json").write_text("garbage")
    with pytest.raises(TokenizerError, match="cannot read tokenizer file"):
        load_tokenizer(tmp_path / "t.json")
