"""`flashgau prepare`: tokenize a corpus of any size once, into a prepared folder (prepared.py), in bounded memory.

The source (sources.py: text, folders, JSON lines, Parquet, Arrow) is read as a stream, in up to three passes:

1. scan: each document's name, length in characters and a digest of its text (blank documents and duplicates are
   dropped, as corpus.clean_documents does); then the split rule (corpus.heldout_positions) on names and lengths
   alone. A corpus of one document is split inside its text (corpus._split_one's rule), found by re-reading it.
2. BPE only: train the tokenizer on the training documents (in corpus order, as the in-memory path does) when they
   hold at most `bpe_sample_bytes` characters (64 MiB by default), else on the training documents taken in the
   split's name-hash order until that many characters (a document past the limit contributes its first blocks).
3. tokenize: each document's tokens are appended to its side's shards, its text to the split fingerprint
   (corpus.split_fingerprint's definition: training documents in corpus order, then held-out ones; the held-out
   text is spooled to a temporary file meanwhile). Documents longer than PIECE_CHARS are encoded in pieces cut at a line
   break between two non-space characters, where byte-level BPE pre-tokenizers (GPT-2's, Llama 3's) split
   anyway, so the tokens equal a whole-document encode; text without such a line break is cut at PIECE_CHARS.

Memory: a few blocks of text (8 MiB of input, 2 Mi characters per BPE batch) plus, per document, ~100 bytes for the
split (its name hash, length and text digest); the BPE sample's word counts while the tokenizer trains.

Progress: a bar (bytes/s and tokens/s) on a terminal, a line every 15 s otherwise.

Interruptions: the folder gets its manifest last, atomically; until then it holds a `.preparing` marker (the
writing process's files.FolderLock) and is refused by every reader. Running the same prepare again starts it clean
(only the files a preparation writes are removed). Running it again on a finished folder with the same data and
settings checks every shard's checksum and stops ("up to date"), or, when a file no longer matches, prepares it
again. A write that fails (a full disk) removes what was written and is one line.

Plain text given to `flashgau train --data` is prepared the same way into a cache (cache.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from array import array
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

from ..errors import ConfigError, CorpusError, FlashgauError, TokenizerError
from ..files import FolderBusy, FolderLock
from ..meter import Meter
from .corpus import (DEFAULT_HELDOUT_FRACTION, empty_corpus, fingerprint_header, heldout_positions,
                     name_order_key, one_document_cut, too_short_to_split)
from .prepared import (DTYPES, FORMAT, MANIFEST, MARKER, SPOOL, TOKENIZER_FILE, VERSION, PreparedData, SideWriter,
                       has_prepared_files, open_prepared, prepared_files, read_manifest, sha256_file, token_dtype,
                       verify_prepared, write_manifest)
from .sources import DEFAULT_TEXT_FIELD, Source, open_source
from .tokenizers import ByteTokenizer, Tokenizer, make_tokenizer, save_tokenizer, tokenizer_digest

DEFAULT_SHARD_BYTES = 256 << 20
DEFAULT_BPE_SAMPLE_BYTES = 64 << 20
PIECE_CHARS = 1 << 20           # longer documents are BPE-encoded in pieces of about this many characters
BATCH_CHARS = 2 << 20           # characters per BPE encode_batch call

Log = Callable[[str], None]


@dataclass
class Request:
    """What a preparation is asked for; with the source's stat key it names a cache entry and tells a finished
    folder whether it is up to date."""

    tokenizer: str                       # "bytes", "bpe" (trained here), or "tokenizer:<sha256>" (given / a file)
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION
    bpe_vocab_size: Optional[int] = None
    bpe_sample_bytes: Optional[int] = None
    text_field: str = DEFAULT_TEXT_FIELD
    source_key: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def key(self) -> str:
        return hashlib.sha256(json.dumps({"version": VERSION, **self.to_dict()}, sort_keys=True).encode()).hexdigest()


def make_request(source: Source, tokenizer: Union[str, Tokenizer], *, heldout_fraction: float, bpe_vocab_size: int,
                 bpe_sample_bytes: int) -> tuple[Request, Optional[Tokenizer]]:
    """The request for `tokenizer` ("bytes", "bpe", a tokenizer file, or a Tokenizer) and the tokenizer object
    when it is known before the data is read."""
    if not 0.0 < heldout_fraction < 1.0:
        raise CorpusError(f"held-out fraction must be between 0 and 1, got {heldout_fraction}")
    tok: Optional[Tokenizer] = None
    if isinstance(tokenizer, str) and tokenizer == "bpe":
        if not (isinstance(bpe_vocab_size, int) and bpe_vocab_size > 256):
            raise TokenizerError(f"BPE vocabulary size must be > 256 (the byte alphabet), got {bpe_vocab_size}")
        if not (isinstance(bpe_sample_bytes, int) and bpe_sample_bytes >= 1):
            raise ConfigError(f"the BPE sample must be at least 1 byte, got {bpe_sample_bytes!r}")
        spec, extra = "bpe", dict(bpe_vocab_size=bpe_vocab_size, bpe_sample_bytes=bpe_sample_bytes)
    elif isinstance(tokenizer, str) and tokenizer == "bytes":
        spec, extra = "bytes", {}
    else:
        tok = make_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        spec, extra = ("bytes", {}) if isinstance(tok, ByteTokenizer) else (f"tokenizer:{tokenizer_digest(tok)}", {})
    return Request(spec, heldout_fraction, text_field=source.text_field, source_key=source.stat_key(), **extra), tok


# ------------------------------------------------------------------------------------------- prepare --out DIR

def prepare(data: Optional[Union[str, Path]], out: Union[str, Path], *, tokenizer: Union[str, Tokenizer] = "bytes",
            bpe_vocab_size: int = 4096, bpe_sample_bytes: int = DEFAULT_BPE_SAMPLE_BYTES,
            heldout_fraction: float = DEFAULT_HELDOUT_FRACTION, text_field: str = DEFAULT_TEXT_FIELD,
            shard_bytes: int = DEFAULT_SHARD_BYTES, overwrite: bool = False, progress: bool = True,
            log: Log = print) -> PreparedData:
    """Prepare `data` (sources.open_source: None or "shakespeare" for the default corpus) into the folder `out`
    (see the module docstring) and open it. A folder that already holds this preparation is checked, not redone;
    one that holds another needs `overwrite`; an unfinished one (interrupted) is started again."""
    if not (isinstance(shard_bytes, int) and shard_bytes >= 1):
        raise ConfigError(f"shard size must be a positive number of bytes, got {shard_bytes!r}")
    source = open_source(data, text_field)
    request, tok = make_request(source, tokenizer, heldout_fraction=heldout_fraction, bpe_vocab_size=bpe_vocab_size,
                                bpe_sample_bytes=bpe_sample_bytes)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    if source.kind != "shakespeare" and source.root.is_dir() and _inside(out, source.root):
        raise ConfigError(f"--out {out} is inside the data folder {source.root}; put the prepared data elsewhere")
    existed = out.exists()
    with _Claim(out) as claim:
        if (out / MANIFEST).is_file():
            try:
                old = read_manifest(out)
            except CorpusError:
                old = {}
            if old.get("request") == request.to_dict() and not overwrite:
                try:
                    data_ = verify_prepared(out)
                    log(f"{out} is up to date: it holds this preparation of {source.label} (every shard checked)")
                    return data_
                except CorpusError as err:      # the same preparation, damaged on disk: made again
                    log(f"{str(err).split(';')[0]}: preparing it again")
            elif not overwrite:
                raise ConfigError(f"{out} already holds a prepared dataset (of {old.get('source', {}).get('path')}, "
                                  "other data or settings); give --overwrite to replace it, or another --out")
            (out / MANIFEST).unlink()       # from here on a kill leaves an unfinished folder, never a stale whole one
        elif claim.marker_existed or has_prepared_files(out):
            log(f"{out}: an earlier prepare was interrupted; starting it again")
        elif existed and [p for p in out.iterdir() if p.name != MARKER]:
            raise ConfigError(f"--out {out} is not empty and holds no prepared dataset; choose a new or empty folder")
        _remove(prepared_files(out))
        try:
            write_prepared(source, out, request, tok, shard_bytes=shard_bytes, progress=progress, log=log)
        except FlashgauError:
            _remove(prepared_files(out))
            raise
        except OSError as err:             # e.g. the disk is full: one line, and nothing half written is kept
            _remove(prepared_files(out))
            raise ConfigError(f"cannot write the prepared data in {out}: {err.strerror or err}; free space there or "
                              "choose another --out (nothing of it was kept)") from None
    return open_prepared(out)


class _Claim:
    """The `.preparing` marker of a folder being written, locked by this process (files.FolderLock: released by the
    kernel when the process ends, however it ends); removed when the preparation is finished."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.created = not folder.exists()
        self.marker_existed = (folder / MARKER).exists()
        self._lock = FolderLock(folder / MARKER)

    def __enter__(self) -> "_Claim":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except FolderBusy:
            raise ConfigError(f"{self.folder} is being prepared by another process; wait for it or choose "
                              "another --out") from None
        except OSError as err:
            raise ConfigError(f"cannot write in {self.folder}: {err.strerror or err}") from None
        return self

    def __exit__(self, kind, value, tb) -> None:
        finished = (self.folder / MANIFEST).is_file()
        untouched = kind is not None and not self.marker_existed and not prepared_files(self.folder)
        if finished or untouched:              # done, or refused before writing: leave no marker behind
            (self.folder / MARKER).unlink(missing_ok=True)
        if untouched and self.created:
            try:
                self.folder.rmdir()
            except OSError:
                pass
        self._lock.release()


