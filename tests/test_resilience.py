"""Hedged attempts, the retry budget, circuit breakers, the abort threshold and chaos: exact
schedules on a fake clock."""

from __future__ import annotations

import asyncio
import json
import pickle
import random
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import shoal
from shoal import Breaker, Hedge, Job, Limits, Retry, RetryBudget, Throttled
from shoal._resilience import BreakerState, Budget, Latencies
from shoal.events import (
    AttemptStarted,
    BreakerChanged,
    HedgeStarted,
    PieceFailed,
    RetryScheduled,
)
from shoal.testing import ChaosError, EventLog, FakeClock, chaos


class Scripted:
    """Async work whose n-th call of an item takes ``times[item][n]`` seconds (the last entry
    repeats) and then returns the item or raises what ``raises[item][n]`` says."""

    def __init__(
        self,
        clock: FakeClock,
        times: dict[Any, list[float]] | None = None,
        raises: dict[Any, list[BaseException | None]] | None = None,
        default: float = 1.0,
    ) -> None:
        self.clock = clock
        self.times = times or {}
        self.raises = raises or {}
        self.default = default
        self.calls: list[tuple[float, Any]] = []
        self.cancelled: list[tuple[float, Any]] = []
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, item: Any) -> Any:
        n = sum(1 for _, i in self.calls if i == item)
        self.calls.append((self.clock.now(), item))
        times = self.times.get(item, [self.default])
        raises = self.raises.get(item, [None])
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(times[min(n, len(times) - 1)])
        except asyncio.CancelledError:
            self.cancelled.append((self.clock.now(), item))
            raise
        finally:
            self.in_flight -= 1
        error = raises[min(n, len(raises) - 1)]
        if error is not None:
            raise error
        return item


def key_of(item: Any) -> str:
    return str(item[0])


# ---------------------------------------------------------------------- hedging


def test_hedge_starts_past_the_percentile_and_the_first_success_wins(
    clock: FakeClock, rng: random.Random
) -> None:
    """After four 1 s samples, item 4's 10 s attempt gets a hedge at 1 s (p50); the hedge
    answers at 1 s and wins, and the first attempt is cancelled."""
    work = Scripted(clock, times={4: [10.0, 1.0]})
    log = EventLog()
    job = Job(
        work,
        limits=Limits(concurrency=2),
        hedge=Hedge(percentile=50, min_samples=4, max_share=1.0),
    )
    run = job.run(range(5), clock=clock, rng=rng, subscribers=log)
    assert run.values == [0, 1, 2, 3, 4]
    assert work.calls == [(0.0, 0), (0.0, 1), (1.0, 2), (1.0, 3), (2.0, 4), (3.0, 4)]
    assert work.cancelled == [(4.0, 4)]
    assert [(e.time, e.index, e.attempt, e.after) for e in log.of(HedgeStarted)] == [
        (3.0, 4, 1, 1.0)
    ]
    assert run.stats.wall_time == 4.0
    assert (run.stats.attempts, run.stats.hedges, run.stats.hedges_won) == (6, 1, 1)
    assert run.outcomes[4].attempts == 1  # a hedge is part of the same try
    assert len(log.of(AttemptStarted)) == 5


def test_the_first_attempt_wins_when_it_is_quicker(clock: FakeClock, rng: random.Random) -> None:
    """The first attempt answers at 1.5 s, before its hedge (started at 1 s, 5 s long): the hedge
    is cancelled and counts as run, not won."""
    work = Scripted(clock, times={4: [1.5, 5.0]})
    job = Job(
        work,
        limits=Limits(concurrency=2),
        hedge=Hedge(percentile=50, min_samples=4, max_share=1.0),
    )
    run = job.run(range(5), clock=clock, rng=rng)
    assert run.ok
    assert work.cancelled == [(3.5, 4)]
    assert run.stats.wall_time == 3.5
    assert (run.stats.hedges, run.stats.hedges_won) == (1, 0)


