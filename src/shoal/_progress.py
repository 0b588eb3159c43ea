"""A plain progress line, for ``progress=True`` and wherever there is no terminal.

An event subscriber: it counts what the scheduler reports and prints one line every few seconds
(by the run's own clock, read from the events), so it costs next to nothing per event.
"""

from __future__ import annotations

import sys
from typing import TextIO

from ._events import (
    AttemptStarted,
    Event,
    LimitChanged,
    PieceFailed,
    PieceSucceeded,
    RetryScheduled,
    ThrottleWait,
)


class PlainProgress:
    """Counts events and prints ``shoal: 120 done, 2 failed, 16 in flight, ...`` periodically.

    Args:
        every: Seconds between lines.
        stream: Where to print (default: standard error).
    """

    def __init__(self, every: float = 2.0, stream: TextIO | None = None) -> None:
        self.every = every
        self.stream = stream
        self.done = 0
        self.failed = 0
        self.in_flight = 0
        self._waiting: set[int] = set()
        self._last = 0.0

    @property
    def waiting(self) -> int:
        """Pieces waiting out a backoff or a throttle."""
        return len(self._waiting)

    def __call__(self, event: Event | LimitChanged) -> None:
        if isinstance(event, AttemptStarted):
            self.in_flight += 1
            self._waiting.discard(event.index)
        elif isinstance(event, PieceSucceeded):
            self.in_flight -= 1
            self.done += 1
        elif isinstance(event, PieceFailed):
            if event.attempt >= 1:  # failures found before any attempt never were in flight
                self.in_flight -= 1
            self.failed += 1
        elif isinstance(event, RetryScheduled | ThrottleWait):
            self.in_flight -= 1
            self._waiting.add(event.index)
        if event.time - self._last >= self.every:
            self._last = event.time
            self.print_line(event.time)

    def line(self, elapsed: float) -> str:
        settled = self.done + self.failed
        rate = settled / elapsed if elapsed > 0 else 0.0
        return (
            f"shoal: {self.done:,} done, {self.failed:,} failed, {self.in_flight:,} in flight, "
            f"{self.waiting:,} waiting to retry, {rate:,.1f}/s"
        )

    def print_line(self, elapsed: float) -> None:
        print(self.line(elapsed), file=self.stream or sys.stderr, flush=True)
