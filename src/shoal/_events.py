"""Frozen event records: the seam between the scheduler and everyone who watches it.

The scheduler emits them in the order things happen; progress, the journal and the report
subscribe to them (a subscriber is any ``callable(event) -> None``) and never reach into the
scheduler. Times are the run's clock: ``time`` is monotonic seconds since the run started.
Events are built only when somebody subscribes, so an unobserved run pays nothing for them.

A run opens with :class:`RunStarted` and closes with :class:`RunFinished`, whatever ended it (an
error, Ctrl-C, a consumer that stopped early). Every piece emits :class:`AttemptStarted` and,
mostly, :class:`PieceSucceeded`: two records per piece cost about as much as a no-op piece itself
(each is a frozen record, about half a microsecond to build). A subscriber that only needs the
totals can set ``piece_events = False`` (read once, just after it got ``RunStarted``): it then gets
every other event but not those two, and reads the totals when it wants them from
``RunStarted.counts()``. The progress views do that, which is why they cost next to nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ._records import quick_frozen_init


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
class HedgeStarted(Event):
    """A hedged attempt started: the piece's attempt ``attempt`` had run ``after`` seconds, longer
    than the job's hedging percentile, so a second attempt of it runs beside it."""

    attempt: int
    after: float


@dataclass(frozen=True, slots=True)
class BreakerChanged:
    """A key's circuit breaker changed state: ``"open"`` (nothing is sent to the key until
    ``until``, seconds since the run started), ``"half-open"`` (one probe attempt is out),
    ``"closed"`` (the key goes again) or ``"gave-up"`` (its pieces fail unsent)."""

    time: float
    key: str
    state: str
    until: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class LimitChanged:
    """A limit changed while running (adaptive concurrency)."""

    time: float
    key: str
    name: str
    value: float


@dataclass(frozen=True, slots=True)
class Counts:
    """The run's totals at one moment, as the scheduler keeps them (``RunStarted.counts()``)."""

    succeeded: int
    failed: int
    resumed: int  # of the settled ones, how many were read back from a journal, not run
    in_flight: int
    attempts: int
    retries: int
    throttles: int

    @property
    def settled(self) -> int:
        return self.succeeded + self.failed


def _no_counts() -> Counts:
    return Counts(0, 0, 0, 0, 0, 0, 0)


def _no_keys() -> dict[str, tuple[int, int, int]]:
    return {}


@dataclass(frozen=True, slots=True)
class RunStarted:
    """The run started: its size (``total``, when the items have a ``len()``), its limits, and
    ``counts``, which reads the run's totals at any time until it ends.

    ``keys`` reads ``{key: (done, failed, in flight)}`` the same way, for a keyed job, once a
    subscriber has set ``key_counts = True`` (read, like ``piece_events``, just after it got this
    event): the scheduler then keeps those counts, and the subscriber needs no piece events."""

    time: float
    total: int | None
    concurrency: int
    per_key: int | None
    rate: str | None  # e.g. "10/1s"; several rates are joined with ", "
    name: str
    keyed: bool = False  # the job has a key function (per-key lines make sense)
    counts: Callable[[], Counts] = field(default=_no_counts, compare=False, repr=False)
    keys: Callable[[], dict[str, tuple[int, int, int]]] = field(
        default=_no_keys, compare=False, repr=False
    )


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The run ended: ``status`` is ``"finished"``, ``"failed"`` (an error stopped it),
    ``"interrupted"`` (cancelled, Ctrl-C, or its consumer stopped early) or ``"aborted"`` (more
    pieces failed than ``Job(max_failure_rate=...)`` allows; ``RunStats.aborted`` says why)."""

    time: float
    status: str
    counts: Counts


AnyEvent = Event | LimitChanged | BreakerChanged | RunStarted | RunFinished

Subscriber = Callable[[AnyEvent], None]


for _record in (
    AttemptStarted,
    PieceSucceeded,
    PieceFailed,
    RetryScheduled,
    ThrottleWait,
    LimitChanged,
    HedgeStarted,
    BreakerChanged,
):
    quick_frozen_init(_record)
del _record