def test_a_hedge_waits_for_a_free_slot_and_goes_before_new_pieces(
    clock: FakeClock, rng: random.Random
) -> None:
    """With every slot busy, a hedge starts at the next free slot, ahead of the next new piece,
    and the concurrency is never exceeded."""
    times: dict[Any, list[float]] = {i: [1.0] for i in range(4)}
    times[4] = [10.0, 1.0]
    times[5] = [3.0]  # keeps the second slot busy from 2 s to 5 s
    work = Scripted(clock, times=times)
    job = Job(
        work, limits=Limits(concurrency=2), hedge=Hedge(percentile=50, min_samples=4, max_share=1)
    )
    run = job.run(range(8), clock=clock, rng=rng)
    assert run.ok
    assert work.peak == 2
    # Item 4 runs past its 1 s threshold at 3 s, but both slots are busy (4 and 5) until 5 s:
    # the hedge takes the slot 5 frees, before items 6 and 7.
    assert work.calls[:7] == [
        (0.0, 0),
        (0.0, 1),
        (1.0, 2),
        (1.0, 3),
        (2.0, 4),
        (2.0, 5),
        (5.0, 4),
    ]
    assert sorted(work.calls[7:]) == [(6.0, 6), (6.0, 7)]
    assert run.stats.hedges_won == 1


def test_hedges_are_capped_at_their_share_of_attempts(clock: FakeClock, rng: random.Random) -> None:
    """With every tenth piece slow, max_share=0.05 allows at most one hedge per 20 attempts."""
    times: dict[Any, list[float]] = {i: [20.0, 1.0] for i in range(25, 200, 10)}
    work = Scripted(clock, times=times)
    job = Job(
        work,
        limits=Limits(concurrency=8),
        hedge=Hedge(percentile=90, min_samples=20, max_share=0.05),
    )
    run = job.run(range(200), clock=clock, rng=rng)
    assert run.ok
    stats = run.stats
    assert stats.hedges >= 5  # the slow ones were hedged while there was room
    assert stats.hedges <= 0.05 * (stats.attempts - stats.hedges)


def test_a_failed_first_attempt_waits_for_its_hedge(clock: FakeClock, rng: random.Random) -> None:
    """Item 4's first attempt fails at 2.5 s while its hedge runs; the hedge succeeds at 4 s: the
    piece succeeds at its first try, with no retry."""
    raises: dict[Any, list[BaseException | None]] = {4: [OSError("down"), None]}
    work = Scripted(clock, times={4: [2.5, 2.0]}, raises=raises)
    job = Job(
        work,
        limits=Limits(concurrency=2),
        hedge=Hedge(percentile=50, min_samples=4, max_share=1.0),
        retry=Retry(attempts=3, base_delay=0),
    )
    run = job.run(range(5), clock=clock, rng=rng)
    assert run.ok
    assert run.outcomes[4].attempts == 1
    assert run.stats.retries == 0
    assert run.stats.wall_time == 5.0
    assert run.stats.hedges_won == 1


def test_when_both_attempts_fail_the_piece_is_retried(clock: FakeClock, rng: random.Random) -> None:
    """Both attempts of item 4's first try fail: the retry policy takes over once, with the
    first attempt's error."""
    err: list[BaseException | None] = [OSError("first"), OSError("hedge"), None]
    work = Scripted(clock, times={4: [2.5, 2.0, 1.0]}, raises={4: err})
    log = EventLog()
    job = Job(
        work,
        limits=Limits(concurrency=2),
        hedge=Hedge(percentile=50, min_samples=4, max_share=1.0),
        retry=Retry(attempts=3, base_delay=0),
    )
    run = job.run(range(5), clock=clock, rng=rng, subscribers=log)
    assert run.ok
    assert [(e.time, e.index, e.message) for e in log.of(RetryScheduled)] == [(5.0, 4, "first")]
    assert run.outcomes[4].attempts == 2
    assert run.stats.hedges_won == 0


