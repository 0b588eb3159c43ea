"""Time, injected.

The scheduler reads time only through a :class:`Clock`. A clock's ``now()`` is on the same time
base as the event loop it runs on, so that the delays the scheduler computes from ``now()`` can be
handed to the loop's timers unchanged. :class:`MonotonicClock` is the real one;
``shoal.testing.FakeClock`` drives a loop of its own whose time is virtual and jumps ahead whenever
every task is waiting on a timer, so tests of limits, backoff and scheduling assert exact schedules
without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Where the scheduler gets its time from."""

    def now(self) -> float:
        """Monotonic seconds, on the running event loop's time base."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch, for timestamps in outcomes and reports."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    def loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        """The event loop the synchronous entry points must run on, or ``None`` for the default."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` (the default loop's time base) and ``asyncio.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        return None

    def __repr__(self) -> str:
        return "MonotonicClock()"
