"""Weighted rates corrected by what attempts report (Rate(actual=...)), and key holds, on a fake
clock."""

from __future__ import annotations

import asyncio
import random

import pytest

import shoal
from shoal import Job, Limits, Rate
from shoal._limits import RateMeter, WindowMeter
from shoal._usage import hold
from shoal.testing import FakeClock


def test_window_meter_correct_gives_back_the_unused_part() -> None:
    """Correcting an entry from 50 to 10 units frees 40 at once; an entry that left the window
    is not changed."""
    meter = WindowMeter(100, 1.0)
    entry = meter.start(50, 0.0)
    meter.start(50, 0.0)
    assert meter.wait(40, 0.1) > 0
    meter.correct(entry, 10)
    assert meter.wait(40, 0.1) == 0.0
    old = meter.start(40, 0.1)
    assert meter.wait(1, 1.2) == 0.0  # everything expired
    meter.correct(old, 90)  # out of the window: nothing to change
    assert meter.wait(100, 1.2) == 0.0


def test_a_piece_heavier_than_the_burst_waits_for_an_empty_short_window() -> None:
    """With a burst of 10, a 30-unit piece is not refused: it waits until the short window is
    empty and then fills it alone."""
    meter = RateMeter(Rate(100, per=1.0, burst=10))
    meter.start(5, 0.0)
    assert meter.wait(30, 0.0) == pytest.approx(0.1)
    assert meter.wait(30, 0.1) == 0.0


def test_rate_actual_needs_a_counter_name() -> None:
    """Rate(actual=...) takes the name of a shoal.usage() counter."""
    with pytest.raises(TypeError, match="usage"):
        Rate(10, actual="")


def test_reservations_become_what_attempts_report(clock: FakeClock) -> None:
    """Each piece reserves 50 of 100 tokens a second but reports 10: with the correction six
    start in the first second; without it, two a second."""
    starts: list[float] = []

    async def call(item: int) -> int:
        starts.append(clock.now())
        await asyncio.sleep(0.01)
        shoal.usage(tokens=10)
        return item

    corrected = Rate(100, per=1.0, weight=lambda _: 50, actual="tokens")
    Job(call, limits=Limits(concurrency=10, rate=corrected)).run(
        range(10), clock=clock, rng=random.Random(1)
    )
    # In flight a piece holds 50, done it holds 10: one more fits each time one ends, until the
    # window holds 6 x 10 + 50; then the first ones slide out at 1.0.
    assert starts == [0.0, 0.0, 0.01, 0.02, 0.03, 0.04, 1.0, 1.01, 1.02, 1.03]

    starts.clear()
    clock2 = FakeClock()

    async def call2(item: int) -> int:
        starts.append(clock2.now())
        await asyncio.sleep(0.01)
        shoal.usage(tokens=10)
        return item

    fixed = Rate(100, per=1.0, weight=lambda _: 50)
    Job(call2, limits=Limits(concurrency=10, rate=fixed)).run(
        range(10), clock=clock2, rng=random.Random(1)
    )
    assert starts == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]


def test_an_attempt_that_reports_nothing_keeps_its_reservation(clock: FakeClock) -> None:
    """Only attempts that report the counter change their entry; the others keep it."""
    starts: list[float] = []

    async def call(item: int) -> int:
        starts.append(clock.now())
        await asyncio.sleep(0.01)
        if item == 0:
            shoal.usage(tokens=0)  # reported zero: given back
        return item

    rate = Rate(100, per=1.0, weight=lambda _: 60, actual="tokens")
    Job(call, limits=Limits(concurrency=10, rate=rate)).run(
        range(3), clock=clock, rng=random.Random(1)
    )
    assert starts == [0.0, 0.01, 1.01]


def test_hold_pauses_the_key_after_a_success(clock: FakeClock) -> None:
    """Work that says its key's budget is used up (hold) makes that key's next piece wait;
    another key goes on."""
    starts: list[tuple[str, float]] = []

    async def call(item: tuple[str, int]) -> int:
        starts.append((item[0], clock.now()))
        await asyncio.sleep(0.1)
        if item == ("a", 0):
            hold(2.0)
        return item[1]

    Job(call, key=lambda it: it[0], limits=Limits(per_key=1)).run(
        [("a", 0), ("b", 1), ("a", 2), ("b", 3)], clock=clock, rng=random.Random(1)
    )
    assert sorted(starts) == [("a", 0.0), ("a", 2.1), ("b", 0.0), ("b", 0.1)]