def test_hedging_takes_no_samples_from_failures(clock: FakeClock, rng: random.Random) -> None:
    """The percentile is over successful attempts only: before min_samples successes no hedge
    starts, however long an attempt runs."""
    work = Scripted(clock, times={3: [50.0]}, raises={0: [OSError("x")], 1: [OSError("x")]})
    job = Job(
        work,
        limits=Limits(concurrency=4),
        retry=Retry(attempts=1),
        hedge=Hedge(percentile=50, min_samples=2, max_share=1.0),
    )
    run = job.run(range(4), clock=clock, rng=rng)
    assert run.stats.hedges == 0
    assert run.stats.wall_time == 50.0


def test_a_hedge_on_threads_abandons_the_stuck_call() -> None:
    """On the thread backend the losing call cannot be stopped: item 4's first call is stuck, its
    hedge answers, the run ends, and the stuck call's eventual result is dropped. (Real time,
    small: threads do not run on a fake clock's time.)"""
    stuck = threading.Event()
    release = threading.Timer(20.0, stuck.set)  # a safety net only: the test sets it itself
    release.start()
    seen: list[int] = []

    def work(item: int) -> int:
        seen.append(item)
        if item == 4 and seen.count(4) == 1:
            stuck.wait()
            return -1
        time.sleep(0.01)
        return item

    try:
        job = Job(
            work,
            backend="thread",
            limits=Limits(concurrency=2),
            hedge=Hedge(percentile=50, min_samples=2, max_share=1.0),
        )
        began = time.monotonic()
        run = job.run(range(5))
        assert run.values == [0, 1, 2, 3, 4]
        # Item 4's hedge won (a loaded machine may hedge another item too): its value is there,
        # and the run did not wait for the stuck call.
        assert run.stats.hedges >= 1 and run.stats.hedges_won >= 1
        assert time.monotonic() - began < 10.0
        assert not stuck.is_set()
    finally:
        stuck.set()
        release.cancel()


def test_latency_percentile_is_nearest_rank_over_a_window() -> None:
    """Latencies: nearest-rank percentile of the latest ``window`` samples, none too early."""
    lat = Latencies(Hedge(percentile=90, min_samples=3, window=10))
    lat.add(5.0)
    lat.add(1.0)
    assert lat.threshold() is None
    lat.add(3.0)
    assert lat.threshold() == 5.0
    for x in range(1, 11):
        lat.add(float(x))  # the window keeps 1..10
    assert len(lat) == 10
    assert lat.threshold() == 9.0


def test_hedge_policy_is_checked() -> None:
    """Bad hedging settings fail at construction, saying what is allowed."""
    with pytest.raises(ValueError, match="between 0 and 100"):
        Hedge(percentile=100)
    with pytest.raises(ValueError, match="at most 1"):
        Hedge(max_share=1.5)
    with pytest.raises(TypeError, match="hedge="):
        Job(lambda x: x, hedge="p95")  # type: ignore[call-overload]
    assert Job(lambda x: x, hedge=True).hedge == Hedge()


# ---------------------------------------------------------------------- the retry budget


def test_budget_counts_a_sliding_window() -> None:
    """Retries in any window stay within floor + share * first attempts in it."""
    budget = Budget(RetryBudget(share=0.5, window=10.0, floor=1))
    for t in (0.0, 0.0, 0.0, 0.0):
        budget.deposit(t)
    assert [budget.withdraw(1.0) for _ in range(4)] == [True, True, True, False]  # 1 + 0.5 * 4
    assert budget.withdraw(9.9) is False
    assert budget.withdraw(10.0) is False  # the deposits left the window, the retries not yet
    assert budget.withdraw(11.0) is True  # the floor alone: one retry in any 10 s
    assert budget.withdraw(11.5) is False


