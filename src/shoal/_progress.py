"""Progress: a live view on a terminal (rich), a plain line every few seconds elsewhere.

Both are event subscribers, and both are built to cost the run nothing it could measure:

- They set ``piece_events = False``, so the scheduler does not even build the two records every
  piece emits (``AttemptStarted``, ``PieceSucceeded``); the totals are read from
  ``RunStarted.counts()`` when a line or a frame is drawn. The events they do get (a failure, a
  retry, a throttle, a limit change) only update a counter or push a deadline. A keyed job's
  live view sets ``key_counts = True`` instead: the scheduler keeps each key's pieces done,
  failed and in flight, read from ``RunStarted.keys()`` when a frame is drawn.
- They draw from a timer on the run's own event loop (a few times a second for the live view,
  every few seconds for plain lines), never per event, and never from a thread of their own: no
  locks, nothing left running after the run, and under ``shoal.testing.FakeClock`` the lines come
  at exact run times.

Rates are measured over a recent window (the last ``window`` seconds of the run), so the ETA
follows a run that speeds up or slows down rather than its average since the start. Pieces read
back from a journal are counted as settled but not in the rate.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TextIO

from ._events import (
    AnyEvent,
    Counts,
    LimitChanged,
    RetryScheduled,
    RunFinished,
    RunStarted,
    ThrottleWait,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

__all__ = ["LiveProgress", "PlainProgress", "progress_view"]


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:30``, ``2:05:09``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _View:
    """What both views share: the run's facts, waits, limits, a rate window and the draw timer.

    Args:
        every: Seconds of run time between draws.
        window: Seconds over which the rate is measured.
    """

    piece_events = False

    def __init__(self, every: float, window: float) -> None:
        if not every >= 0:
            raise ValueError(f"every={every!r}: seconds between lines, >= 0 (0: only at the end)")
        if not window > 0:
            raise ValueError(f"window={window!r}: seconds over which the rate is measured, > 0")
        self.every = float(every)
        self.window = float(window)
        self._reset(RunStarted(0.0, None, 0, None, None, ""))

    def _reset(self, started: RunStarted) -> None:
        self.name = started.name
        self.total = started.total
        self.concurrency = started.concurrency
        self.per_key = started.per_key
        self.rate_limit = started.rate
        self._counts = started.counts
        self._final: RunFinished | None = None
        self._retry_until: list[float] = []  # heaps of the times the waits end
        self._throttle_until: list[float] = []
        self._samples: deque[tuple[float, int]] = deque([(started.time, 0)])
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._origin = 0.0  # loop.time() when the run's clock read 0

    # ------------------------------------------------------------------ events

    def __call__(self, event: AnyEvent) -> None:
        kind = type(event)
        if kind is RetryScheduled or kind is ThrottleWait:
            assert isinstance(event, RetryScheduled | ThrottleWait)
            heap = self._retry_until if kind is RetryScheduled else self._throttle_until
            heapq.heappush(heap, event.time + event.delay)
        elif kind is LimitChanged:
            assert isinstance(event, LimitChanged)
            self._limit_changed(event)
        elif kind is RunStarted:
            assert isinstance(event, RunStarted)
            self._started(event)
        elif kind is RunFinished:
            assert isinstance(event, RunFinished)
            self._finished(event)

    def _limit_changed(self, event: LimitChanged) -> None:
        if event.key:  # one key's limit: the header shows the job's
            return
        if event.name == "concurrency":
            self.concurrency = int(event.value)
        elif event.name == "per_key":
            self.per_key = int(event.value)
        elif event.name == "rate":
            self.rate_limit = f"{event.value:g}/1s"

    def _started(self, event: RunStarted) -> None:
        self._reset(event)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # events replayed by hand: no timer, draw when told
            return
        self._loop = loop
        self._origin = loop.time() - event.time
        self._open()
        self._schedule()

    def _finished(self, event: RunFinished) -> None:
        self._final = event
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close(event)

    def _schedule(self) -> None:
        if self.every > 0 and self._loop is not None:
            self._timer = self._loop.call_later(self.every, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._final is not None:
            return
        assert self._loop is not None
        self.draw(self._loop.time() - self._origin)
        self._schedule()

    # Hooks for the views.
    def _open(self) -> None:
        pass

    def _close(self, event: RunFinished) -> None:
        pass

    def draw(self, elapsed: float) -> None:
        """Show the state at ``elapsed`` seconds of run time."""

    # ------------------------------------------------------------------ figures

    def counts(self) -> Counts:
        """The run's totals: live while it runs, final once it ended."""
        return self._final.counts if self._final is not None else self._counts()

    @property
    def done(self) -> int:
        return self.counts().succeeded

    @property
    def failed(self) -> int:
        return self.counts().failed

    @property
    def in_flight(self) -> int:
        return self.counts().in_flight

    def waiting(self, elapsed: float) -> tuple[int, int]:
        """Pieces waiting out a retry backoff, and pieces waiting out a throttle, at ``elapsed``.

        Once its wait is over a piece counts as neither, even before it gets a slot again.
        """
        for heap in (self._retry_until, self._throttle_until):
            while heap and heap[0] <= elapsed:
                heapq.heappop(heap)
        return len(self._retry_until), len(self._throttle_until)

    def rate(self, elapsed: float, counts: Counts) -> float:
        """Pieces settled per second over the last ``window`` seconds (journal reads excluded).

        Each call adds a sample, so call it once per draw.
        """
        ran = counts.settled - counts.resumed
        samples = self._samples
        samples.append((elapsed, ran))
        while len(samples) > 2 and samples[1][0] <= elapsed - self.window:
            samples.popleft()
        then, before = samples[0]
        span = elapsed - then
        return (ran - before) / span if span > 0 else 0.0

    def eta(self, counts: Counts, rate: float) -> float | None:
        """Seconds left at ``rate``, if the total is known and anything has settled yet."""
        if self.total is None or rate <= 0:
            return None
        return max(0, self.total - counts.settled) / rate

    def summary(self) -> str:
        """The final line: how the run ended, its counts, time and average rate."""
        final = self._final
        assert final is not None, "summary() is for a run that ended"
        counts = final.counts
        how = {"finished": "finished in", "failed": "failed after", "aborted": "aborted after"}.get(
            final.status, "interrupted after"
        )
        ran = counts.settled - counts.resumed
        rate = ran / final.time if final.time > 0 else 0.0
        parts = [f"{counts.succeeded:,} done", f"{counts.failed:,} failed"]
        if counts.resumed:
            parts.append(f"{counts.resumed:,} read back from the journal")
        if counts.retries:
            parts.append(f"{counts.retries:,} retries")
        if counts.throttles:
            parts.append(f"{counts.throttles:,} throttled")
        if self.total is not None and counts.settled < self.total:
            parts.append(f"{self.total - counts.settled:,} not settled")
        return (
            f"{self._prefix()}: {how} {format_duration(final.time)}: {', '.join(parts)} "
            f"({rate:,.1f}/s)"
        )

    def _prefix(self) -> str:
        return f"shoal {self.name}" if self.name else "shoal"


