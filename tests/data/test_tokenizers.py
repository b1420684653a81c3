"""Byte and BPE tokenizers: exact round trips, byte counts, save/load, clear errors."""

import pytest

from flashgau.data.tokenizers import (BPETokenizer, ByteTokenizer, load_tokenizer, load_tokenizer_json, make_tokenizer,
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


def test_a_tokenizer_json_loads_as_the_same_bpe(tmp_path, bpe):
    """What `flashgau export` writes (and GPT-2 style files from elsewhere) read back as flashgau's BPETokenizer."""
    path = tmp_path / "tokenizer.json"
    path.write_text(bpe.to_dict()["tokenizer_json"], encoding="utf-8")
    again = load_tokenizer_json(path)
    assert isinstance(again, BPETokenizer) and again.vocab_size == bpe.vocab_size
    assert again.encode(ODD + TRAIN[0]) == bpe.encode(ODD + TRAIN[0]) and again.decode(bpe.encode(ODD)) == ODD


def test_a_tokenizer_json_that_is_not_byte_level_bpe_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.save(str(tmp_path / "wp.json"))
    with pytest.raises(TokenizerError, match="byte-level BPE"):
        load_tokenizer_json(tmp_path / "wp.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read tokenizer file"):
        load_tokenizer_json(tmp_path / "bad.json")
    with pytest.raises(TokenizerError, match="cannot read tokenizer file"):
        load_tokenizer_json(tmp_path / "missing.json")


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_the_mask_token_is_one_id_after_the_vocabulary_and_survives_save_and_load(kind, bpe, tmp_path):
    plain = ByteTokenizer() if kind == "bytes" else bpe
    tok = plain.with_mask_token()
    assert tok.mask_token == "<mask>" and tok.mask_token_id == plain.vocab_size == tok.base_vocab_size
    assert tok.vocab_size == plain.vocab_size + 1 and plain.mask_token_id is None
    assert tok.encode(ODD + " <mask>") == plain.encode(ODD + " <mask>")    # text never encodes to the mask id
    ids = plain.encode("To be") + [tok.mask_token_id] + plain.encode("or not")
    assert tok.decode(ids) == "To be<mask>or not"
    assert len(tok.token_byte_lengths()) == tok.vocab_size and tok.token_byte_lengths()[-1] == 0
    save_tokenizer(tok, tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    assert again.mask_token_id == tok.mask_token_id and again.to_dict() == tok.to_dict()
    assert again.without_mask_token().to_dict() == plain.to_dict()           # the data's tokenizer, as it was
    assert tok.with_mask_token() is tok and plain.without_mask_token() is plain
    with pytest.raises(TokenizerError, match="mask token"):
        tokenizer_from_dict({**plain.to_dict(), "mask_token": 5})
