"""Ctrl-C around a command's life in its process: held while torch is imported (interrupting its C++ import code
can abort the process) and raised when the import is done; after the command, while Python shuts down, an exit with
status 130 instead of a traceback from an exit handler of torch's."""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager


@contextmanager
def ctrl_c_held():
    """Hold a Ctrl-C (SIGINT) that arrives inside the block and raise it as KeyboardInterrupt when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def quiet_ctrl_c_at_exit() -> None:
    """From here on a Ctrl-C ends the process at once with status 130, instead of a KeyboardInterrupt traceback from
    an exit handler of torch's. (In Python's last moments of shutdown, after it has put back the system's own
    handler, a Ctrl-C ends the process by the signal, which a shell reports as 130 too.)"""
    if threading.current_thread() is not threading.main_thread():
        return

    def leave(signum, frame):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)

    signal.signal(signal.SIGINT, leave)