class PlainProgress(_View):
    """A plain line every few seconds of run time, and a summary line at the end.

    For logs and pipes, where a live view would be noise::

        shoal fetch: 410 done, 2 failed of 1,000, 16 in flight, 3 waiting to retry, 1 throttled,
            52.3/s, ETA 0:11, 0:08 elapsed

    Args:
        every: Seconds of run time between lines (0: only the summary at the end).
        stream: Where to print (default: standard error, as it is at each line).
        window: Seconds over which the rate is measured.
    """

    def __init__(
        self, every: float = 2.0, stream: TextIO | None = None, *, window: float = 10.0
    ) -> None:
        super().__init__(every, window)
        self.stream = stream

    def line(self, elapsed: float) -> str:
        """The progress line at ``elapsed`` seconds of run time."""
        counts = self.counts()
        rate = self.rate(elapsed, counts)
        retrying, throttled = self.waiting(elapsed)
        of = f" of {self.total:,}" if self.total is not None else ""
        parts = [
            f"{self._prefix()}: {counts.succeeded:,} done, {counts.failed:,} failed{of}",
            f"{counts.in_flight:,} in flight",
            f"{retrying:,} waiting to retry",
        ]
        if throttled:
            parts.append(f"{throttled:,} throttled")
        parts.append(f"{rate:,.1f}/s")
        eta = self.eta(counts, rate)
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        parts.append(f"{format_duration(elapsed)} elapsed")
        return ", ".join(parts)

    def draw(self, elapsed: float) -> None:
        self._print(self.line(elapsed))

    def print_line(self, elapsed: float) -> None:
        """Print the line for ``elapsed`` now."""
        self.draw(elapsed)

    def _close(self, event: RunFinished) -> None:
        self._print(self.summary())

    def _print(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        if stream is not None:  # no stderr at all (pythonw): nowhere to print
            print(text, file=stream, flush=True)


class LiveProgress(_View):
    """A live view on a terminal, redrawn a few times a second, and a summary line at the end.

    It shows a bar (when the input has a ``len()``), done / failed / in flight / waiting to retry
    / throttled, the rate over the last few seconds, the ETA, the current limits (kept up to date
    by ``LimitChanged``), and one line per key while a keyed job has at most ``max_keys`` keys.
    The view is erased at the end and the summary line stays.

    Args:
        console: A ``rich.console.Console`` to draw on (default: standard error).
        refresh_per_second: Redraws per second of run time.
        max_keys: Per-key lines are shown up to this many keys.
        window: Seconds over which the rate is measured.
    """

    def __init__(
        self,
        *,
        console: Console | None = None,
        refresh_per_second: float = 4.0,
        max_keys: int = 8,
        window: float = 10.0,
    ) -> None:
        if not refresh_per_second > 0:
            raise ValueError(f"refresh_per_second={refresh_per_second!r}: must be > 0")
        super().__init__(1.0 / refresh_per_second, window)
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console
        self.max_keys = max_keys
        self._live: Live | None = None
        self.key_counts = False
        self._key_counts: Callable[[], dict[str, tuple[int, int, int]]] | None = None

    def _reset(self, started: RunStarted) -> None:
        super()._reset(started)
        # Per-key lines: the scheduler keeps each key's counts (no piece events needed).
        self.key_counts = started.keyed
        self._key_counts = started.keys if started.keyed else None

    # ------------------------------------------------------------------ drawing

    def renderable(self, elapsed: float) -> RenderableType:
        """The view at ``elapsed`` seconds of run time (each call also samples the rate)."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        counts = self.counts()
        rate = self.rate(elapsed, counts)
        eta = self.eta(counts, rate)
        retrying, throttled = self.waiting(elapsed)

        head = Table.grid(padding=(0, 1))
        cells: list[RenderableType] = [Text(self._prefix(), style="bold")]
        if self.total is not None:
            done_share = counts.settled / self.total if self.total else 1.0
            cells.append(ProgressBar(total=max(self.total, 1), completed=counts.settled, width=30))
            cells.append(Text(f"{counts.settled:,}/{self.total:,} {done_share:.0%}"))
        else:
            cells.append(Text(f"{counts.settled:,} settled"))
        cells.append(Text(f"{rate:,.1f}/s", style="cyan"))
        if eta is not None:
            cells.append(Text(f"ETA {format_duration(eta)}"))
        cells.append(Text(f"{format_duration(elapsed)} elapsed", style="dim"))
        head.add_row(*cells)

        states = Text("  ")
        states.append(f"{counts.succeeded:,} done", style="green")
        states.append(" · ")
        states.append(f"{counts.failed:,} failed", style="red" if counts.failed else "")
        states.append(f" · {counts.in_flight:,} in flight · {retrying:,} waiting to retry")
        if throttled:
            states.append(" · ")
            states.append(f"{throttled:,} throttled", style="yellow")

        limits = [f"concurrency {self.concurrency}"]
        if self.per_key is not None:
            limits.append(f"per key {self.per_key}")
        if self.rate_limit is not None:
            limits.append(f"rate {self.rate_limit}")
        lines: list[RenderableType] = [
            head,
            states,
            Text(f"  limits: {', '.join(limits)}", style="dim"),
        ]
        per_key = self._key_counts() if self._key_counts is not None else {}
        if 0 < len(per_key) <= self.max_keys:
            keys = Table.grid(padding=(0, 2))
            for key, (done, failed, running) in sorted(per_key.items()):
                keys.add_row(
                    Text(f"  {key or '(no key)'}"),
                    Text(f"{done:,} done"),
                    Text(f"{failed:,} failed"),
                    Text(f"{running:,} in flight"),
                )
            lines.append(keys)
        return Group(*lines)

    def draw(self, elapsed: float) -> None:
        if self._live is not None:
            self._live.update(self.renderable(elapsed), refresh=True)

    def _open(self) -> None:
        from rich.errors import LiveError
        from rich.live import Live

        # The first frame comes at the first tick: a run shorter than that draws nothing.
        live = Live("", console=self.console, auto_refresh=False, transient=True)
        try:
            live.start()
        except LiveError:  # another live view holds this console: just the summary, then
            return
        self._live = live

    def _close(self, event: RunFinished) -> None:
        live, self._live = self._live, None
        try:
            if live is not None:
                live.update("")  # stop() draws once more, then erases it: draw nothing
                live.stop()  # erases the view, shows the cursor, puts stdout/stderr back
        finally:
            self.console.print(self.summary(), highlight=False, markup=False)


def progress_view(kind: bool | Literal["live", "plain"]) -> LiveProgress | PlainProgress:
    """The view for ``progress=kind``: ``True`` is live on a terminal, plain lines elsewhere."""
    if kind == "plain":
        return PlainProgress()
    from rich.console import Console

    console = Console(stderr=True)
    if kind == "live" or console.is_terminal or console.is_jupyter:
        return LiveProgress(console=console)
    return PlainProgress()