def test_retries_beyond_the_budget_fail_fast_with_a_note(
    clock: FakeClock, rng: random.Random
) -> None:
    """Work that always fails, one piece at a time: the budget (a floor of 2, no share) allows
    two retries; every later failure fails at once, and says why."""
    work = Scripted(clock, raises={i: [OSError(f"down {i}")] for i in range(4)})
    log = EventLog()
    job = Job(
        work,
        limits=Limits(concurrency=1),
        retry=Retry(attempts=5, base_delay=0),
        retry_budget=RetryBudget(share=0.0, window=60.0, floor=2),
    )
    run = job.run(range(4), clock=clock, rng=rng, subscribers=log)
    assert [t for t, _ in work.calls] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [(e.time, e.index) for e in log.of(RetryScheduled)] == [(1.0, 0), (2.0, 0)]
    assert [(e.time, e.index, e.attempt) for e in log.of(PieceFailed)] == [
        (3.0, 0, 3),
        (4.0, 1, 1),
        (5.0, 2, 1),
        (6.0, 3, 1),
    ]
    assert run.stats.retries == 2
    assert run.stats.retries_denied == 4
    failure = run.failures[1]
    assert "retry budget is spent" in failure.error.traceback
    assert "2 retries in the last 60s" in failure.error.traceback


def test_the_budget_grows_with_first_attempts(clock: FakeClock, rng: random.Random) -> None:
    """With share=0.5 and no floor, ten pieces that each fail once may retry five times."""
    raises: dict[Any, list[BaseException | None]] = {i: [OSError("x"), None] for i in range(10)}
    work = Scripted(clock, raises=raises)
    job = Job(
        work,
        limits=Limits(concurrency=10),
        retry=Retry(attempts=3, base_delay=0),
        retry_budget=RetryBudget(share=0.5, window=60.0, floor=0),
    )
    run = job.run(range(10), clock=clock, rng=rng)
    assert run.stats.retries == 5
    assert run.stats.retries_denied == 5
    assert run.stats.succeeded == 5


def test_throttles_do_not_spend_the_budget(clock: FakeClock, rng: random.Random) -> None:
    """A throttle is not a retry: a budget with no room still lets throttled pieces try again."""
    raises: dict[Any, list[BaseException | None]] = {0: [Throttled(retry_after=2.0), None]}
    work = Scripted(clock, raises=raises)
    job = Job(work, retry_budget=RetryBudget(share=0.0, floor=0))
    run = job.run([0], clock=clock, rng=rng)
    assert run.ok
    assert run.stats.retries_denied == 0


def test_retry_budget_is_checked() -> None:
    """Bad budgets fail at construction; a bare share is accepted."""
    with pytest.raises(ValueError, match="seconds > 0"):
        RetryBudget(window=0)
    with pytest.raises(ValueError, match="at least 0"):
        RetryBudget(floor=-1)
    assert Job(lambda x: x, retry_budget=0.1).retry_budget == RetryBudget(share=0.1)


# ---------------------------------------------------------------------- circuit breakers


def test_breaker_state_machine() -> None:
    """Closed -> open after failures in a row -> half-open probe -> open again (for twice as
    long, with backoff=2) -> closed."""
    b = BreakerState(Breaker(failures=2, failure_rate=None, cooldown=5.0, backoff=2))
    assert b.record(True, 0.0, probe=False) is None
    assert b.peek(0.0) == 0
    assert b.record(True, 1.0, probe=False) == "open"
    assert b.peek(5.9) == 2
    assert b.peek(6.0) == 1
    b.start_probe()
    assert b.peek(6.0) == 2  # one probe at a time
    assert b.record(True, 7.0, probe=True) == "open"
    assert b.until == 17.0  # the cooldown doubles after a failed probe
    b.start_probe()
    assert b.record(False, 18.0, probe=True) == "closed"
    assert b.peek(18.0) == 0
    assert b.record(True, 19.0, probe=False) is None
    assert b.record(True, 20.0, probe=False) == "open"
    assert b.until == 25.0  # closed again in between: back to the first cooldown


