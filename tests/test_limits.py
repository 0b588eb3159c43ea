"""Limits: rate parsing, the sliding-window meter and the Limits configuration."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal import Limits, Rate
from shoal._limits import EPSILON, RateMeter, WindowMeter


@pytest.mark.parametrize(
    ("spec", "count", "per"),
    [
        ("100/s", 100, 1.0),
        ("600/min", 600, 60.0),
        ("5000/h", 5000, 3600.0),
        ("10/2s", 10, 2.0),
        ("1/500ms", 1, 0.5),
        (" 7 / 3 minutes ", 7, 180.0),
        ("2.5/s", 2.5, 1.0),
        ("3/day", 3, 86400.0),
        (50, 50, 1.0),
        (0.5, 1, 2.0),
        (Rate(4, 2.0), 4, 2.0),
    ],
)
def test_rate_parse_accepts_documented_forms(spec: object, count: float, per: float) -> None:
    """Every documented rate form parses to the same count and period."""
    rate = Rate.parse(spec)  # type: ignore[arg-type]
    assert rate.count == pytest.approx(count)
    assert rate.per == pytest.approx(per)


@pytest.mark.parametrize("spec", ["10/parsec", "fast", "/s", "10/", "-1/s", "0/s", "10/0s", ""])
def test_rate_parse_rejects_bad_strings_listing_forms(spec: str) -> None:
    """A bad rate string raises ValueError naming the accepted forms."""
    with pytest.raises(ValueError, match="100/s") as info:
        Rate.parse(spec)
    assert "600/min" in str(info.value)


@pytest.mark.parametrize("spec", [0, -3, math.inf, math.nan])
def test_rate_parse_rejects_bad_numbers(spec: float) -> None:
    """A number rate must be a finite positive number of units per second."""
    with pytest.raises(ValueError, match="> 0"):
        Rate.parse(spec)


def test_rate_parse_rejects_other_types() -> None:
    """Booleans and arbitrary objects are not rates."""
    with pytest.raises(TypeError):
        Rate.parse(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Rate.parse(object())  # type: ignore[arg-type]


def test_rate_validates_fields() -> None:
    """Rate() checks its count, window, burst and weight."""
    with pytest.raises(ValueError, match="count"):
        Rate(0)
    with pytest.raises(ValueError, match="per"):
        Rate(1, per=-1)
    with pytest.raises(ValueError, match="burst"):
        Rate(10, burst=0)
    with pytest.raises(TypeError, match="weight"):
        Rate(10, weight=3)  # type: ignore[arg-type]


def test_limits_validation_messages_say_the_fix() -> None:
    """Limits below 1 raise at construction, saying what is allowed."""
    with pytest.raises(ValueError, match="at least 1"):
        Limits(concurrency=0)
    with pytest.raises(ValueError, match="at least 1"):
        Limits(per_key=-2)
    with pytest.raises(TypeError, match="whole number"):
        Limits(concurrency=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a rate"):
        Limits(rate="10/parsec")


def test_limits_defaults_and_replace() -> None:
    """Limits() defaults to 16 at once; replace() copies with changes and re-validates."""
    limits = Limits(rate="10/s")
    assert limits.effective_concurrency == 16
    assert limits.rate == Rate(10, 1.0)
    changed = limits.replace(concurrency=4, rate=["1/s", "100/min"])
    assert changed.concurrency == 4
    assert [str(r) for r in changed.rates] == ["1/1s", "100/60s"]
    assert "concurrency=4" in repr(changed)
    with pytest.raises(ValueError):
        limits.replace(concurrency=0)


def test_window_meter_admits_count_then_waits_for_the_oldest() -> None:
    """Three per second: three at once, the fourth waits until the first leaves the window."""
    meter = WindowMeter(3, 1.0)
    for t in (0.0, 0.2, 0.4):
        assert meter.wait(1, t) == 0.0
        meter.start(1, t)
    assert meter.wait(1, 0.5) == pytest.approx(0.5)
    assert meter.wait(1, 1.0) == 0.0  # the start at 0.0 is out of [0.0 + 1.0 - ...]
    meter.start(1, 1.0)
    assert meter.wait(1, 1.0) == pytest.approx(0.2)


def test_window_meter_weighted_waits_for_enough_units() -> None:
    """A heavy start waits until enough weight has slid out, and one that can never fit says so."""
    meter = WindowMeter(10, 60.0)
    meter.start(4, 0.0)
    meter.start(4, 10.0)
    assert meter.wait(5, 20.0) == pytest.approx(40.0)  # needs the first 4 to expire
    assert meter.wait(9, 20.0) == pytest.approx(50.0)  # needs both
    assert meter.wait(11, 20.0) == math.inf


def test_rate_meter_burst_spreads_starts() -> None:
    """With burst=1 a 10/s rate spaces starts exactly 0.1 s apart."""
    meter = RateMeter(Rate(10, 1.0, burst=1))
    assert meter.wait(1, 0.0) == 0.0
    meter.start(1, 0.0)
    assert meter.wait(1, 0.0) == pytest.approx(0.1)
    assert meter.wait(1, 0.1) == 0.0


def test_rate_meter_weight_function_is_checked() -> None:
    """A weight function must return a number >= 0."""
    meter = RateMeter(Rate(100, 60.0, weight=lambda item: item))
    assert meter.weight_of(7) == 7.0
    with pytest.raises(ValueError, match="weight"):
        meter.weight_of(-1)


def _simulate(meter: WindowMeter, arrivals: list[float], weights: list[float]) -> list[float]:
    """Start each arrival as soon as the meter allows (FIFO), return the start times."""
    starts = []
    now = 0.0
    for arrival, weight in zip(arrivals, weights, strict=True):
        now = max(now, arrival)
        while (wait := meter.wait(weight, now)) > 0:
            assert wait != math.inf
            now += wait
        meter.start(weight, now)
        starts.append(now)
    return starts


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 20),
    period=st.sampled_from([0.1, 1.0, 2.5, 60.0]),
    gaps=st.lists(st.floats(0, 3), min_size=1, max_size=80),
    data=st.data(),
)
def test_window_never_exceeded_in_any_window(
    capacity: int, period: float, gaps: list[float], data: st.DataObject
) -> None:
    """Property: the units started in any window [t, t + period) never exceed the capacity."""
    weights = data.draw(st.lists(st.integers(1, capacity), min_size=len(gaps), max_size=len(gaps)))
    arrivals = []
    t = 0.0
    for gap in gaps:
        t += gap
        arrivals.append(t)
    starts = _simulate(WindowMeter(capacity, period), arrivals, [float(w) for w in weights])
    for i, s in enumerate(starts):
        in_window = sum(
            w for s2, w in zip(starts, weights, strict=True) if s <= s2 < s + period - EPSILON
        )
        assert in_window <= capacity, (i, s)
    # and it is not slower than it must be: each start is at its arrival or when a window frees
    assert all(s >= a for s, a in zip(starts, arrivals, strict=True))


@settings(max_examples=100, deadline=None)
@given(count=st.integers(1, 50), n=st.integers(1, 200))
def test_window_is_work_conserving_for_a_backlog(count: int, n: int) -> None:
    """Property: a backlog of n unit starts at rate count/s finishes at floor((n-1)/count) s."""
    starts = _simulate(WindowMeter(count, 1.0), [0.0] * n, [1.0] * n)
    assert starts[-1] == pytest.approx((n - 1) // count)
