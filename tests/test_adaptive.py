"""Adaptive concurrency: the AIMD limit alone, then in the scheduler on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest

from shoal import Job, Limits, Throttled
from shoal._adaptive import AdaptiveLimit
from shoal.events import LimitChanged
from shoal.testing import EventLog, FakeClock


def test_slow_start_grows_by_one_per_success_while_the_limit_is_used() -> None:
    """In slow start each success adds one (the limit doubles per round trip)."""
    limit = AdaptiveLimit(initial=4, maximum=100)
    changes = [limit.on_success(1.0, 0.0, 1.0, in_flight=4) for _ in range(4)]
    assert changes == [True, True, True, True]
    assert limit.value == 8


def test_an_unused_limit_does_not_grow() -> None:
    """With fewer than half the limit in flight, successes leave the limit alone."""
    limit = AdaptiveLimit(initial=8, maximum=100)
    assert not limit.on_success(1.0, 0.0, 1.0, in_flight=3)
    assert limit.value == 8


def test_a_throttle_halves_once_per_round_trip_and_ends_slow_start() -> None:
    """A throttle halves the limit; throttles of attempts sent before that decrease are
    ignored; after it, growth is one per limit's worth of successes."""
    limit = AdaptiveLimit(initial=16, maximum=100)
    assert limit.on_throttle(started=0.0, now=1.0)
    assert limit.value == 8
    assert not limit.slow_start
    assert not limit.on_throttle(started=0.5, now=1.1)  # sent under the old limit
    assert limit.value == 8
    grown = sum(limit.on_success(1.0, 2.0, 3.0, in_flight=8) for _ in range(9))
    assert grown == 1  # 8 + 1/8 + 1/8.125 + ... passes 9 at the ninth success
    assert limit.value == 9
    assert limit.on_throttle(started=2.0, now=3.5)  # sent after the decrease: acted on
    assert limit.value == 4


def test_limit_stays_between_minimum_and_maximum() -> None:
    """Throttles never take it below the minimum; successes never past the maximum."""
    limit = AdaptiveLimit(initial=2, maximum=3)
    for t in range(5):
        limit.on_throttle(float(t), float(t))
    assert limit.value == 1
    for _ in range(50):
        limit.on_success(1.0, 10.0, 11.0, in_flight=3)
    assert limit.value == 3


def test_rising_latency_holds_then_shrinks_the_limit() -> None:
    """Latency well above the baseline stops growth, then shrinks the limit by 10%."""
    limit = AdaptiveLimit(initial=10, maximum=100, smoothing=1.0)
    limit.on_success(1.0, 0.0, 1.0, in_flight=10)  # baseline 1.0; grows to 11
    assert limit.value == 11
    assert not limit.on_success(1.6, 1.0, 2.6, in_flight=11)  # 1.6x: hold
    assert limit.value == 11
    assert limit.on_success(3.0, 2.0, 5.0, in_flight=11)  # 3x: queueing, shrink
    assert limit.limit == pytest.approx(11 * 0.9)
    assert limit.value == 9


class Server:
    """Async work standing in for a server that takes ``capacity`` calls at once and answers
    the others with a throttle (after 10 ms) asking for a 0.25 s wait."""

    def __init__(self, capacity: dict[str, int] | int, duration: float = 1.0) -> None:
        self.capacity = capacity
        self.duration = duration
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.throttled = 0

    async def __call__(self, item: tuple[str, int]) -> int:
        key = item[0]
        cap = self.capacity if isinstance(self.capacity, int) else self.capacity[key]
        if self.in_flight.get(key, 0) >= cap:
            self.throttled += 1
            await asyncio.sleep(0.01)
            raise Throttled(retry_after=0.25)
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        self.peak[key] = max(self.peak.get(key, 0), self.in_flight[key])
        try:
            await asyncio.sleep(self.duration)
        finally:
            self.in_flight[key] -= 1
        return item[1]


def _run(server: Any, items: list[tuple[str, int]], limits: Limits, **kw: Any) -> Any:
    clock, log = FakeClock(), EventLog()
    run = Job(server, limits=limits, **kw).run(
        items, clock=clock, rng=random.Random(1), subscribers=log
    )
    return run, log