# -------------------------------------------------------------------------------------------------- the passes

@dataclass
class _Scan:
    """Pass 1: per source document whether it is kept; per kept document its name key and length."""

    kept: bytearray
    keys: bytearray             # 32 bytes per kept document
    chars: array
    first: Optional[tuple]      # (name, first non-blank, last non-blank character) of the first kept document

    def key(self, k: int) -> bytes:
        return bytes(self.keys[32 * k:32 * k + 32])


@dataclass
class _SplitDoc:
    name: str
    side: str
    chars: int
    blocks: Iterator[str]


def write_prepared(source: Source, folder: Path, request: Request, tok: Optional[Tokenizer], *, shard_bytes: int,
                   progress: bool, log: Log) -> None:
    """All passes into `folder` (empty but for a marker), ending with the manifest."""
    seconds = {}
    t0 = time.perf_counter()
    scan = _scan(source, progress)
    cut = _plan(source, scan, request.heldout_fraction)
    seconds["scan"] = time.perf_counter() - t0
    sample = None
    if tok is None and request.tokenizer == "bpe":
        t0 = time.perf_counter()
        tok, sample = _train_bpe(source, scan, cut, request, progress)
        seconds["bpe"] = time.perf_counter() - t0
    elif tok is None:
        tok = ByteTokenizer()
    dtype = token_dtype(tok.vocab_size)
    save_tokenizer(tok, folder / TOKENIZER_FILE)
    t0 = time.perf_counter()
    sides, fingerprint, meter = _tokenize(source, scan, cut, tok, dtype, folder, shard_bytes, progress)
    seconds["tokenize"] = time.perf_counter() - t0
    if not sides["train"]["token_documents"] or not sides["heldout"]["token_documents"]:
        raise CorpusError("the corpus is too small: training or held-out text has fewer than 2 tokens")
    manifest = {
        "format": FORMAT, "version": VERSION, "flashgau": _version(),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source.describe(), "request": request.to_dict(), "fingerprint": fingerprint,
        "tokenizer": {"file": TOKENIZER_FILE, "sha256": sha256_file(folder / TOKENIZER_FILE), "kind": tok.kind},
        "vocab_size": tok.vocab_size, "dtype": dtype, "single_document": cut is not None,
        "bpe_sample": sample, "seconds": {k: round(v, 3) for k, v in seconds.items()}, **sides,
    }
    write_manifest(folder, manifest)
    t, h = sides["train"], sides["heldout"]
    log(f"prepared {source.label}: {t['documents']} training documents ({t['tokens']:,} tokens), {h['documents']} "
        f"held-out ({h['tokens']:,} tokens), {dtype} shards, {tok.kind} tokenizer (V={tok.vocab_size}); "
        f"tokenized {meter.describe()}")


