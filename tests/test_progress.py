"""Progress views: plain lines by run time, the live view's figures, and clean stops."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

import shoal
from shoal import Job, Limits, Retry, Throttled
from shoal._progress import format_duration, progress_view
from shoal.events import (
    AnyEvent,
    AttemptStarted,
    Counts,
    LimitChanged,
    PieceFailed,
    PieceSucceeded,
    RetryScheduled,
    RunFinished,
    RunStarted,
    ThrottleWait,
)
from shoal.progress import LiveProgress, PlainProgress
from shoal.testing import EventLog, FakeClock

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SHOW_CURSOR = "\x1b[?25h"


def plain_text(output: str) -> str:
    """A terminal's output without its control codes."""
    return ANSI.sub("", output).replace("\r", "")


def terminal(width: int = 100) -> tuple[Console, io.StringIO]:
    stream = io.StringIO()
    return Console(file=stream, force_terminal=True, width=width, color_system="standard"), stream


def rendered(view: LiveProgress, elapsed: float) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    with console.capture() as capture:
        console.print(view.renderable(elapsed))
    return capture.get()


@pytest.fixture(autouse=True)
def no_threads_left() -> Iterator[None]:
    """Every test ends with the threads it started with, and stdout/stderr put back."""
    before = set(threading.enumerate())
    stdout, stderr = sys.stdout, sys.stderr
    yield
    assert set(threading.enumerate()) <= before
    assert (sys.stdout, sys.stderr) == (stdout, stderr)


class Sleeper:
    """Async work: sleeps ``duration`` of virtual time; fails the items in ``fail``."""

    def __init__(self, duration: float = 0.9, fail: frozenset[int] = frozenset()) -> None:
        self.duration = duration
        self.fail = fail

    async def __call__(self, item: int) -> int:
        await asyncio.sleep(self.duration)
        if item in self.fail:
            raise ValueError(f"bad item {item}")
        return item


# ---------------------------------------------------------------------------------- plain


def test_plain_lines_come_every_few_seconds_of_run_time(clock: FakeClock) -> None:
    """PlainProgress prints a line at each `every` seconds of run time, then a summary."""
    stream = io.StringIO()
    view = PlainProgress(every=2.0, stream=stream)
    run = Job(Sleeper(), limits=Limits(concurrency=2)).run(range(10), clock=clock, progress=view)
    assert run.ok
    assert stream.getvalue().splitlines() == [
        "shoal Sleeper: 4 done, 0 failed of 10, 2 in flight, 0 waiting to retry, 2.0/s, ETA 0:03, "
        "0:02 elapsed",
        "shoal Sleeper: 8 done, 0 failed of 10, 2 in flight, 0 waiting to retry, 2.0/s, ETA 0:01, "
        "0:04 elapsed",
        "shoal Sleeper: finished in 0:04: 10 done, 0 failed (2.2/s)",
    ]
    assert (view.done, view.failed, view.in_flight) == (10, 0, 0)


def test_plain_counts_failures_retries_and_an_unknown_total(clock: FakeClock) -> None:
    """Without a len() there is no total and no ETA; retries are waited out and counted."""
    stream = io.StringIO()
    view = PlainProgress(every=1.25, stream=stream)
    work = Sleeper(duration=1.0, fail=frozenset({1}))
    retry = Retry(attempts=2, base_delay=2.0, jitter=False)
    Job(work, retry=retry).run(iter(range(3)), clock=clock, progress=view)
    lines = stream.getvalue().splitlines()
    # t=1.25: item 1 failed its first attempt at t=1 and waits 2 s; the others are done.
    assert lines[0] == (
        "shoal Sleeper: 2 done, 0 failed, 0 in flight, 1 waiting to retry, 1.6/s, 0:01 elapsed"
    )
    # t=3.75: its second attempt runs.
    assert lines[2].startswith("shoal Sleeper: 2 done, 0 failed, 1 in flight, 0 waiting to retry")
    assert lines[-1] == "shoal Sleeper: finished in 0:04: 2 done, 1 failed, 1 retries (0.8/s)"


