"""Prepared datasets: shards round-trip to direct tokenization, the streaming split equals the in-memory one, a
manifest that does not match its files and an unfinished preparation are refused in one line."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from flashgau.data import prepare as prepare_mod
from flashgau.data import sources as sources_mod
from flashgau.data import prepared as prepared_mod
from flashgau.data.batching import HeldoutWindows, TokenDocuments, WindowSampler, tokenize_documents
from flashgau.data.corpus import Document, load_split, split_documents, split_fingerprint
from flashgau.data.prepare import prepare, safe_cut
from flashgau.data.prepared import open_prepared, token_dtype, verify_prepared
from flashgau.data.tokenizers import BPETokenizer, ByteTokenizer
from flashgau.errors import ConfigError, CorpusError


def quiet_prepare(data, out, **kwargs):
    return prepare(data, out, progress=False, log=lambda s: None, **kwargs)


def assert_same_as_in_memory(prepared, split, tok):
    """Tokens, document boundaries, names, the split and its fingerprint equal the in-memory path's."""
    assert prepared.fingerprint == split_fingerprint(split)
    assert prepared.describe() == split.describe()
    for side, docs in (("train", split.train), ("heldout", split.heldout)):
        direct = tokenize_documents([d.text for d in docs], tok)
        mapped = getattr(prepared, side)
        assert len(mapped) == len(direct)
        for i, tokens in enumerate(direct):
            assert torch.equal(mapped.tokens(i).to(torch.int64), tokens.to(torch.int64)), (side, i)
        assert prepared.names(side) == [d.name for d in docs if len(tok.encode(d.text)) >= 2]


def test_default_corpus_prepares_to_todays_split_and_tokens(tmp_path):
    prepared = quiet_prepare(None, tmp_path / "p")
    assert prepared.manifest["dtype"] == "uint8" and prepared.train.shards[0].dtype == torch.uint8
    assert_same_as_in_memory(prepared, load_split(), ByteTokenizer())
    assert prepared.names("heldout") == ["cymbeline_gut", "henry_iv_part_1_gut", "merry_wives_of_windsor_gut",
                                         "taming_of_the_shrew_gut", "twelfth_night_gut"]