def _scan(source: Source, progress: bool) -> _Scan:
    scan = _Scan(bytearray(), bytearray(), array("q"), None)
    seen: set[bytes] = set()
    meter = _Meter("scan", source.progress_total, progress)
    for doc in source.documents():
        digest, n, first_nb, last_nb = hashlib.sha256(), 0, -1, -1
        for block in doc.blocks():
            digest.update(_utf8(block, doc.name, n))
            lead = len(block) - len(block.lstrip())
            if first_nb < 0 and lead < len(block):
                first_nb = n + lead
            kept_len = len(block.rstrip())
            if kept_len:
                last_nb = n + kept_len - 1
            n += len(block)
        meter.update(doc.size)
        key = digest.digest()
        if first_nb < 0 or key in seen:          # blank, or a duplicate of an earlier document
            scan.kept.append(0)
            continue
        seen.add(key)
        scan.kept.append(1)
        scan.keys += name_order_key(doc.name)
        scan.chars.append(n)
        if scan.first is None:
            scan.first = (doc.name, first_nb, last_nb)
    meter.close()
    if not scan.chars:
        raise CorpusError(empty_corpus(source.label))
    return scan


def _plan(source: Source, scan: _Scan, fraction: float) -> Optional[int]:
    """Marks held-out documents in scan.kept (value 2); for a single-document corpus returns the cut instead."""
    if len(scan.chars) > 1:
        held = heldout_positions([scan.key(k) for k in range(len(scan.chars))], scan.chars, fraction)
        kept_positions = [i for i, flag in enumerate(scan.kept) if flag]
        for k in held:
            scan.kept[kept_positions[k]] = 2
        return None
    name, first_nb, last_nb = scan.first
    total = scan.chars[0]
    cut = one_document_cut(total, fraction)
    line_break, pos = -1, 0
    doc = next(d for i, d in enumerate(source.documents()) if scan.kept[i])
    for block in doc.blocks():                  # the last "\n" before the cut
        if pos >= cut:
            break
        found = block.rfind("\n", 0, cut - pos)
        if found >= 0:
            line_break = pos + found
        pos += len(block)
    if line_break > 0:
        cut = line_break + 1
    if not (first_nb < cut <= last_nb):         # head or tail would be blank
        raise CorpusError(too_short_to_split(name, total))
    return cut


