"""Limited mode: ``Job(batch_size=N)`` hands the work a list of N items at a time.

For batch APIs and bulk inserts, where one call takes many items and the limits (rate,
concurrency) are on calls. The scheduler runs *groups* as its pieces, so limits, retries and
timeouts apply per call; here the groups are made on the way in and taken apart on the way out,
so the run still reports one outcome per item, in input order.

The work returns one result per item, in order (any sequence of the same length). A returned
element that is an exception fails that item alone (say, one row a bulk insert rejected); an
exception raised by the work fails the call, which is retried as a whole, and if it still fails,
every item of the group fails with it. A group's key is its first item's key. Events and
journal records are per group (their ``index`` is the group's number).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from ._outcome import ErrorInfo, Outcome, RunStats
from ._split import batches, plain, unwrap
from .backends._base import split_work


class BatchResultError(TypeError):
    """The work in limited mode did not return one result per item."""


def check_batch_size(batch_size: object) -> int | None:
    """``batch_size`` validated: ``None`` or a whole number >= 1."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"batch_size={batch_size!r}: expected a whole number >= 1 (the work then gets a list "
            "of that many items), or None"
        )
    return batch_size


def group_items(items: Iterable[Any] | AsyncIterable[Any], size: int) -> Any:
    """Lists of up to ``size`` consecutive items, pulled lazily (sync or async alike)."""
    if isinstance(items, AsyncIterable):
        return _agroups(items, size)
    return batches(items, size)


async def _agroups(items: AsyncIterable[Any], size: int) -> AsyncIterator[list[Any]]:
    group: list[Any] = []
    async for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _check(group: list[Any], results: Any) -> list[Any]:
    if isinstance(results, str | bytes) or not isinstance(results, Sequence):
        raise BatchResultError(
            f"with batch_size, the work gets a list of items and must return a list with one "
            f"result per item; it returned {type(results).__name__}"
        )
    if len(results) != len(group):
        raise BatchResultError(
            f"with batch_size, the work must return one result per item: it returned "
            f"{len(results)} results for {len(group)} items"
        )
    return list(results)


class GroupWork:
    """The work as the scheduler sees it in limited mode: a group in, checked results out.

    Items a splitter made reach the work as their values; a line that could not be read is not
    sent, and fails alone (as a returned exception does). A class at module level, not a
    closure, so it pickles for the process, Dask and Ray backends whenever the user's work does.
    """

    def __init__(self, work: Callable[[list[Any]], Any]) -> None:
        self.work = work
        self.__name__ = getattr(work, "__name__", type(work).__name__)
        self.__qualname__ = getattr(work, "__qualname__", self.__name__)

    def __call__(self, group: list[Any]) -> list[Any]:
        return self._run(group, self.work)

    def _run(self, group: list[Any], work: Callable[[list[Any]], Any]) -> list[Any]:
        if plain(group):
            return _check(group, work(group))
        values, unread = _values(group)
        results = _check(values, work(values)) if values else []
        return _merge(results, unread, len(group))

    def __shoal_split__(self) -> tuple[Callable[[list[Any]], Any], GroupWork] | None:
        """The work's own split (see ``Backend``), made for groups: the part run here gets the
        values the work would get, and the part sent takes ``(its answer, group)``; ``None``
        when the work has no split."""
        parts = split_work(self.work)
        if parts is None:
            return None
        here, there = parts

        def draw(group: list[Any]) -> Any:
            values = group if plain(group) else _values(group)[0]
            return here(values) if values else None  # no values: the work is not called

        sent = _AsyncAnswered if isinstance(self, AsyncGroupWork) else _Answered
        return draw, sent(there)


class AsyncGroupWork(GroupWork):
    """:class:`GroupWork` for ``async def`` work."""

    async def __call__(self, group: list[Any]) -> list[Any]:  # type: ignore[override]
        return await self._arun(group, self.work)

    async def _arun(self, group: list[Any], work: Callable[[list[Any]], Any]) -> list[Any]:
        simple = plain(group)
        values, unread = (group, {}) if simple else _values(group)
        if not values:
            return _merge([], unread, len(group))
        results = work(values)
        if inspect.isawaitable(results):
            results = await results
        checked = _check(values, results)
        return checked if simple else _merge(checked, unread, len(group))


class _Answered(GroupWork):
    """The part of a split work sent to other processes, for groups: called with ``(answer,
    group)``, it hands the work's part ``(answer, values)``."""

    def __call__(self, call: tuple[Any, list[Any]]) -> list[Any]:  # type: ignore[override]
        answer, group = call
        return self._run(group, functools.partial(_answered, self.work, answer))


class _AsyncAnswered(AsyncGroupWork):
    async def __call__(self, call: tuple[Any, list[Any]]) -> list[Any]:  # type: ignore[override]
        answer, group = call
        return await self._arun(group, functools.partial(_answered, self.work, answer))


def _answered(work: Callable[[Any], Any], answer: Any, values: list[Any]) -> Any:
    return work((answer, values))


def _values(group: list[Any]) -> tuple[list[Any], dict[int, BaseException]]:
    """The values to send, and the errors of the lines that could not be read, by position."""
    values: list[Any] = []
    unread: dict[int, BaseException] = {}
    for position, raw in enumerate(group):
        value, _, error = unwrap(raw)
        if error is None:
            values.append(value)
        else:
            unread[position] = error
    return values, unread


def _merge(results: list[Any], unread: dict[int, BaseException], size: int) -> list[Any]:
    """The work's results with the unread lines' errors back in their places."""
    if not unread:
        return results
    sent = iter(results)
    return [unread[i] if i in unread else next(sent) for i in range(size)]


def ungroup(outcomes: Sequence[Outcome[Any]], size: int) -> list[Outcome[Any]]:
    """One outcome per item from the groups' outcomes, in the groups' order (an item a splitter
    made keeps its provenance; a line that could not be read fails with its own error)."""
    result: list[Outcome[Any]] = []
    for outcome in outcomes:
        group = outcome.item
        values: Any = outcome.value
        base = outcome.index * size
        for offset, raw in enumerate(group):
            item, provenance, unread = unwrap(raw)
            value: Any = values[offset] if outcome.ok else None
            if unread is not None:
                value = unread
            changes: dict[str, Any] = {"index": base + offset, "item": item}
            if provenance is not None:
                changes["provenance"] = provenance
            if isinstance(value, BaseException):
                changes.update(ok=False, value=None, error=ErrorInfo.from_exception(value))
            elif outcome.ok:
                changes["value"] = value
            result.append(dataclasses.replace(outcome, **changes))
    return result


def item_stats(stats: RunStats, outcomes: Sequence[Outcome[Any]]) -> RunStats:
    """The run's counts per item (attempts, retries and throttles stay per call)."""
    succeeded = sum(1 for o in outcomes if o.ok)
    return dataclasses.replace(
        stats, total=len(outcomes), succeeded=succeeded, failed=len(outcomes) - succeeded
    )