def test_breaker_cooldowns_grow_up_to_their_cap() -> None:
    """Failed probes in a row: 5, 10, 20, 30 (capped), 30 s; with backoff=1, always 5 s."""
    policy = Breaker(failures=1, failure_rate=None, cooldown=5.0, backoff=2, max_cooldown=30.0)
    b = BreakerState(policy)
    assert b.record(True, 0.0, probe=False) == "open"
    cooldowns = [b.until - 0.0]
    now = 0.0
    for _ in range(4):
        now = b.until
        b.start_probe()
        assert b.record(True, now, probe=True) == "open"
        cooldowns.append(b.until - now)
    assert cooldowns == [5.0, 10.0, 20.0, 30.0, 30.0]
    flat = BreakerState(Breaker(failures=1, failure_rate=None, cooldown=5.0))  # backoff=1
    flat.record(True, 0.0, probe=False)
    flat.start_probe()
    flat.record(True, 5.0, probe=True)
    assert flat.until == 10.0


def test_breaker_opens_on_a_failure_rate() -> None:
    """Half of the last four attempts failed (none twice in a row): the rate opens it."""
    b = BreakerState(Breaker(failures=5, failure_rate=0.5, window=4, cooldown=1.0))
    results = [b.record(f, 0.0, probe=False) for f in (True, False, True, False)]
    assert results == [None, None, None, "open"]


def test_an_open_breaker_holds_its_key_and_a_probe_reopens_it(
    clock: FakeClock, rng: random.Random
) -> None:
    """Key a fails until 12 s, key b never: after two failures a's breaker opens for 5 s, its
    probes at 7 s fails, the one at 13 s succeeds, and b goes on all along."""

    async def work(item: tuple[str, int]) -> tuple[str, int]:
        start = clock.now()
        calls.append((start, item))
        await asyncio.sleep(1.0)
        if item[0] == "a" and start < 12.0:
            raise OSError("a is down")
        return item

    calls: list[tuple[float, tuple[str, int]]] = []
    items = [("a", i) for i in range(4)] + [("b", i) for i in range(6)]
    log = EventLog()
    job = Job(
        work,
        key=key_of,
        limits=Limits(concurrency=4, per_key=1),
        retry=Retry(attempts=10, base_delay=0),
        breaker=Breaker(failures=2, failure_rate=None, cooldown=5.0),
    )
    run = job.run(items, clock=clock, rng=rng, subscribers=log)
    assert run.ok
    a_starts = [t for t, item in calls if item[0] == "a"]
    assert a_starts == [0.0, 1.0, 7.0, 13.0, 14.0, 15.0, 16.0]
    b_starts = [t for t, item in calls if item[0] == "b"]
    assert b_starts == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    changes = [(e.time, e.key, e.state, e.until) for e in log.of(BreakerChanged)]
    assert changes == [
        (2.0, "a", "open", 7.0),
        (7.0, "a", "half-open", None),
        (8.0, "a", "open", 13.0),
        (13.0, "a", "half-open", None),
        (14.0, "a", "closed", None),
    ]
    assert run.stats.breaker_opened == 2


def test_a_breaker_that_gives_up_fails_its_keys_pieces_unsent(
    clock: FakeClock, rng: random.Random
) -> None:
    """A dead key: after two failed probes its waiting pieces fail with CircuitOpen, unsent."""
    work = Scripted(clock, raises={i: [OSError("dead")] for i in range(6)})
    log = EventLog()
    job = Job(
        work,
        limits=Limits(concurrency=1),
        retry=Retry(attempts=5, base_delay=0),
        breaker=Breaker(failures=2, failure_rate=None, cooldown=10.0, give_up=2),
    )
    run = job.run(range(6), clock=clock, rng=rng, subscribers=log)
    assert not run.ok
    assert [t for t, _ in work.calls] == [0.0, 1.0, 12.0, 23.0]
    assert [e.state for e in log.of(BreakerChanged)] == [
        "open",
        "half-open",
        "open",
        "half-open",
        "gave-up",
    ]
    errors = Counter(f.error.type for f in run.failures)
    assert errors == Counter({"shoal._exceptions.CircuitOpen": 6}) or errors == Counter(
        {"CircuitOpen": 6}
    )
    assert "gave up after 2 failed probes" in run.failures[5].error.message


