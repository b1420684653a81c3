"""A run folder is owned by one process at a time, and replacing a run never loses it.

`RunFolder(path).claim()` takes the folder's lock, `<path>/.lock` (files.FolderLock: released by the kernel when the
process ends, however it ends, so a crashed run never leaves the folder stuck). A second process gets a one-line
error naming the owner. Where fcntl is missing (Windows) the folder is not locked.

Replacing a run (`--overwrite`) moves the old run's files into `<path>/.previous/` first; they are deleted once the
new run has written its first checkpoint, and moved back if the new run fails before that. If a process is killed
in between, the next process to claim the folder finds `.previous` beside a folder without a checkpoint and moves
the old run back before doing anything else.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ..errors import ConfigError, FlashgauError
from ..files import FolderBusy, FolderLock
from ..runtime import Distributed

RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "loss.png", "summary.json")
PREVIOUS = ".previous"
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


class RunFolder:
    """The output folder of one run, claimed by this process (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock: Optional[FolderLock] = None

    def claim(self) -> "RunFolder":
        check_writable(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(self.path / LOCK)
        try:
            lock.acquire()
        except FolderBusy as busy:
            raise ConfigError(f"{self.path} is in use by {busy.owner}; wait for it to finish or choose another "
                              "--out") from None
        self._lock = lock
        self._recover()
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
        staging = self.path / (PREVIOUS + ".partial")
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
            (self.path / name).unlink(missing_ok=True)
            if (self.previous / name).exists():
                os.replace(self.previous / name, self.path / name)
        shutil.rmtree(self.previous, ignore_errors=True)
        return f"the run that was in {self.path} is restored"

    def _recover(self) -> None:
        """A replacement cut short by a kill: the old run comes back; a finished replacement's leftovers go."""
        staging = self.path / (PREVIOUS + ".partial")
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
def claimed_by_rank0(path: Path, dist: Distributed) -> Iterator[RunFolder]:
    """The run folder of a run of several processes (torchrun), claimed by rank 0 alone for the duration; the
    other processes claim nothing, and learn whether the claim failed (every process then stops with its error).
    For one process: RunFolder(path), claimed."""
    folder = RunFolder(path)
    try:
        error = None
        if dist.is_main:
            try:
                folder.claim()
            except FlashgauError as err:
                error = err
        dist.settle(error)
        yield folder
    finally:
        folder.release()
