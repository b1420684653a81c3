"""Streaming sources give the same documents as reading whole files; records of JSON lines, Parquet and Arrow files
are documents; bad input is one clear line."""

import json

import pytest

from flashgau.data import sources as sources_mod
from flashgau.data.corpus import read_documents
from flashgau.data.sources import open_source
from flashgau.errors import CorpusError


def test_blocks_decode_like_a_whole_file_across_every_block_edge(tmp_path):
    text = "\ufeffAé🙂\r\nb\rc\r\n\r\nend\r"
    raw = text.encode("utf-8")
    (tmp_path / "t.txt").write_bytes(raw)
    expected = text[1:].replace("\r\n", "\n").replace("\r", "\n")
    for block in range(1, len(raw) + 1):                     # multi-byte characters and "\r\n" cut everywhere
        got = list(sources_mod._text_blocks(tmp_path / "t.txt", block))
        assert "".join(got) == expected, block
    assert read_documents(tmp_path / "t.txt")[0].text == expected


def test_an_invalid_byte_is_reported_at_its_file_offset(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok " * 10 + b"\xff rest")
    for block in (4, 1 << 20):
        with pytest.raises(CorpusError, match=r"not UTF-8 text \(invalid byte at offset 30\)"):
            list(sources_mod._text_blocks(tmp_path / "bad.txt", block))


def test_json_lines_records_and_their_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "first\r\ndoc"}) + "\n\n" + json.dumps({"body": "x", "text": "second"}) + "\n")
    docs = read_documents(path)
    assert [(d.name, d.text) for d in docs] == [("d.jsonl:1", "first\ndoc"), ("d.jsonl:3", "second")]
    path.write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(CorpusError, match=r"d.jsonl:1 has no text field 'text' .* --text-field"):
        read_documents(path)
    assert [d.text() for d in open_source(path, text_field="content").documents()] == ["x"]
    path.write_text("{broken\n")
    with pytest.raises(CorpusError, match=r"d.jsonl:1 is not a JSON object"):
        read_documents(path)


def test_a_folder_of_record_files_is_records_a_mixed_folder_is_text(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "alpha"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "beta"}) + "\n")
    assert open_source(tmp_path).kind == "jsonl"
    assert [d.name for d in read_documents(tmp_path)] == ["a.jsonl:1", "b.jsonl:1"]
    (tmp_path / "notes.txt").write_text("plain")
    assert open_source(tmp_path).kind == "text" and len(read_documents(tmp_path)) == 3


def test_stat_key_changes_when_a_file_changes(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    key = open_source(tmp_path).stat_key()
    assert open_source(tmp_path).stat_key() == key
    (tmp_path / "a.txt").write_text("two")
    assert open_source(tmp_path).stat_key() != key


def test_parquet_and_arrow_rows_are_documents(tmp_path):
    pa = pytest.importorskip("pyarrow",
                             reason="Parquet/Arrow need the optional extra: pip install 'flashgau[datasets]'")
    import pyarrow.ipc
    import pyarrow.parquet

    table = pa.table({"text": ["row one\r\n", None, "row three"], "n": [1, 2, 3]})
    pyarrow.parquet.write_table(table, tmp_path / "d.parquet", row_group_size=2)
    with pyarrow.ipc.new_stream(str(tmp_path / "d.arrow"), table.schema) as writer:
        writer.write_table(table)
    for name in ("d.parquet", "d.arrow"):
        docs = read_documents(tmp_path / name)
        assert [(d.name, d.text) for d in docs] == [(f"{name}:1", "row one\n"), (f"{name}:3", "row three")]
        with pytest.raises(CorpusError, match="has no column 'body'"):
            list(open_source(tmp_path / name, text_field="body").documents())


def test_a_datasets_save_to_disk_folder_is_read(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the optional extra: pip install 'flashgau[datasets]'")
    datasets.Dataset.from_dict({"text": ["a b c", "d e f", "g h i"]}).save_to_disk(str(tmp_path / "ds"))
    source = open_source(tmp_path / "ds")
    assert source.kind == "arrow"
    assert [d.text for d in read_documents(tmp_path / "ds")] == ["a b c", "d e f", "g h i"]


def test_without_pyarrow_parquet_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(CorpusError, match=r"needs the optional HF datasets extra: pip install 'flashgau\[datasets\]'"):
        read_documents(tmp_path / "d.parquet")


def test_a_text_folder_with_a_manifest_json_of_its_own_is_text(tmp_path):
    (tmp_path / "manifest.json").write_text('{"name": "my web app", "version": 2}')
    (tmp_path / "story.txt").write_text("Once upon a time.\n")
    assert [d.name for d in read_documents(tmp_path)] == ["manifest.json", "story.txt"]
