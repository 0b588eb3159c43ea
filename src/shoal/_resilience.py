"""Resilience policies: hedged attempts, a job-wide retry budget, per-key circuit breakers.

Pure, like ``_limits``: the policies are frozen configuration, and the trackers below take
``now`` as an argument and never read a clock or start a task. The scheduler (``_run``) owns one
of each and decides with them.

What each one follows (the ideas, not the code):

- **Hedging** follows Dean and Barroso, "The Tail at Scale" (CACM, February 2013): defer a second
  ("hedged") request until the first has been outstanding longer than a high percentile of the
  latencies seen (they suggest the 95th), so that only the slowest ~5% get a second request; use
  whichever answers first and cancel the other. The percentile is the nearest rank over the last
  ``window`` successful attempts, and a cap on the extra attempts (``max_share`` of all attempts)
  keeps hedging from doubling the load when *everything* is slow, which is when a hedge cannot
  help anyway.
- **The retry budget** follows Finagle's ``RetryBudget`` (Twitter, 2016: retries may be about 20%
  of requests, plus a minimum of 10 per second, over a 10-second time-to-live) and gRPC's retry
  throttling (A6: when too many recent calls failed, retries stop while first attempts go on).
  Here it is a sliding window counted exactly: in any ``window`` seconds, retries may not exceed
  ``floor + share * first attempts``. Beyond it a transient failure fails at once instead of
  adding load to something that is already failing.
- **The circuit breaker** follows the closed / open / half-open machine of Hystrix and
  resilience4j: it opens after ``failures`` failures in a row (Finagle's "consecutive failures"
  accrual) or when at least ``failure_rate`` of the last ``window`` attempts failed
  (resilience4j's count-based window, default 50%); while open nothing is sent to its key; after
  ``cooldown`` seconds one probe attempt goes (Hystrix's single test request); its success closes
  the breaker, its failure opens it again. Unlike a request/response client, a batch job has no
  caller to fail fast to: the key's pieces *wait* while the breaker is open, and other keys go on.
  ``give_up`` ends the waiting for a key that never comes back.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, TypeVar


def _check_share(owner: str, name: str, value: object, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{owner}({name}={value!r}): expected a number between 0 and 1")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and low_ok and value <= 1):
        low = "0" if allow_zero else "more than 0"
        raise ValueError(f"{owner}({name}={value!r}): must be {low} and at most 1 (a share)")


def _check_count(owner: str, name: str, value: object, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}({name}={value!r}): expected a whole number >= {minimum}")
    if value < minimum:
        raise ValueError(f"{owner}({name}={value!r}): must be at least {minimum}")


def _check_seconds(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{owner}({name}={value!r}): expected a number of seconds > 0")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}({name}={value!r}): must be a finite number of seconds > 0")


# ---------------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class Hedge:
    """Hedged attempts for idempotent work: a second attempt of a piece whose attempt runs long.

    Once ``min_samples`` attempts have succeeded, an attempt still running after the
    ``percentile`` of those latencies gets a second attempt of the same piece; the first to
    succeed wins and the other is cancelled (see the README for what cancelling means on each
    backend). Hedges count against the same limits (concurrency, per key, rates) and are capped
    at ``max_share`` of the attempts made, so they add at most that much load.

    Only for work that may safely run twice at once (a read, an idempotent write).

    Args:
        percentile: Hedge attempts slower than this percentile of the latencies seen (0-100).
        min_samples: Successful attempts to see before the first hedge.
        max_share: Hedges may be at most this share of all other attempts (0.05: 5%).
        window: How many of the latest latencies the percentile is taken over.

    Raises:
        ValueError, TypeError: a percentile outside (0, 100), a share outside (0, 1], counts
            below 1.
    """

    percentile: float = 95.0
    min_samples: int = 20
    max_share: float = 0.05
    window: int = 1000

    def __post_init__(self) -> None:
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, int | float):
            raise TypeError(f"Hedge(percentile={p!r}): expected a number between 0 and 100")
        if not (math.isfinite(p) and 0 < p < 100):
            raise ValueError(
                f"Hedge(percentile={p!r}): must be between 0 and 100 (e.g. 95 for p95)"
            )
        _check_count("Hedge", "min_samples", self.min_samples)
        _check_share("Hedge", "max_share", self.max_share)
        _check_count("Hedge", "window", self.window)


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """A job-wide cap on retries: in any ``window`` seconds, at most ``floor + share * first
    attempts`` retries. Beyond it a transient failure fails at once, with a note that says so,
    instead of piling retries onto a dependency that is already failing. Throttles are not
    retries and never spend from it.

    Args:
        share: Retries allowed per first attempt in the window (0.2: one retry per five pieces).
        window: The sliding window, in seconds.
        floor: Retries always allowed in any window, for jobs that are starting or small.

    Raises:
        ValueError, TypeError: a share outside (0, 1], a window <= 0, a negative floor.
    """

    share: float = 0.2
    window: float = 10.0
    floor: int = 10

    def __post_init__(self) -> None:
        _check_share("RetryBudget", "share", self.share, allow_zero=True)
        _check_seconds("RetryBudget", "window", self.window)
        _check_count("RetryBudget", "floor", self.floor, minimum=0)


@dataclass(frozen=True, slots=True)
class Breaker:
    """A circuit breaker per key (per job without a key function).

    After ``failures`` failed attempts in a row on a key, or when at least ``failure_rate`` of
    its last ``window`` attempts failed, the breaker opens: nothing is sent to that key for
    ``cooldown`` seconds (its pieces wait; other keys go on). Then one probe attempt goes: if it
    succeeds the breaker closes and the key's pieces go again; if it fails the breaker opens
    again, for the same cooldown, or with ``backoff=2`` twice the one before (up to
    ``max_cooldown``), so that a dependency that stays down is probed less and less often (as
    Envoy's outlier detection lengthens an ejection with each one) at the price of noticing its
    recovery later. A failure is an error the retry policy counts as transient
    (``Retry(on=)``); throttles and other errors are not.

    Args:
        failures: Failures in a row that open the breaker.
        failure_rate: Open when at least this share of the last ``window`` attempts failed
            (``None``: only failures in a row count).
        window: Attempts the failure rate is taken over (it needs that many first).
        cooldown: Seconds the breaker stays open before its first probe.
        backoff: Each failed probe in a row multiplies the next cooldown by this (``1``, the
            default: the same cooldown every time).
        max_cooldown: The longest cooldown.
        give_up: After this many failed probes in a row, stop waiting: the key's waiting pieces,
            and any that come later, fail at once with ``shoal.CircuitOpen`` (``shoal retry``
            or ``job.retry_failed`` runs them again later). ``None``: wait as long as it takes.

    Raises:
        ValueError, TypeError: counts below 1, a rate outside (0, 1], a cooldown <= 0, a backoff
            below 1, a ``max_cooldown`` below the cooldown.
    """

    failures: int = 5
    failure_rate: float | None = 0.5
    window: int = 20
    cooldown: float = 10.0
    give_up: int | None = None
    backoff: float = 1.0
    max_cooldown: float = 300.0

    def __post_init__(self) -> None:
        _check_count("Breaker", "failures", self.failures)
        if self.failure_rate is not None:
            _check_share("Breaker", "failure_rate", self.failure_rate)
        _check_count("Breaker", "window", self.window)
        _check_seconds("Breaker", "cooldown", self.cooldown)
        if (
            isinstance(self.backoff, bool)
            or not isinstance(self.backoff, int | float)
            or not 1 <= self.backoff < math.inf
        ):
            raise ValueError(f"Breaker(backoff={self.backoff!r}): must be a number >= 1")
        _check_seconds("Breaker", "max_cooldown", self.max_cooldown)
        if self.max_cooldown < self.cooldown:
            raise ValueError(
                f"Breaker(max_cooldown={self.max_cooldown!r}): must be at least the cooldown "
                f"({self.cooldown!r})"
            )
        if self.give_up is not None:
            _check_count("Breaker", "give_up", self.give_up)


P = TypeVar("P")


def _as_policy(value: object, kind: type[P], name: str, expected: str) -> P | None:
    """``Job(name=value)``: ``None``/``False`` (off), ``True`` (the defaults) or a ``kind``."""
    if value is None or value is False:
        return None
    if value is True:
        return kind()
    if isinstance(value, kind):
        return value
    raise TypeError(f"{name}={value!r}: expected {expected}, or None")


def as_hedge(value: object) -> Hedge | None:
    """``Job(hedge=...)``: ``None``/``False`` (off), ``True`` (the defaults) or a :class:`Hedge`."""
    return _as_policy(
        value,
        Hedge,
        "hedge",
        "True (hedge at p95 after 20 samples, at most 5% extra attempts), "
        "shoal.Hedge(percentile=..., max_share=...)",
    )


def as_budget(value: object) -> RetryBudget | None:
    """``Job(retry_budget=...)``: ``None``/``False``, ``True``, a share (``0.2``) or a policy."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return RetryBudget(share=float(value))
    return _as_policy(
        value,
        RetryBudget,
        "retry_budget",
        "True (20% of first attempts over 10 s, plus 10), a share such as 0.2, "
        "shoal.RetryBudget(share=..., window=..., floor=...)",
    )


def as_breaker(value: object) -> Breaker | None:
    """``Job(breaker=...)``: ``None``/``False`` (off), ``True`` (the defaults) or a policy."""
    return _as_policy(
        value,
        Breaker,
        "breaker",
        "True (open after 5 failures in a row or 50% of the last 20, 10 s cooldown), "
        "shoal.Breaker(failures=..., cooldown=...)",
    )


def check_abort(max_failure_rate: object, min_pieces: object) -> float | None:
    """Validate ``Job(max_failure_rate=, min_pieces=)``; the rate or ``None``."""
    _check_count("Job", "min_pieces", min_pieces)
    if max_failure_rate is None:
        return None
    if isinstance(max_failure_rate, bool) or not isinstance(max_failure_rate, int | float):
        raise TypeError(
            f"max_failure_rate={max_failure_rate!r}: expected a share of failed pieces between "
            "0 and 1 (0.2: stop when more than 20% failed), or None"
        )
    if not (math.isfinite(max_failure_rate) and 0 <= max_failure_rate < 1):
        raise ValueError(
            f"max_failure_rate={max_failure_rate!r}: must be at least 0 and below 1 (0.2 stops "
            "the run once more than 20% of its pieces failed)"
        )
    return float(max_failure_rate)


# ---------------------------------------------------------------------- trackers


class Latencies:
    """The latest successful attempts' durations, kept sorted for percentile queries."""

    __slots__ = ("_order", "_policy", "_sorted")

    def __init__(self, policy: Hedge) -> None:
        self._policy = policy
        self._order: deque[float] = deque()
        self._sorted: list[float] = []

    def add(self, seconds: float) -> None:
        self._order.append(seconds)
        bisect.insort(self._sorted, seconds)
        if len(self._order) > self._policy.window:
            oldest = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]

    def threshold(self) -> float | None:
        """The nearest-rank percentile, or ``None`` before ``min_samples`` latencies."""
        values = self._sorted
        n = len(values)
        if n < self._policy.min_samples:
            return None
        rank = max(1, math.ceil(self._policy.percentile * n / 100 - 1e-9))
        return values[min(rank, n) - 1]

    def __len__(self) -> int:
        return len(self._order)