def _split_documents(source: Source, scan: _Scan, cut: Optional[int]) -> Iterator[tuple[_SplitDoc, int]]:
    """The split's documents in corpus order with the input bytes of each source document (after its last split
    document), checking that the source still is what the scan saw."""
    k = -1
    count = 0
    for i, doc in enumerate(source.documents()):
        count += 1
        if i >= len(scan.kept) or not scan.kept[i]:
            if i >= len(scan.kept):
                raise _changed(source)
            yield None, doc.size
            continue
        k += 1
        if name_order_key(doc.name) != scan.key(k):
            raise _changed(source)
        blocks = _counted(doc.blocks(), scan.chars[k], source)
        if cut is None:
            yield _SplitDoc(doc.name, "heldout" if scan.kept[i] == 2 else "train", scan.chars[k], blocks), 0
        else:
            stream = _CutStream(blocks, cut)
            yield _SplitDoc(f"{doc.name}[train]", "train", cut, stream.head()), 0
            yield _SplitDoc(f"{doc.name}[heldout]", "heldout", scan.chars[k] - cut, stream.tail()), 0
        yield None, doc.size
    if count != len(scan.kept):
        raise _changed(source)


def _changed(source: Source) -> CorpusError:
    return CorpusError(f"{source.label} changed while it was being prepared; prepare it again")


def _counted(blocks: Iterable[str], expected: int, source: Source) -> Iterator[str]:
    n = 0
    for block in blocks:
        n += len(block)
        yield block
    if n != expected:
        raise _changed(source)