def test_a_messy_folder_splits_and_cleans_as_in_memory(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for i in range(12):
        (data / f"doc{i}.txt").write_text(f"Document {i}.\r\n" + "Some words here, and more.\n" * (5 + 7 * i))
    (data / "sub" / "bom.md").write_bytes("\ufeffünïcode — ok\r\n".encode("utf-8") * 30)
    (data / "copy.txt").write_text((data / "doc3.txt").read_text())      # same text after the newline fix
    (data / "blank.txt").write_text(" \n\t\n")
    (data / "x.txt").write_text("x")                                     # one token: nothing to predict
    (data / ".hidden").write_text("never read")
    prepared = quiet_prepare(data, tmp_path / "p", shard_bytes=2000)
    assert len(prepared.train.shards) > 1                                # small shards: several
    for docs in (prepared.train, prepared.heldout):
        shard_lengths = torch.tensor([len(s) for s in docs.shards])
        assert (docs.index[:, 1] + docs.index[:, 2] <= shard_lengths[docs.index[:, 0]]).all()
    assert_same_as_in_memory(prepared, load_split(data), ByteTokenizer())


@pytest.mark.parametrize("block_bytes", [7, 1 << 20])
def test_a_single_document_is_cut_inside_its_text_as_in_memory(tmp_path, monkeypatch, block_bytes):
    monkeypatch.setattr(sources_mod, "BLOCK_BYTES", block_bytes)       # cuts and "\r\n" across block edges
    book = tmp_path / "book.txt"
    book.write_bytes("".join(f"Line {i}: ünïcode text\r\n" for i in range(300)).encode("utf-8"))
    prepared = quiet_prepare(book, tmp_path / "p")
    assert prepared.manifest["single_document"]
    assert prepared.names("train") == ["book.txt[train]"] and prepared.names("heldout") == ["book.txt[heldout]"]
    assert_same_as_in_memory(prepared, load_split(book), ByteTokenizer())


def test_a_single_document_too_short_to_split_is_refused_the_same_way(tmp_path):
    (tmp_path / "short.txt").write_text("hello\n   ")
    with pytest.raises(CorpusError, match="too short to split") as streamed:
        quiet_prepare(tmp_path / "short.txt", tmp_path / "p")
    with pytest.raises(CorpusError) as in_memory:
        load_split(tmp_path / "short.txt")
    assert str(streamed.value) == str(in_memory.value)
    assert not (tmp_path / "p").exists()                                # refused before anything was written


def test_bpe_is_trained_on_the_training_split_and_round_trips(small_corpus, tmp_path):
    prepared = quiet_prepare(small_corpus, tmp_path / "p", tokenizer="bpe", bpe_vocab_size=300)
    split = load_split(small_corpus)
    direct = BPETokenizer.train([d.text for d in split.train], vocab_size=300)
    assert prepared.tokenizer.to_dict() == direct.to_dict()               # the same BPE as the in-memory path
    assert prepared.manifest["dtype"] == "uint16" and prepared.manifest["bpe_sample"]["all_training_text"]
    assert_same_as_in_memory(prepared, split, direct)


def test_bpe_sample_limits_what_the_tokenizer_is_trained_on(small_corpus, tmp_path):
    prepared = quiet_prepare(small_corpus, tmp_path / "p", tokenizer="bpe", bpe_vocab_size=300,
                             bpe_sample_bytes=5000)
    sample = prepared.manifest["bpe_sample"]
    assert not sample["all_training_text"] and sample["characters"] == 5000 and sample["documents"] == 1
    assert_same_as_in_memory(prepared, load_split(small_corpus), prepared.tokenizer)


def test_long_documents_are_encoded_in_pieces_with_the_same_tokens(small_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_mod, "PIECE_CHARS", 300)
    monkeypatch.setattr(prepare_mod, "BATCH_CHARS", 1000)
    real, longest = prepare_mod.encode_texts, []

    def recording(tok, texts, typecode):
        longest.append(max(map(len, texts)))
        return real(tok, texts, typecode)

    monkeypatch.setattr(prepare_mod, "encode_texts", recording)
    prepared = quiet_prepare(small_corpus, tmp_path / "p", tokenizer="bpe", bpe_vocab_size=400)
    assert max(longest) < 2 * 300 + 100                                  # 6 kB documents went in pieces
    assert_same_as_in_memory(prepared, load_split(small_corpus), prepared.tokenizer)


def test_safe_cut_finds_a_line_break_between_two_words():
    text = "aa\n\nbb  \ncc\ndd"
    assert safe_cut(text, 12) == 12 and text[:12] == "aa\n\nbb  \ncc\n"
    assert safe_cut(text, 11) == 11         # "bb  \n" ends in spaces, "\n\n" is a run: no safe break before
    assert safe_cut("no breaks at all", 5) == 5


def test_dtype_is_the_smallest_that_holds_the_vocabulary():
    assert [token_dtype(v) for v in (256, 257, 65536, 65537)] == ["uint8", "uint16", "uint16", "uint32"]


def test_windows_over_shards_equal_windows_over_tensors(small_corpus, tmp_path):
    prepared = quiet_prepare(small_corpus, tmp_path / "p", shard_bytes=5000)
    split = load_split(small_corpus)
    docs = tokenize_documents([d.text for d in split.train], ByteTokenizer())
    a, b = WindowSampler(prepared.train, 64, seed=5), WindowSampler(docs, 64, seed=5)
    for _ in range(5):
        x, y = a.next_batch(7), b.next_batch(7)
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)
    held = tokenize_documents([d.text for d in split.heldout], ByteTokenizer())
    for x, y in zip(HeldoutWindows(prepared.heldout, 64).batches(5), HeldoutWindows(held, 64).batches(5)):
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)


# ------------------------------------------------------------------------------------------ refusing bad folders

