"""The events a run emits, for subscribers (``job.run(items, subscribers=fn)``)."""

from ._events import (
    AnyEvent,
    AttemptStarted,
    BreakerChanged,
    Counts,
    Event,
    HedgeStarted,
    LimitChanged,
    PieceFailed,
    PieceSucceeded,
    RetryScheduled,
    RunFinished,
    RunStarted,
    Subscriber,
    ThrottleWait,
)

__all__ = [
    "AnyEvent",
    "AttemptStarted",
    "BreakerChanged",
    "Counts",
    "Event",
    "HedgeStarted",
    "LimitChanged",
    "PieceFailed",
    "PieceSucceeded",
    "RetryScheduled",
    "RunFinished",
    "RunStarted",
    "Subscriber",
    "ThrottleWait",
]
