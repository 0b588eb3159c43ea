"""Frozen event records: the seam between the scheduler and everyone who watches it.

The scheduler emits them in the order things happen; progress, the journal and the report
subscribe to them (a subscriber is any ``callable(event) -> None``) and never reach into the
scheduler. Times are the run's clock: ``time`` is monotonic seconds since the run started.
Events are built only when somebody subscribes, so an unobserved run pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event: when (seconds since the run started), which piece, which key."""

    time: float
    index: int
    key: str


@dataclass(frozen=True, slots=True)
class AttemptStarted(Event):
    """An attempt of a piece started (``attempt`` is 1 for the first)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class PieceSucceeded(Event):
    """A piece settled with a value."""

    attempt: int
    duration: float


@dataclass(frozen=True, slots=True)
class PieceFailed(Event):
    """A piece settled as failed: no more attempts, or a failure that is not retried."""

    attempt: int
    duration: float
    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """An attempt failed and the piece will be tried again after ``delay`` seconds."""

    attempt: int
    delay: float
    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class ThrottleWait(Event):
    """The work said "slow down": the piece and its key wait ``delay`` seconds (no attempt used)."""

    attempt: int
    delay: float
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class LimitChanged:
    """A limit changed while running (adaptive concurrency)."""

    time: float
    key: str
    name: str
    value: float


Subscriber = Callable[[Event | LimitChanged], None]
