"""Prepared datasets: a corpus tokenized once into compact token shards on disk, read through memory maps.

`flashgau prepare` (prepare.py) writes one; training, evaluation and the benchmarks open it with `open_prepared`
in time that grows with the number of documents, not of tokens: no token is read until a window needs it.

A prepared folder holds

    manifest.json           what the folder holds (below); written last, atomically: without it the folder is
                            an unfinished preparation and is refused
    tokenizer.json          the tokenizer, in flashgau's format (tokenizers.save_tokenizer)
    train-00000.bin ...     training tokens: documents back to back, little-endian integers of the manifest's
                            dtype (uint8 for V <= 256, uint16 for V <= 65536, else uint32); a document never
                            spans two shards; a shard is closed after the document that takes it past shard_bytes
    heldout-00000.bin ...   held-out tokens, the same way
    train.idx, heldout.idx  the document index: int64 little-endian rows (shard, offset of the first token in
                            the shard, length in tokens), one per document in corpus order
    train.names, ...        the documents' names, one JSON string per line, in index order
    .preparing              only while `flashgau prepare` writes the folder (it holds its lock)

manifest.json: format ("flashgau-prepared"), version, flashgau (its version), created (UTC), source (kind, path,
files, bytes), request (what was asked: tokenizer, bpe_vocab_size, bpe_sample_bytes, heldout_fraction, text_field,
source_key: sources.Source.stat_key), fingerprint (corpus.split_fingerprint of the split text: the same
number the in-memory path gives, so runs, checkpoints and eval can compare it), tokenizer (file, sha256, kind),
vocab_size, dtype, single_document (the corpus was one document split inside its text), bpe_sample (the characters
and documents the BPE was trained on, when it was), seconds (per pass), and per side ("train", "heldout"):
documents and characters of the split, token_documents (documents with >= 2 tokens; shorter ones are dropped as
in training), tokens, longest, shards [{file, tokens, sha256}], index {file, sha256}, names {file, bytes}.

`open_prepared` checks, cheaply, that the manifest matches the files: every shard present at its size, the index
at its checksum and consistent with the shards, the tokenizer at its checksum; a mismatch is one CorpusError line.
`verify_prepared` also checks every shard's SHA-256 (reads everything).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch

from ..errors import CorpusError, TokenizerError
from ..files import TEMPORARY, atomic_write
from .batching import TokenDocuments
from .tokenizers import Tokenizer, tokenizer_from_dict

FORMAT = "flashgau-prepared"
VERSION = 1
MANIFEST = "manifest.json"
MARKER = ".preparing"
TOKENIZER_FILE = "tokenizer.json"
SPOOL = ".heldout-text.tmp"     # the held-out text while it is tokenized (for the split fingerprint)
SIDES = ("train", "heldout")
# dtype name -> (torch dtype, bytes per token, array typecode, largest vocabulary it holds)
DTYPES = {"uint8": (torch.uint8, 1, "B", 1 << 8), "uint16": (torch.uint16, 2, "H", 1 << 16),
          "uint32": (torch.uint32, 4, "I", 1 << 32)}
DOC_BUFFER_BYTES = 1 << 20      # a document's tokens are held back until it has 2 tokens or this many bytes


def token_dtype(vocab_size: int) -> str:
    """The smallest dtype that holds ids 0 .. vocab_size - 1."""
    for name, (_, _, _, limit) in DTYPES.items():
        if vocab_size <= limit:
            return name
    raise TokenizerError(f"a vocabulary of {vocab_size} ids does not fit 32-bit token shards")


def is_prepared(path: Union[str, Path, None]) -> bool:
    """Whether `path` is a folder that holds (or was meant to hold) a prepared dataset, finished or not: it has
    the `.preparing` marker, or a manifest.json of this format (a text folder may hold a manifest.json of its own)."""
    if path is None:
        return False
    path = Path(path).expanduser()
    if not path.is_dir():
        return False
    if (path / MARKER).exists():
        return True
    try:
        with open(path / MANIFEST, encoding="utf-8") as handle:
            head = handle.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return f'"format": "{FORMAT}"' in head


def refuse_prepared_as_text(path: Path) -> None:
    """A prepared folder is never read as text (its shards are not UTF-8): one line saying what to do instead."""
    if is_prepared(path):
        raise CorpusError(f"{path} is a prepared dataset (token shards), not text: train on it with --data {path}; "
                          "to prepare again, give the original text")


# ---------------------------------------------------------------------------------------------------- writing

class SideWriter:
    """Writes one side (training or held-out) of a prepared folder: token shards, the document index, names.

    `add(data)` appends token bytes (already in the dtype) to the current document; `end_document(name)` closes it
    (a document with fewer than 2 tokens is dropped, as in training); `close()` returns the side's manifest entry."""

    def __init__(self, folder: Path, side: str, dtype: str, shard_bytes: int) -> None:
        if sys.byteorder != "little":
            raise CorpusError("prepared datasets are little-endian; this machine is big-endian")
        self.folder, self.side, self.dtype, self.shard_bytes = folder, side, dtype, max(1, shard_bytes)
        self.itemsize = DTYPES[dtype][1]
        self.shards: list[dict] = []
        self._handle = None
        self._hash = None
        self._shard_tokens = 0
        self._doc: list[bytes] = []       # bytes of the open document not yet written
        self._doc_bytes = 0
        self._doc_start: Optional[int] = None
        self._index = open(folder / f"{side}.idx", "wb")
        self._index_hash = hashlib.sha256()
        self._names = open(folder / f"{side}.names", "w", encoding="utf-8")
        self.documents = 0
        self.tokens = 0
        self.longest = 0

    def add(self, data: bytes) -> None:
        if not data:
            return
        self._doc.append(data)
        self._doc_bytes += len(data)
        if self._doc_bytes >= max(DOC_BUFFER_BYTES, 2 * self.itemsize):
            self._flush_document()

    def end_document(self, name: str) -> None:
        if self._doc_start is None and self._doc_bytes < 2 * self.itemsize:
            self._doc, self._doc_bytes = [], 0        # fewer than 2 tokens: nothing to predict
            return
        self._flush_document()
        length = self._shard_tokens - self._doc_start
        row = array("q", [len(self.shards) - 1, self._doc_start, length])
        self._index.write(row.tobytes())
        self._index_hash.update(row.tobytes())
        self._names.write(json.dumps(name) + "\n")
        self.documents += 1
        self.tokens += length
        self.longest = max(self.longest, length)
        self._doc_start = None

    def close(self) -> dict:
        self._close_shard()
        for handle in (self._index, self._names):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        return {"token_documents": self.documents, "tokens": self.tokens, "longest": self.longest,
                "shards": self.shards,
                "index": {"file": f"{self.side}.idx", "sha256": self._index_hash.hexdigest()},
                "names": {"file": f"{self.side}.names", "bytes": (self.folder / f"{self.side}.names").stat().st_size}}

    def _flush_document(self) -> None:
        if self._doc_start is None:                    # the document's first bytes: a new shard if this one is full
            if self._handle is None or self._shard_tokens * self.itemsize >= self.shard_bytes:
                self._open_shard()
            self._doc_start = self._shard_tokens
        for data in self._doc:
            self._handle.write(data)
            self._hash.update(data)
        self._shard_tokens += self._doc_bytes // self.itemsize
        self._doc, self._doc_bytes = [], 0

    def _open_shard(self) -> None:
        self._close_shard()
        name = f"{self.side}-{len(self.shards):05d}.bin"
        self._handle = open(self.folder / name, "wb")
        self._hash = hashlib.sha256()
        self._shard_tokens = 0
        self.shards.append({"file": name, "tokens": 0, "sha256": None})

    def _close_shard(self) -> None:
        if self._handle is None:
            return
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self.shards[-1].update(tokens=self._shard_tokens, sha256=self._hash.hexdigest())
        self._handle = None


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write manifest.json atomically (files.atomic_write): the last step of a preparation, which makes the folder
    valid."""
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def prepared_files(folder: Path) -> list[Path]:
    """The files a preparation writes in `folder` (what a restart or --overwrite removes; nothing else is)."""
    names = {MANIFEST, TOKENIZER_FILE, SPOOL}
    out = [folder / n for n in names if (folder / n).exists()] + list(folder.glob(f".{MANIFEST}{TEMPORARY}*"))
    for side in SIDES:
        out += [p for p in folder.glob(f"{side}-*.bin")]
        out += [folder / f"{side}{ext}" for ext in (".idx", ".names") if (folder / f"{side}{ext}").exists()]
    return out


# ---------------------------------------------------------------------------------------------------- reading

@dataclass
class PreparedData:
    """An opened prepared folder: its manifest, tokenizer and the two sides as memory-mapped TokenDocuments."""

    path: Path
    manifest: dict
    tokenizer: Tokenizer
    train: TokenDocuments
    heldout: TokenDocuments
    _names: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def describe(self) -> str:
        """The split in the words of corpus.CorpusSplit.describe."""
        t, h = self.manifest["train"], self.manifest["heldout"]
        return (f"{t['documents']} training documents ({t['characters']:,} characters), "
                f"{h['documents']} held-out documents ({h['characters']:,} characters)")

    def names(self, side: str, limit: Optional[int] = None) -> list[str]:
        """Names of the first `limit` (None: all) token documents of a side, in index order."""
        out: list[str] = []
        with open(self.path / self.manifest[side]["names"]["file"], encoding="utf-8") as handle:
            for line in handle:
                if limit is not None and len(out) >= limit:
                    break
                out.append(json.loads(line))
        return out


def open_prepared(path: Union[str, Path]) -> PreparedData:
    """Open the prepared folder at `path` (see the module docstring); one CorpusError line if it is unfinished,
    not a prepared folder, or does not match its manifest."""
    path = Path(path).expanduser()
    manifest = read_manifest(path)
    if sys.byteorder != "little":
        raise CorpusError("prepared datasets are little-endian; this machine is big-endian")
    where = f"{path}: the manifest does not match its files"
    tok_info = manifest.get("tokenizer") or {}
    tok_path = path / str(tok_info.get("file", TOKENIZER_FILE))
    if not tok_path.is_file() or sha256_file(tok_path) != tok_info.get("sha256"):
        raise CorpusError(f"{where} ({tok_path.name} is missing or changed); prepare the data again")
    try:
        tokenizer = tokenizer_from_dict(json.loads(tok_path.read_text(encoding="utf-8")))
    except (ValueError, TokenizerError) as err:
        raise CorpusError(f"{path}: its tokenizer cannot be read ({err}); prepare the data again") from None
    dtype = manifest.get("dtype")
    if dtype not in DTYPES or tokenizer.vocab_size > DTYPES[dtype][3] or manifest.get("vocab_size") != \
            tokenizer.vocab_size:
        raise CorpusError(f"{where} (dtype {dtype!r} for a vocabulary of {tokenizer.vocab_size}); prepare the data "
                          "again")
    sides = {side: _open_side(path, manifest, side, dtype, where) for side in SIDES}
    return PreparedData(path, manifest, tokenizer, sides["train"], sides["heldout"])


def read_manifest(path: Path) -> dict:
    """The manifest of a finished prepared folder (one CorpusError line otherwise)."""
    if not path.is_dir():
        raise CorpusError(f"{path} is not a prepared dataset folder" if path.exists() else
                          f"data path does not exist: {path}")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        if (path / MARKER).exists():
            raise CorpusError(f"{path} is an unfinished preparation (its `flashgau prepare` was interrupted or is "
                              "still running); run the same prepare again to finish it")
        raise CorpusError(f"{path} is not a prepared dataset folder (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorpusError(f"{manifest_path} cannot be read ({str(err)[:100]}); prepare the data again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorpusError(f"{manifest_path} is not a flashgau prepared-data manifest")
    if manifest.get("version") != VERSION:
        raise CorpusError(f"{path} was prepared in format version {manifest.get('version')!r}; this flashgau reads "
                          f"version {VERSION}: prepare the data again")
    return manifest


def _open_side(path: Path, manifest: dict, side: str, dtype: str, where: str) -> TokenDocuments:
    info = manifest.get(side)
    try:
        shards_info = info["shards"]
        n_docs, n_tokens = int(info["token_documents"]), int(info["tokens"])
        index_file = path / info["index"]["file"]
    except (KeyError, TypeError, ValueError):
        raise CorpusError(f"{where} (its {side} entry is incomplete); prepare the data again") from None
    torch_dtype, itemsize = DTYPES[dtype][0], DTYPES[dtype][1]
    shards = []
    for shard in shards_info:
        file = path / str(shard.get("file"))
        tokens = int(shard.get("tokens", -1))
        size = file.stat().st_size if file.is_file() else None
        if size != tokens * itemsize:
            found = "missing" if size is None else f"{size:,} bytes"
            raise CorpusError(f"{where} ({file.name}: {found}, the manifest says {tokens * itemsize:,}); prepare "
                              "the data again")
        shards.append(torch.from_file(str(file), shared=False, size=tokens, dtype=torch_dtype) if tokens else
                      torch.empty(0, dtype=torch_dtype))
    if not index_file.is_file() or index_file.stat().st_size != n_docs * 24 or \
            sha256_file(index_file) != info["index"].get("sha256"):
        raise CorpusError(f"{where} ({index_file.name} is missing, truncated or changed); prepare the data again")
    index = (torch.from_file(str(index_file), shared=False, size=n_docs * 3, dtype=torch.int64).view(n_docs, 3)
             if n_docs else torch.zeros(0, 3, dtype=torch.long))
    sizes = torch.tensor([len(s) for s in shards] + [0], dtype=torch.long)
    ok = bool(((index[:, 0] >= 0) & (index[:, 0] < len(shards)) & (index[:, 1] >= 0) & (index[:, 2] >= 2)).all())
    ok = ok and bool((index[:, 1] + index[:, 2] <= sizes[index[:, 0].clamp(0, len(shards))]).all())
    if not ok or int(index[:, 2].sum()) != n_tokens or int(sizes.sum()) != n_tokens:
        raise CorpusError(f"{where} (the {side} index does not fit its shards); prepare the data again")
    return TokenDocuments(shards, index)


def verify_prepared(path: Union[str, Path]) -> PreparedData:
    """open_prepared, then every shard's SHA-256 against the manifest (reads every byte)."""
    data = open_prepared(path)
    for side in SIDES:
        for shard in data.manifest[side]["shards"]:
            if sha256_file(data.path / shard["file"]) != shard["sha256"]:
                raise CorpusError(f"{data.path}: {shard['file']} does not match its checksum in the manifest (changed "
                                  "or damaged on disk); prepare the data again")
    return data
