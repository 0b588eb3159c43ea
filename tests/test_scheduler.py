"""The scheduler, on a fake clock: exact schedules for limits, retries, throttles and timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal
from shoal import Job, Limits, Rate, Retry, Throttled
from shoal.events import (
    AttemptStarted,
    PieceFailed,
    PieceSucceeded,
    RetryScheduled,
    ThrottleWait,
)
from shoal.testing import EventLog, FakeClock


class Recorder:
    """Async work that sleeps a given time (virtual), records starts and in-flight peaks."""

    def __init__(self, clock: FakeClock, durations: dict[Any, float] | None = None) -> None:
        self.clock = clock
        self.durations = durations or {}
        self.starts: list[tuple[float, Any]] = []
        self.in_flight = 0
        self.peak = 0
        self.per_key_peak: Counter[Any] = Counter()
        self._per_key: Counter[Any] = Counter()

    async def __call__(self, item: Any) -> Any:
        key = item[0] if isinstance(item, tuple) else None
        self.starts.append((self.clock.now(), item))
        self.in_flight += 1
        self._per_key[key] += 1
        self.peak = max(self.peak, self.in_flight)
        self.per_key_peak[key] = max(self.per_key_peak[key], self._per_key[key])
        try:
            await asyncio.sleep(self.durations.get(item, 1.0))
        finally:
            self.in_flight -= 1
            self._per_key[key] -= 1
        return item


def start_times(recorder: Recorder) -> list[float]:
    return [t for t, _ in recorder.starts]


def test_concurrency_limit_holds_exactly(clock: FakeClock, rng: random.Random) -> None:
    """Five one-second pieces, two at once: they start at 0, 0, 1, 1, 2 and never exceed two."""
    work = Recorder(clock)
    run = Job(work, limits=Limits(concurrency=2)).run(range(5), clock=clock, rng=rng)
    assert start_times(work) == [0.0, 0.0, 1.0, 1.0, 2.0]
    assert work.peak == 2
    assert run.values == [0, 1, 2, 3, 4]
    assert run.stats.wall_time == 3.0


def test_outcomes_carry_timings_and_attempts(clock: FakeClock, rng: random.Random) -> None:
    """Each outcome says when it started and finished on the run's clock, and its attempts."""
    clock = FakeClock(wall_start=1000.0)
    work = Recorder(clock, {1: 2.5})
    run = Job(work, limits=Limits(concurrency=2)).run([0, 1, 2], clock=clock, rng=rng)
    assert [(o.index, o.started, o.finished, o.attempts) for o in run.outcomes] == [
        (0, 1000.0, 1001.0, 1),
        (1, 1000.0, 1002.5, 1),
        (2, 1001.0, 1002.0, 1),
    ]
    assert run.completion_order == [0, 2, 1]
    assert run.outcomes[1].duration == 2.5
    assert run.stats.started == 1000.0
    assert run.stats.finished == 1002.5