def test_plain_every_zero_prints_only_the_summary(clock: FakeClock) -> None:
    """every=0: no periodic lines, just the summary."""
    stream = io.StringIO()
    Job(Sleeper()).run(range(3), clock=clock, progress=PlainProgress(every=0, stream=stream))
    assert stream.getvalue() == "shoal Sleeper: finished in 0:01: 3 done, 0 failed (3.3/s)\n"


# ---------------------------------------------------------------------------------- live, by hand


class FakeCounts:
    """Stands in for the scheduler's totals in hand-fed event sequences."""

    def __init__(self) -> None:
        self.value = Counts(0, 0, 0, 0, 0, 0, 0)

    def __call__(self) -> Counts:
        return self.value


def test_live_view_shows_counts_rate_eta_limits_and_keys() -> None:
    """Fed events by hand, the view shows the counts, the recent rate, the ETA, the limits
    (updated by LimitChanged), waits, and one line per key."""
    counts = FakeCounts()
    keys: dict[str, tuple[int, int, int]] = {}
    view = LiveProgress(console=Console(file=io.StringIO()))
    view(RunStarted(0.0, 1000, 16, 2, "10/1s", "fetch", True, counts, lambda: dict(keys)))
    assert view.key_counts  # keyed: the scheduler keeps each key's counts for it
    assert not view.piece_events  # so it needs no piece events
    feed: list[AnyEvent] = [
        AttemptStarted(0.1, 0, "a.com", 1),
        AttemptStarted(0.1, 1, "b.com", 1),
        AttemptStarted(0.1, 2, "a.com", 1),
        AttemptStarted(0.1, 3, "b.com", 1),
        PieceSucceeded(0.5, 0, "a.com", 1, 0.4),
        PieceFailed(0.6, 1, "b.com", 1, 0.5, "ValueError", "bad"),
        RetryScheduled(0.7, 2, "a.com", 1, 10.0, "OSError", "reset"),
        ThrottleWait(0.8, 3, "b.com", 1, 30.0, 30.0),
        LimitChanged(0.9, "", "concurrency", 8),
    ]
    for event in feed:
        view(event)

    counts.value = Counts(45, 5, 0, 6, 60, 1, 1)
    keys.update({"a.com": (1, 0, 0), "b.com": (0, 1, 0)})
    text = rendered(view, 5.0)
    assert "shoal fetch" in text
    assert "50/1,000 5%" in text
    assert "10.0/s" in text  # 50 settled in 5 s
    assert "ETA 1:35" in text  # 950 left at 10/s
    assert "45 done · 5 failed · 6 in flight · 1 waiting to retry · 1 throttled" in text
    assert "limits: concurrency 8, per key 2, rate 10/1s" in text
    assert re.search(r"a\.com\s+1 done\s+0 failed\s+0 in flight", text)
    assert re.search(r"b\.com\s+0 done\s+1 failed\s+0 in flight", text)

    # The rate follows the last 10 s: 100 more in 7 s, then 170 in the 15 s since t=5.
    counts.value = Counts(150, 0, 0, 6, 150, 1, 1)
    assert "12.5/s" in rendered(view, 12.0)  # 150 since t=0
    counts.value = Counts(220, 0, 0, 6, 220, 1, 1)
    text = rendered(view, 20.0)
    assert "11.3/s" in text  # (220 - 50) / (20 - 5)
    assert "ETA 1:09" in text  # 780 left at 11.33/s
    assert "0 waiting to retry" in text  # its backoff ended at 10.7
    assert "1 throttled" in text  # its pause lasts until 30.8
    view(RunFinished(21.0, "finished", Counts(1000, 0, 0, 0, 1000, 1, 1)))


def test_live_view_throttle_pause_ends() -> None:
    """A throttled piece counts as throttled until its pause is over."""
    view = LiveProgress(console=Console(file=io.StringIO()))
    view(RunStarted(0.0, None, 4, None, None, "", False, FakeCounts()))
    view(ThrottleWait(1.0, 0, "", 1, 30.0, 30.0))
    assert "1 throttled" in rendered(view, 30.0)
    assert "throttled" not in rendered(view, 31.0)
    assert "0 settled" in rendered(view, 31.0)  # no total: no bar, no ETA
    assert "ETA" not in rendered(view, 31.0)


