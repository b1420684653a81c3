"""Writing files safely, in one way everywhere: `atomic_write` replaces a file whole or not at all, `write_files`
writes a set of files into a folder all or none, `FolderLock` keeps a folder to one process at a time,
`fsync_folder` makes a rename in a folder durable, `write_failure` says in words why a write failed.

Checkpoints, the metrics log and plot and prepared-data manifests are written with `atomic_write`; an exported
Hugging Face folder and a benchmark's reports with `write_files`; run folders and folders being prepared are held
with a `FolderLock`.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, TextIO, Union

from .errors import ConfigError

try:
    import fcntl
except ImportError:             # pragma: no cover - Windows: folders are not locked
    fcntl = None

TEMPORARY = ".tmp-"             # a temporary file of `name` is `.<name>.tmp-<pid>-<random>`

Content = Union[bytes, str, Callable[[BinaryIO], None]]


def atomic_write(path: Union[str, Path], content: Content, *, encoding: str = "utf-8") -> Path:
    """Replace `path` with `content` whole or not at all; returns the path.

    `content` is bytes, text (written in `encoding`) or a function that writes into the binary file it is given
    (`lambda f: torch.save(obj, f)`, `lambda f: fig.savefig(f, format="png")`). It goes to a temporary file of a
    unique name beside `path` (`.<name>.tmp-<pid>-<random>`, with the permissions a new file gets), which is flushed
    to disk and renamed over `path` (os.replace: atomic on POSIX and Windows); then the folder is flushed. A failure
    anywhere, in the writer included, removes the temporary file, leaves the previous `path` as it was and
    propagates. After a write, temporary files of `path` whose process has died (killed while writing) are removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TEMPORARY}{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with open(fd, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode(encoding) if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    for stale in path.parent.glob(f".{path.name}{TEMPORARY}*"):
        pid = stale.name[len(path.name) + 1 + len(TEMPORARY):].split("-")[0]
        if not process_alive(pid):
            stale.unlink(missing_ok=True)
    return path


def write_files(folder: Union[str, Path], writer: Callable[[Path], None], *, replace: bool = False) -> Path:
    """Write the files that `writer(staging)` puts into the folder it is given into `folder`, all of them or none;
    returns `folder`.

    `staging` is a new folder beside `folder` (`.<name>.tmp-<pid>-<random>`, on the same disk). When `writer` is done
    its files are flushed to disk, then: where `folder` is absent or empty, `staging` is renamed to it (one atomic
    step); where it holds files, they are kept, and with `replace` each staged file is renamed over its namesake
    (holding the folder, so that two writers do not mix their files), else a ConfigError. A failure anywhere, in
    `writer` included (a full disk), removes `staging`, leaves `folder` as it was and propagates. Staging folders of
    `folder` whose process has died (killed while writing) are removed."""
    folder = Path(os.path.abspath(folder))        # "." has a name to stage beside
    staging = folder.with_name(f".{folder.name}{TEMPORARY}{os.getpid()}-{secrets.token_hex(4)}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    try:
        writer(staging)
        for item in staging.iterdir():
            if item.is_file():
                with open(item, "rb") as handle:
                    os.fsync(handle.fileno())
        try:
            os.rename(staging, folder)               # absent, or an empty folder (POSIX replaces it)
        except OSError:
            if not folder.is_dir():
                raise
            if any(folder.iterdir()) and not replace:
                raise ConfigError(f"{folder} was filled by another process while this one wrote; choose another "
                                  "folder or replace its files") from None
            with _folder_held(folder):
                for item in sorted(staging.iterdir()):
                    os.replace(item, folder / item.name)
            fsync_folder(folder)
        fsync_folder(folder.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in folder.parent.glob(f".{folder.name}{TEMPORARY}*"):
        pid = stale.name[len(folder.name) + 1 + len(TEMPORARY):].split("-")[0]
        if not process_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
    return folder


@contextmanager
def _folder_held(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (flock on its descriptor), waited for; nothing where folders cannot be
    locked."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        fd = None
    try:
        if fd is not None and fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def write_failure(err: BaseException, folder: Union[str, Path]) -> str:
    """In words: why a write into `folder` failed (a full disk named as such, with the space left: torch reports it
    as "enforce fail ... file write failed", safetensors as "No space left on device (os error 28)")."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if getattr(err, "errno", None) == errno.ENOSPC or "No space left" in str(err) or (free is not None
                                                                                      and free < 64 * 2**20):
        return f"the disk is full ({free / 2**20:.0f} MiB free)" if free is not None else "the disk is full"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror + (f": {err.filename}" if err.filename else "")
    return str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows, where
    the rename itself is atomic)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def process_alive(pid: Union[int, str]) -> bool:
    """Whether process `pid` (of this machine) still runs; False for a string that is no process id."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except (PermissionError, OverflowError):
        return True
    return True


class FolderBusy(ConfigError):
    """The lock is held by another process, named in `owner` ("flashgau process <pid>", or "another process")."""

    def __init__(self, path: Path, owner: str) -> None:
        super().__init__(f"{path.parent} is in use by {owner}")
        self.path, self.owner = path, owner


class FolderLock:
    """An exclusive lock on the file `path` of a folder, for as long as this process holds it.

    fcntl.flock, non-blocking: the kernel releases the lock when the process ends, however it ends, so a crash never
    leaves a folder stuck. The holder writes its name into the file ("flashgau process <pid>"); a second process is
    refused with FolderBusy naming it. Where fcntl is missing (Windows) nothing is locked. The file stays when the
    lock is released."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self._handle: Optional[TextIO] = None

    def acquire(self) -> "FolderLock":
        """Take the lock (FolderBusy if another process holds it; OSError if the file cannot be opened)."""
        handle = open(self.path, "a+", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                handle.seek(0)
                owner = handle.read().strip() or "another process"
                handle.close()
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise FolderBusy(self.path, owner) from None
                raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"flashgau process {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()        # closing the file releases the lock
            self._handle = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
