"""Helpers for testing code that uses shoal (and shoal itself).

``FakeClock`` runs a job on an event loop whose time is virtual: whenever every task is waiting on
a timer, time jumps straight to the next one. Backoff, rate limits, timeouts and the work's own
``asyncio.sleep`` calls then take no real time, and the schedule is exact::

    clock = FakeClock()
    events = EventLog()
    run = job.run(items, clock=clock, rng=random.Random(7), subscribers=events)
    assert [e.time for e in events.of(AttemptStarted)] == [0.0, 0.0, 1.0, 1.0]

Work that runs in threads keeps running in real time while virtual time may jump ahead, so exact
schedules are for ``async def`` work.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._events import AnyEvent, Event, LimitChanged, RunFinished, RunStarted

__all__ = ["EventLog", "FakeClock"]

T = TypeVar("T")
E = TypeVar("E", bound=Event | LimitChanged | RunStarted | RunFinished)


class _VirtualSelector(selectors.DefaultSelector):
    """Instead of sleeping until the next timer, move the clock there and poll."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            self._clock.advance(timeout)
            timeout = 0
        result: list[tuple[selectors.SelectorKey, int]] = super().select(timeout)
        return result


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(_VirtualSelector(clock))
        self._fake_clock = clock

    def time(self) -> float:
        return self._fake_clock.now()


class FakeClock:
    """A clock whose time only moves when every task waits on a timer (or when told to).

    Args:
        start: The monotonic time it starts at.
        wall_start: What ``wall()`` returns at ``start`` (seconds since the epoch).

    Attributes:
        sleeps: Every ``sleep()`` asked of this clock, in order.
    """

    def __init__(self, start: float = 0.0, *, wall_start: float = 0.0) -> None:
        self._now = float(start)
        self._start = float(start)
        self._wall_start = float(wall_start)
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall_start + (self._now - self._start)

    def advance(self, seconds: float) -> None:
        """Move time forward (timers that fall due run at the loop's next turn)."""
        if seconds < 0:
            raise ValueError(f"advance({seconds!r}): time does not go backwards")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        if not isinstance(loop, _VirtualLoop) or loop._fake_clock is not self:
            raise RuntimeError(
                "FakeClock.sleep() must run on the clock's own loop: use clock.run(coro), or "
                "pass clock= to job.run()/shoal.testing helpers"
            )
        self.sleeps.append(seconds)
        await asyncio.sleep(seconds)

    def loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop]:
        return lambda: _VirtualLoop(self)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on a virtual-time loop driven by this clock."""
        with asyncio.Runner(loop_factory=self.loop_factory()) as runner:
            return runner.run(coro)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:g})"


class EventLog:
    """A subscriber that keeps every event, for assertions."""

    def __init__(self) -> None:
        self.events: list[AnyEvent] = []

    def __call__(self, event: AnyEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[E]) -> list[E]:
        """The events of one kind, in order."""
        return [e for e in self.events if isinstance(e, kind)]

    def __len__(self) -> int:
        return len(self.events)
