"""The events a run emits, for subscribers (``job.run(items, subscribers=fn)``)."""

from ._events import (
    AttemptStarted,
    Event,
    LimitChanged,
    PieceFailed,
    PieceSucceeded,
    RetryScheduled,
    Subscriber,
    ThrottleWait,
)

__all__ = [
    "AttemptStarted",
    "Event",
    "LimitChanged",
    "PieceFailed",
    "PieceSucceeded",
    "RetryScheduled",
    "Subscriber",
    "ThrottleWait",
]
