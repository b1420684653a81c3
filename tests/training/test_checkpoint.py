"""Atomic checkpoint writes survive a crash or kill mid-save; bad checkpoints give one clear error."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import PurePosixPath

import pytest
import torch

from flashgau import files
from flashgau.errors import CheckpointError
from flashgau.training import checkpoint as ckpt_mod
from flashgau.training.checkpoint import (CHECKPOINT_NAME, REQUIRED_KEYS, load_checkpoint, load_model_state,
                                          save_checkpoint)


def _state(value: float) -> dict:
    state = {key: {} for key in REQUIRED_KEYS}
    state.update(model={"w": torch.full((256, 256), value)}, step=int(value), tokens_seen=0, elapsed=0.0)
    return state


def test_round_trip_and_folder_path(tmp_path):
    path = save_checkpoint(_state(3.0), tmp_path / CHECKPOINT_NAME)
    for where in (path, tmp_path):
        state = load_checkpoint(where)
        assert state["step"] == 3 and torch.equal(state["model"]["w"], torch.full((256, 256), 3.0))
    assert os.listdir(tmp_path) == [CHECKPOINT_NAME]


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(_state(1.0), path)
    real_save = torch.save

    def crashing_save(obj, handle):
        real_save(obj, handle)
        handle.truncate(handle.tell() // 2)  # half of the new file is on disk ...
        # ... when the write fails, as torch reports a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(ckpt_mod.torch, "save", crashing_save)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: type("U", (), {"free": 3 * 2**20})())
    with pytest.raises(CheckpointError, match=r"cannot write .*: the disk is full \(3 MiB free\); the previous "
                                              "checkpoint is kept"):
        save_checkpoint(_state(2.0), path)
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == [CHECKPOINT_NAME]  # the partial temporary file was removed
    with pytest.raises(CheckpointError, match=r"the disk is full \(3 MiB free\); no checkpoint is written yet$"):
        save_checkpoint(_state(2.0), tmp_path / "first" / CHECKPOINT_NAME)        # none before: none is kept


def test_a_flipped_byte_is_caught_by_the_archive_checksums(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint({**_state(1.0), "model": {"w": torch.arange(4096.0)}}, path)
    raw = bytearray(path.read_bytes())
    start = raw.find(torch.arange(4096.0).numpy().tobytes()[:64])     # inside the weights' bytes
    assert start > 0
    raw[start + 100] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_checkpoint(path)


def test_only_dead_processes_temporary_files_are_cleaned_up(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    mine = tmp_path / f".{CHECKPOINT_NAME}.tmp-{os.getppid()}"     # a live process's file in the making
    dead = tmp_path / f".{CHECKPOINT_NAME}.tmp-999999999"           # no such process
    mine.write_bytes(b"x")
    dead.write_bytes(b"x")
    save_checkpoint(_state(1.0), path)
    assert mine.exists() and not dead.exists()


def test_process_killed_during_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(_state(1.0), path)
    script = textwrap.dedent(f"""
        import os, signal, torch
        from flashgau.training import checkpoint as c
        real = torch.save
        def dying_save(obj, handle):
            real(obj, handle)
            handle.truncate(handle.tell() // 2)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handlers
        c.torch.save = dying_save
        state = {{k: {{}} for k in c.REQUIRED_KEYS}}
        state.update(model={{"w": torch.zeros(256, 256)}}, step=2, tokens_seen=0, elapsed=0.0)
        c.save_checkpoint(state, {str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(path)["step"] == 1
    leftovers = [n for n in os.listdir(tmp_path) if n != CHECKPOINT_NAME]
    assert len(leftovers) == 1 and leftovers[0].startswith(".checkpoint.pt.tmp-")  # partial file, never loaded


@pytest.mark.parametrize("corrupt", ["truncate", "garbage", "empty"])
def test_corrupt_files_give_a_clear_error(tmp_path, corrupt):
    path = save_checkpoint(_state(1.0), tmp_path / CHECKPOINT_NAME)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 3], "garbage": os.urandom(4096), "empty": b""}[corrupt])
    with pytest.raises(CheckpointError, match="not a readable flashgau checkpoint"):
        load_checkpoint(path)


def test_foreign_old_and_incomplete_checkpoints(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="is not a flashgau checkpoint"):
        load_checkpoint(path)
    torch.save({"format": "flashgau-checkpoint", "version": 99}, path)
    with pytest.raises(CheckpointError, match="format version 99; this flashgau reads versions 1, 2"):
        load_checkpoint(path)
    torch.save({"format": "flashgau-checkpoint", "version": 1, "model": {}}, path)
    with pytest.raises(CheckpointError, match="incomplete: it lacks model_config"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "flashgau-checkpoint", "version": 1, "obj": PurePosixPath("/etc")}, path)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_model(tmp_path):
    model = torch.nn.Linear(4, 3)
    with pytest.raises(CheckpointError, match="wrong shape: weight"):
        load_model_state(model, {"weight": torch.zeros(3, 5), "bias": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="missing: bias; unexpected: extra"):
        load_model_state(model, {"weight": torch.zeros(3, 4), "extra": torch.zeros(1)})
