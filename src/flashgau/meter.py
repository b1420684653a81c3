"""The progress meter of long work: a tqdm bar on a terminal, a plain line every so often otherwise (log files, CI),
nothing when disabled. What is counted and how it reads is the subclass's: training steps (training/progress.py),
input bytes and tokens (data/prepare.py)."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Meter:
    """A count towards a total (None while unknown). A subclass calls `show(n)` when the count moves and says what
    the bar carries beside it (`postfix`) and what a plain line reads (`line`); `write(text)` prints above the bar.
    tqdm options (unit, desc, delay, bar_format, ...) go to the bar."""

    def __init__(self, total: Optional[int], *, initial: int = 0, enabled: bool = True,
                 stream: Optional[TextIO] = None, every_seconds: float = 15.0, **bar_options) -> None:
        self.total, self.initial, self.enabled = total, initial, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.every_seconds = every_seconds
        self.start = self._last_line = time.perf_counter()
        self._bar = None
        if enabled and _is_tty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, file=self.stream, dynamic_ncols=True, **bar_options)

    def postfix(self) -> str:
        """What the bar shows beside the count ("" for nothing)."""
        return ""

    def line(self) -> str:
        """The plain line written every `every_seconds` when there is no bar."""
        raise NotImplementedError

    def seconds(self) -> float:
        """Since the meter started."""
        return time.perf_counter() - self.start

    def show(self, n: int, *, line_now: bool = False) -> None:
        """The count is now `n`: the bar moves; without one, a plain line when `every_seconds` have passed since the
        last (or at once with `line_now`)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
            postfix = self.postfix()
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)
            return
        now = time.perf_counter()
        if line_now or now - self._last_line >= self.every_seconds:
            self._last_line = now
            self.write(self.line())

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