class Budget:
    """A :class:`RetryBudget` at work: first attempts deposit, retries withdraw."""

    __slots__ = ("_firsts", "_policy", "_retries")

    def __init__(self, policy: RetryBudget) -> None:
        self._policy = policy
        self._firsts: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _prune(self, now: float) -> None:
        edge = now - self._policy.window
        for times in (self._firsts, self._retries):
            while times and times[0] <= edge:
                times.popleft()

    def deposit(self, now: float) -> None:
        """A first attempt started."""
        self._firsts.append(now)

    def allowance(self, now: float) -> float:
        """Retries allowed in the window that ends now."""
        self._prune(now)
        return self._policy.floor + self._policy.share * len(self._firsts)

    def withdraw(self, now: float) -> bool:
        """Whether one more retry fits in the window ending now (and count it if it does)."""
        allowance = self.allowance(now)  # prunes first
        if len(self._retries) + 1 > allowance + 1e-9:
            return False
        self._retries.append(now)
        return True

    def describe(self, now: float) -> str:
        self._prune(now)
        p = self._policy
        return (
            f"{len(self._retries)} retries in the last {p.window:g}s, and {len(self._firsts)} "
            f"first attempts allow {p.floor} + {p.share:.0%} of them"
        )


CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"
GAVE_UP = "gave-up"