def test_non_transient_errors_do_not_open_the_breaker(clock: FakeClock, rng: random.Random) -> None:
    """Errors the retry policy does not retry (a bad item) say nothing about the dependency."""
    work = Scripted(clock, raises={i: [ValueError("bad item")] for i in range(5)})
    job = Job(
        work,
        limits=Limits(concurrency=1),
        retry=Retry(attempts=2, on=(OSError,)),
        breaker=Breaker(failures=2, failure_rate=None),
    )
    run = job.run(range(5), clock=clock, rng=rng)
    assert run.stats.breaker_opened == 0
    assert run.stats.wall_time == 5.0


def test_breaker_is_checked() -> None:
    """Bad breaker settings fail at construction."""
    with pytest.raises(ValueError, match="at least 1"):
        Breaker(failures=0)
    with pytest.raises(ValueError, match="seconds > 0"):
        Breaker(cooldown=0)
    with pytest.raises(ValueError, match="backoff"):
        Breaker(backoff=0.5)
    with pytest.raises(ValueError, match="at least the cooldown"):
        Breaker(cooldown=10.0, max_cooldown=5.0)
    with pytest.raises(TypeError, match="breaker="):
        Job(lambda x: x, breaker=3)  # type: ignore[call-overload]


# ---------------------------------------------------------------------- abort threshold


def test_the_abort_threshold_drains_the_run(clock: FakeClock, rng: random.Random) -> None:
    """Half the pieces fail: once 10 settled (5 failed > 20%), no piece starts, the one in
    flight (item 10, started as item 8 ended) finishes, and the run says why."""
    raises: dict[Any, list[BaseException | None]] = {
        i: [OSError("bad")] for i in range(100) if i % 2
    }
    work = Scripted(clock, raises=raises)
    log = EventLog()
    job = Job(
        work,
        limits=Limits(concurrency=2),
        retry=Retry(attempts=1),
        max_failure_rate=0.2,
        min_pieces=10,
    )
    run = job.run(range(100), clock=clock, rng=rng, subscribers=log)
    assert len(work.calls) == 11
    assert [o.index for o in run.outcomes] == list(range(11))
    assert run.stats.aborted is not None
    assert "5 of the 10 pieces settled had failed (50%)" in run.stats.aborted
    assert log.events[-1].status == "aborted"  # type: ignore[union-attr]
    assert run.report.status == "aborted"
    assert "stopped early" in str(run.report)


def test_abort_waits_for_min_pieces(clock: FakeClock, rng: random.Random) -> None:
    """Failures before min_pieces do not stop the run; a run under the rate finishes."""
    raises: dict[Any, list[BaseException | None]] = {0: [OSError("x")], 1: [OSError("x")]}
    work = Scripted(clock, raises=raises)
    job = Job(
        work,
        limits=Limits(concurrency=1),
        retry=Retry(attempts=1),
        max_failure_rate=0.2,
        min_pieces=10,
    )
    run = job.run(range(20), clock=clock, rng=rng)
    assert run.stats.aborted is None
    assert len(run.outcomes) == 20