class _CutStream:
    """One document's blocks as two: the text before character `cut`, then the rest."""

    def __init__(self, blocks: Iterator[str], cut: int) -> None:
        self.blocks, self.cut, self.rest = iter(blocks), cut, ""

    def head(self) -> Iterator[str]:
        pos = 0
        while pos < self.cut:
            block = next(self.blocks, None)
            if block is None:
                return
            if pos + len(block) > self.cut:
                block, self.rest = block[:self.cut - pos], block[self.cut - pos:]
            pos += len(block)
            yield block

    def tail(self) -> Iterator[str]:
        if self.rest:
            yield self.rest
        yield from self.blocks


def _train_bpe(source: Source, scan: _Scan, cut: Optional[int], request: Request,
               progress: bool) -> tuple[Tokenizer, dict]:
    """Pass 2: the BPE trained on the training documents, or on a sample of them (module docstring)."""
    from .tokenizers import BPETokenizer

    limit = request.bpe_sample_bytes
    sides = [flag for flag in scan.kept if flag]           # per kept document: 1 training, 2 held out
    train = [0] if cut is not None else [k for k, flag in enumerate(sides) if flag == 1]
    train_chars = cut if cut is not None else sum(scan.chars[k] for k in train)
    quota: Optional[dict] = None                           # kept document -> characters it gives (None: all)
    if train_chars > limit:
        quota, left = {}, limit
        for k in sorted(train, key=scan.key):
            if left <= 0:
                break
            quota[k] = min(left, cut if cut is not None else scan.chars[k])
            left -= quota[k]
    stats = {"characters": 0, "documents": 0, "all_training_text": quota is None}
    meter = _Meter("BPE sample", min(train_chars, limit), progress)

    def texts() -> Iterator[str]:
        k = -1
        for doc, _ in _split_documents(source, scan, cut):
            if doc is None:
                continue
            k = 0 if cut is not None else k + 1
            take = None if quota is None else quota.get(k)
            if doc.side != "train" or (quota is not None and take is None):
                continue                                   # never read
            stats["documents"] += 1
            for block in doc.blocks:
                if take is not None:
                    block = block[:take]
                    take -= len(block)
                stats["characters"] += len(block)
                meter.update(len(block))
                if block:
                    yield block
                if take is not None and take <= 0:
                    break
            if cut is not None:
                return                                     # the single document's head is all the training text

    tok = BPETokenizer.train(texts(), vocab_size=request.bpe_vocab_size)
    meter.close()
    return tok, stats


def _tokenize(source: Source, scan: _Scan, cut: Optional[int], tok: Tokenizer, dtype: str, folder: Path,
              shard_bytes: int, progress: bool) -> tuple[dict, str, "_Meter"]:
    """Pass 3: the shards, index and names of both sides, and the split fingerprint."""
    writers = {side: SideWriter(folder, side, dtype, shard_bytes) for side in ("train", "heldout")}
    counts = {side: {"documents": 0, "characters": 0} for side in writers}
    fingerprint = hashlib.sha256()
    spool = open(folder / SPOOL, "wb")
    meter = _Meter("tokenize", source.progress_total, progress)
    queue = _EncodeQueue(tok, DTYPES[dtype][2], meter)
    byte_level = isinstance(tok, ByteTokenizer)
    try:
        for doc, size in _split_documents(source, scan, cut):
            if doc is None:
                meter.update(size)
                continue
            counts[doc.side]["documents"] += 1
            counts[doc.side]["characters"] += doc.chars
            sink = fingerprint.update if doc.side == "train" else spool.write
            sink(fingerprint_header(doc.side, doc.name, doc.chars))
            writer = writers[doc.side]
            if byte_level:                        # the tokens are the text's UTF-8 bytes: no pieces, no batches
                for block in doc.blocks:
                    data = encode_texts(tok, [block], "B")[0]
                    sink(data)
                    writer.add(data)
                    meter.update(0, len(data))
                writer.end_document(doc.name)
                continue
            for piece in _pieces(doc.blocks):
                sink(_utf8(piece, doc.name, 0))
                queue.add(writer, piece)
            queue.end(writer, doc.name)
        queue.flush()
        spool.flush()
        spool.close()
        with open(folder / SPOOL, "rb") as handle:     # the held-out side follows the training side
            for block in iter(lambda: handle.read(8 << 20), b""):
                fingerprint.update(block)
    finally:
        spool.close()
        (folder / SPOOL).unlink(missing_ok=True)
    meter.close()
    sides = {side: {**counts[side], **writer.close()} for side, writer in writers.items()}
    return sides, fingerprint.hexdigest(), meter


