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

`open_prepared` checks that the manifest matches the files: every shard present at its size and SHA-256, the
index at its checksum and consistent with the shards, the tokenizer at its checksum; a mismatch is one CorpusError
line naming the file and what to do. What it costs: the held-out shards are hashed again before every scoring pass
over them (HeldoutWindows calls the side's `check`; above HELDOUT_REHASH_BYTES only after a change, as below); a
training shard is hashed once per process, and again only after a write to it (its inode, size, mtime and ctime:
_VERIFIED), and not at all by the process that wrote it. Measured on an AMD EPYC (2 cores, hashlib SHA-256, files
in the page cache): ~1.4 GB/s, so the default corpus costs a run 3 ms at its start (4.45 MB of training shards) and
0.4 ms per score (0.6 MB held out), next to ~1.8 s per training step of its default run; 10 GB of shards would add
~7 s (more when read from disk) to each start.
`verify_prepared` hashes every shard again; `prepared_problems` lists every problem (`flashgau prepare --verify`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from ..errors import ConfigError, CorpusError, TokenizerError
from ..files import TEMPORARY, atomic_write
from .batching import TokenDocuments
from .tokenizers import (Tokenizer, is_tokenizer_file, load_tokenizer_file, tokenizer_digest,
                         tokenizer_from_dict)

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
    the `.preparing` marker, a side's index or first shard, or a manifest.json of this format (a text folder may
    hold a manifest.json of its own)."""
    if path is None:
        return False
    path = Path(path).expanduser()
    if not path.is_dir():
        return False
    if (path / MARKER).exists() or has_prepared_files(path):
        return True
    try:
        with open(path / MANIFEST, encoding="utf-8") as handle:
            head = handle.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return f'"format": "{FORMAT}"' in head


def check_tokenizer_request(given: dict) -> None:
    """A prepared `given["data"]` decides the tokenizer: a tokenizer or bpe_vocab_size in `given` (the settings a
    user typed, on the command line or in a --config file) that disagrees with the folder's is a ConfigError (the
    library itself takes the folder's)."""
    if not is_prepared(given.get("data")) or not {"tokenizer", "bpe_vocab_size"} & set(given):
        return
    tok = open_prepared(given["data"]).tokenizer
    asked = given.get("tokenizer", tok.kind)
    same = (tokenizer_digest(load_tokenizer_file(asked)) == tokenizer_digest(tok) if is_tokenizer_file(asked)
            else asked == tok.kind and given.get("bpe_vocab_size", tok.vocab_size) == tok.vocab_size)
    if not same:
        raise ConfigError(f"--data {given['data']} was prepared with its own tokenizer ({tok.kind}, "
                          f"V={tok.vocab_size}); leave out --tokenizer / --bpe-vocab-size, or prepare the text again "
                          "with them")


def refuse_prepared_as_text(path: Path) -> None:
    """A prepared folder is never read as text (its shards are not UTF-8): one line saying what to do instead."""
    if is_prepared(path):
        read_manifest(path)             # an unfinished or damaged preparation says so
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
        _remember_written(self.folder / self.shards[-1]["file"], self.shards[-1]["sha256"])
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

REBUILD = "re-run the `flashgau prepare` that made it (same data and options) to rebuild it"
HELDOUT_REHASH_BYTES = 64 << 20     # held-out sides up to this size are hashed again before every score
# Shards whose bytes this process has hashed (or written): (device, inode) -> (size, mtime_ns, ctime_ns, sha256).
# Any write to a file changes its mtime and ctime, which no user call can set back (ctime), so an entry whose stat
# still matches holds the same bytes; keyed by inode, it survives the rename of a cache entry into place.
_VERIFIED: dict[tuple, tuple] = {}


@dataclass
class PreparedData:
    """An opened prepared folder: its manifest, tokenizer and the two sides as memory-mapped TokenDocuments.
    `remedy`: what to do about a folder that no longer matches its manifest (the end of such an error's line)."""

    path: Path
    manifest: dict
    tokenizer: Tokenizer
    train: TokenDocuments
    heldout: TokenDocuments
    remedy: str = REBUILD

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

    def check_shards(self, side: str, *, full: bool = False) -> None:
        """One CorpusError line unless every shard of `side` holds the bytes of its SHA-256 in the manifest: hashed
        in full with `full`, and for a held-out side of at most HELDOUT_REHASH_BYTES; otherwise a shard this process
        has hashed (or written) since its last change is not read again (see _VERIFIED)."""
        itemsize = DTYPES[self.manifest["dtype"]][1]
        rehash = full or (side == "heldout" and self.manifest[side]["tokens"] * itemsize <= HELDOUT_REHASH_BYTES)
        for shard in self.manifest[side]["shards"]:
            problem = _shard_problem(self.path, shard, itemsize, "full" if rehash else "cached")
            if problem:
                raise CorpusError(f"{self.path}: {problem}; {self.remedy}")


def open_prepared(path: Union[str, Path], *, remedy: str = REBUILD) -> PreparedData:
    """Open the prepared folder at `path` (see the module docstring): one CorpusError line, ending in `remedy`, if
    it is unfinished, not a prepared folder, or does not match its manifest. Every shard's SHA-256 is checked: the
    training shards once per process (PreparedData.check_shards), the held-out ones again before every scoring
    pass over them (HeldoutWindows calls `heldout.check`)."""
    return _open(Path(path).expanduser(), remedy, collect=False)[0]


def verify_prepared(path: Union[str, Path], *, remedy: str = REBUILD) -> PreparedData:
    """open_prepared, with every shard hashed again (reads every byte)."""
    data = open_prepared(path, remedy=remedy)
    for side in SIDES:
        data.check_shards(side, full=True)
    return data


def prepared_problems(path: Union[str, Path]) -> tuple[int, list[str]]:
    """The full check of `flashgau prepare --verify`: (the number of shards the manifest lists, every problem found,
    one line each: a missing, resized or changed shard, index, names or tokenizer); every shard is hashed."""
    path = Path(path).expanduser()
    try:
        manifest = read_manifest(path)
    except CorpusError as err:
        return 0, [str(err)]
    _, problems = _open(path, REBUILD, collect=True, manifest=manifest)
    count = sum(len((manifest.get(side) or {}).get("shards") or []) for side in SIDES)
    return count, problems


def _open(path: Path, remedy: str, *, collect: bool,
          manifest: Optional[dict] = None) -> tuple[Optional[PreparedData], list[str]]:
    """The checks of open_prepared (collect False: the first problem raised, shards hashed as check_shards does)
    or of prepared_problems (collect True: every problem listed, every shard hashed)."""
    problems: list[str] = []
    where = f"{path}: the manifest does not match its files"

    def fail(what: str) -> None:
        line = f"{where} ({what}); {remedy}"
        if not collect:
            raise CorpusError(line)
        problems.append(line)

    manifest = manifest if manifest is not None else read_manifest(path)
    if sys.byteorder != "little":
        raise CorpusError("prepared datasets are little-endian; this machine is big-endian")
    tok_info = manifest.get("tokenizer") or {}
    tok_path = path / str(tok_info.get("file", TOKENIZER_FILE))
    tokenizer = None
    if not tok_path.is_file() or sha256_file(tok_path) != tok_info.get("sha256"):
        fail(f"{tok_path.name} is missing or changed")
    else:
        try:
            tokenizer = tokenizer_from_dict(json.loads(tok_path.read_text(encoding="utf-8")))
        except (ValueError, TokenizerError) as err:
            fail(f"its tokenizer cannot be read: {err}")
    dtype = manifest.get("dtype")
    if dtype not in DTYPES or (tokenizer is not None and (tokenizer.vocab_size > DTYPES[dtype][3] or
                                                          manifest.get("vocab_size") != tokenizer.vocab_size)):
        fail(f"dtype {dtype!r} for a vocabulary of {tokenizer.vocab_size if tokenizer else '?'}")
        return None, problems
    sides = {side: _open_side(path, manifest, side, dtype, fail, collect) for side in SIDES}
    if collect:
        return None, problems
    data = PreparedData(path, manifest, tokenizer, sides["train"], sides["heldout"], remedy)
    for side in SIDES:
        data.check_shards(side)
    data.heldout.check = lambda: data.check_shards("heldout")
    return data, problems


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
        if has_prepared_files(path):
            raise CorpusError(f"{path} holds token shards but no {MANIFEST} (an unfinished or damaged preparation); "
                              f"{REBUILD}")
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


def has_prepared_files(path: Path) -> bool:
    """Whether `path` holds what only a preparation writes: a side's document index or its first shard."""
    return any((path / f"{side}{end}").is_file() for side in SIDES for end in (".idx", "-00000.bin"))


def _open_side(path: Path, manifest: dict, side: str, dtype: str, fail, full: bool) -> Optional[TokenDocuments]:
    """One side as TokenDocuments, its shards checked for size (and with `full` hashed), its index for checksum and
    fit; None after a problem (`fail` raised it or noted it)."""
    info = manifest.get(side)
    try:
        shards_info = info["shards"]
        n_docs, n_tokens = int(info["token_documents"]), int(info["tokens"])
        index_file = path / info["index"]["file"]
    except (KeyError, TypeError, ValueError):
        fail(f"its {side} entry is incomplete")
        return None
    torch_dtype, itemsize = DTYPES[dtype][0], DTYPES[dtype][1]
    shards, ok = [], True
    for shard in shards_info:
        problem = _shard_problem(path, shard, itemsize, "full" if full else "size")
        if problem:
            fail(problem)
            ok = False
            continue
        tokens = int(shard["tokens"])
        shards.append(torch.from_file(str(path / shard["file"]), shared=False, size=tokens, dtype=torch_dtype)
                      if tokens else torch.empty(0, dtype=torch_dtype))
    if not index_file.is_file() or index_file.stat().st_size != n_docs * 24 or \
            sha256_file(index_file) != info["index"].get("sha256"):
        fail(f"{index_file.name} is missing, truncated or changed")
        return None
    if not ok:
        return None
    index = (torch.from_file(str(index_file), shared=False, size=n_docs * 3, dtype=torch.int64).view(n_docs, 3)
             if n_docs else torch.zeros(0, 3, dtype=torch.long))
    sizes = torch.tensor([len(s) for s in shards] + [0], dtype=torch.long)
    fits = bool(((index[:, 0] >= 0) & (index[:, 0] < len(shards)) & (index[:, 1] >= 0) & (index[:, 2] >= 2)).all())
    fits = fits and bool((index[:, 1] + index[:, 2] <= sizes[index[:, 0].clamp(0, len(shards))]).all())
    if not fits or int(index[:, 2].sum()) != n_tokens or int(sizes.sum()) != n_tokens:
        fail(f"the {side} index does not fit its shards")
        return None
    return TokenDocuments(shards, index)


def _shard_problem(folder: Path, shard: dict, itemsize: int, check: str) -> Optional[str]:
    """What is wrong with one shard of the manifest, naming its file, or None. `check`: "size" (present at its
    size), "cached" (and its SHA-256, unless this process hashed these bytes already: _VERIFIED), "full" (hashed)."""
    file = folder / str(shard.get("file"))
    try:
        tokens = int(shard.get("tokens", -1))
        st = os.stat(file)
    except (OSError, TypeError, ValueError):
        return f"{file.name}: missing"
    if st.st_size != tokens * itemsize:
        return f"{file.name}: {st.st_size:,} bytes, the manifest says {tokens * itemsize:,}"
    if check == "size":
        return None
    key, seen = (st.st_dev, st.st_ino), (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if check == "cached" and _VERIFIED.get(key) == (*seen, shard.get("sha256")):
        return None
    digest = sha256_file(file)
    _VERIFIED[key] = (*seen, digest)
    if digest != shard.get("sha256"):
        return f"{file.name} does not match its checksum in the manifest: changed or damaged on disk"
    return None


def _remember_written(file: Path, digest: str) -> None:
    """A shard this process has just written and flushed, with the SHA-256 of what it wrote."""
    st = os.stat(file)
    _VERIFIED[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest)
