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

``chaos(work, fail=0.2, throttle=0.1, slow=0.05, seed=1)`` wraps a work function so that it fails,
throttles and stalls on a seeded, repeatable share of its calls: a way to see what a job does when
its dependency misbehaves, before production shows you.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import selectors
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._codec import content_id
from ._events import AnyEvent, BreakerChanged, Event, LimitChanged, RunFinished, RunStarted
from ._exceptions import Throttled
from .backends import is_async_callable

__all__ = ["Chaos", "ChaosError", "EventLog", "FakeClock", "chaos"]

T = TypeVar("T")
E = TypeVar("E", bound=Event | LimitChanged | BreakerChanged | RunStarted | RunFinished)


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


# ---------------------------------------------------------------------- chaos


class ChaosError(ConnectionError):
    """A failure :func:`chaos` injected. A ``ConnectionError`` (an ``OSError``), like the
    transient failures it stands for, so ``Retry(on=(OSError,))`` retries it."""


class Chaos:
    """Work wrapped by :func:`chaos`: call it like the work itself.

    Attributes:
        work: The wrapped work function.
        injected: How many calls were failed, throttled and stalled so far: all of a job's, also
            on the process, Dask and Ray backends (the fates are drawn in the job's process).
    """

    def __init__(
        self,
        work: Callable[..., Any],
        *,
        fail: float,
        throttle: float,
        slow: float,
        seed: int,
        stall: float,
        retry_after: float | None,
    ) -> None:
        self.work = work
        self.fail = fail
        self.throttle = throttle
        self.slow = slow
        self.seed = seed
        self.stall = stall
        self.retry_after = retry_after
        self.injected: dict[str, int] = {"fail": 0, "throttle": 0, "slow": 0}
        self._calls: dict[str, int] = {}
        self._pid = os.getpid()
        self.__name__ = getattr(work, "__name__", type(work).__name__)
        self.__qualname__ = getattr(work, "__qualname__", self.__name__)
        self.__module__ = getattr(work, "__module__", __name__)
        self.__doc__ = getattr(work, "__doc__", None)
        # A chaos run shares its journal with plain runs of the work (Job.fingerprint): chaos
        # changes which attempts fail, never what a success returns.
        self.__shoal_inner_work__ = work

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_calls"] = {}
        return state

    def _fate(self, item: Any) -> str:
        """``"fail"``, ``"throttle"``, ``"slow"`` or ``"ok"`` for this call of ``item``.

        Drawn from ``(seed, the item's content hash, how many times this item was called
        before)``, so the same item meets the same fate on the same call whatever the order the
        pieces run in. A job on the process, Dask or Ray backend draws in its own process and
        sends each fate with its item (or its group, with ``batch_size=``), and with
        ``chunk_size=`` the worker draws for each attempt it makes (see :meth:`__shoal_split__`).
        A copy called directly in another process (by a backend of the user's) counts that
        process's calls and mixes in its process id, so that a retry there does not meet its
        first call's fate again: seeded, but not repeatable across runs.
        """
        return self._draw(item, "" if os.getpid() == self._pid else f":{os.getpid()}")

    def _draw(self, item: Any, salt: str = "") -> str:
        """The fate of this call of ``item`` (see :meth:`_fate`), ``salt`` mixed into the draw."""
        try:
            ident = content_id(item)
        except Exception:  # not JSON-like: its repr will do
            ident = repr(item)
        n = self._calls.get(ident, 0)
        self._calls[ident] = n + 1
        u = random.Random(f"{self.seed}:{ident}:{n}{salt}").random()
        if u < self.fail:
            fate = "fail"
        elif u < self.fail + self.throttle:
            fate = "throttle"
        elif u < self.fail + self.throttle + self.slow:
            fate = "slow"
        else:
            return "ok"
        self.injected[fate] += 1
        return fate

    def __call__(self, item: Any) -> Any:  # the sync and async subclasses do the work
        raise NotImplementedError

    def _act(self, fate: str, item: Any) -> Any:
        """Meet ``fate`` and run the work (sync or async, as the work is)."""
        raise NotImplementedError

    def __shoal_split__(self) -> tuple[Callable[[Any], str], Callable[[tuple[str, Any]], Any]]:
        """The two halves for a backend that runs the work in other processes: the draw, which
        the job's process makes for each call (so the fates and ``injected`` are those of a run
        in one process), and the work to send, which takes ``(fate, item)`` and acts on it. A
        worker that retries items itself (``chunk_size=``) uses both halves there."""
        return self._draw, (_AsyncFated if isinstance(self, _AsyncChaos) else _Fated)(self)

    def _raise(self, fate: str) -> None:
        if fate == "fail":
            raise ChaosError("chaos: injected failure")
        if fate == "throttle":
            raise Throttled(retry_after=self.retry_after, message="chaos: injected throttle")

    def __repr__(self) -> str:
        return (
            f"chaos({self.__qualname__}, fail={self.fail:g}, throttle={self.throttle:g}, "
            f"slow={self.slow:g}, seed={self.seed})"
        )