def test_per_key_limit_lets_other_keys_go_on(clock: FakeClock, rng: random.Random) -> None:
    """per_key=1: a busy key's pieces wait, while another key's pieces run."""
    work = Recorder(clock)
    items = [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    job = Job(work, key=lambda item: item[0], limits=Limits(concurrency=10, per_key=1))
    run = job.run(items, clock=clock, rng=rng)
    assert sorted(work.starts) == [
        (0.0, ("a", 0)),
        (0.0, ("b", 0)),
        (1.0, ("a", 1)),
        (1.0, ("b", 1)),
        (2.0, ("a", 2)),
    ]
    assert work.per_key_peak == {"a": 1, "b": 1}
    assert [o.key for o in run.outcomes] == ["a", "a", "a", "b", "b"]
    assert run.values == items


def test_rate_limit_exact_schedule(clock: FakeClock, rng: random.Random) -> None:
    """rate='2/s' with quick work: two starts per second, whole second apart."""
    work = Recorder(clock, dict.fromkeys(range(7), 0.01))
    Job(work, limits=Limits(concurrency=10, rate="2/s")).run(range(7), clock=clock, rng=rng)
    assert start_times(work) == pytest.approx([0, 0, 1, 1, 2, 2, 3])


def test_rate_with_burst_one_spaces_starts_evenly(clock: FakeClock, rng: random.Random) -> None:
    """A 4/s rate with burst=1 starts one piece every quarter second."""
    work = Recorder(clock, dict.fromkeys(range(5), 0.01))
    limits = Limits(concurrency=10, rate=Rate(4, 1.0, burst=1))
    Job(work, limits=limits).run(range(5), clock=clock, rng=rng)
    assert start_times(work) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_weighted_rate_counts_units(clock: FakeClock, rng: random.Random) -> None:
    """A weighted rate (tokens per minute) admits pieces by their weight."""
    work = Recorder(clock, dict.fromkeys(range(10), 0.0))
    limits = Limits(concurrency=10, rate=Rate(100, 60.0, weight=lambda n: 40))
    Job(work, limits=limits).run(range(4), clock=clock, rng=rng)
    # 40 + 40 fit in 100; the third waits until the first 40 leave the minute window, and so on
    assert start_times(work) == pytest.approx([0, 0, 60, 60])


def test_piece_heavier_than_the_rate_fails_with_a_clear_error(
    clock: FakeClock, rng: random.Random
) -> None:
    """A piece that can never fit in the rate fails on its own; the others run."""
    work = Recorder(clock, dict.fromkeys(range(3), 0.0))
    limits = Limits(rate=Rate(100, 60.0, weight=lambda n: 500 if n == 1 else 1))
    run = Job(work, limits=limits).run(range(3), clock=clock, rng=rng)
    assert [o.ok for o in run.outcomes] == [True, False, True]
    error = run.outcomes[1].error
    assert error is not None
    assert error.type == "ValueError"
    assert "weighs 500 units" in error.message
    assert "raise the rate" in error.message


def test_two_rates_both_hold(clock: FakeClock, rng: random.Random) -> None:
    """A list of rates: every one of them is respected."""
    work = Recorder(clock, dict.fromkeys(range(6), 0.0))
    limits = Limits(concurrency=10, rate=["3/s", "4/10s"])
    Job(work, limits=limits).run(range(6), clock=clock, rng=rng)
    assert start_times(work) == pytest.approx([0, 0, 0, 1, 10, 10])


class Flaky:
    """Fails the first `fails[item]` attempts of each item, then returns item * 10."""

    def __init__(self, clock: FakeClock, fails: dict[int, int], exc: type[Exception] = OSError):
        self.clock = clock
        self.fails = dict(fails)
        self.exc = exc
        self.calls: list[tuple[float, int]] = []

    async def __call__(self, item: int) -> int:
        self.calls.append((self.clock.now(), item))
        await asyncio.sleep(0.5)
        if self.fails.get(item, 0) > 0:
            self.fails[item] -= 1
            raise self.exc(f"item {item} failed")
        return item * 10


def test_retry_backoff_exact_without_jitter(
    clock: FakeClock, rng: random.Random, events: EventLog
) -> None:
    """Two failures then success: retries wait 0.1 then 0.2 seconds after each failure."""
    work = Flaky(clock, {0: 2})
    retry = Retry(attempts=3, base_delay=0.1, jitter=False)
    run = Job(work, retry=retry).run([0], clock=clock, rng=rng, subscribers=events)
    assert work.calls == [(0.0, 0), (pytest.approx(0.6), 0), (pytest.approx(1.3), 0)]
    assert [(e.attempt, e.delay) for e in events.of(RetryScheduled)] == [(1, 0.1), (2, 0.2)]
    assert run.outcomes[0].attempts == 3
    assert run.values == [0]
    assert run.stats.retries == 2
    assert run.stats.attempts == 3


def test_retry_jitter_is_seeded_and_in_bounds(clock: FakeClock, events: EventLog) -> None:
    """Jittered delays come from the injected random source: same seed, same schedule."""
    retry = Retry(attempts=5, base_delay=1.0, max_delay=3.0)

    def schedule(seed: int) -> list[float]:
        log = EventLog()
        Job(Flaky(FakeClock(), {0: 4, 1: 4}), retry=retry).run(
            [0, 1], clock=FakeClock(), rng=random.Random(seed), subscribers=log
        )
        return [e.delay for e in log.of(RetryScheduled)]

    first = schedule(7)
    assert first == schedule(7)
    assert first != schedule(8)
    assert len(first) == 8
    assert all(0 <= d <= 3.0 for d in first)


def test_exhausted_retries_fail_with_the_last_error(clock: FakeClock, rng: random.Random) -> None:
    """A piece that always fails ends after `attempts` attempts with its error's details."""
    work = Flaky(clock, {1: 99})
    run = Job(work, retry=Retry(attempts=3, base_delay=0)).run([0, 1, 2], clock=clock, rng=rng)
    assert [o.ok for o in run.outcomes] == [True, False, True]
    failure = run.failures[0]
    assert failure.index == 1
    assert failure.item == 1
    assert failure.attempts == 3
    assert failure.error.type == "OSError"
    assert failure.error.message == "item 1 failed"
    assert "Traceback" in failure.error.traceback
    assert "item 1 failed" in failure.error.traceback
    assert run.values == [0, 20]


def test_errors_outside_on_fail_at_once(clock: FakeClock, rng: random.Random) -> None:
    """Only exceptions matching `on` are retried; a KeyError under on=OSError fails at once."""
    work = Flaky(clock, {0: 5}, exc=KeyError)
    run = Job(work, retry=Retry(attempts=5, on=OSError)).run([0], clock=clock, rng=rng)
    assert run.outcomes[0].attempts == 1
    assert len(work.calls) == 1


def test_waiting_piece_holds_no_slot(clock: FakeClock, rng: random.Random) -> None:
    """With one slot, a piece backing off for 10 s lets the next pieces run meanwhile."""
    work = Flaky(clock, {0: 1})
    retry = Retry(attempts=2, base_delay=10, jitter=False)
    Job(work, limits=Limits(concurrency=1), retry=retry).run([0, 1, 2], clock=clock, rng=rng)
    assert work.calls == [(0.0, 0), (0.5, 1), (1.0, 2), (10.5, 0)]


def test_deadline_stops_retrying(clock: FakeClock, rng: random.Random) -> None:
    """A retry that would start after the piece's deadline is not made."""
    work = Flaky(clock, {0: 10})
    retry = Retry(attempts=10, base_delay=1, jitter=False, deadline=4.0)
    run = Job(work, retry=retry).run([0], clock=clock, rng=rng)
    # attempts start at 0, 1.5 (0.5 + 1), 3.5 (2.0 + 2 - 0.5 ...) then 4.0 + 4 > deadline
    assert [t for t, _ in work.calls] == [0.0, 1.5, 4.0]
    assert run.outcomes[0].attempts == 3


def test_throttle_waits_without_using_attempts(
    clock: FakeClock, rng: random.Random, events: EventLog
) -> None:
    """Throttled(retry_after) delays the piece by that much and does not count as an attempt."""
    throttles = {0: 3}

    async def work(item: int) -> int:
        await asyncio.sleep(0.5)
        if throttles.get(item, 0):
            throttles[item] -= 1
            raise Throttled(retry_after=2.0)
        return item

    run = Job(work, retry=Retry(attempts=1)).run([0], clock=clock, rng=rng, subscribers=events)
    assert run.values == [0]
    outcome = run.outcomes[0]
    assert outcome.attempts == 1
    assert outcome.throttles == 3
    assert [e.time for e in events.of(AttemptStarted)] == [0.0, 2.5, 5.0, 7.5]
    assert [e.delay for e in events.of(ThrottleWait)] == [2.0, 2.0, 2.0]
    assert run.stats.throttles == 3
    assert run.stats.throttle_wait == 6.0
    assert run.stats.retries == 0


def test_throttle_pauses_only_its_key(clock: FakeClock, rng: random.Random) -> None:
    """A throttle on key 'a' pauses a's other pieces; key 'b' goes on at full speed."""
    starts: list[tuple[float, tuple[str, int]]] = []
    throttled = {("a", 0)}

    async def work(item: tuple[str, int]) -> tuple[str, int]:
        starts.append((clock.now(), item))
        await asyncio.sleep(1.0)
        if item in throttled:
            throttled.discard(item)
            raise Throttled(retry_after=5.0)
        return item

    items = [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    job = Job(work, key=lambda i: i[0], limits=Limits(concurrency=10, per_key=1))
    run = job.run(items, clock=clock, rng=rng)
    assert run.ok
    assert [t for t, i in starts if i[0] == "b"] == [0.0, 1.0, 2.0]
    # a0 throttled at t=1 -> key a paused until 6; a0 again at 6, then a1, a2
    assert [(t, i) for t, i in starts if i[0] == "a"] == [
        (0.0, ("a", 0)),
        (6.0, ("a", 0)),
        (7.0, ("a", 1)),
        (8.0, ("a", 2)),
    ]


def test_throttle_without_retry_after_uses_backoff(clock: FakeClock, events: EventLog) -> None:
    """Throttled() with no retry_after waits the policy's backoff (by throttle count)."""
    left = [2]

    async def work(item: int) -> int:
        if left[0]:
            left[0] -= 1
            raise Throttled()
        return item

    retry = Retry(base_delay=1.0, jitter=False)
    Job(work, retry=retry).run([0], clock=clock, rng=random.Random(0), subscribers=events)
    assert [(e.delay, e.retry_after) for e in events.of(ThrottleWait)] == [(1.0, None), (2.0, None)]


def test_exception_with_retry_after_attribute_is_a_throttle(clock: FakeClock) -> None:
    """Any exception with a numeric retry_after is a throttle, not a failure."""

    class TooManyRequests(Exception):
        def __init__(self) -> None:
            super().__init__("429")
            self.retry_after = 3

    left = [1]

    async def work(item: int) -> int:
        if left[0]:
            left[0] -= 1
            raise TooManyRequests()
        return item

    run = Job(work, retry=Retry(attempts=1)).run([5], clock=clock, rng=random.Random(0))
    assert run.values == [5]
    assert run.outcomes[0].finished == 3.0


def test_throttle_budget_ends_an_endless_throttle(clock: FakeClock, rng: random.Random) -> None:
    """A piece throttled more than max_throttles times fails, saying why."""

    async def work(item: int) -> int:
        raise Throttled(retry_after=1.0)

    run = Job(work, retry=Retry(max_throttles=4)).run([0], clock=clock, rng=rng)
    failure = run.failures[0]
    assert "throttled 5 times" in failure.error.traceback
    assert failure.attempts == 1
    assert run.stats.throttles == 5


def test_timeout_bounds_each_attempt(clock: FakeClock, rng: random.Random) -> None:
    """An attempt past its timeout fails with TimeoutError, is retried, and fails in the end."""
    calls: list[float] = []

    async def slow(item: int) -> int:
        calls.append(clock.now())
        await asyncio.sleep(100)
        return item

    retry = Retry(attempts=2, base_delay=1, jitter=False)
    run = Job(slow, retry=retry, timeout=5).run([0], clock=clock, rng=rng)
    assert calls == [0.0, 6.0]
    error = run.failures[0].error
    assert error.type == "TimeoutError"
    assert "timeout of 5s" in error.message
    assert run.stats.wall_time == 11.0


def test_timeout_error_raised_by_work_is_not_mislabelled(clock: FakeClock) -> None:
    """A TimeoutError the work raises itself keeps its own message."""

    async def work(item: int) -> int:
        raise TimeoutError("upstream timed out")

    run = Job(work, retry=Retry(attempts=1), timeout=5).run([0], clock=clock)
    assert run.failures[0].error.message == "upstream timed out"


def test_key_function_error_fails_only_that_piece(clock: FakeClock, rng: random.Random) -> None:
    """If key(item) raises, that piece fails before any attempt; the rest run."""
    work = Recorder(clock)
    job = Job(work, key=lambda i: 1 // i, limits=Limits(per_key=1))
    run = job.run([1, 0, 2], clock=clock, rng=rng)
    assert [o.ok for o in run.outcomes] == [True, False, True]
    assert run.outcomes[1].attempts == 0
    assert run.outcomes[1].error is not None
    assert run.outcomes[1].error.type == "ZeroDivisionError"


def test_source_error_propagates_with_where(clock: FakeClock) -> None:
    """If the items iterable raises, the run stops with that error and says where."""

    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("bad input file")

    with pytest.raises(RuntimeError, match="bad input file") as info:
        Job(Recorder(clock)).run(items(), clock=clock)
    assert any("after 2 items" in note for note in info.value.__notes__)


def test_async_source_error_propagates(clock: FakeClock) -> None:
    """An async iterable that raises stops the run with its error."""

    async def items() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("stream broke")

    with pytest.raises(RuntimeError, match="stream broke"):
        Job(Recorder(clock)).run(items(), clock=clock)


def test_async_iterable_source(clock: FakeClock, rng: random.Random) -> None:
    """Items may come from an async iterable that itself takes time."""

    async def items() -> AsyncIterator[int]:
        for i in range(5):
            await asyncio.sleep(0.25)
            yield i

    work = Recorder(clock)
    run = Job(work, limits=Limits(concurrency=2)).run(items(), clock=clock, rng=rng)
    assert run.values == [0, 1, 2, 3, 4]
    assert start_times(work) == [0.25, 0.5, 1.25, 1.5, 2.25]


def test_subscriber_error_stops_the_run(clock: FakeClock) -> None:
    """An observer that fails (e.g. a journal on a full disk) stops the run with its error."""

    def broken(event: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        Job(Recorder(clock)).run(range(3), clock=clock, subscribers=broken)


def test_base_exception_from_work_stops_the_run(clock: FakeClock) -> None:
    """KeyboardInterrupt raised by the work is not a piece failure: it stops everything."""

    async def work(item: int) -> int:
        if item == 2:
            raise KeyboardInterrupt
        await asyncio.sleep(1)
        return item

    with pytest.raises(KeyboardInterrupt):
        Job(work).run(range(5), clock=clock)


def test_events_tell_the_whole_story(clock: FakeClock, events: EventLog) -> None:
    """Events come in order with the run's times: start, retry, start, success / failure."""
    work = Flaky(clock, {0: 1, 1: 5})
    retry = Retry(attempts=2, base_delay=1, jitter=False)
    Job(work, retry=retry).run([0, 1], clock=clock, rng=random.Random(0), subscribers=events)
    story = [(type(e).__name__, e.time, getattr(e, "index", None)) for e in events.events]
    assert story == [
        ("RunStarted", 0.0, None),
        ("AttemptStarted", 0.0, 0),
        ("AttemptStarted", 0.0, 1),
        ("RetryScheduled", 0.5, 0),
        ("RetryScheduled", 0.5, 1),
        ("AttemptStarted", 1.5, 0),
        ("AttemptStarted", 1.5, 1),
        ("PieceSucceeded", 2.0, 0),
        ("PieceFailed", 2.0, 1),
        ("RunFinished", 2.0, None),
    ]
    failed = events.of(PieceFailed)[0]
    assert (failed.attempt, failed.duration, failed.error_type) == (2, 0.5, "OSError")
    assert events.of(PieceSucceeded)[0].duration == 0.5


def test_stream_yields_as_completed(clock: FakeClock, rng: random.Random) -> None:
    """job.stream yields outcomes as they settle; ordered=True yields in input order."""
    work = Recorder(clock, {0: 3.0, 1: 1.0, 2: 2.0})
    job = Job(work, limits=Limits(concurrency=3))

    async def collect(ordered: bool) -> list[int]:
        return [o.index async for o in job.stream(range(3), ordered=ordered, rng=rng)]

    assert FakeClock().run(collect(False)) == [1, 2, 0]
    assert FakeClock().run(collect(True)) == [0, 1, 2]


def test_stream_pulls_lazily_with_bounded_memory(clock: FakeClock) -> None:
    """An endless generator is pulled only a bounded window ahead of what was consumed."""
    pulled = [0]

    def endless() -> Iterator[int]:
        for i in itertools.count():
            pulled[0] += 1
            yield i

    async def noop(item: int) -> int:
        return item

    job = Job(noop, limits=Limits(concurrency=8))
    ahead: list[int] = []

    async def consume() -> int:
        seen = 0
        async with contextlib.aclosing(job.stream(endless())) as stream:
            async for _ in stream:
                seen += 1
                ahead.append(pulled[0] - seen)
                if seen == 5000:
                    break
        return seen

    assert clock.run(consume()) == 5000
    window = 8 * 4 + 64
    # the window, plus at most one window's batch in the consumer's hands
    assert max(ahead) <= 2 * window
    assert pulled[0] <= 5000 + 2 * window


def test_stream_break_cancels_in_flight(clock: FakeClock) -> None:
    """Leaving a stream early cancels the attempts still running."""
    cancelled: list[int] = []

    async def work(item: int) -> int:
        try:
            await asyncio.sleep(10 if item else 1)
        except asyncio.CancelledError:
            cancelled.append(item)
            raise
        return item

    async def first() -> int:
        async with contextlib.aclosing(Job(work).stream(range(4))) as stream:
            async for outcome in stream:
                return outcome.index
        raise AssertionError("no outcome")

    assert clock.run(first()) == 0
    assert sorted(cancelled) == [1, 2, 3]


def test_sync_work_on_async_backend_runs_inline(clock: FakeClock) -> None:
    """backend='async' runs a plain function on the loop and awaits what it returns."""

    async def later(x: int) -> int:
        await asyncio.sleep(1)
        return x + 100

    run = Job(lambda x: x * 2, backend="async").run([1, 2], clock=clock)
    assert run.values == [2, 4]
    run = Job(lambda x: later(x), backend="async").run([1], clock=clock)  # noqa: PLW0108
    assert run.values == [101]


def test_combine_applies_to_values(clock: FakeClock) -> None:
    """A job's combiner turns the successful values into run.result."""
    work = Flaky(clock, {1: 9})
    run = Job(work, combine=sum, retry=Retry(attempts=1)).run([1, 2, 3], clock=clock)
    assert run.values == [20, 30]
    assert run.result == 50


def test_run_raise_mode_carries_the_run(clock: FakeClock) -> None:
    """errors='raise' on Job.run raises JobFailed after everything ran, carrying the run."""
    work = Flaky(clock, {1: 9})
    with pytest.raises(shoal.JobFailed) as info:
        Job(work, retry=Retry(attempts=1)).run([1, 2, 3], clock=clock, errors="raise")
    assert [o.ok for o in info.value.outcomes] == [False, True, True]
    assert info.value.failures[0].item == 1
    assert "1 of 3 pieces failed" in str(info.value)


# ----------------------------------------------------------------------------- properties


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 40))
    return {
        "n": n,
        "durations": draw(
            st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0, 3.0]), min_size=n, max_size=n)
        ),
        "fails": draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)),
        "throttles": draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
        "keys": draw(st.lists(st.sampled_from("abc"), min_size=n, max_size=n)),
        "concurrency": draw(st.integers(1, 6)),
        "per_key": draw(st.none() | st.integers(1, 3)),
        "rate": draw(st.none() | st.sampled_from(["3/s", "5/2s", "1/s"])),
        "attempts": draw(st.integers(1, 3)),
        "seed": draw(st.integers(0, 1000)),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_property_scheduler_invariants(sc: dict[str, Any]) -> None:
    """Property: one outcome per item, in order; limits hold; exactly the expected failures."""
    clock = FakeClock()
    n = sc["n"]
    fails = list(sc["fails"])
    throttles = list(sc["throttles"])
    starts: list[tuple[float, int]] = []
    live: Counter[str] = Counter()
    peak_total = 0
    peak_key: dict[str, int] = defaultdict(int)

    async def work(i: int) -> int:
        nonlocal peak_total
        key = sc["keys"][i]
        starts.append((clock.now(), i))
        live[key] += 1
        peak_total = max(peak_total, sum(live.values()))
        peak_key[key] = max(peak_key[key], live[key])
        try:
            await asyncio.sleep(sc["durations"][i])
        finally:
            live[key] -= 1
        if throttles[i]:
            throttles[i] -= 1
            raise Throttled(retry_after=0.7)
        if fails[i]:
            fails[i] -= 1
            raise OSError(f"fail {i}")
        return i * 2

    job = Job(
        work,
        key=(lambda i: sc["keys"][i]) if sc["per_key"] else None,
        limits=Limits(concurrency=sc["concurrency"], per_key=sc["per_key"], rate=sc["rate"]),
        retry=Retry(attempts=sc["attempts"], base_delay=0.2),
    )
    run = job.run(range(n), clock=clock, rng=random.Random(sc["seed"]))

    assert [o.index for o in run.outcomes] == list(range(n))
    assert sorted(run.completion_order) == list(range(n))
    for i, outcome in enumerate(run.outcomes):
        expected_ok = sc["fails"][i] < sc["attempts"]
        assert outcome.ok == expected_ok
        assert outcome.attempts == min(sc["fails"][i] + 1, sc["attempts"])
        assert outcome.throttles == sc["throttles"][i]
        if expected_ok:
            assert outcome.value == i * 2
    assert peak_total <= sc["concurrency"]
    if sc["per_key"]:
        assert max(peak_key.values(), default=0) <= sc["per_key"]
    if sc["rate"]:
        rate = Rate.parse(sc["rate"])
        times = sorted(t for t, _ in starts)
        for t in times:
            assert sum(1 for u in times if t <= u < t + rate.per - 1e-9) <= rate.count
    assert run.stats.attempts == len(starts)
    assert run.stats.succeeded + run.stats.failed == n
