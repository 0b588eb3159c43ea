"""Micro-batching: many small attempts shipped to another process as one task.

An engine's own cost per task (a process round trip, a Dask or Ray task) is paid per *batch*
instead of per item: the invocations that arrive while the engine is busy, or in the same
event-loop turn, leave together, and each item's awaitable still resolves on its own. The
scheduler never sees batches: it keeps counting attempts, limits and timeouts per item.

Batch sizes adapt. The remote side measures how long each item took, and a batch holds about
``target`` seconds of work (20 ms by default: long enough to hide a millisecond of per-task
overhead, short enough that a batch-mate waits little), but never more than its fair share of what
is waiting (so every worker gets some) and just one item until a first duration is known (so a
slow first piece is not stuck behind others). An item's attempt time, and so its timeout, includes
the time it waits behind its batch-mates; the target keeps that wait small. A Dask or Ray task
cannot hand back the items queued in it, so once an item times out, items travel one by one for a
while (``SOLO_AFTER_TIMEOUT``); and a task that fails as a whole (its worker lost more often than
the engine retries) has its items sent again one by one, without using an attempt, so only the
item to blame fails. (The process backend does better on both counts: see ``_process``.)
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from ._remote import Result

H = TypeVar("H")

DEFAULT_TARGET = 0.02
# Seconds after a cancelled (timed-out) item during which a MicroBatcher ships items one by one.
SOLO_AFTER_TIMEOUT = 5.0


class BatchSizer:
    """Chooses how many waiting items go into the next batch, from measured durations.

    Args:
        target: Seconds of work one batch should hold.
        max_size: A hard cap (``None``: only the fair share caps it).
    """

    __slots__ = ("_per_item", "max_size", "target")

    def __init__(self, target: float = DEFAULT_TARGET, max_size: int | None = None) -> None:
        if not target > 0:
            raise ValueError(f"target={target!r}: seconds of work per batch must be > 0")
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size={max_size!r}: must be >= 1 or None")
        self.target = target
        self.max_size = max_size
        self._per_item: float | None = None

    @property
    def per_item(self) -> float | None:
        """The smoothed seconds one item takes on the remote side (``None`` before any)."""
        return self._per_item

    def observe(self, seconds: float, count: int) -> None:
        """Fold in ``count`` items that took ``seconds`` in all (an exponential average)."""
        if count <= 0:
            return
        sample = max(seconds / count, 1e-7)
        old = self._per_item
        self._per_item = sample if old is None else 0.7 * old + 0.3 * sample

    def size(self, waiting: int, slots: int) -> int:
        """Items for the next batch when ``waiting`` wait and ``slots`` batches may leave now."""
        fair = math.ceil(waiting / max(1, slots))
        per_item = self._per_item
        by_time = 1 if per_item is None else max(1, int(self.target / per_item))
        size = min(fair, by_time)
        if self.max_size is not None:
            size = min(size, self.max_size)
        return max(1, size)


class _Entry:
    __slots__ = ("future", "item", "solo")

    def __init__(self, item: Any, future: asyncio.Future[Any]) -> None:
        self.item = item
        self.future = future
        self.solo = False  # ship it alone: its last batch failed as a whole


class MicroBatcher(Generic[H]):
    """Groups invocations into batches for an engine with remote tasks (Dask, Ray).

    Args:
        ship: ``items -> (handle, awaitable of one Result per item)``: start one remote task.
        cancel: ``handle -> None``: stop a task whose items were all cancelled (best effort).
        slots: Batches in flight at once (a little more than the workers, so none waits idle
            for the next batch's round trip).
        sizer: Chooses each batch's size.
    """

    def __init__(
        self,
        ship: Callable[[list[Any]], tuple[H, Awaitable[list[Result]]]],
        cancel: Callable[[H], None],
        *,
        slots: int,
        sizer: BatchSizer,
    ) -> None:
        self._ship = ship
        self._cancel = cancel
        self._slots = max(1, slots)
        self._sizer = sizer
        self._loop = asyncio.get_running_loop()
        self._pending: deque[_Entry] = deque()
        self._in_flight: dict[asyncio.Task[None], tuple[H, list[_Entry]]] = {}
        self._kick_scheduled = False
        self._closed = False
        self._solo_until = 0.0  # loop time: after a timeout, nothing is batched for a while

    def submit(self, item: Any) -> asyncio.Future[Any]:
        """The invoker: queue ``item``; its future resolves with its own result."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._closed:
            future.set_exception(RuntimeError("the backend is closed"))
            return future
        entry = _Entry(item, future)
        future.add_done_callback(lambda f: self._on_item_done(entry, f))
        self._pending.append(entry)
        if not self._kick_scheduled:
            # Wait for the rest of this loop turn: the scheduler starts many attempts at once.
            self._kick_scheduled = True
            self._loop.call_soon(self._dispatch)
        return future

    def _dispatch(self) -> None:
        self._kick_scheduled = False
        pending = self._pending
        while pending and len(self._in_flight) < self._slots and not self._closed:
            while pending and pending[0].future.done():
                pending.popleft()  # cancelled while it waited
            if not pending:
                return
            free = self._slots - len(self._in_flight)
            size = self._sizer.size(len(pending), free)
            if pending[0].solo or self._loop.time() < self._solo_until:
                size = 1
            batch: list[_Entry] = []
            while pending and len(batch) < size and not (batch and pending[0].solo):
                entry = pending.popleft()
                if not entry.future.done():
                    batch.append(entry)
            if not batch:
                continue
            try:
                handle, awaitable = self._ship([e.item for e in batch])
            except Exception as exc:  # e.g. an item that cannot be serialized
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_exception(exc)
                continue
            task = self._loop.create_task(self._wait(awaitable, batch))
            self._in_flight[task] = (handle, batch)

    async def _wait(self, awaitable: Awaitable[list[Result]], batch: list[_Entry]) -> None:
        try:
            results = await awaitable
        except asyncio.CancelledError:
            for entry in batch:
                if not entry.future.done():
                    entry.future.cancel()
            raise
        except Exception as exc:
            # The whole task failed (a worker lost more often than the engine retries it, a
            # value that did not deserialize). One item is to blame, most likely, and nothing
            # says which: each item runs again alone, not counting an attempt, so only the
            # culprit fails (and goes through the retry policy); alone, an item fails with it.
            live = [e for e in batch if not e.future.done()]
            if len(live) > 1:
                for entry in reversed(live):
                    entry.solo = True
                    self._pending.appendleft(entry)
            else:
                for entry in live:
                    entry.future.set_exception(exc)
        else:
            total = 0.0
            for entry, (ok, value, seconds) in zip(batch, results, strict=True):
                total += seconds
                if entry.future.done():
                    continue
                if ok:
                    entry.future.set_result(value)
                else:
                    entry.future.set_exception(value)
            self._sizer.observe(total, len(batch))
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.pop(task, None)
            if self._pending and not self._closed:
                self._dispatch()

    def _on_item_done(self, entry: _Entry, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() or self._closed:
            return
        # A cancelled item (its attempt timed out): when every item of its batch is cancelled,
        # stop the remote task too. A remote task cannot give back the items queued in it, so
        # while timeouts happen, items travel alone (a slow item then holds up no batch-mate).
        self._solo_until = self._loop.time() + SOLO_AFTER_TIMEOUT
        for handle, batch in self._in_flight.values():
            if entry in batch:
                if all(e.future.cancelled() for e in batch):
                    self._cancel(handle)
                return

    async def close(self) -> None:
        """Cancel what is waiting or in flight."""
        self._closed = True
        for entry in self._pending:
            entry.future.cancel()
        self._pending.clear()
        tasks = list(self._in_flight)
        for handle, _batch in self._in_flight.values():
            try:
                self._cancel(handle)
            except Exception:  # noqa: S112 - best effort while closing
                continue
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._in_flight.clear()