@pytest.fixture()
def prepared_dir(small_corpus, tmp_path):
    return quiet_prepare(small_corpus, tmp_path / "p").path


def _one_line(err):
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "train-00000.bin").write_bytes((p / "train-00000.bin").read_bytes()[:-10]),
     r"manifest does not match its files \(train-00000.bin: [\d,]+ bytes, the manifest says"),
    (lambda p: (p / "heldout-00000.bin").unlink(), r"heldout-00000.bin: missing"),
    (lambda p: (p / "train.idx").write_bytes(b"\0" * (p / "train.idx").stat().st_size), r"train.idx is missing, "
     "truncated or changed"),
    (lambda p: (p / "tokenizer.json").write_text('{"kind": "bpe"}'), r"tokenizer.json is missing or changed"),
    (lambda p: (p / "manifest.json").write_text("{not json"), r"manifest.json cannot be read"),
    (lambda p: (p / "manifest.json").write_text(json.dumps({**json.loads((p / "manifest.json").read_text()),
                                                             "version": 99})), "format version 99"),
])
def test_a_manifest_that_does_not_match_its_files_is_refused_in_one_line(prepared_dir, damage, message):
    damage(prepared_dir)
    with pytest.raises(CorpusError, match=message) as err:
        open_prepared(prepared_dir)
    _one_line(err)


def _flip_byte(path, at=100):
    """Other bytes of the same size: the change a size check cannot see."""
    raw = bytearray(path.read_bytes())
    raw[at] ^= 1
    path.write_bytes(bytes(raw))


@pytest.fixture()
def new_process(monkeypatch):
    """What this process knows it has hashed, forgotten (as in a new process)."""
    monkeypatch.setattr(prepared_mod, "_VERIFIED", {})


@pytest.mark.parametrize("shard", ["train-00000.bin", "heldout-00000.bin"])
def test_a_shard_changed_at_its_size_is_refused_at_open(prepared_dir, new_process, shard):
    _flip_byte(prepared_dir / shard)
    for check in (open_prepared, verify_prepared):
        with pytest.raises(CorpusError, match=f"{shard} does not match its checksum .*`flashgau prepare") as err:
            check(prepared_dir)
        _one_line(err)


def test_the_heldout_shards_are_checked_before_every_score(prepared_dir):
    data = open_prepared(prepared_dir)
    windows = HeldoutWindows(data.heldout, 64)
    assert next(windows.batches(4)).input_ids.shape == (4, 64)          # unchanged: scored
    _flip_byte(prepared_dir / "heldout-00000.bin")
    with pytest.raises(CorpusError, match="heldout-00000.bin does not match its checksum") as err:
        next(windows.batches(4))
    _one_line(err)
    both = HeldoutWindows(TokenDocuments.concat([data.train, data.heldout]), 64)    # eval --data PREPARED
    with pytest.raises(CorpusError, match="heldout-00000.bin"):
        next(both.batches(4))


def test_a_training_shard_is_hashed_once_per_process_and_again_after_a_write(prepared_dir, new_process,
                                                                             monkeypatch):
    hashed = []
    real = prepared_mod.sha256_file
    monkeypatch.setattr(prepared_mod, "sha256_file", lambda path, *a: hashed.append(path.name) or real(path, *a))
    open_prepared(prepared_dir)
    assert "train-00000.bin" in hashed
    hashed.clear()
    open_prepared(prepared_dir)                                          # a re-open reads no training shard again
    assert "train-00000.bin" not in hashed and "heldout-00000.bin" in hashed
    shard = prepared_dir / "train-00000.bin"
    _flip_byte(shard)
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))        # a write moves mtime (and ctime) on
    with pytest.raises(CorpusError, match="train-00000.bin does not match its checksum"):
        open_prepared(prepared_dir)


def test_the_process_that_prepares_does_not_hash_its_shards_again(small_corpus, tmp_path, new_process, monkeypatch):
    hashed = []
    real = prepared_mod.sha256_file
    monkeypatch.setattr(prepared_mod, "sha256_file", lambda path, *a: hashed.append(path.name) or real(path, *a))
    quiet_prepare(small_corpus, tmp_path / "p", shard_bytes=3000)
    assert not [name for name in hashed if name.startswith("train-")]


