"""files.atomic_write replaces a file whole or not at all; files.write_files writes a folder all or none;
files.FolderLock keeps a folder to one process."""

import errno
import os
import subprocess
import sys

import pytest

from flashgau import files
from flashgau.errors import ConfigError
from flashgau.files import FolderBusy, FolderLock, atomic_write


def test_bytes_text_and_a_writer_are_written_whole(tmp_path):
    assert atomic_write(tmp_path / "a.bin", b"\x00\x01") == tmp_path / "a.bin"
    atomic_write(tmp_path / "b.txt", "é\n")
    atomic_write(tmp_path / "c.bin", lambda handle: handle.write(b"from a writer"))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == "é\n".encode("utf-8")
    assert (tmp_path / "c.bin").read_bytes() == b"from a writer"
    atomic_write(tmp_path / "b.txt", "replaced")
    assert (tmp_path / "b.txt").read_text() == "replaced"
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.txt", "c.bin"]      # no temporary file is left


def test_a_new_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = atomic_write(tmp_path / "f", b"x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = atomic_write(tmp_path / "f.json", '{"old": 1}')

    def failing(handle):
        handle.write(b'{"new": ')                  # half of the new content is written ...
        raise RuntimeError("disk full")            # ... when the writer fails

    def interrupted(handle):
        handle.write(b"x")
        raise KeyboardInterrupt                    # Ctrl-C in the middle is cleaned up the same way

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, failing)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_text() == '{"old": 1}'
    assert os.listdir(tmp_path) == ["f.json"]


def test_a_failing_rename_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = atomic_write(tmp_path / "f", "old")

    def failing_replace(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        atomic_write(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f"]


def test_temporary_files_of_dead_processes_are_removed(tmp_path):
    live = tmp_path / f".f{files.TEMPORARY}{os.getppid()}-0a1b2c3d"     # a live process's write in the making
    dead = tmp_path / f".f{files.TEMPORARY}999999999-0a1b2c3d"          # no such process
    other = tmp_path / f".g{files.TEMPORARY}999999999-0a1b2c3d"         # another file's: not this write's business
    for p in (live, dead, other):
        p.write_bytes(b"partial")
    atomic_write(tmp_path / "f", b"whole")
    assert live.exists() and not dead.exists() and other.exists()


def test_a_second_taker_is_refused_with_the_owner_named(tmp_path):
    if files.fcntl is None:
        pytest.skip("no fcntl: folders are not locked")
    first = FolderLock(tmp_path / ".lock").acquire()
    with pytest.raises(FolderBusy, match=f"{tmp_path} is in use by flashgau process {os.getpid()}") as refused:
        FolderLock(tmp_path / ".lock").acquire()
    assert refused.value.owner == f"flashgau process {os.getpid()}" and isinstance(refused.value, ConfigError)
    first.release()
    with FolderLock(tmp_path / ".lock"):                                # released: free again
        pass


def test_a_lock_dies_with_its_process(tmp_path):
    if files.fcntl is None:
        pytest.skip("no fcntl: folders are not locked")
    code = (f"import time\nfrom flashgau.files import FolderLock\n"
            f"lock = FolderLock({str(tmp_path / '.lock')!r}).acquire()\n"
            "print('ready', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(FolderBusy, match=f"in use by flashgau process {holder.pid}$"):
            FolderLock(tmp_path / ".lock").acquire()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    FolderLock(tmp_path / ".lock").acquire().release()


def test_without_fcntl_nothing_is_locked(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "fcntl", None)
    with FolderLock(tmp_path / ".lock"), FolderLock(tmp_path / ".lock"):
        pass


def test_write_files_writes_a_folder_all_or_none(tmp_path):
    out = tmp_path / "out"

    def two(folder, second=b"2"):
        (folder / "a").write_bytes(b"1")
        (folder / "b").write_bytes(second)

    assert files.write_files(out, two) == out and {p.name: p.read_bytes() for p in out.iterdir()} == {"a": b"1",
                                                                                                    "b": b"2"}

    def full(folder):
        (folder / "a").write_bytes(b"new")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        files.write_files(out, full, replace=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"a": b"1", "b": b"2"}
    assert os.listdir(tmp_path) == ["out"]                                     # the staging folder is gone
    with pytest.raises(ConfigError, match="filled by another process"):
        files.write_files(out, two)
    (out / "mine").write_bytes(b"kept")
    files.write_files(out, lambda folder: two(folder, b"3"), replace=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"a": b"1", "b": b"3", "mine": b"kept"}
    assert "disk is full" in files.write_failure(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
