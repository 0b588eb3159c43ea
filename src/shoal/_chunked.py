"""Chunked pieces: ``Job(chunk_size=N)`` sends N items per task to worker processes or a cluster.

For many small CPU-bound items, shoal's own bookkeeping per piece (a few microseconds: admission,
a future, a frame back, an outcome) costs more than the work. A process pool's ``chunksize``
answers that by shipping items in lists; ``chunk_size`` does the same, and keeps shoal's promises
per item:

- Each item still gets its own outcome, in input order, with its own attempts, retry causes,
  throttle waits, usage and timing.
- Retries are per item, with the job's ``Retry``: a failed item is tried again *in the worker*,
  after the same jittered backoff (the worker sleeps), while its chunk-mates' results stand.
  ``Throttled`` waits there too and uses no attempt.
- A chunk that fails as a whole (its worker crashed, or it ran past ``timeout`` x its length and
  was stopped) costs its items nothing: they run again one at a time, with every per-item rule
  (retries, timeouts, crash isolation), so only the item to blame fails.

What is per chunk rather than per item: the concurrency limit (chunks in flight), events and the
live progress (they count chunks), and the report's figures for the first pass. Rates, keys and
per-key limits count items, so they cannot be combined with chunks (use ``batch_size`` for
calls that take lists); nor can a journal (it records pieces, and a chunk is not a stable piece).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import random
import time
from collections.abc import AsyncIterable, Callable, Iterable
from itertools import accumulate, chain, islice, repeat
from typing import TYPE_CHECKING, Any

from ._limits import Limits
from ._outcome import ErrorInfo, Outcome, Run, RunStats, explain, type_name
from ._retry import Retry, throttle_delay
from ._split import plain, unwrap
from ._usage import Meter, current
from .backends._base import call_split, is_async_callable, split_work
from .backends._remote import portable_error

if TYPE_CHECKING:
    from ._job import Job

CHUNKABLE = ("process", "dask", "ray")


class ItemFailed:
    """An item of a chunk that failed: the (picklable) exception, in the item's result slot."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (ItemFailed, (self.error,))


# What a chunk sends back: one value (or ItemFailed) per item, each item's duration (the items
# of a chunk run one after another), and, only for items that needed more than one plain attempt
# or reported usage, (attempts, throttles, retry causes, throttle wait, usage) by position.
ChunkResult = tuple[
    list[Any],
    list[float],
    dict[int, tuple[int, int, tuple[str, ...], float, dict[str, float] | None]],
]