def test_rerunning_prepare_rebuilds_a_damaged_folder_and_verify_lists_each_problem(small_corpus, prepared_dir,
                                                                                  new_process, capsys):
    from flashgau.cli import main

    assert main(["prepare", "--verify", str(prepared_dir)]) == 0
    assert capsys.readouterr().out == f"{prepared_dir}: 2 shards verified\n"
    _flip_byte(prepared_dir / "train-00000.bin")
    (prepared_dir / "heldout-00000.bin").write_bytes(b"short")
    assert main(["prepare", "--verify", str(prepared_dir)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("flashgau prepare: error: ") for line in lines)
    assert "train-00000.bin does not match its checksum" in lines[0] and "heldout-00000.bin: 5 bytes" in lines[1]
    logs = []
    again = prepare(small_corpus, prepared_dir, progress=False, log=logs.append)
    assert "does not match" in logs[0] and "preparing it again" in logs[0]
    assert main(["prepare", "--verify", str(again.path)]) == 0
    assert main(["prepare", "--verify", str(prepared_dir / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_prepared_folder_without_its_manifest_says_so(small_corpus, prepared_dir, tmp_path):
    (prepared_dir / "manifest.json").unlink()
    for call in (open_prepared, lambda p: quiet_prepare(p, tmp_path / "q")):
        with pytest.raises(CorpusError, match="holds token shards but no manifest.json .*`flashgau prepare") as err:
            call(prepared_dir)
        _one_line(err)
    logs = []
    prepare(small_corpus, prepared_dir, progress=False, log=logs.append)     # the same prepare finishes it
    assert "starting it again" in logs[0]
    open_prepared(prepared_dir)


def test_a_damaged_cache_entry_is_prepared_again_and_named_when_found_during_a_run(small_corpus, new_process):
    from flashgau.data.cache import prepared_cached

    first = prepared_cached(small_corpus)
    _flip_byte(first.path / "heldout-00000.bin")
    with pytest.raises(CorpusError, match=f"delete {first.path} .*prepared again at the next start") as err:
        next(HeldoutWindows(first.heldout, 64).batches(2))
    _one_line(err)
    logs = []
    again = prepared_cached(small_corpus, log=logs.append)
    assert again.path == first.path and "preparing it again" in logs[0]
    next(HeldoutWindows(again.heldout, 64).batches(2))


def test_a_full_disk_during_prepare_is_one_line_and_leaves_nothing(small_corpus, tmp_path, monkeypatch, capsys):
    import builtins
    import errno

    from flashgau.cli import main

    class Full:
        """A file whose writes fail once the disk has taken 2000 bytes."""

        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            if self.handle.tell() + len(data) > 2000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(prepared_mod, "open", lambda *a, **k: Full(builtins.open(*a, **k)), raising=False)
    out = tmp_path / "p"
    assert main(["prepare", str(small_corpus), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flashgau prepare: error: cannot write the prepared data in") and err.count("\n") == 1
    assert "No space left on device" in err and not out.exists()
    (tmp_path / "cache").mkdir()
    monkeypatch.setenv("FLASHGAU_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="cannot write the data cache .* No space left on device") as caught:
        __import__("flashgau.data.cache", fromlist=["x"]).prepared_cached(small_corpus)
    _one_line(caught)
    assert not list((tmp_path / "cache" / "prepared").iterdir())


def test_prepared_folders_are_never_read_as_text(prepared_dir, tmp_path):
    with pytest.raises(CorpusError, match="is a prepared dataset .* not text"):
        quiet_prepare(prepared_dir, tmp_path / "again")


def test_rerunning_prepare_on_a_finished_folder_checks_it_or_needs_overwrite(small_corpus, prepared_dir):
    logs = []
    prepare(small_corpus, prepared_dir, progress=False, log=logs.append)
    assert "up to date" in logs[0]
    with pytest.raises(ConfigError, match="already holds a prepared dataset .* --overwrite"):
        quiet_prepare(small_corpus, prepared_dir, heldout_fraction=0.3)
    again = quiet_prepare(small_corpus, prepared_dir, heldout_fraction=0.3, overwrite=True)
    assert again.manifest["request"]["heldout_fraction"] == 0.3


def test_out_must_be_new_empty_or_ours(small_corpus, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty and holds no prepared dataset"):
        quiet_prepare(small_corpus, tmp_path / "full")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="inside the data folder"):
        quiet_prepare(small_corpus, small_corpus / "prepared")


KILLED_PREPARE = textwrap.dedent("""
    import os, signal, sys
    from flashgau.data import prepare as p
    real, calls = p.encode_texts, [0]
    def encode_then_die(*args):
        calls[0] += 1
        if calls[0] == 3:                                  # some shards are on disk by now
            os.kill(os.getpid(), signal.SIGKILL)           # no cleanup, no exception handlers
        return real(*args)
    p.encode_texts = encode_then_die
    p.prepare(sys.argv[1], sys.argv[2], shard_bytes=3000, progress=False)
""")


def test_a_killed_prepare_is_refused_in_one_line_and_a_rerun_completes(small_corpus, tmp_path, capsys):
    from flashgau.cli import main

    out = tmp_path / "p"
    proc = subprocess.run([sys.executable, "-c", KILLED_PREPARE, str(small_corpus), str(out)], capture_output=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    assert any(p.suffix == ".bin" for p in out.iterdir()) and not (out / "manifest.json").exists()
    with pytest.raises(CorpusError, match="unfinished preparation .* run the same prepare again") as err:
        open_prepared(out)
    _one_line(err)
    assert main(["train", "--data", str(out), "--steps", "1", "--out", str(tmp_path / "run")]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("flashgau train: error: ") and "unfinished preparation" in stderr
    assert stderr.count("\n") == 1 and not (tmp_path / "run").exists()
    logs = []
    done = prepare(small_corpus, out, shard_bytes=3000, progress=False, log=logs.append)
    assert "interrupted; starting it again" in logs[0]
    clean = quiet_prepare(small_corpus, tmp_path / "clean", shard_bytes=3000)
    for side in ("train", "heldout"):
        assert [s["sha256"] for s in done.manifest[side]["shards"]] == \
               [s["sha256"] for s in clean.manifest[side]["shards"]]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in clean.path.iterdir())


def test_records_of_json_lines_are_documents(tmp_path):
    rows = [{"text": f"Record {i}: " + "words and more words\n" * (3 + i), "id": i} for i in range(10)]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    prepared = quiet_prepare(tmp_path / "data.jsonl", tmp_path / "p")
    split = split_documents([Document(f"data.jsonl:{i + 1}", r["text"]) for i, r in enumerate(rows)])
    assert_same_as_in_memory(prepared, split, ByteTokenizer())


def test_a_refused_out_folder_is_left_as_it_was(small_corpus, tmp_path):
    data = tmp_path / "texts"
    data.mkdir()
    (data / "a.txt").write_text("my own text\n" * 50)
    with pytest.raises(ConfigError, match="not empty"):
        quiet_prepare(small_corpus, data)
    assert sorted(p.name for p in data.iterdir()) == ["a.txt"]           # no marker: still plain text
    assert len(quiet_prepare(data, tmp_path / "p").train) == 1


def test_two_prepares_never_write_one_folder(small_corpus, tmp_path):
    out = tmp_path / "p"
    code = ("import time\nfrom pathlib import Path\nfrom flashgau.data.prepare import _Claim\n"
            f"claim = _Claim(Path({str(out)!r})).__enter__()\nprint('ready', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(ConfigError, match="is being prepared by another process"):
            quiet_prepare(small_corpus, out)
        with pytest.raises(CorpusError, match="unfinished preparation"):
            open_prepared(out)
    finally:
        holder.kill()
        holder.wait()
    assert len(quiet_prepare(small_corpus, out).heldout) >= 1            # the lock died with its process
