"""The backend interface: where an attempt runs.

A backend turns the work function into an *invoker*, ``item -> awaitable result``, that the
scheduler awaits inside one attempt. Everything else (limits, retries, timeouts, ordering) stays in
the scheduler, so every backend behaves the same way.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

Invoker = Callable[[Any], Awaitable[Any]]


@runtime_checkable
class Backend(Protocol):
    """Runs attempts. Started once per run, closed once at its end.

    A backend that runs the work in other processes says so with ``remote = True`` (optional;
    shoal's process, Dask and Ray backends do): work with a part that must run in the job's own
    process for each call (``shoal.testing.chaos`` draws its fates there) is then split in two.
    """

    name: str

    async def start(self, work: Callable[..., Any], *, concurrency: int) -> Invoker:
        """Get ready to run ``work`` with up to ``concurrency`` attempts at once."""
        ...

    async def close(self) -> None:
        """Release every resource; attempts still running are abandoned."""
        ...


Split = tuple[Callable[[Any], Any], Callable[[Any], Any]]


def split_work(work: object) -> Split | None:
    """A work's two parts, if it has them (``__shoal_split__``: ``shoal.testing.chaos``): one to
    run in the process that makes each call, whose answer goes with the item, ``(answer, item)``,
    to the other; ``None`` for work that is all one part."""
    split = getattr(work, "__shoal_split__", None)
    parts: Split | None = split() if split is not None else None
    return parts


def call_split(here: Callable[[Any], Any], there: Callable[[Any], Any], item: Any) -> Any:
    """One call of a split work: ``here``'s answer for ``item`` goes to ``there`` with it."""
    return there((here(item), item))


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` gives a coroutine: ``async def``, a partial of one, or an object
    whose ``__call__`` is ``async def``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class's own __call__
    return call is not None and inspect.iscoroutinefunction(call)
