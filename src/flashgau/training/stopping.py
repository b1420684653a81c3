"""Stopping a run cleanly: the first Ctrl-C (SIGINT) or SIGTERM (what schedulers and `kill` send) asks the training
loop to stop after the current step and save a checkpoint; a second Ctrl-C aborts at once."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable


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
