"""The events a run emits, for subscribers (``job.run(items, subscribers=fn)``)."""

from ._events import (
    AnyEvent,
    AttemptStarted,
    Counts,
    Event,
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
    "Counts",
    "Event",
    "LimitChanged",
    "PieceFailed",
    "PieceSucceeded",
    "RetryScheduled",
    "RunFinished",
    "RunStarted",
    "Subscriber",
    "ThrottleWait",
]
