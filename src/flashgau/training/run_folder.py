"""A run folder is owned by one process at a time, and replacing a run never loses it.

`RunFolder(path).claim()` takes the folder's lock, `<path>/.lock` (files.FolderLock: released by the kernel when the
process ends, however it ends, so a crashed run never leaves the folder stuck). A second process gets a one-line
error naming the owner. Where fcntl is missing (Windows) the folder is not locked.

Whether the folder already holds a run is decided while holding the claim (`claim(new_run=True)`): a check made
before it could be outdated by another process that claims, trains and releases the folder in between. A new run
is refused where a run is, unless it replaces it (`overwrite`); a resumed run is refused where the checkpoint it
read has changed since (`claim(resumes=...)`).

Replacing a run (`--overwrite`) moves the old run's files into `<path>/.previous/` first; they are deleted once the
new run has written its first checkpoint, and moved back if the new run fails before that. If a process is killed
in between, the run stays set aside until the next process claims the folder, which moves it back before doing
anything else. Meanwhile the folder holds a run all the same: a new run without --overwrite is refused, and
whatever reads a run (`check_not_set_aside`: eval, sample, fill, export, --init-from, --resume) says where it is
instead of finding no checkpoint.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

from ..errors import CheckpointError, ConfigError, FlashgauError
from ..files import FolderBusy, FolderLock
from ..runtime import Distributed

try:
    import fcntl
except ImportError:             # pragma: no cover - Windows: folders are not locked
    fcntl = None

# what a run writes in its folder (files, and the folders of --log tensorboard / wandb)
RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "loss.png", "summary.json", "config.toml", "tensorboard", "wandb")
PREVIOUS = ".previous"
STAGING = PREVIOUS + ".partial"     # .previous while it is being filled
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"


def check_writable(path: Path) -> None:
    """A one-line ConfigError unless `path` is a folder this process can create and write in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output folder {path} is a file; choose another --out")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"output folder {path} cannot be created: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder {path} cannot be written: no permission to write in {probe}")


# ------------------------------------------------------------------------------ a run set aside, seen from outside

def run_folder_of(path: Union[str, Path]) -> Path:
    """The run folder `path` names: the folder itself, or the folder of a checkpoint file."""
    path = Path(path).expanduser()
    return path.parent if path.name == CHECKPOINT and not path.is_dir() else path


def set_aside_run(path: Union[str, Path]) -> Optional[Path]:
    """Where the run of `path` (a run folder or its checkpoint file) is set aside, when it holds no checkpoint of its
    own but a replacement (--overwrite) has moved its run away and not written its first checkpoint yet, or was
    killed before: `.previous` (or `.previous.partial` of a replacement killed while setting aside); else None."""
    folder = run_folder_of(path)
    if (folder / CHECKPOINT).exists():
        return None
    for name in (PREVIOUS, STAGING):
        if (folder / name / CHECKPOINT).exists():
            return folder / name
    return None


def set_aside_message(path: Union[str, Path], *, new_run: bool = False) -> Optional[str]:
    """One line for a command that reads the run of `path` while that run is set aside (`set_aside_run`), saying
    where it is and what to do; None when it is not. `new_run`: the line for a new run started there."""
    aside = set_aside_run(path)
    if aside is None:
        return None
    folder = run_folder_of(path)
    owner = _holder(folder / LOCK)
    if owner is not None:
        return (f"{folder} is being replaced by {owner} (train --overwrite): the previous run is in {aside} until "
                "the new run writes its first checkpoint; read it there, or wait for that process to finish")
    if new_run:
        return (f"{folder} holds an interrupted --overwrite: the previous run is in {aside}; continue it with "
                f"--resume {folder} (which moves it back), start over with --overwrite, or choose another --out")
    return (f"{folder} holds an interrupted --overwrite: the previous run is in {aside}; move it back (and continue "
            f"it) with flashgau train --resume {folder}, read it where it is ({aside}), or replace it with "
            f"flashgau train --out {folder} --overwrite")


def check_not_set_aside(path: Union[str, Path], prefix: str = "") -> None:
    """A one-line CheckpointError (`prefix` first) when the run of `path` is set aside (`set_aside_message`)."""
    message = set_aside_message(path)
    if message is not None:
        raise CheckpointError(prefix + message)


def check_new_run(path: Union[str, Path], overwrite: bool) -> None:
    """A one-line ConfigError unless a new run may start in the folder `path`: it holds no run, counting one set
    aside by an interrupted --overwrite, or `overwrite` replaces it. An early answer, to fail before the work of
    starting a run: `RunFolder.claim(new_run=True)` decides again while holding the folder."""
    path = Path(path)
    if overwrite:
        return
    message = set_aside_message(path, new_run=True)
    if message is not None:
        raise ConfigError(message)
    if (path / CHECKPOINT).exists():
        raise ConfigError(_holds_a_run(path))


def _holds_a_run(path: Path) -> str:
    return (f"{path} already holds a run; continue it with --resume {path}, start over with --overwrite, or choose "
            "another --out")


