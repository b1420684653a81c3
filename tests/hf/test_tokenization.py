"""flashgau's tokenizers as HF tokenizers: the same ids as flashgau's for any text, exact round trips, save and load
through AutoTokenizer, a pad token that is an existing id, and a mask token added in one argument."""

import json

import pytest

from hf_helpers import NEEDS_HF

pytest.importorskip("transformers", reason=NEEDS_HF)

from transformers import AutoTokenizer  # noqa: E402

from flashgau.data.tokenizers import BPETokenizer, ByteTokenizer, load_tokenizer_json  # noqa: E402
from flashgau.hf import FlashgauBPETokenizer, FlashgauByteTokenizer, FlashgauConfig, to_hf_tokenizer  # noqa: E402

TRAIN = ["To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"] * 20
ODD = "Héllo  wörld\n\t🙂 ok  \n  x — “quotes” 日本語 \x00 end Ā ā ł <mask> <pad>"


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(TRAIN, vocab_size=300)


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_same_ids_as_flashgau_and_exact_round_trip(kind, bpe, tmp_path):
    tok = ByteTokenizer() if kind == "bytes" else bpe
    hf = to_hf_tokenizer(tok)
    assert isinstance(hf, FlashgauByteTokenizer if kind == "bytes" else FlashgauBPETokenizer)
    for text in (ODD, TRAIN[0], " leading", ""):
        ids = hf(text)["input_ids"]
        assert ids == tok.encode(text), text
        assert hf.decode(ids) == text
    assert hf.pad_token_id == tok.encode("\x00")[0] and hf.padding_side == "left"
    FlashgauConfig(vocab_size=tok.vocab_size).save_pretrained(tmp_path)        # AutoTokenizer reads model_type
    hf.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert type(again) is type(hf) and again(ODD)["input_ids"] == tok.encode(ODD)
    assert again.pad_token_id == hf.pad_token_id and again.decode(tok.encode(ODD)) == ODD
    mask = again(["a", "a longer line of text"], padding=True)["attention_mask"]
    assert mask[0][0] == 0 and mask[0][-1] == 1 and all(mask[1])             # padded on the left


def test_bpe_saves_a_tokenizer_json_flashgau_reads_back(bpe, tmp_path):
    to_hf_tokenizer(bpe).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["added_tokens"] == []   # the pad token is no new id
    again = load_tokenizer_json(tmp_path / "tokenizer.json")
    assert again.vocab_size == bpe.vocab_size and again.encode(ODD) == bpe.encode(ODD)


def test_a_mask_token_is_one_argument(bpe, tmp_path):
    tok = FlashgauByteTokenizer(mask_token="<mask>")
    assert tok.mask_token_id == 256 and len(tok) == 257
    assert tok("a<mask>b")["input_ids"] == [97, 256, 98] and tok.decode([97, 256, 98]) == "a<mask>b"
    tok.save_pretrained(tmp_path)
    again = FlashgauByteTokenizer.from_pretrained(tmp_path)
    assert again.mask_token_id == 256 and again("a<mask>b")["input_ids"] == [97, 256, 98]
    fast = to_hf_tokenizer(bpe, mask_token="<mask>")
    assert fast.mask_token_id == bpe.vocab_size and fast("a<mask>")["input_ids"][-1] == bpe.vocab_size
