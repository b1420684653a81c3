"""Training, resuming and evaluating on prepared data: the on-the-fly cache tokenizes once, a prepared folder gives
the same run as its text, resume stays exact, eval checks the data fingerprint, a tokenizer.json trains."""

import json
import os

import pytest
import torch

from flashgau.data import prepare as prepare_mod
from flashgau.data.corpus import load_split
from flashgau.data.prepare import prepare
from flashgau.data.tokenizers import BPETokenizer
from flashgau.errors import CheckpointError, ConfigError, TokenizerError
from flashgau.training.config import TrainConfig
from flashgau.training.loop import train
from flashgau.training.metrics import read_metrics
from flashgau.training.setup import prepare_data
from flashgau.training.trained import evaluate_checkpoint


def tiny(data, out, **overrides):
    settings = dict(arch="flash", preset="tiny", context=32, steps=6, batch_tokens=128, micro_batch_tokens=64,
                    precision="fp32", data=None if data is None else str(data), out=str(out), eval_windows=4)
    settings.update(overrides)
    return TrainConfig(**settings)


def quiet(cfg=None, **kwargs):
    return train(cfg, progress=False, log=lambda s: None, **kwargs)


def losses(out):
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]


@pytest.fixture()
def counted(monkeypatch):
    """Counts of tokenizer calls made by preparations: encode batches and BPE trainings."""
    calls = {"encode": 0, "train": 0}
    real_encode, real_train = prepare_mod.encode_texts, BPETokenizer.train.__func__

    def encode(*args):
        calls["encode"] += 1
        return real_encode(*args)

    def train_bpe(cls, *args, **kwargs):
        calls["train"] += 1
        return real_train(cls, *args, **kwargs)

    monkeypatch.setattr(prepare_mod, "encode_texts", encode)
    monkeypatch.setattr(BPETokenizer, "train", classmethod(train_bpe))
    return calls


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
def test_a_second_start_on_the_same_text_does_not_tokenize(small_corpus, tmp_path, monkeypatch, counted, tokenizer):
    monkeypatch.setenv("FLASHGAU_CACHE", str(tmp_path / "cache"))
    cfg = tiny(small_corpus, tmp_path / "run", tokenizer=tokenizer, bpe_vocab_size=300)
    first = prepare_data(cfg)
    assert counted["encode"] > 0 and counted["train"] == (tokenizer == "bpe")
    assert first.prepared.path.parent == tmp_path / "cache" / "prepared"
    before = dict(counted)
    second = prepare_data(cfg)
    assert counted == before and second.prepared.path == first.prepared.path     # opened, not tokenized
    assert second.fingerprint == first.fingerprint
    resumed = prepare_data(cfg, tokenizer=first.tokenizer)                        # a resume: the same entry
    assert counted == before and resumed.prepared.path == first.prepared.path
    name = sorted(small_corpus.iterdir())[0]
    try:
        os.utime(name, ns=(1, 1))                                                 # any change: prepared again
        changed = prepare_data(cfg)
    finally:
        os.utime(name)
    assert counted["encode"] > before["encode"] and changed.prepared.path != first.prepared.path


def test_a_prepared_folder_trains_exactly_as_its_text_and_resumes_exactly(small_corpus, tmp_path):
    folder = prepare(small_corpus, tmp_path / "prepared", shard_bytes=4000, progress=False, log=lambda s: None).path
    from_text = quiet(tiny(small_corpus, tmp_path / "text"))
    from_folder = quiet(tiny(folder, tmp_path / "full"))
    assert losses(tmp_path / "text") == pytest.approx(losses(tmp_path / "full"), abs=1e-6)
    assert from_text.final.bits_per_byte == pytest.approx(from_folder.final.bits_per_byte, rel=1e-6)
    part = quiet(tiny(folder, tmp_path / "part"), stop_after=2)
    assert part.step == 2
    resumed = quiet(resume=tmp_path / "part")
    assert resumed.finished and losses(tmp_path / "part") == pytest.approx(losses(tmp_path / "full"), abs=1e-6)
    for x, y in zip(from_folder.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6)
    # eval: the prepared folder's fingerprint is the text's, so either place of the data is accepted
    again, what = evaluate_checkpoint(tmp_path / "text", train_data=folder)
    assert again.bits_per_byte == pytest.approx(from_text.final.bits_per_byte, rel=1e-5)
    assert "held-out split of" in what


def test_eval_and_resume_refuse_a_prepared_folder_of_other_text_or_tokenizer(small_corpus, tmp_path):
    quiet(tiny(small_corpus, tmp_path / "run"), stop_after=2)
    other = tmp_path / "other"
    other.mkdir()
    for p in small_corpus.iterdir():
        (other / p.name).write_text(p.read_text()[:-100])
    other_prepared = prepare(other, tmp_path / "other-prepared", progress=False, log=lambda s: None).path
    with pytest.raises(CheckpointError, match="differs from the data this run was trained on"):
        evaluate_checkpoint(tmp_path / "run", train_data=other_prepared)
    bpe = prepare(small_corpus, tmp_path / "bpe", tokenizer="bpe", bpe_vocab_size=300, progress=False,
                  log=lambda s: None).path
    with pytest.raises(CheckpointError, match="tokenized with another tokenizer than this run's"):
        quiet(resume=tmp_path / "run", changes={"data": str(bpe)})
    with pytest.raises(ConfigError, match="prepared with another tokenizer than this model's"):
        evaluate_checkpoint(tmp_path / "run", data=bpe)
    scored, what = evaluate_checkpoint(tmp_path / "run", data=other_prepared)      # any text, same tokenizer
    assert scored.loss > 0 and "all of the prepared" in what