def file_stamp(path: Union[str, Path]) -> tuple:
    """What changes when a file is replaced or rewritten (its inode, size and modification time)."""
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def restore_set_aside(path: Union[str, Path]) -> Optional[str]:
    """Move the run of `path` back where it was set aside by an interrupted --overwrite (claiming the folder does
    it: `RunFolder.claim`); a note for the user, or None when nothing was set aside. A ConfigError when another
    process holds the folder."""
    aside = set_aside_run(path)
    if aside is None:
        return None
    folder = run_folder_of(path)
    with RunFolder(folder):
        pass
    return f"{folder}: the run set aside by an interrupted --overwrite is moved back from {aside}"


def _holder(lock: Path) -> Optional[str]:
    """The process holding the lock file `lock` (its name, as it wrote it), or None when none holds it. Reads only:
    a shared lock taken and dropped at once, on a file opened for reading."""
    if fcntl is None:
        return None
    try:
        handle = open(lock, encoding="utf-8")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


# ---------------------------------------------------------------------------------------------- the claim

class RunFolder:
    """The output folder of one run, claimed by this process (see the module docstring). `replacing`: the claim
    set a run aside for this one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock: Optional[FolderLock] = None
        self.replacing = False

    def claim(self, *, new_run: bool = False, overwrite: bool = False,
              resumes: Optional[tuple[Path, tuple]] = None) -> "RunFolder":
        """Take the folder (a ConfigError naming the owner when another process holds it), move back a run set aside
        by a replacement that was killed, then decide: a `new_run` is refused where a run is (`check_new_run`), or
        sets it aside with `overwrite`; a run that `resumes` the checkpoint file read (its path and `file_stamp`)
        is refused when that file has changed since."""
        check_writable(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(self.path / LOCK)
        try:
            lock.acquire()
        except FolderBusy as busy:
            raise ConfigError(f"{self.path} is in use by {busy.owner}; wait for it to finish or choose another "
                              "--out") from None
        self._lock = lock
        try:
            self._recover()
            if new_run and (self.path / CHECKPOINT).exists():
                if not overwrite:
                    raise ConfigError(_holds_a_run(self.path))
                self.set_aside()
                self.replacing = True
            if resumes is not None:
                checkpoint, stamp = resumes
                if not checkpoint.exists() or file_stamp(checkpoint) != stamp:
                    raise ConfigError(f"{checkpoint} was changed by another process while this run was starting; "
                                      f"start it again: flashgau train --resume {self.path}")
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunFolder":
        return self.claim()

    def __exit__(self, *exc) -> None:
        self.release()

    # ----------------------------------------------------------------------------- replacing a run
    @property
    def previous(self) -> Path:
        return self.path / PREVIOUS

    def set_aside(self) -> None:
        """Move the current run's files into .previous (the old run stays whole until `discard_previous`): first
        into .previous.partial, renamed when complete, so a kill in the middle is recognised and undone."""
        staging = self.path / STAGING
        staging.mkdir(exist_ok=True)
        for name in RUN_FILES:
            if (self.path / name).exists():
                os.replace(self.path / name, staging / name)
        os.replace(staging, self.previous)

    def discard_previous(self) -> None:
        """The new run has its first checkpoint: the replaced run goes."""
        if self.previous.exists():
            shutil.rmtree(self.previous, ignore_errors=True)

    def restore_previous(self) -> Optional[str]:
        """Undo `set_aside` (the new run failed before its first checkpoint). Returns a note for the user."""
        if not self.previous.exists():
            return None
        for name in RUN_FILES:
            if (self.path / name).is_dir():
                shutil.rmtree(self.path / name)
            else:
                (self.path / name).unlink(missing_ok=True)
            if (self.previous / name).exists():
                os.replace(self.previous / name, self.path / name)
        shutil.rmtree(self.previous, ignore_errors=True)
        return f"the run that was in {self.path} is restored"

    def _recover(self) -> None:
        """A replacement cut short by a kill: the old run comes back; a finished replacement's leftovers go."""
        staging = self.path / STAGING
        if staging.exists():                         # killed while setting aside: nothing new was written yet
            for item in staging.iterdir():
                os.replace(item, self.path / item.name)
            staging.rmdir()
        if not self.previous.exists():
            return
        if (self.path / CHECKPOINT).exists():
            self.discard_previous()
        else:
            self.restore_previous()


@contextmanager
def claimed_by_rank0(path: Path, dist: Distributed, **claim) -> Iterator[RunFolder]:
    """The run folder of a run of several processes (torchrun), claimed by rank 0 alone for the duration (`claim`:
    the arguments of RunFolder.claim); the other processes claim nothing, and learn whether the claim failed (every
    process then stops with its error). For one process: RunFolder(path), claimed."""
    folder = RunFolder(path)
    try:
        error = None
        if dist.is_main:
            try:
                folder.claim(**claim)
            except FlashgauError as err:
                error = err
        dist.settle(error)
        yield folder
    finally:
        folder.release()