def test_adaptive_finds_a_servers_capacity_without_a_rate() -> None:
    """Against a server that takes 10 at once, the limit climbs by slow start to 16, halves at
    the first throttles, and then saws between 5 and 11: every piece succeeds, within 1.2x of the
    ideal 30 s, with 12 throttles in 300 pieces (exact on the fake clock)."""
    server = Server(10)
    items = [("", i) for i in range(300)]
    run, log = _run(server, items, Limits(concurrency=64, adaptive=True))
    assert run.values == list(range(300))
    changes = [(round(e.time, 2), e.value) for e in log.of(LimitChanged)]
    assert changes[:14] == [
        (1.0, 5),
        (1.0, 6),
        (1.0, 7),
        (1.0, 8),
        (2.0, 9),
        (2.0, 10),
        (2.0, 11),
        (2.0, 12),
        (2.0, 13),
        (2.0, 14),
        (2.0, 15),
        (2.0, 16),
        (2.01, 8),
        (3.0, 9),
    ]
    assert max(v for _, v in changes) == 16
    assert all(e.key == "" and e.name == "concurrency" for e in log.of(LimitChanged))
    assert run.stats.wall_time == 35.0
    assert run.stats.throttles == 12
    assert server.peak[""] == 10


def test_each_key_adapts_on_its_own() -> None:
    """A key whose server takes 2 at once stays low; a key whose server takes 100 grows past it,
    and the first key's throttles never shrink the second's limit."""
    server = Server({"small": 2, "big": 100})
    items = [(("small", "big")[i % 2], i) for i in range(400)]
    run, log = _run(server, items, Limits(concurrency=64, adaptive=True), key=lambda it: it[0])
    assert len(run.values) == 400
    by_key: dict[str, list[int]] = {"small": [], "big": []}
    for event in log.of(LimitChanged):
        by_key[event.key].append(int(event.value))
    assert max(by_key["small"]) <= 8
    assert max(by_key["big"]) >= 32
    assert server.peak["small"] == 2
    big_drops = [b for a, b in zip(by_key["big"], by_key["big"][1:], strict=False) if b < a]
    assert big_drops == []  # the big key was never throttled


def test_limit_holds_near_the_knee_when_latency_climbs() -> None:
    """A server that answers in 1 s up to 8 at once and queues beyond (latency grows with the
    load) never throttles; the latency guard brings the limit back down after slow start."""
    state = {"in": 0}

    async def queueing(item: int) -> int:
        state["in"] += 1
        try:
            await asyncio.sleep(1.0 * max(1.0, state["in"] / 8))
        finally:
            state["in"] -= 1
        return item

    clock, log = FakeClock(), EventLog()
    run = Job(queueing, limits=Limits(concurrency=200, adaptive=True)).run(
        range(400), clock=clock, rng=random.Random(1), subscribers=log
    )
    assert len(run.values) == 400
    values = [int(e.value) for e in log.of(LimitChanged)]
    assert run.stats.throttles == 0
    # Slow start overshoots while the first slow replies are on their way, then latency alone
    # brings the limit down: 31 -> 16 (exact on the fake clock).
    assert max(values) == 31
    peak = values.index(31)
    assert min(values[peak:]) == 16


def test_adaptive_defaults_to_a_ceiling_of_256() -> None:
    """adaptive=True without a concurrency grows up to 256 (16 is the fixed default)."""
    assert Limits(adaptive=True).effective_concurrency == 256
    assert Limits().effective_concurrency == 16
    assert Limits(concurrency=8, adaptive=True).effective_concurrency == 8


def test_per_key_is_the_ceiling_of_an_adaptive_key() -> None:
    """With per_key=3 an adaptive key never runs more than 3 at once."""
    server = Server(100)
    run, log = _run(
        server, [("k", i) for i in range(60)], Limits(per_key=3, adaptive=True), key=lambda t: t[0]
    )
    assert len(run.values) == 60
    assert server.peak["k"] == 3
    assert all(int(e.value) <= 3 for e in log.of(LimitChanged))


def test_timeouts_shrink_the_limit() -> None:
    """An attempt that times out counts as a drop: the limit halves."""
    calls = {"n": 0}

    async def slow_sometimes(item: int) -> int:
        calls["n"] += 1
        await asyncio.sleep(5.0 if calls["n"] == 20 else 0.1)
        return item

    clock, log = FakeClock(), EventLog()
    Job(slow_sometimes, limits=Limits(concurrency=50, adaptive=True), timeout=1.0).run(
        range(60), clock=clock, rng=random.Random(1), subscribers=log
    )
    values = [int(e.value) for e in log.of(LimitChanged)]
    assert any(b <= a // 2 + 1 and b < a for a, b in itertools.pairwise(values))
