"""What runs on the other side of a process boundary: a batch of items, one result each.

The process, Dask and Ray backends ship *batches* of items (see ``_batching``): one task carries
several items, the remote side runs them one after another and reports each item's result or
exception separately, so a batch costs the engine's per-task overhead once while every item keeps
its own outcome. Nothing here imports more than the standard library, so a worker starts fast.

A result is a tuple ``(ok, value_or_exception, seconds)``; ``seconds`` is the time the work took
on the remote side, which the sender uses to size later batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import pickle
import time
import traceback
from collections.abc import Callable
from typing import Any

from .._usage import Meter, Reported, current

Result = tuple[bool, Any, float]


class RemoteError(Exception):
    """An exception from a worker that could not be sent back as itself (it does not pickle).

    It keeps the original's type name, message and traceback text.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, str(self), self.remote_traceback), self.__dict__)


def portable_error(exc: BaseException, where: str) -> BaseException:
    """``exc`` with the remote traceback attached as a note, or a :class:`RemoteError` stand-in
    when it would not survive the trip back (unpicklable, or cannot be rebuilt from its args)."""
    text = "".join(traceback.format_exception(exc))
    try:
        exc.add_note(f"(raised in {where}; its traceback there:)\n{text.rstrip()}")
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, a round-trip check
    except Exception:
        kind = type(exc)
        name = kind.__qualname__
        if kind.__module__ != "builtins":
            name = f"{kind.__module__}.{name}"
        stand_in = RemoteError(name, str(exc), text)
        stand_in.add_note(f"(raised in {where}; it could not be pickled back; its traceback:)")
        stand_in.add_note(text.rstrip())
        return stand_in
    return exc


class Runner:
    """Calls the work on one item at a time; runs coroutines on a loop of its own.

    What the work reports with ``shoal.usage()`` travels back with its result: a value wrapped
    in :class:`~shoal._usage.Reported`, or a ``shoal_usage`` attribute on the exception.
    """

    def __init__(self, work: Callable[[Any], Any], where: str) -> None:
        self.work = work
        self.where = where
        self._loop: asyncio.AbstractEventLoop | None = None
        self._meter = meter = Meter()
        self._token = current.set(meter)  # set once: reset per item below, cheaper than set/reset

    def run(self, item: Any) -> Result:
        meter = self._meter
        meter.take()
        start = time.perf_counter()
        try:
            value = self.work(item)
            if inspect.isawaitable(value):
                if self._loop is None:
                    self._loop = asyncio.new_event_loop()
                value = self._loop.run_until_complete(_await(value))
        except Exception as exc:
            error = portable_error(exc, self.where)
            used = meter.take()
            if used is not None:
                with contextlib.suppress(Exception):  # an exception type refusing attributes
                    error.shoal_usage = used  # type: ignore[attr-defined]
            return (False, error, time.perf_counter() - start)
        used = meter.take()
        if used is not None:
            value = Reported(value, used)
        return (True, value, time.perf_counter() - start)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        with contextlib.suppress(ValueError):  # closed from another context than its own
            current.reset(self._token)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_batch(work: Callable[[Any], Any], items: list[Any]) -> list[Result]:
    """Run ``work`` over ``items`` in order; one result per item, exceptions included.

    This is the task the Dask and Ray backends submit. Results that would not pickle are turned
    into errors for their own items here, so one bad value cannot fail its batch-mates.
    """
    import os

    runner = Runner(work, f"worker process {os.getpid()}")
    results: list[Result] = []
    try:
        for item in items:
            result = runner.run(item)
            if result[0]:
                try:
                    pickle.dumps(result[1])
                except Exception as exc:
                    exc.add_note("(the result of the work could not be pickled to send it back)")
                    result = (False, portable_error(exc, runner.where), result[2])
            results.append(result)
    finally:
        runner.close()
    return results
