"""Limits: what may start, and when.

``Limits`` is the user's configuration; the meters below are what the scheduler consults before
each attempt. Meters are pure: they take ``now`` as an argument and never read a clock or start a
task, so they are tested with plain numbers.

A rate here is a *sliding window*: ``Rate(100, per=1.0)`` admits at most 100 units of weight in
any window of one second, wherever that window is placed. A classic token bucket whose burst
equals the per-period count lets through up to twice the count in some windows (a full bucket at
the start of the window plus a whole period's refill), which servers that count requests per
window answer with 429s. The sliding log gives the same burst (the whole count at once when idle)
and still keeps every window under the limit. A smaller ``burst`` adds a second, shorter window
(``burst`` units per ``per * burst / count`` seconds), which spreads the starts out evenly;
``burst=1`` spaces them exactly ``per / count`` apart.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Two timestamps closer than this are treated as equal. Float sums of delays drift by a few ulps;
# without a tolerance a wait of 1e-16 s could be scheduled forever.
EPSILON = 1e-9

_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}

_RATE_RE = re.compile(
    r"^\s*(?P<count>\d+(?:\.\d+)?)\s*/\s*(?P<mult>\d+(?:\.\d+)?)?\s*(?P<unit>[a-zA-Z]+)\s*$"
)

_RATE_FORMS = (
    '"100/s", "600/min", "5000/h", "10/2s", "1/500ms" or a number of units per second '
    "(e.g. 50 or 0.5)"
)


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` units of weight in any window of ``per`` seconds.

    Args:
        count: Units allowed per window (requests, or tokens with a ``weight`` function).
        per: The window, in seconds.
        burst: At most this many units at once; a second window of ``per * burst / count``
            seconds spreads the starts out. ``None`` (the default) allows the whole ``count`` at
            once.
        weight: ``item -> units`` for weighted rates (e.g. tokens); ``None`` counts each start as
            one unit.
        actual: The name of a ``shoal.usage()`` counter (e.g. ``"tokens"``). After each attempt
            that reported it, this rate counts what the attempt reported instead of the weight
            it reserved: an estimate (prompt plus ``max_tokens``) becomes the real count, and the
            unused part is given back to the window at once.

    Raises:
        ValueError: a count, window or burst that is not a positive number.
    """

    count: float
    per: float = 1.0
    burst: float | None = None
    weight: Callable[[Any], float] | None = field(default=None, compare=False)
    actual: str | None = None

    def __post_init__(self) -> None:
        for name in ("count", "per"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Rate({name}={value!r}): expected a number")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"Rate({name}={value!r}): must be a finite number > 0")
        if self.burst is not None:
            if isinstance(self.burst, bool) or not isinstance(self.burst, int | float):
                raise TypeError(f"Rate(burst={self.burst!r}): expected a number or None")
            if not math.isfinite(self.burst) or self.burst <= 0:
                raise ValueError(f"Rate(burst={self.burst!r}): must be a number > 0, or None")
        if self.weight is not None and not callable(self.weight):
            raise TypeError(f"Rate(weight={self.weight!r}): expected a callable item -> units")
        if self.actual is not None and (not isinstance(self.actual, str) or not self.actual):
            raise TypeError(
                f"Rate(actual={self.actual!r}): expected the name of a shoal.usage() counter, "
                'e.g. "tokens"'
            )

    @classmethod
    def parse(cls, spec: str | float | Rate) -> Rate:
        """Read ``"100/s"``, ``"600/min"``, ``"5000/h"``, ``"10/2s"`` or a number per second.

        Raises:
            ValueError: the spec is none of the accepted forms (the message lists them).
        """
        if isinstance(spec, Rate):
            return spec
        if isinstance(spec, bool):
            raise TypeError(f"rate={spec!r}: expected one of {_RATE_FORMS}")
        if isinstance(spec, int | float):
            if not math.isfinite(spec) or spec <= 0:
                raise ValueError(f"rate={spec!r}: a number rate must be > 0 units per second")
            if spec < 1:  # 0.5/s is one unit every two seconds
                return cls(1, 1.0 / spec)
            return cls(spec, 1.0)
        if not isinstance(spec, str):
            raise TypeError(f"rate={spec!r}: expected one of {_RATE_FORMS}")
        match = _RATE_RE.match(spec)
        unit = _UNITS.get(match.group("unit").lower()) if match else None
        if match is None or unit is None:
            raise ValueError(f"rate={spec!r} is not a rate; use one of {_RATE_FORMS}")
        count = float(match.group("count"))
        mult = float(match.group("mult")) if match.group("mult") else 1.0
        per = mult * unit
        if count <= 0 or per <= 0:
            raise ValueError(
                f"rate={spec!r}: the count and the period must both be > 0; use one of "
                f"{_RATE_FORMS}"
            )
        return cls(count, per)

    @property
    def per_second(self) -> float:
        """The long-run rate in units per second."""
        return self.count / self.per

    def __str__(self) -> str:
        return f"{self.count:g}/{self.per:g}s"


def parse_rates(rate: object) -> tuple[Rate, ...]:
    """Normalize ``Limits(rate=...)``: ``None``, one rate, or a sequence of rates."""
    if rate is None:
        return ()
    if isinstance(rate, str | int | float | Rate):
        return (Rate.parse(rate),)
    if isinstance(rate, Iterable):
        return tuple(Rate.parse(r) for r in rate)
    raise TypeError(f"rate={rate!r}: expected one of {_RATE_FORMS}, or a list of them")


def _check_count(name: str, value: object, *, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r}: expected a whole number >= 1")
    if value < 1:
        raise ValueError(f"{name}={value!r}: must be at least 1 (use 1 to run one at a time)")
    return value


@dataclass(frozen=True, slots=True, init=False)
class Limits:
    """What may run at once, and how fast.

    Args:
        concurrency: Attempts in flight at once, across all keys (default 16).
        per_key: Attempts in flight at once per key (the job's ``key(item)``), e.g. per host.
        rate: Starts allowed per period: ``"100/s"``, ``"600/min"``, ``"10/2s"``, a number per
            second, a :class:`Rate` (weighted, with a burst), or a list of them (all must hold).
        adaptive: Let the concurrency limit (per key, when the job has a key) grow while calls
            succeed and shrink on throttling, timeouts and rising latency (see
            ``shoal._adaptive``). ``concurrency`` (default 256 here) and ``per_key`` become
            ceilings.

    Raises:
        ValueError, TypeError: a limit below 1 or a rate that cannot be read.
    """

    concurrency: int | None
    per_key: int | None
    rates: tuple[Rate, ...]
    adaptive: bool

    DEFAULT_CONCURRENCY = 16
    ADAPTIVE_CEILING = 256  # adaptive=True without concurrency=: grows up to this

    def __init__(
        self,
        concurrency: int | None = None,
        per_key: int | None = None,
        rate: str | float | Rate | Sequence[str | float | Rate] | None = None,
        adaptive: bool = False,
    ) -> None:
        object.__setattr__(self, "concurrency", _check_count("concurrency", concurrency))
        object.__setattr__(self, "per_key", _check_count("per_key", per_key))
        object.__setattr__(self, "rates", parse_rates(rate))
        object.__setattr__(self, "adaptive", bool(adaptive))

    @property
    def rate(self) -> Rate | None:
        """The first rate, if any (``rates`` has all of them)."""
        return self.rates[0] if self.rates else None

    @property
    def effective_concurrency(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        # Adaptive limits find their own level; the ceiling only bounds them.
        return self.ADAPTIVE_CEILING if self.adaptive else self.DEFAULT_CONCURRENCY

    def replace(self, **changes: Any) -> Limits:
        """A copy with some limits changed (``rate=`` replaces every rate)."""
        values: dict[str, Any] = {
            "concurrency": self.concurrency,
            "per_key": self.per_key,
            "rate": list(self.rates) or None,
            "adaptive": self.adaptive,
        }
        values.update(changes)
        return Limits(**values)

    def __repr__(self) -> str:
        parts = []
        if self.concurrency is not None:
            parts.append(f"concurrency={self.concurrency}")
        if self.per_key is not None:
            parts.append(f"per_key={self.per_key}")
        if self.rates:
            shown = [str(r) for r in self.rates]
            parts.append(f"rate={shown[0]!r}" if len(shown) == 1 else f"rate={shown!r}")
        if self.adaptive:
            parts.append("adaptive=True")
        return f"Limits({', '.join(parts)})"


class WindowMeter:
    """At most ``capacity`` units in any half-open window ``[t, t + period)``.

    A start at ``now`` is admitted when the units started in ``(now - period, now]`` plus its own
    weight fit in the capacity; otherwise ``wait()`` says how long until enough of the log has
    slid out of the window.
    """

    __slots__ = ("_log", "_used", "capacity", "period")

    def __init__(self, capacity: float, period: float) -> None:
        self.capacity = capacity
        self.period = period
        # [start time, units]: lists, so the scheduler can move a reservation's time to the
        # moment its attempt really started (a little later than it was admitted).
        self._log: deque[list[float]] = deque()
        self._used = 0.0

    def _expire(self, now: float) -> None:
        horizon = now - self.period + EPSILON
        log = self._log
        while log and log[0][0] <= horizon:
            entry = log.popleft()
            self._used -= entry[1]
            entry[0] = -math.inf  # out of the window: a later correction has nothing to change
        if not log:
            self._used = 0.0  # no float residue once the log is empty

    def wait(self, weight: float, now: float) -> float:
        """Seconds until ``weight`` units may start (0.0: now). ``inf`` if it never fits."""
        if weight > self.capacity + EPSILON:
            return math.inf
        self._expire(now)
        if self._used + weight <= self.capacity + EPSILON:
            return 0.0
        need = self._used + weight - self.capacity
        freed = 0.0
        for started, units in self._log:
            freed += units
            if freed + EPSILON >= need:
                return max(started + self.period - now, EPSILON)
        return math.inf  # unreachable: the whole log expires eventually

    def start(self, weight: float, now: float) -> list[float]:
        """Count ``weight`` units started at ``now``; returns the entry (its time may be moved
        later, never earlier)."""
        entry = [now, weight]
        self._log.append(entry)
        self._used += weight
        return entry

    def correct(self, entry: list[float], weight: float) -> None:
        """Count ``weight`` units for an entry ``start()`` returned, instead of what it had (a
        reservation from an estimate becomes the real count; nothing if it left the window)."""
        if entry[0] == -math.inf:
            return
        self._used += weight - entry[1]
        entry[1] = weight
        if self._used < EPSILON and self._used > -EPSILON:
            self._used = 0.0


class RateMeter:
    """A :class:`Rate` as one window meter, plus a shorter one when a burst is set.

    A piece heavier than the burst (but not than the whole window) waits until the short window
    is empty and then fills it alone, so a big request is slowed, never refused.
    """

    __slots__ = ("_windows", "rate")

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        windows = [WindowMeter(rate.count, rate.per)]
        if rate.burst is not None and rate.burst < rate.count:
            windows.append(WindowMeter(rate.burst, rate.per * rate.burst / rate.count))
        self._windows = tuple(windows)

    def weight_of(self, item: Any) -> float:
        fn = self.rate.weight
        if fn is None:
            return 1.0
        value = fn(item)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(
                f"the rate's weight function returned {value!r}; it must return a number >= 0"
            )
        return float(value)

    def wait(self, weight: float, now: float) -> float:
        windows = self._windows
        longest = windows[0].wait(weight, now)
        for window in windows[1:]:
            w = window.wait(min(weight, window.capacity), now)
            longest = max(longest, w)
        return longest

    def start(self, weight: float, now: float) -> list[list[float]]:
        windows = self._windows
        entries = [windows[0].start(weight, now)]
        entries.extend(window.start(min(weight, window.capacity), now) for window in windows[1:])
        return entries

    def correct(self, entries: list[list[float]], weight: float) -> None:
        """Count ``weight`` for the entries one ``start()`` returned (see ``WindowMeter``)."""
        for window, entry in zip(self._windows, entries, strict=True):
            window.correct(
                entry, min(weight, window.capacity) if entry is not entries[0] else weight
            )


class KeyState:
    """Per-key bookkeeping: attempts in flight, and a pause after a throttle (and, for a live
    view that asked, the pieces done and failed)."""

    __slots__ = ("done", "failed", "in_flight", "paused_until", "resume_at")

    def __init__(self) -> None:
        self.in_flight = 0
        self.done = 0
        self.failed = 0
        self.paused_until = -math.inf
        self.resume_at = -math.inf  # when a timer to unpark this key is already set