def _pieces(blocks: Iterable[str]) -> Iterator[str]:
    """A document's text in pieces of about PIECE_CHARS characters, cut where byte-level BPE splits anyway."""
    limit, buf = PIECE_CHARS, ""
    for block in blocks:
        buf += block
        while len(buf) >= 2 * limit:
            at = safe_cut(buf, limit)
            yield buf[:at]
            buf = buf[at:]
    if buf:
        yield buf


def safe_cut(text: str, limit: int) -> int:
    """The position after the last "\\n" before `limit` with a non-space character on both sides, or `limit`."""
    i = text.rfind("\n", 0, limit)
    while i > 0:
        if i + 1 < len(text) and not text[i - 1].isspace() and not text[i + 1].isspace():
            return i + 1
        i = text.rfind("\n", 0, i)
    return limit


class _EncodeQueue:
    """BPE encoding in batches of documents and pieces (HF `tokenizers` encodes a batch in parallel); the results
    reach the writers in order."""

    def __init__(self, tok: Tokenizer, typecode: str, meter: "_Meter") -> None:
        self.tok, self.typecode, self.meter = tok, typecode, meter
        self.items: list[tuple[SideWriter, Optional[str], Optional[str]]] = []   # (writer, text, or the end: name)
        self.chars = 0

    def add(self, writer: SideWriter, text: str) -> None:
        self.items.append((writer, text, None))
        self.chars += len(text)

    def end(self, writer: SideWriter, name: str) -> None:
        self.items.append((writer, None, name))
        if self.chars >= BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        texts = [text for _, text, _ in self.items if text is not None]
        encoded = iter(encode_texts(self.tok, texts, self.typecode) if texts else [])
        for writer, text, name in self.items:
            if text is None:
                writer.end_document(name)
                continue
            data = next(encoded)
            writer.add(data)
            self.meter.update(0, len(data) // array(self.typecode).itemsize)
        self.items, self.chars = [], 0


def encode_texts(tok: Tokenizer, texts: list[str], typecode: str) -> list[bytes]:
    """Token ids of each text as bytes of `typecode` (the one place preparation calls a tokenizer)."""
    if isinstance(tok, ByteTokenizer):
        return [t.encode("utf-8") for t in texts]
    return [array(typecode, ids).tobytes() for ids in tok.encode_batch(texts)]


def _utf8(text: str, name: str, offset: int) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise CorpusError(f"{name}: the text is not valid Unicode at character {offset + err.start} (a lone "
                          "surrogate, e.g. from JSON \\ud800); fix or drop that document") from None


# ---------------------------------------------------------------------------------------------------- progress

class _Meter(Meter):
    """Input bytes and tokens per second: a bar in bytes on a terminal (after 2 s), a line every 15 s otherwise."""

    def __init__(self, what: str, total: Optional[int], enabled: bool) -> None:
        super().__init__(total, enabled=enabled, desc=what, unit="B", unit_scale=True, delay=2.0)
        self.what = what
        self.bytes = self.tokens = 0

    def update(self, nbytes: int, ntokens: int = 0) -> None:
        self.bytes += nbytes
        self.tokens += ntokens
        self.show(self.bytes)

    def postfix(self) -> str:
        return f"{self.tokens / self.seconds():,.0f} tokens/s" if self.tokens else ""

    def line(self) -> str:
        return f"{self.what}: {self.describe()}"

    def describe(self) -> str:
        seconds = max(self.seconds(), 1e-9)
        share = f" of {self.total / 1e6:,.1f} MB" if self.total else ""
        return (f"{self.bytes / 1e6:,.1f} MB{share} in {seconds:.1f} s ({self.bytes / 1e6 / seconds:,.1f} MB/s"
                + (f", {self.tokens / seconds:,.0f} tokens/s)" if self.tokens else ")"))


# ------------------------------------------------------------------------------------------------------- helpers

def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("flashgau")
    except Exception:
        return "unknown"
