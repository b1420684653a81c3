"""The cache of on-the-fly preparations: plain text given to `flashgau train --data` (and the default corpus) is
prepared (prepare.py) into $FLASHGAU_CACHE/prepared/<key> (default ~/.cache/flashgau) once; the key hashes the
request and the source's names, sizes and modification times (sources.Source.stat_key), so a second start on
unchanged data opens the cache without tokenizing, and any change to a file prepares afresh. Delete the folder to
reclaim the space. An entry that no longer matches its manifest (a shard changed on disk: prepared.py checks their
checksums) is prepared afresh when a run starts, with a line saying so; found during a run, it is an error that
names the entry to delete.

An entry is written into a temporary folder beside it (`<key>.tmp-<pid>`) and renamed into place when finished,
so no reader sees half an entry; temporary folders of processes that died are removed by the next preparation.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Union

from ..errors import ConfigError, CorpusError
from ..files import fsync_folder, process_alive
from .corpus import DEFAULT_HELDOUT_FRACTION
from .prepare import DEFAULT_BPE_SAMPLE_BYTES, DEFAULT_SHARD_BYTES, Log, Request, make_request, write_prepared
from .prepared import MANIFEST, PreparedData, open_prepared
from .sources import open_source
from .tokenizers import Tokenizer, tokenizer_digest

CACHE_ENV = "FLASHGAU_CACHE"


def cache_root() -> Path:
    """Where on-the-fly preparations live: $FLASHGAU_CACHE, else ~/.cache/flashgau."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "flashgau").expanduser()


def prepared_cached(data: Optional[Union[str, Path]], *, tokenizer: Union[str, Tokenizer] = "bytes",
                    bpe_vocab_size: int = 4096, heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
                    also_accept: Optional[Tokenizer] = None, progress: bool = False,
                    log: Log = lambda s: None) -> PreparedData:
    """`data` prepared into the cache (module docstring) and opened: from the cache when it is there.
    `also_accept`: a tokenizer (a resumed run's) whose entry under the `tokenizer` request (e.g. "bpe", trained
    when the run started) is as good as one made with it."""
    source = open_source(data)
    request, tok = make_request(source, tokenizer, heldout_fraction=heldout_fraction, bpe_vocab_size=bpe_vocab_size,
                                bpe_sample_bytes=DEFAULT_BPE_SAMPLE_BYTES)
    root = cache_root() / "prepared"
    if also_accept is not None:
        found = _cached(root, request, log)
        if found is not None and tokenizer_digest(found.tokenizer) == tokenizer_digest(also_accept):
            return found
        request, tok = make_request(source, also_accept, heldout_fraction=heldout_fraction,
                                    bpe_vocab_size=bpe_vocab_size, bpe_sample_bytes=DEFAULT_BPE_SAMPLE_BYTES)
    found = _cached(root, request, log)
    if found is not None:
        return found
    final = root / request.key()[:32]
    tmp = root / f"{final.name}.tmp-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as err:
        raise ConfigError(f"cannot write the data cache {root}: {err.strerror or err}; set {CACHE_ENV} to a writable "
                          "folder, or prepare the data with `flashgau prepare` and train on the prepared folder") \
            from None
    log(f"preparing {source.label} into the cache {final} (once; later runs on the same data reuse it)")
    try:
        write_prepared(source, tmp, request, tok, shard_bytes=DEFAULT_SHARD_BYTES, progress=progress, log=log)
        try:
            os.rename(tmp, final)
        except OSError:
            found = _cached(root, request, log)
            if found is not None:             # another process finished the same entry first: use theirs
                return found
            shutil.rmtree(final, ignore_errors=True)     # a damaged entry (refused above)
            os.rename(tmp, final)
    except OSError as err:                    # e.g. the disk is full: nothing of the entry is kept
        raise ConfigError(f"cannot write the data cache {root}: {err.strerror or err}; free space there, set "
                          f"{CACHE_ENV} to another folder, or prepare the data with `flashgau prepare --out DIR` "
                          "and train on DIR") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    fsync_folder(root)
    return open_prepared(final, remedy=cache_remedy(final))


def cache_remedy(folder: Path) -> str:
    """What to do about a cache entry that no longer matches its manifest."""
    return f"delete {folder} (a cached preparation of the data: it is prepared again at the next start)"


def _cached(root: Path, request: Request, log: Log) -> Optional[PreparedData]:
    folder = root / request.key()[:32]
    if not (folder / MANIFEST).is_file():
        return None
    try:
        found = open_prepared(folder, remedy=cache_remedy(folder))
    except CorpusError as err:
        log(f"{str(err).split(';')[0]}: preparing it again")
        return None
    return found if found.manifest.get("request") == request.to_dict() else None


def _remove_stale(root: Path) -> None:
    """Temporary folders of preparations whose process died."""
    for tmp in root.glob("*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
