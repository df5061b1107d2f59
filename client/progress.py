"""A one-line progress bar for `submit`, drawn on a terminal stream.

    [##########----------]  51,200 / 100,000 jobs  51%  2.3 s

It redraws at most every `REDRAW_S`, so a fast stream of results costs a
clock read per update and nothing more. Results go to stdout and the bar to
stderr; when both are the same terminal, the caller clears the bar before
writing results and draws it again after (see `OrderedWriter` in cli.py).
"""

from __future__ import annotations

import time
from typing import TextIO

REDRAW_S = 0.1
BAR_CELLS = 24


class ProgressBar:
    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.done = 0
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._visible = False

    def update(self, done: int) -> None:
        """Record progress; redraws only if the last draw is old enough."""
        self.done = done
        now = time.monotonic()
        if now - self._drawn_at >= REDRAW_S:
            self.draw(now)

    def draw(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._drawn_at = now
        fraction = self.done / self.total if self.total else 1.0
        filled = int(fraction * BAR_CELLS)
        bar = "#" * filled + "-" * (BAR_CELLS - filled)
        self.stream.write(
            f"\r[{bar}] {self.done:>{len(f'{self.total:,}')},} / {self.total:,} jobs "
            f"{fraction:4.0%}  {now - self._started:.1f} s\x1b[K"
        )
        self.stream.flush()
        self._visible = True

    def clear(self) -> None:
        """Erase the bar, leaving the cursor at the start of its line."""
        if self._visible:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._visible = False