def test_an_aborted_run_resumes_from_its_journal(tmp_path: Path, rng: random.Random) -> None:
    """The journal records the aborted run; running again (fixed) does only what was left."""
    path = tmp_path / "run.db"
    broken = {"on": True}

    async def work(i: int) -> int:
        await asyncio.sleep(1.0)
        if broken["on"] and i % 2:
            raise OSError("bad")
        return i

    job = Job(
        work,
        limits=Limits(concurrency=2),
        retry=Retry(attempts=1),
        max_failure_rate=0.2,
        min_pieces=10,
    )
    first = job.run(range(40), clock=FakeClock(), rng=rng, journal=path)
    assert first.stats.aborted is not None
    with sqlite3.connect(path) as conn:
        status, stats = conn.execute("SELECT status, stats FROM runs").fetchone()
    assert status == "aborted"
    assert json.loads(stats)["aborted"] == first.stats.aborted
    report = shoal.Report.from_journal(path)
    assert report.status == "aborted"
    assert report.resilience is not None and report.resilience.aborted == first.stats.aborted
    broken["on"] = False
    second = job.run(range(40), clock=FakeClock(), rng=rng, journal=path)
    assert second.stats.aborted is None
    assert second.stats.resumed == len(first.outcomes) == 11
    assert len(second.outcomes) == 40


def test_abort_settings_are_checked() -> None:
    """A failure rate outside [0, 1) or min_pieces below 1 fail at construction."""
    with pytest.raises(ValueError, match="below 1"):
        Job(lambda x: x, max_failure_rate=1.0)
    with pytest.raises(ValueError, match="at least 1"):
        Job(lambda x: x, max_failure_rate=0.2, min_pieces=0)


# ---------------------------------------------------------------------- chaos


def test_chaos_is_seeded_and_repeatable() -> None:
    """The same seed gives the same fates, call by call; another seed gives others; the shares
    come out near what was asked."""

    def fates(seed: int) -> list[str]:
        wrapped = chaos(lambda x: x, fail=0.2, throttle=0.1, slow=0.05, seed=seed, stall=0)
        out = []
        for item in range(2000):
            try:
                wrapped(item)
                out.append("ok")
            except ChaosError:
                out.append("fail")
            except Throttled as exc:
                out.append(f"throttle after {exc.retry_after}")
        assert wrapped.injected["fail"] == out.count("fail")
        return out

    first = fates(1)
    assert first == fates(1)
    assert first != fates(2)
    counts = Counter(first)
    assert 350 <= counts["fail"] <= 450
    assert 150 <= counts["throttle after 1.0"] <= 250


def test_chaos_draws_per_item_and_call_not_per_order() -> None:
    """An item's n-th call meets the same fate whatever ran before it."""
    a = chaos(lambda x: x, fail=0.5, seed=3)
    b = chaos(lambda x: x, fail=0.5, seed=3)

    def fate(w: Any, item: int) -> bool:
        try:
            w(item)
        except ChaosError:
            return False
        return True

    forward = [fate(a, i) for i in range(50)]
    backward = [fate(b, i) for i in reversed(range(50))][::-1]
    assert forward == backward
    assert [fate(a, 7) for _ in range(5)] == [fate(b, 7) for _ in range(5)]


def test_chaos_in_a_job_is_exact_on_a_fake_clock(rng: random.Random) -> None:
    """Async work under chaos, retried: two runs with the same seed have the same schedule, the
    stalls take virtual time, and every piece gets through."""

    async def work(i: int) -> int:
        await asyncio.sleep(0.1)
        return i * 2

    def one_run() -> tuple[list[tuple[float, int]], shoal.RunStats]:
        log = EventLog()
        wrapped = chaos(work, fail=0.2, throttle=0.1, slow=0.05, seed=1, stall=3.0)
        job = Job(wrapped, limits=Limits(concurrency=5), retry=Retry(attempts=10, base_delay=0.1))
        run = job.run(range(100), clock=FakeClock(), rng=random.Random(4), subscribers=log)
        assert run.values == [i * 2 for i in range(100)]
        assert wrapped.injected["slow"] > 0
        return [(e.time, e.index) for e in log.of(AttemptStarted)], run.stats

    first, stats = one_run()
    again, _ = one_run()
    assert first == again
    assert stats.retries > 0 and stats.throttles > 0


