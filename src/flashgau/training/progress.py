"""Training progress: a tqdm bar (loss, tokens/s, time left) on a terminal, periodic plain lines otherwise
(log files, CI), nothing when disabled (the mechanics: meter.Meter)."""

from __future__ import annotations

from typing import Optional, TextIO

from ..meter import Meter


class Progress(Meter):
    """`update(step, loss, tokens_per_s)` after each optimizer step; `write(text)` prints above the bar. The total may
    be unknown at first (None, while a time-budgeted run times its first steps) and set later (`set_total`)."""

    def __init__(self, total: Optional[int], initial: int = 0, *, enabled: bool = True, stream: Optional[TextIO] = None,
                 every_seconds: float = 15.0) -> None:
        super().__init__(total, initial=initial, enabled=enabled, stream=stream, every_seconds=every_seconds,
                         unit="step", bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        self.step, self.loss, self.tokens_per_s = initial, 0.0, 0.0

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        self.step, self.loss, self.tokens_per_s = step, loss, tokens_per_s
        self.show(step, line_now=step in (self.initial + 1, self.total))

    def postfix(self) -> str:
        return f"loss {self.loss:.4f}, {self.tokens_per_s:,.0f} tok/s"

    def line(self) -> str:
        step, loss, tokens_per_s = self.step, self.loss, self.tokens_per_s
        if self.total is None:
            return f"step {step} (timing the first steps) | loss {loss:.4f} | {tokens_per_s:,.0f} tok/s"
        done = step - self.initial
        elapsed = self.seconds()
        left = elapsed / done * (self.total - step) if done else 0.0
        return (f"step {step}/{self.total} ({100 * step / self.total:.0f}%) | loss {loss:.4f} | "
                f"{tokens_per_s:,.0f} tok/s | elapsed {_clock(elapsed)} | left {_clock(left)}")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