def test_a_prepared_folder_brings_its_tokenizer_and_split(small_corpus, tmp_path):
    folder = prepare(small_corpus, tmp_path / "p", tokenizer="bpe", bpe_vocab_size=300, heldout_fraction=0.3,
                     progress=False, log=lambda s: None).path
    result = quiet(tiny(folder, tmp_path / "run", steps=2, sample_tokens=5))
    from flashgau.training.checkpoint import load_checkpoint
    saved = load_checkpoint(tmp_path / "run")["train_config"]
    assert (saved["tokenizer"], saved["bpe_vocab_size"], saved["heldout_fraction"]) == ("bpe", 300, 0.3)
    assert result.tokenizer.vocab_size == 300 and result.sample is not None


def test_the_default_sample_prompt_is_the_first_held_out_line(small_corpus, tmp_path):
    for tokenizer in ("bytes", "bpe"):
        data = prepare_data(tiny(small_corpus, tmp_path, tokenizer=tokenizer, bpe_vocab_size=300))
        text = load_split(small_corpus).heldout[0].text.lstrip()
        assert data.first_heldout_line(80) == text.splitlines()[0][:80]
        assert data.first_heldout_line(3) == text.splitlines()[0][:3]


def _hf_tokenizer_json(path, *, byte_level=True, bos=False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    texts = [p.read_text() for p in sorted(path.parent.glob("*.txt"))] or ["some text to learn from\n"] * 20
    if byte_level:
        tok = BPETokenizer.train(texts, vocab_size=320)._tok
        if bos:
            tok.add_special_tokens(["<|bos|>"])
            tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[
                ("<|bos|>", tok.token_to_id("<|bos|>"))])
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]"]))
    tok.save(str(path))
    return path


def test_a_tokenizer_json_trains_and_is_saved_in_the_checkpoint(small_corpus, tmp_path):
    from tokenizers import Tokenizer

    path = _hf_tokenizer_json(tmp_path / "tokenizer.json", bos=True)
    result = quiet(tiny(small_corpus, tmp_path / "run", tokenizer=str(path), steps=2))
    assert result.tokenizer.kind == "bpe"
    assert result.tokenizer.vocab_size == Tokenizer.from_file(str(path)).get_vocab_size() > 256
    ids = result.tokenizer.encode("To be, or not to be")
    assert result.tokenizer.decode(ids) == "To be, or not to be"          # no <|bos|> added to documents
    path.unlink()                                                          # the checkpoint holds the tokenizer
    assert quiet(resume=tmp_path / "run") is not None


def test_a_tokenizer_json_that_is_not_byte_level_is_refused_in_one_line(tmp_path):
    path = _hf_tokenizer_json(tmp_path / "wordpiece.json", byte_level=False)
    with pytest.raises(TokenizerError, match="byte-level BPE") as err:
        prepare_data(tiny(None, tmp_path, tokenizer=str(path)))
    assert "\n" not in str(err.value)


def test_packed_documents_train(small_corpus, tmp_path):
    result = quiet(tiny(small_corpus, tmp_path / "run", steps=2, pack_documents=True))
    assert result.finished and json.loads((tmp_path / "run" / "summary.json").read_text())["step"] == 2


def test_packed_shards_know_where_each_document_starts(small_corpus, tmp_path):
    """Several documents per shard (shard_bytes 13000, ~6 kB per document, split into training and held-out parts):
    a packed shard's segments change exactly at the documents' first tokens, so packed windows carry them."""
    folder = prepare(small_corpus, tmp_path / "prepared", shard_bytes=13000, progress=False, log=lambda s: None).path
    data = prepare_data(tiny(folder, tmp_path / "run"))
    docs, packed = data.train_docs, data.train_docs.packed()
    assert packed.num_tokens == docs.num_tokens and len(packed) < len(docs)
    boundaries = 0
    for entry in range(len(packed)):
        shard = int(packed.index[entry, 0])
        seg = packed.segments(entry)
        mine = docs.index[docs.index[:, 0] == shard]
        assert (seg is None) == (len(mine) == 1)
        if seg is not None:
            starts = (torch.nonzero(seg[1:] != seg[:-1]).squeeze(1) + 1).tolist()
            assert starts == sorted(mine[:, 1].tolist())[1:]
            boundaries += len(starts)
    assert boundaries >= 1
    batch = data.sampler(1024, seed=0, pack_documents=True).next_batch(32)
    assert batch.segment_ids is not None and bool((batch.segment_ids[:, -1] > 0).any())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_an_unwritable_cache_is_one_line_naming_the_variable(small_corpus, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setenv("FLASHGAU_CACHE", str(locked / "cache"))
    with pytest.raises(ConfigError, match="cannot write the data cache .* set FLASHGAU_CACHE"):
        prepare_data(tiny(small_corpus, tmp_path))