class ChunkWork:
    """The work as a worker runs it in chunked mode: each item of a list, with the job's retry
    policy applied in the worker. A module-level class, so it pickles whenever the work does."""

    def __init__(self, work: Callable[[Any], Any], retry: Retry) -> None:
        self.work = work
        self.retry = retry
        self.__name__ = getattr(work, "__name__", type(work).__name__)
        self.__qualname__ = getattr(work, "__qualname__", self.__name__)
        # Jobs are fingerprinted by the work they run (see Job.fingerprint).
        self.__shoal_inner_work__ = getattr(work, "__shoal_inner_work__", work)

    def __call__(self, items: list[Any]) -> ChunkResult:
        values: list[Any] = []
        durations: list[float] = []
        extras: dict[int, tuple[int, int, tuple[str, ...], float, dict[str, float] | None]] = {}
        rng = random.Random()
        loop: asyncio.AbstractEventLoop | None = None
        meter = Meter()
        token = current.set(meter)
        maybe_async = is_async_callable(self.work)
        work = self._caller()
        clock = time.perf_counter
        append_value = values.append
        append_duration = durations.append
        simple = plain(items)
        start = clock()
        try:
            for position, raw in enumerate(items):
                item = raw
                if not simple:  # a splitter's items: the work gets the value
                    item, _, unread = unwrap(raw)
                    if unread is not None:  # a line that could not be read fails, unsent
                        append_value(ItemFailed(unread))
                        extras[position] = (0, 0, (), 0.0, None)
                        append_duration(0.0)
                        continue
                try:  # the common case first: one attempt, nothing to report
                    value = work(item)
                    if maybe_async or inspect.isawaitable(value):
                        if loop is None:
                            loop = asyncio.new_event_loop()
                        value = loop.run_until_complete(_await(value))
                except Exception as exc:
                    value, extra = self._again(work, item, exc, rng, meter, start, loop)
                    loop = extra[5]
                    extras[position] = extra[:5]
                else:
                    if meter.usage is not None:
                        extras[position] = (1, 0, (), 0.0, meter.take())
                append_value(value)
                end = clock()
                append_duration(end - start)  # each item starts when the one before ends
                start = end
        finally:
            current.reset(token)
            if loop is not None:
                loop.close()
        return values, durations, extras

    def _caller(self) -> Callable[[Any], Any]:
        """What runs one attempt of an item here: the work, or, for a work with a part to run
        in the job's process for each call (``__shoal_split__``: chaos draws its fates), both of
        its parts, since this worker makes the attempts (retries included) itself."""
        parts = split_work(self.work)
        return self.work if parts is None else functools.partial(call_split, *parts)

    def _again(
        self,
        work: Callable[[Any], Any],
        item: Any,
        exc: Exception,
        rng: random.Random,
        meter: Meter,
        start: float,
        loop: asyncio.AbstractEventLoop | None,
    ) -> tuple[Any, tuple[Any, ...]]:
        """After a first attempt raised ``exc``: retry ``item`` as the scheduler would."""
        retry = self.retry
        attempts, throttles, waited = 1, 0, 0.0
        causes: tuple[str, ...] = ()
        while True:
            delay: float
            hint = throttle_delay(exc)
            if hint is not False:
                attempts -= 1  # a throttle does not use up an attempt
                throttles += 1
                if throttles > retry.max_throttles:
                    explain(
                        exc,
                        f"(throttled {throttles} times, more than Retry(max_throttles="
                        f"{retry.max_throttles}) allows)",
                    )
                    attempts += 1
                    break
                delay = (
                    retry.backoff(throttles, rng) if hint is None or hint is True else float(hint)
                )
                waited += delay
            elif attempts < retry.attempts and retry.retries_on(exc):
                delay = retry.backoff(attempts, rng)
                causes = (*causes, type_name(exc))
            else:
                break
            if retry.deadline is not None and time.perf_counter() + delay - start > retry.deadline:
                explain(exc, "(the piece's retry deadline passed)")
                attempts += hint is not False
                break
            time.sleep(delay)
            attempts += 1
            try:
                value = work(item)
                if inspect.isawaitable(value):
                    if loop is None:
                        loop = asyncio.new_event_loop()
                    value = loop.run_until_complete(_await(value))
            except Exception as again:
                exc = again
                continue
            return value, (attempts, throttles, causes, waited, meter.take(), loop)
        error = ItemFailed(portable_error(exc, "a chunk in a worker"))
        return error, (attempts, throttles, causes, waited, meter.take(), loop)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def check_chunk_size(job: Job[Any, Any]) -> None:
    """Raise for ``chunk_size`` combined with what counts items, or on a backend without it."""
    size = job.chunk_size
    if size is None:
        return
    problems = []
    if job.batch_size is not None:
        problems.append("batch_size (chunks already group items; pick one)")
    if job.key is not None or job.limits.per_key is not None or job.limits.adaptive:
        problems.append("key=, per_key or adaptive limits (they count items, chunks hide them)")
    if job.limits.rates:
        problems.append("rates (they count items per second; use batch_size for list calls)")
    problems.extend(
        f"{name}= (it acts per attempt, which chunks hide)"
        for name in ("hedge", "retry_budget", "breaker", "max_failure_rate")
        if getattr(job, name, None) is not None
    )
    backend = job.backend
    if isinstance(backend, str):
        name = backend.strip().lower()
        if name == "auto":
            name = "process" if job.cpu_bound else "async or thread"
    else:
        name = str(getattr(backend, "name", type(backend).__name__))
    if name not in CHUNKABLE:
        problems.append(
            f"the {name} backend (chunks are for the process, dask and ray backends, where a "
            "task costs a round trip; use backend='process' or cpu_bound=True)"
        )
    if problems:
        raise ValueError(f"chunk_size={size} cannot be combined with " + "; ".join(problems))