def test_chaos_keeps_the_jobs_fingerprint_and_pickles() -> None:
    """A chaos run shares the plain job's journal; the wrapper pickles like its work."""
    plain: Job[int, int] = Job(abs)
    chaotic = Job(chaos(abs, fail=0.5, seed=1))
    assert chaotic.fingerprint() == plain.fingerprint()
    wrapped = chaos(abs, slow=0.5, seed=1, stall=0)
    wrapped(-3)
    copy = pickle.loads(pickle.dumps(wrapped))  # noqa: S301 - our own bytes
    assert copy(-3) == 3
    assert copy.seed == 1 and copy.slow == 0.5
    assert chaotic.name == "abs"


def test_chaos_settings_are_checked() -> None:
    """Shares outside 0-1, shares adding up past 1, a negative stall: clear errors."""
    with pytest.raises(ValueError, match="add up to more than 1"):
        chaos(abs, fail=0.6, throttle=0.6)
    with pytest.raises(ValueError, match="between 0 and 1"):
        chaos(abs, fail=2)
    with pytest.raises(ValueError, match="seconds >= 0"):
        chaos(abs, slow=0.1, stall=-1)
    with pytest.raises(TypeError, match="work function"):
        chaos(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the command line

CHAOS_JOB = """
import asyncio

import shoal


async def work(n):
    await asyncio.sleep(0)
    return n * n


job = shoal.Job(work, name="squares", retry=shoal.Retry(attempts=1))


def items():
    return list(range(40))
"""


def test_cli_chaos_fails_a_seeded_share_and_retry_heals_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`shoal run --chaos fail=0.3,seed=1` fails the same pieces every time (exit 1); the
    journal is the job's own, so `shoal retry` without chaos runs the failed ones for real."""
    from shoal.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.py").write_text(CHAOS_JOB)
    assert main(["run", "job.py", "--chaos", "fail=0.3,seed=1", "--quiet", "--out", "a.jsonl"]) == 1
    first = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    failed = [r["index"] for r in first if not r["ok"]]
    assert 5 <= len(failed) <= 20
    assert all("chaos: injected failure" in r["error"]["message"] for r in first if not r["ok"])
    args = ["run", "job.py", "--chaos", "fail=0.3,seed=1", "--fresh", "--quiet", "--out", "b.jsonl"]
    assert main(args) == 1
    again = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [r["index"] for r in again if not r["ok"]] == failed
    assert main(["retry", "squares.shoal.db", "--quiet", "--out", "c.jsonl"]) == 0
    healed = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [r["value"] for r in healed] == [n * n for n in range(40)]
    capsys.readouterr()


def test_cli_rejects_a_bad_chaos_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --chaos value that is not NAME=VALUE pairs, or whose shares add up past 1, is exit 2
    with the fix in the message."""
    from shoal.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.py").write_text(CHAOS_JOB)
    assert main(["run", "job.py", "--chaos", "explode=1"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["run", "job.py", "--chaos", "fail=0.7,throttle=0.7"]) == 2
    assert "add up to more than 1" in capsys.readouterr().err


def test_report_shows_hedges_budget_and_breakers(clock: FakeClock, rng: random.Random) -> None:
    """The report's summary and JSON carry what the resilience policies did."""
    work = Scripted(clock, times={4: [10.0, 1.0]})
    job = Job(
        work, limits=Limits(concurrency=2), hedge=Hedge(percentile=50, min_samples=4, max_share=1)
    )
    report = job.run(range(5), clock=clock, rng=rng).report
    assert "hedges" in str(report) and "1 run, 1 won" in str(report)
    data = json.loads(report.to_json())
    assert data["resilience"] == {
        "hedges": 1,
        "hedges_won": 1,
        "retries_denied": 0,
        "breaker_opened": 0,
        "aborted": None,
    }
    assert "1 run, 1 won" in report.to_markdown()
