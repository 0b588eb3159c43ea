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
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from ._outcome import ErrorInfo, Outcome, RunStats
from ._split import batches


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

    A class at module level, not a closure, so it pickles for the process, Dask and Ray
    backends whenever the user's work does.
    """

    def __init__(self, work: Callable[[list[Any]], Any]) -> None:
        self.work = work
        self.__name__ = getattr(work, "__name__", type(work).__name__)
        self.__qualname__ = getattr(work, "__qualname__", self.__name__)

    def __call__(self, group: list[Any]) -> list[Any]:
        return _check(group, self.work(group))


class AsyncGroupWork(GroupWork):
    """:class:`GroupWork` for ``async def`` work."""

    async def __call__(self, group: list[Any]) -> list[Any]:  # type: ignore[override]
        results = self.work(group)
        if inspect.isawaitable(results):
            results = await results
        return _check(group, results)


def ungroup(outcomes: Sequence[Outcome[Any]], size: int) -> list[Outcome[Any]]:
    """One outcome per item from the groups' outcomes, in the groups' order."""
    result: list[Outcome[Any]] = []
    for outcome in outcomes:
        group = outcome.item
        base = outcome.index * size
        for offset, item in enumerate(group):
            if outcome.ok:
                values: Any = outcome.value
                value = values[offset]
                if isinstance(value, BaseException):
                    item_outcome = dataclasses.replace(
                        outcome,
                        index=base + offset,
                        item=item,
                        ok=False,
                        value=None,
                        error=ErrorInfo.from_exception(value),
                    )
                else:
                    item_outcome = dataclasses.replace(
                        outcome, index=base + offset, item=item, value=value
                    )
            else:
                item_outcome = dataclasses.replace(outcome, index=base + offset, item=item)
            result.append(item_outcome)
    return result


def item_stats(stats: RunStats, outcomes: Sequence[Outcome[Any]]) -> RunStats:
    """The run's counts per item (attempts, retries and throttles stay per call)."""
    succeeded = sum(1 for o in outcomes if o.ok)
    return dataclasses.replace(
        stats, total=len(outcomes), succeeded=succeeded, failed=len(outcomes) - succeeded
    )
