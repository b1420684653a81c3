"""How a run stops. Cleanly: the first Ctrl-C (SIGINT) or SIGTERM (what schedulers and `kill` send) asks the
training loop to stop after the current step and save a checkpoint; a second Ctrl-C aborts at once. Or because it
cannot go on (it diverged, the disk is full, a peer process was lost): then one line that says what happened, which
checkpoint of the run is kept and how to go on (`Kept`)."""

from __future__ import annotations

import errno
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from ..errors import FlashgauError
from ..files import write_failure
from .config import TrainConfig

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)         # writes that fail for want of room: a full disk, a quota


class TrainingDiverged(FlashgauError):
    """The training or held-out loss became NaN or infinite."""


class StopFlag:
    """`requested`: a stop was asked for (by a signal, or by the loop for another process)."""

    requested = False


@contextmanager
def stop_on_signals(say: Callable[[str], None]):
    """A StopFlag raised by the first Ctrl-C or SIGTERM (`say` tells the user so); a second Ctrl-C raises
    KeyboardInterrupt. The handlers are put back on leaving; outside the main thread no signal is caught."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        say(f"{name}: stopping after this step and saving a checkpoint (Ctrl-C again to abort without saving)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Kept:
    """The last checkpoint of a run in this session (`saved_step`, None before the first), and the one-line errors
    of a run that cannot go on, each naming it."""

    def __init__(self, out_dir: Path, saved_step: Optional[int]) -> None:
        self.out_dir, self.saved_step = out_dir, saved_step

    def describe(self) -> str:
        return (f"its checkpoint of step {self.saved_step} is kept" if self.saved_step is not None
                else "no checkpoint of this run was written")

    def diverged(self, what: str, cfg: TrainConfig) -> TrainingDiverged:
        """`what` happened, which checkpoint is kept, and the settings that commonly cause it (no single culprit)."""
        return TrainingDiverged(f"{what}; {self.describe()}; settings that commonly cause it: lr {cfg.lr:g}, "
                                f"weight_decay {cfg.weight_decay:g}, grad_clip {cfg.grad_clip:g}, warmup_steps "
                                f"{cfg.warmup_steps}, precision {cfg.precision}")

    def write_failed(self, err: OSError) -> FlashgauError:
        """A write into the run folder that failed for want of space (the metrics log, the plot, the summary; a
        checkpoint says so itself)."""
        out = self.out_dir
        go_on = (f"make room, then continue with: flashgau train --resume {out}" if self.saved_step is not None
                 else "make room and start it again")
        return FlashgauError(f"cannot write in {out}: {write_failure(err, out)}; {self.describe()}; {go_on}")

    def after_lost_peer(self, is_main: bool) -> str:
        """After a lost peer process: which checkpoint remains and how to continue."""
        if self.saved_step is None:
            return "no checkpoint of this run was written yet; start it again"
        out, at = self.out_dir, f" at step {self.saved_step}" if is_main else ""
        return (f"the last checkpoint{at} is kept in {out}; continue with: flashgau train --resume {out} (under "
                "torchrun, or in one process)")
