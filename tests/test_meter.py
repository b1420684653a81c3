"""meter.Meter: plain lines without a terminal (at most one per every_seconds, or when asked), nothing disabled."""

import io

from flashgau.meter import Meter
from flashgau.training.progress import Progress


class Count(Meter):
    def line(self) -> str:
        return f"at {self.n}"

    def advance(self, n: int, **kw) -> None:
        self.n = n
        self.show(n, **kw)


def test_plain_lines_are_spaced_unless_asked_for():
    out = io.StringIO()
    meter = Count(10, stream=out, every_seconds=3600.0)
    for n in range(1, 6):
        meter.advance(n, line_now=n == 5)
    meter.write("a note")
    assert out.getvalue().splitlines() == ["at 5", "a note"]
    every = Count(10, stream=io.StringIO(), every_seconds=0.0)
    for n in range(1, 4):
        every.advance(n)
    assert every.stream.getvalue().splitlines() == ["at 1", "at 2", "at 3"]


def test_a_disabled_meter_writes_nothing():
    out = io.StringIO()
    meter = Count(10, stream=out, enabled=False, every_seconds=0.0)
    meter.advance(3, line_now=True)
    meter.write("a note")
    meter.close()
    assert out.getvalue() == ""


def test_training_progress_lines():
    out = io.StringIO()
    progress = Progress(None, stream=out, every_seconds=3600.0)
    progress.update(1, 2.5, 1000.0)              # the first step always prints
    progress.set_total(4)
    progress.update(2, 2.0, 1200.0)              # too soon
    progress.update(4, 1.0, 1300.0)              # the last step always prints
    assert out.getvalue().splitlines() == [
        "step 1 (timing the first steps) | loss 2.5000 | 1,000 tok/s",
        "step 4/4 (100%) | loss 1.0000 | 1,300 tok/s | elapsed 0:00 | left 0:00"]