class _SyncChaos(Chaos):
    def __call__(self, item: Any) -> Any:
        return self._act(self._fate(item), item)

    def _act(self, fate: str, item: Any) -> Any:
        self._raise(fate)
        if fate == "slow":
            time.sleep(self.stall)
        return self.work(item)


class _AsyncChaos(Chaos):
    async def __call__(self, item: Any) -> Any:
        return await self._act(self._fate(item), item)

    async def _act(self, fate: str, item: Any) -> Any:
        self._raise(fate)
        if fate == "slow":
            await asyncio.sleep(self.stall)
        return await self.work(item)


class _Fated:
    """The half of a :class:`Chaos` sent to other processes: called with ``(fate, item)``, the
    fate drawn in the job's process, it fails, throttles, stalls or just runs the work."""

    def __init__(self, chaos: Chaos) -> None:
        self.chaos = chaos
        # What error messages and backends read off a work function: the work's own.
        self.__name__ = chaos.__name__
        self.__qualname__ = chaos.__qualname__
        self.__module__ = chaos.__module__

    def __call__(self, call: tuple[str, Any]) -> Any:
        return self.chaos._act(*call)


class _AsyncFated(_Fated):
    async def __call__(self, call: tuple[str, Any]) -> Any:
        return await self.chaos._act(*call)


def _share(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"chaos({name}={value!r}): expected a share of calls between 0 and 1")
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"chaos({name}={value!r}): must be between 0 and 1 (0.2: 20% of calls)")
    return float(value)


def chaos(
    work: Callable[..., Any],
    *,
    fail: float = 0.0,
    throttle: float = 0.0,
    slow: float = 0.0,
    seed: int = 0,
    stall: float = 5.0,
    retry_after: float | None = 1.0,
) -> Chaos:
    """Wrap ``work`` (sync or async) to misbehave on a seeded, repeatable share of its calls.

    Each call draws its fate once: it raises :class:`ChaosError` (share ``fail``), raises
    ``shoal.Throttled(retry_after=retry_after)`` (share ``throttle``), stalls ``stall`` seconds
    and then runs the work (share ``slow``), or just runs the work. The draw depends on the
    seed, the item's content and how often that item was called before, not on timing, so a run
    with a ``FakeClock`` and the same seed repeats exactly, and a job meets the same fates on every
    backend: on the process, Dask and Ray backends the draws are made in the job's process and
    travel with the items (with ``chunk_size=``, where a worker makes an item's attempts itself,
    it draws for each; ``injected`` then counts only this process's draws). ``shoal run --chaos
    fail=0.2,throttle=0.1,slow=0.05,seed=1`` does the same from the command line::

        job = shoal.Job(chaos(fetch, fail=0.2, throttle=0.1, seed=1), retry=shoal.Retry(attempts=5))

    Args:
        work: The work function (a plain function or an ``async def``).
        fail, throttle, slow: Shares of calls (each 0-1, together at most 1).
        seed: The seed of the draws.
        stall: Seconds a slow call waits before it runs the work (``time.sleep`` for plain
            functions, ``asyncio.sleep`` for async ones).
        retry_after: What the injected throttles ask for (``None``: the retry policy's backoff).

    Returns:
        A callable like ``work`` (async if it is), picklable when ``work`` is, whose
        ``injected`` counts what it did. A journal treats it as ``work`` itself.

    Raises:
        TypeError, ValueError: shares outside 0-1 or adding up to more than 1, a negative
            stall, work that is not callable.
    """
    if not callable(work):
        raise TypeError(f"chaos(work={work!r}): expected the work function to wrap")
    shares = {
        name: _share(name, value)
        for name, value in (("fail", fail), ("throttle", throttle), ("slow", slow))
    }
    if sum(shares.values()) > 1 + 1e-9:
        raise ValueError(
            f"chaos(fail={fail:g}, throttle={throttle:g}, slow={slow:g}): the shares add up to "
            "more than 1; each call meets one fate at most"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"chaos(seed={seed!r}): expected a whole number")
    if isinstance(stall, bool) or not isinstance(stall, int | float):
        raise TypeError(f"chaos(stall={stall!r}): expected seconds >= 0")
    if not math.isfinite(stall) or stall < 0:
        raise ValueError(f"chaos(stall={stall!r}): must be a finite number of seconds >= 0")
    if retry_after is not None:
        Throttled(retry_after=retry_after)  # the same checks as the throttles it will raise
    kind = _AsyncChaos if is_async_callable(work) else _SyncChaos
    return kind(
        work,
        fail=shares["fail"],
        throttle=shares["throttle"],
        slow=shares["slow"],
        seed=seed,
        stall=float(stall),
        retry_after=None if retry_after is None else float(retry_after),
    )