def test_live_view_drops_key_lines_past_max_keys() -> None:
    """More keys than max_keys: no per-key lines."""
    keys = {"a": (0, 0, 1), "b": (0, 0, 1)}
    view = LiveProgress(console=Console(file=io.StringIO()), max_keys=2)
    view(RunStarted(0.0, 10, 4, None, None, "", True, FakeCounts(), lambda: dict(keys)))
    assert "a  " in rendered(view, 1.0)
    keys["c"] = (0, 0, 1)
    text = rendered(view, 1.0)
    assert not re.search(r"^\s+[abc]\s", text, re.MULTILINE)


def test_format_duration() -> None:
    """Durations read like a clock."""
    assert [format_duration(s) for s in (0, 7.4, 750, 7509)] == ["0:00", "0:07", "12:30", "2:05:09"]


# ---------------------------------------------------------------------------------- live, real runs


def test_live_progress_on_a_real_keyed_run(clock: FakeClock) -> None:
    """A keyed run with a retry and a throttle, drawn to a terminal: frames with per-key lines
    and the limits, then the view is erased and the summary line stays."""
    console, stream = terminal()
    throttled: set[int] = set()

    async def work(item: int) -> int:
        await asyncio.sleep(1.0)
        if item == 3 and item not in throttled:
            throttled.add(item)
            raise Throttled(retry_after=2.0)
        if item == 5:
            raise ValueError("bad item 5")
        return item

    job = Job(
        work,
        key=lambda i: f"host{i % 2}",
        limits=Limits(concurrency=4, per_key=2, rate="100/s"),
        retry=Retry(attempts=2, base_delay=1.0, jitter=False),
        name="crawl",
    )
    view = LiveProgress(console=console, refresh_per_second=2)
    run = job.run(range(8), clock=clock, progress=view)
    assert len(run.failures) == 1
    output = stream.getvalue()
    text = plain_text(output)
    assert "shoal crawl" in text
    assert "limits: concurrency 4, per key 2, rate 100/1s" in text
    assert re.search(r"host0\s+\d+ done\s+\d+ failed\s+\d+ in flight", text)
    assert re.search(r"host1\s+\d+ done\s+1 failed\s+\d in flight", text)
    assert "1 throttled" in text
    assert "1 waiting to retry" in text
    assert text.rstrip("\n").endswith(
        "shoal crawl: finished in 0:05: 7 done, 1 failed, 1 retries, 1 throttled (1.6/s)"
    )
    assert output.rfind(SHOW_CURSOR) < output.rfind("shoal crawl: finished")


def test_unkeyed_views_skip_the_per_piece_events(clock: FakeClock) -> None:
    """Views of an unkeyed job get no AttemptStarted/PieceSucceeded; other subscribers do."""
    log = EventLog()

    class Quiet(EventLog):
        piece_events = False

    quiet = Quiet()
    console, _ = terminal()
    Job(Sleeper()).run(
        range(5),
        clock=clock,
        subscribers=[log, quiet],
        progress=LiveProgress(console=console),
    )
    assert len(log.of(AttemptStarted)) == len(log.of(PieceSucceeded)) == 5
    assert quiet.of(AttemptStarted) == []
    assert quiet.of(PieceSucceeded) == []
    started, finished = quiet.of(RunStarted)[0], quiet.of(RunFinished)[0]
    assert (started.total, started.concurrency, started.name, started.keyed) == (
        5,
        16,
        "Sleeper",
        False,
    )
    assert finished.status == "finished"
    assert (finished.counts.succeeded, finished.counts.in_flight) == (5, 0)


def test_run_started_knows_the_total_only_from_len(clock: FakeClock) -> None:
    """total is len(items) when there is one; a generator is not consumed to count it."""
    log = EventLog()
    Job(Sleeper(), limits=Limits(rate="5/s")).run(
        (i for i in range(3)), clock=clock, subscribers=log
    )
    started = log.of(RunStarted)[0]
    assert (started.total, started.rate, started.per_key) == (None, "5/1s", None)
    assert started.counts().succeeded == 3  # read after the run: its final totals