async def arun_chunked(
    job: Job[Any, Any],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    clock: Any,
    rng: random.Random | None,
    subscribers: Any,
    progress: Any,
    on_interrupt: Callable[[int], object] | None,
) -> Run[Any]:
    """Run ``job`` over ``items`` in chunks; one outcome per item (see the module's docstring)."""
    from ._job import Job
    from ._limited import group_items

    size = job.chunk_size
    assert size is not None
    chunk_job = Job(
        ChunkWork(job.work, job.retry),
        limits=Limits(concurrency=job.limits.concurrency),
        retry=Retry(attempts=1),  # a chunk failing as a whole is split, not sent again
        timeout=None if job.timeout is None else job.timeout * size,
        backend=job.backend,
        cpu_bound=job.cpu_bound,
        name=job.name,
    )
    began = time.monotonic()
    first = await chunk_job.arun(
        group_items(items, size),
        clock=clock,
        rng=rng,
        subscribers=subscribers,
        progress=progress,
        on_interrupt=on_interrupt,
    )
    chunks = first.outcomes
    # The items' outcomes are made when first asked for (``shoal.map`` needs only the values);
    # the chunks with anything but plain successes are made now, for the run's stats.
    unusual: list[Outcome[Any]] = []  # items that were not one plain success
    early: dict[int, list[Outcome[Any]]] = {}
    redo: list[tuple[int, Any]] = []
    bases: list[int] = []  # each chunk's first item's index
    index = 0
    for number, chunk in enumerate(chunks):
        group: list[Any] = chunk.item
        bases.append(index)
        if not chunk.ok:  # crashed or timed out as a whole: its items run again one at a time
            redo.extend((index + offset, item) for offset, item in enumerate(group))
        elif _result(chunk)[2]:  # extras: retries, throttles, usage or failures
            early[number] = _per_item(chunk, group, index, unusual)
        index += len(group)
    total = index
    # Completion order: chunk by chunk as they settled, each chunk's items in order; the items
    # run again one by one come last, in the order they settled then.
    completion: list[int] = []
    for number in first.completion_order:
        if chunks[number].ok:
            base = bases[number]
            completion.extend(range(base, base + len(chunks[number].item)))
    again: dict[int, Outcome[Any]] = {}
    if redo:
        single = Job(
            job.work,
            limits=Limits(concurrency=job.limits.concurrency),
            retry=job.retry,
            timeout=job.timeout,
            backend=job.backend,
            cpu_bound=job.cpu_bound,
            name=job.name,
        )
        second = await single.arun([item for _, item in redo], clock=clock, rng=rng)
        completion.extend(redo[number][0] for number in second.completion_order)
        for (at, _), outcome in zip(redo, second.outcomes, strict=True):
            again[at] = dataclasses.replace(outcome, index=at)
            unusual.append(again[at])
    stats = _stats(total, unusual, first.stats, time.monotonic() - began)

    def build() -> list[Outcome[Any]]:
        outcomes: list[Outcome[Any]] = []
        for number, chunk in enumerate(chunks):
            if not chunk.ok:
                base = bases[number]
                outcomes.extend(again[at] for at in range(base, base + len(chunk.item)))
            elif number in early:
                outcomes.extend(early[number])
            else:
                outcomes.extend(_per_item(chunk, chunk.item, bases[number], []))
        return outcomes

    values: list[Any] | None = None
    if stats.failed == 0 and not redo:  # every value is in the chunks' results, in order
        values = list(chain.from_iterable(_result(chunk)[0] for chunk in chunks))
    return Run.deferred(
        build,
        stats,
        values=values,
        combine=job.combine,
        name=job.name,
        completion_order=completion,
    )


def _result(chunk: Outcome[ChunkResult]) -> ChunkResult:
    """What a chunk that succeeded sent back."""
    result = chunk.value
    assert result is not None
    return result


_PLAIN = (1, 0, (), 0.0, None)  # one attempt, no throttle, no retry, no wait, no usage


def _per_item(
    chunk: Outcome[ChunkResult], group: list[Any], base: int, unusual: list[Outcome[Any]]
) -> list[Outcome[Any]]:
    """The outcomes of a chunk's items, from what its worker sent back (those that were not one
    plain success are added to ``unusual`` too)."""
    values, durations, extras = _result(chunk)
    ends = list(accumulate(durations, initial=chunk.started))
    if not extras and plain(group):  # every item one plain success (failures have extras)
        return list(
            map(
                Outcome,
                range(base, base + len(values)),
                group,
                repeat(True),
                values,
                repeat(None),
                repeat(1),
                ends,
                islice(ends, 1, None),
            )
        )
    result: list[Outcome[Any]] = []
    for position, value in enumerate(values):
        item, provenance, _ = unwrap(group[position])
        attempts, throttles, causes, waited, used = extras.get(position, _PLAIN)
        failed = type(value) is ItemFailed
        outcome = Outcome(
            base + position,
            item,
            not failed,
            None if failed else value,
            ErrorInfo.from_exception(value.error) if failed else None,
            attempts,
            ends[position],
            ends[position + 1],
            "",
            throttles,
            "",
            provenance,
            causes,
            waited,
            used,
        )
        if position in extras:
            unusual.append(outcome)
        result.append(outcome)
    return result


def _stats(total: int, unusual: list[Outcome[Any]], first: RunStats, wall: float) -> RunStats:
    """The run's stats: every item one plain success, corrected by the ``unusual`` ones."""
    failed = sum(1 for o in unusual if not o.ok)
    return RunStats(
        total=total,
        succeeded=total - failed,
        failed=failed,
        attempts=total + sum(o.attempts + o.throttles - 1 for o in unusual),
        retries=sum(len(o.retry_causes) for o in unusual),
        throttles=sum(o.throttles for o in unusual),
        throttle_wait=sum(o.throttle_wait for o in unusual),
        wall_time=wall,
        started=first.started,
        finished=first.started + wall,
    )
