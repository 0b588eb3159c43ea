"""``shoal.usage()``: the work reports what an attempt consumed (tokens, cost, anything countable).

The scheduler points a context variable at the piece before each attempt; ``usage()`` adds to
that piece's totals. Context variables follow the call into threads (the thread backend copies the
context), into tasks the work starts, and, through :class:`Meter`, into worker processes and
cluster workers, whose totals travel back with the result. Usage is summed over every attempt of a
piece, failed ones included: a failed call that used tokens still cost them.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from typing import Any

__all__ = ["Meter", "Reported", "current", "hold", "usage"]


class Meter:
    """Anything with a ``usage`` attribute (a dict of totals, or ``None`` until the first report).

    The scheduler's pieces are meters themselves; worker processes use this class.
    """

    __slots__ = ("hold", "reports", "usage")

    def __init__(self) -> None:
        self.usage: dict[str, float] | None = None
        self.reports = 0  # calls to usage(): rates with actual= see whether an attempt reported
        self.hold = 0.0  # see hold()

    def take(self) -> dict[str, float] | None:
        """The totals so far, and start again from nothing."""
        taken, self.usage = self.usage, None
        return taken


current: ContextVar[Any] = ContextVar("shoal_usage_meter", default=None)


def usage(
    tokens: float | None = None,
    cost: float | None = None,
    **counts: float,
) -> None:
    """Report what the current attempt consumed; shoal sums it per piece and for the run.

    Call it from inside the work function (any backend)::

        async def ask(prompt):
            reply = await client.chat(prompt)
            shoal.usage(tokens=reply.usage.total_tokens, cost=reply.cost,
                        input_tokens=reply.usage.prompt_tokens)
            return reply.text

    Args:
        tokens: Tokens used.
        cost: Money spent (in whatever currency the job uses; reports show it as a number).
        counts: Any other counters (``input_tokens=``, ``requests=``, ``bytes=`` ...).

    Outside an attempt (calling the work function directly, in a unit test), it does nothing.

    Raises:
        TypeError: a value that is not a number.
        ValueError: a negative, NaN or infinite value.
    """
    meter = current.get()
    if tokens is not None:
        counts["tokens"] = tokens
    if cost is not None:
        counts["cost"] = cost
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"shoal.usage({name}={value!r}): expected a number")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"shoal.usage({name}={value!r}): expected a finite number >= 0")
    if meter is None or not counts:
        return
    meter.reports += 1
    totals = meter.usage
    if totals is None:
        meter.usage = dict(counts)
        return
    for name, value in counts.items():
        totals[name] = totals.get(name, 0) + value


def hold(seconds: float) -> None:
    """Ask the scheduler to pause the current attempt's key for ``seconds`` once it ends.

    For work that learns, from a reply that succeeded, that the other side has no budget left
    for now (``x-ratelimit-remaining-requests: 0``): its neighbours then wait instead of being
    answered 429. Outside an attempt, and on backends in other processes, it does nothing.
    """
    meter = current.get()
    if meter is not None and seconds > meter.hold:
        meter.hold = float(seconds)


def merge(into: dict[str, float] | None, more: dict[str, float]) -> dict[str, float]:
    """``into`` with ``more`` added (a new dict when ``into`` is ``None``)."""
    if into is None:
        return dict(more)
    for name, value in more.items():
        into[name] = into.get(name, 0) + value
    return into


class Reported:
    """A value from a worker process or cluster worker, with the usage its attempt reported."""

    __slots__ = ("usage", "value")

    def __init__(self, value: Any, usage: dict[str, float]) -> None:
        self.value = value
        self.usage = usage

    def __reduce__(self) -> tuple[Any, ...]:
        return (Reported, (self.value, self.usage))