class BreakerState:
    """One key's circuit breaker: closed, open until a time, half-open with one probe out, or
    given up."""

    __slots__ = (
        "_failed",
        "_outcomes",
        "_policy",
        "failed_probes",
        "probing",
        "state",
        "streak",
        "until",
    )

    def __init__(self, policy: Breaker) -> None:
        self._policy = policy
        self.state = CLOSED
        self.until = -math.inf  # open: when the probe may go
        self._outcomes: deque[bool] = deque()  # the last `window` attempts: True = failed
        self._failed = 0
        self.streak = 0  # failures in a row
        self.probing = False  # half-open: the probe is in flight
        self.failed_probes = 0

    def peek(self, now: float) -> int:
        """May an attempt go now? 0: yes; 1: yes, as the probe (then call :meth:`start_probe`);
        2: it waits; 3: the breaker gave up (the piece fails unsent). Changes nothing."""
        state = self.state
        if state == CLOSED:
            return 0
        if state == GAVE_UP:
            return 3
        if state == OPEN and now < self.until - 1e-9:
            return 2
        return 2 if self.probing else 1

    def start_probe(self) -> None:
        """The probe goes (the cooldown is over): half-open until it ends."""
        self.state = HALF_OPEN
        self.probing = True

    def record(self, failed: bool, now: float, *, probe: bool) -> str | None:
        """An attempt ended (``failed``: with a failure that counts); the new state, if it
        changed."""
        if probe:
            self.probing = False
            if not failed:
                self._reset()
                self.state = CLOSED
                self.failed_probes = 0
                return CLOSED
            self.failed_probes += 1
            give_up = self._policy.give_up
            if give_up is not None and self.failed_probes >= give_up:
                self.state = GAVE_UP
                return GAVE_UP
            return self._open(now)
        if self.state != CLOSED:
            return None  # an attempt sent before the breaker opened: the probe decides
        outcomes = self._outcomes
        outcomes.append(failed)
        self._failed += failed
        if len(outcomes) > self._policy.window:
            self._failed -= outcomes.popleft()
        self.streak = self.streak + 1 if failed else 0
        if self.streak >= self._policy.failures:
            return self._open(now)
        rate = self._policy.failure_rate
        if (
            rate is not None
            and len(outcomes) >= self._policy.window
            and self._failed >= rate * len(outcomes) - 1e-9
        ):
            return self._open(now)
        return None

    def probe_void(self) -> None:
        """The probe ended without telling (a throttle): the next attempt admitted probes."""
        self.probing = False

    def reason(self) -> str:
        """Why it opened, in words."""
        if self.streak >= self._policy.failures:
            return f"{self.streak} failures in a row"
        if self.failed_probes:
            return f"the probe failed ({self.failed_probes} in a row)"
        n = len(self._outcomes)
        return f"{self._failed} of the last {n} attempts failed" if n else "failures"

    def _open(self, now: float) -> str:
        policy = self._policy
        self.state = OPEN
        cooldown = policy.cooldown * policy.backoff**self.failed_probes
        self.until = now + min(cooldown, policy.max_cooldown)
        return OPEN

    def _reset(self) -> None:
        self._outcomes.clear()
        self._failed = 0
        self.streak = 0


def describe_policies(
    hedge: Hedge | None, budget: RetryBudget | None, breaker: Breaker | None
) -> dict[str, Any]:
    """The policies as plain data, for ``Job.describe``."""
    return {
        "hedge": None if hedge is None else repr(hedge),
        "retry_budget": None if budget is None else repr(budget),
        "breaker": None if breaker is None else repr(breaker),
    }