def test_live_progress_stops_cleanly_when_the_run_fails(clock: FakeClock) -> None:
    """An items iterable that raises ends the run with its error; the view stops and says so."""
    console, stream = terminal()

    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        Job(Sleeper()).run(items(), clock=clock, progress=LiveProgress(console=console))
    output = stream.getvalue()
    assert (
        plain_text(output)
        .rstrip("\n")
        .splitlines()[-1]
        .startswith("shoal Sleeper: failed after 0:00")
    )
    assert SHOW_CURSOR in output


def test_live_progress_stops_cleanly_when_cancelled(clock: FakeClock) -> None:
    """Cancelling the run mid-way stops the view: the summary says interrupted."""
    console, stream = terminal()
    view = LiveProgress(console=console)

    async def main() -> None:
        task = asyncio.create_task(
            Job(Sleeper(duration=1.0), limits=Limits(concurrency=2)).arun(
                range(10), clock=clock, progress=view
            )
        )
        await asyncio.sleep(2.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    clock.run(main())
    output = stream.getvalue()
    last = plain_text(output).rstrip("\n").splitlines()[-1]
    assert last == "shoal Sleeper: interrupted after 0:02: 4 done, 0 failed, 6 not settled (1.6/s)"
    assert SHOW_CURSOR in output


def test_live_progress_stops_when_a_stream_is_left_early(clock: FakeClock) -> None:
    """A consumer that leaves job.stream early ends the run, and the view with it."""
    console, stream = terminal()

    async def main() -> list[Any]:
        seen = []
        outcomes = Job(Sleeper()).stream(
            range(100), clock=clock, progress=LiveProgress(console=console)
        )
        async with contextlib.aclosing(outcomes) as results:
            async for outcome in results:
                seen.append(outcome.value)
                if len(seen) == 3:
                    break
        return seen

    assert len(clock.run(main())) == 3
    assert "interrupted after" in plain_text(stream.getvalue())


# ---------------------------------------------------------------------------------- progress=


def test_progress_true_is_plain_where_stderr_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """progress=True: plain lines unless stderr is a terminal; "live" and "plain" choose."""
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress_view(True), PlainProgress)
    assert isinstance(progress_view("plain"), PlainProgress)
    assert isinstance(progress_view("live"), LiveProgress)


def test_progress_argument_is_checked() -> None:
    """A progress= that is none of the forms says which ones there are."""

    async def work(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="'live', 'plain'"):
        shoal.map(work, [1], progress="fancy")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="every"):
        PlainProgress(every=-1)
    with pytest.raises(ValueError, match="refresh_per_second"):
        LiveProgress(refresh_per_second=0)


def test_map_with_live_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """shoal.map(progress="live") draws on standard error and ends with the summary."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)

    async def work(x: int) -> int:
        return x * 2

    assert shoal.map(work, range(20), progress="live") == [x * 2 for x in range(20)]
    assert "shoal work: finished in 0:00: 20 done, 0 failed" in plain_text(stream.getvalue())


def test_the_scheduler_counts_each_key_for_a_view_that_asks(clock: FakeClock) -> None:
    """With key_counts = True, RunStarted.keys() gives exact done, failed and in-flight counts
    per key, during the run and at its end (retries and failures included)."""
    seen: list[dict[str, tuple[int, int, int]]] = []

    class Watcher:
        key_counts = True
        piece_events = False
        keys: Any = None

        def __call__(self, event: AnyEvent) -> None:
            if isinstance(event, RunStarted):
                self.keys = event.keys
            elif self.keys is not None and isinstance(event, RunFinished):
                seen.append(self.keys())

    tries: dict[int, int] = {}

    async def work(item: int) -> int:
        tries[item] = tries.get(item, 0) + 1
        await asyncio.sleep(1.0)
        if item % 5 == 0 and tries[item] == 1:
            raise OSError("first try fails")
        if item == 7:
            raise ValueError("always fails")
        return item

    job = Job(work, key=lambda i: f"k{i % 3}", retry=Retry(attempts=2, base_delay=0.5))
    run = job.run(range(12), clock=clock, subscribers=Watcher())
    expected: dict[str, tuple[int, int, int]] = {}
    for outcome in run.outcomes:
        done, failed, _ = expected.get(outcome.key, (0, 0, 0))
        expected[outcome.key] = (done + outcome.ok, failed + (not outcome.ok), 0)
    assert seen == [expected]
    assert expected["k1"] == (3, 1, 0)  # item 7 failed
