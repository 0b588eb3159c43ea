"""Adaptive concurrency: find how much a server takes without being told.

``Limits(adaptive=True)`` gives every key (or the whole job, when there is no key) a concurrency
limit that moves with what the other side says:

- it **grows** while calls succeed: by one per success in slow start (the limit doubles every
  round trip), then by ``1 / limit`` per success (about one per round trip), and only while the
  limit is actually used (at least half of it in flight), so an idle key does not inflate;
- it **shrinks fast** on a throttle (``Throttled``, HTTP 429/503 through ``shoal.http``) or a
  timed-out attempt: multiplied by ``backoff`` (0.5), and slow start ends there;
- it **shrinks gently** when latency climbs: once the smoothed latency exceeds ``tolerance``
  (2x) the baseline (the shortest latency seen recently), the limit is multiplied by 0.9; above
  ``1 + (tolerance - 1) / 2`` it stops growing. Queueing at the server shows up as latency before
  it shows up as errors, so this holds the limit near the knee instead of sawing through it.

A decrease happens at most once per round trip: a throttle or a slow reply from an attempt that
started *before* the last decrease reports on the old limit, which has already been acted on.
Without that rule one burst of 429s (every request in flight when the server filled up) would
halve the limit once per request, down to 1.

Sources: additive-increase / multiplicative-decrease with slow start and one reduction per window
is Jacobson's TCP congestion control ("Congestion Avoidance and Control", SIGCOMM 1988; RFC 5681,
and RFC 6582 for the once-per-window rule); the app-limited guard (grow only when in flight >=
limit / 2) and treating timeouts as drops follow Netflix's concurrency-limits ``AIMDLimit``;
the latency baseline is TCP Vegas' BaseRTT (Brakmo and Peterson, 1995).

Pure: every method takes ``now`` and the sample, and returns whether the whole-number limit
changed; the scheduler emits ``LimitChanged`` and applies it.
"""

from __future__ import annotations

import math

__all__ = ["AdaptiveLimit"]


class AdaptiveLimit:
    """One key's adaptive concurrency limit.

    Args:
        initial: The limit it starts at.
        maximum: It never grows past this (the job's ``per_key`` or ``concurrency``).
        minimum: It never shrinks below this.
        backoff: The factor applied on a throttle or a timeout.
        tolerance: Latency above ``tolerance`` times the baseline counts as congestion.
        smoothing: Weight of a new latency sample in the moving average.
        epoch: Samples per baseline epoch: the baseline is the shortest latency of this epoch and
            the one before, so it follows a server that became slower for good.
    """

    __slots__ = (
        "_epoch",
        "_epoch_count",
        "_epoch_min",
        "_prev_min",
        "_recovery",
        "_smoothed",
        "backoff",
        "limit",
        "maximum",
        "minimum",
        "slow_start",
        "smoothing",
        "tolerance",
        "value",
    )

    def __init__(
        self,
        *,
        initial: int = 4,
        maximum: int,
        minimum: int = 1,
        backoff: float = 0.5,
        tolerance: float = 2.0,
        smoothing: float = 0.2,
        epoch: int = 100,
    ) -> None:
        if maximum < minimum:
            raise ValueError(f"AdaptiveLimit(maximum={maximum}) is below minimum={minimum}")
        self.maximum = maximum
        self.minimum = minimum
        self.limit = float(min(max(initial, minimum), maximum))
        self.value = int(self.limit)  # the whole-number limit in force
        self.backoff = backoff
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.slow_start = True
        self._epoch = epoch
        self._epoch_count = 0
        self._epoch_min = math.inf
        self._prev_min = math.inf
        self._smoothed = 0.0
        self._recovery = -math.inf  # attempts started before this report on an older limit

    @property
    def baseline(self) -> float:
        """The shortest latency of this epoch and the one before (``inf`` before any sample)."""
        return min(self._epoch_min, self._prev_min)

    @property
    def smoothed(self) -> float:
        """The moving average of latencies (0.0 before any sample)."""
        return self._smoothed

    def _set(self, limit: float) -> bool:
        self.limit = min(max(limit, float(self.minimum)), float(self.maximum))
        value = int(self.limit)
        if value != self.value:
            self.value = value
            return True
        return False

    def _decrease(self, factor: float, now: float) -> bool:
        self.slow_start = False
        self._recovery = now
        return self._set(self.limit * factor)

    def on_success(self, latency: float, started: float, now: float, in_flight: int) -> bool:
        """A call that started at ``started`` succeeded after ``latency`` seconds, with
        ``in_flight`` calls of this key in flight (itself included). Whether the limit changed."""
        if self._epoch_count >= self._epoch:
            self._prev_min, self._epoch_min, self._epoch_count = self._epoch_min, math.inf, 0
        self._epoch_count += 1
        self._epoch_min = min(self._epoch_min, latency)
        if self._smoothed == 0.0:
            self._smoothed = latency
        else:
            self._smoothed += self.smoothing * (latency - self._smoothed)
        baseline = self.baseline
        smoothed = self._smoothed
        if baseline > 0.0 and smoothed > self.tolerance * baseline:
            if started >= self._recovery and latency > self.tolerance * baseline:
                return self._decrease(0.9, now)  # queueing: back off a little
            return False
        if baseline > 0.0 and smoothed > (1.0 + (self.tolerance - 1.0) / 2.0) * baseline:
            return False  # latency is rising: hold
        if in_flight * 2 < self.value:
            return False  # the limit is not what holds this key back: do not inflate it
        if self.slow_start:
            return self._set(self.limit + 1.0)
        return self._set(self.limit + 1.0 / self.limit)

    def on_throttle(self, started: float, now: float) -> bool:
        """The other side said "slow down" to a call that started at ``started``."""
        if started < self._recovery:
            return False  # sent under the old limit, already acted on
        return self._decrease(self.backoff, now)

    def on_timeout(self, started: float, now: float) -> bool:
        """A call that started at ``started`` timed out: a drop, like a throttle."""
        return self.on_throttle(started, now)

    def __repr__(self) -> str:
        return (
            f"AdaptiveLimit(limit={self.limit:.2f}, value={self.value}, "
            f"slow_start={self.slow_start}, baseline={self.baseline:.4g})"
        )
