"""Training progress: a tqdm bar (loss, tokens/s, time left) on a terminal, periodic plain lines otherwise
(log files, CI), nothing when disabled."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    """`update(step, loss, tokens_per_s)` after each optimizer step; `write(text)` prints above the bar. The total may
    be unknown at first (None, while a time-budgeted run times its first steps) and set later (`set_total`)."""

    def __init__(self, total: Optional[int], initial: int = 0, *, enabled: bool = True, stream: Optional[TextIO] = None,
                 every_seconds: float = 15.0) -> None:
        self.total, self.initial, self.enabled = total, initial, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.every_seconds = every_seconds
        self._bar = None
        self._start = time.perf_counter()
        self._last_line = self._start
        if enabled and _is_tty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, file=self.stream, unit="step", dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix_str(f"loss {loss:.4f}, {tokens_per_s:,.0f} tok/s", refresh=False)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.every_seconds or step in (self.initial + 1, self.total):
            self._last_line = now
            done = step - self.initial
            elapsed = now - self._start
            if self.total is None:
                self.write(f"step {step} (timing the first steps) | loss {loss:.4f} | {tokens_per_s:,.0f} tok/s")
                return
            left = elapsed / done * (self.total - step) if done else 0.0
            self.write(f"step {step}/{self.total} ({100 * step / self.total:.0f}%) | loss {loss:.4f} | "
                       f"{tokens_per_s:,.0f} tok/s | elapsed {_clock(elapsed)} | left {_clock(left)}")

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


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
