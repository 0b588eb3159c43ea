"""The public entry points: ``Job`` (run, arun, stream) and ``map`` / ``amap``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import os
import random
import signal
import threading
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from typing import Any, Generic, Literal, TypeVar, overload

from ._chunked import arun_chunked, check_chunk_size
from ._clock import Clock, MonotonicClock
from ._codec import Codec, JSONCodec
from ._events import Subscriber
from ._exceptions import JobFailed
from ._journal import (
    Journal,
    JournalSession,
    callable_name,
    job_fingerprint,
    load_stored_items,
)
from ._limited import (
    AsyncGroupWork,
    GroupWork,
    check_batch_size,
    group_items,
    item_stats,
    ungroup,
)
from ._limits import Limits, Rate
from ._loop import new_event_loop
from ._outcome import Failure, Outcome, Run
from ._plan import Plan, plan
from ._resilience import (
    Breaker,
    Hedge,
    RetryBudget,
    as_breaker,
    as_budget,
    as_hedge,
    check_abort,
    describe_policies,
)
from ._retry import Retry
from ._run import Scheduler
from .backends import Backend, check_name, is_async_callable, resolve

T = TypeVar("T")
R = TypeVar("R")

Errors = Literal["raise", "return"]
Items = Iterable[T] | AsyncIterable[T]
# progress=: True (a live view on a terminal, plain lines elsewhere), "live", "plain", or a
# subscriber of your own; None or False: none.
Progress = bool | Literal["live", "plain"] | Subscriber | None


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout={timeout!r}: expected seconds (a number > 0) or None")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout={timeout!r}: must be a number of seconds > 0, or None")
    return float(timeout)


def _check_errors(errors: object) -> Errors:
    if errors not in ("raise", "return"):
        raise ValueError(
            f"errors={errors!r}: use 'raise' (raise JobFailed after every piece was attempted) "
            "or 'return' (failures come back as shoal.Failure objects in their items' places)"
        )
    return errors


def _check_backend(backend: object) -> None:
    if isinstance(backend, str):
        check_name(backend)  # an unknown name, or a missing extra (with its install command)
    elif not isinstance(backend, Backend):
        raise TypeError(f"backend={backend!r}: expected a backend name or a Backend object")


def _subscribers(
    subscribers: Subscriber | Sequence[Subscriber] | None,
) -> tuple[Subscriber, ...]:
    if subscribers is None:
        return ()
    if callable(subscribers):
        return (subscribers,)
    subs = tuple(subscribers)
    for sub in subs:
        if not callable(sub):
            raise TypeError(f"subscribers: {sub!r} is not callable (expected callable(event))")
    return subs


class Job(Generic[T, R]):
    """One operation to run over many items, with its limits, retry policy and combiner.

    Args:
        work: ``item -> result``, a plain function or an ``async def``.
        key: ``item -> key`` (e.g. a host or a model) for per-key limits and throttle pauses.
        limits: :class:`Limits`; default ``Limits()`` (16 at once, no rate).
        retry: :class:`Retry`; default ``Retry()`` (3 attempts, full-jitter backoff).
        combine: ``values -> result`` applied to the successful values, in input order.
        backend: ``"auto"`` (the event loop for ``async def``, worker processes for CPU-bound
            work, threads otherwise), ``"async"``, ``"thread"``, ``"process"``, ``"dask"``,
            ``"ray"``, or a :class:`shoal.backends.Backend` object (e.g.
            ``shoal.backends.DaskBackend(address=...)``).
        cpu_bound: The work computes rather than waits: ``"auto"`` then runs it in processes.
        batch_size: Limited mode: the work gets a list of this many items and returns a list of
            their results; limits and retries apply per call, outcomes are still per item.
        name: A name for reports (default: the work function's name).
        timeout: Seconds one attempt may take before it fails with ``TimeoutError``.
        id: ``item -> unique string``: the piece's id in a journal. Without it the id is a hash
            of the item's content, so identical items share an id (and, on resume, a result).
        codec: How results are stored in a journal (default: JSON; see ``shoal.journal``).
        hedge: Hedged attempts, for idempotent work only: ``True`` or :class:`Hedge`. An attempt
            running longer than the 95th percentile of the latencies seen so far gets a second
            attempt of the same piece; the first to succeed wins, the other is cancelled. At
            most 5% extra attempts, within the same limits.
        retry_budget: ``True``, a share (``0.2``) or :class:`RetryBudget`: retries across the
            job may be at most that share of first attempts over a sliding window (plus a
            floor); beyond it, transient failures fail at once, with a note saying why.
        breaker: ``True`` or :class:`Breaker`: a circuit breaker per key. After a run of
            failures on a key nothing is sent to it for a cooldown; then one probe attempt
            decides whether it goes again. Other keys go on.
        max_failure_rate: Stop the run early once more than this share of its settled pieces
            failed (checked from ``min_pieces`` on): no new pieces start, those in flight
            finish, the journal is committed; ``run.stats.aborted`` says why, and a run with
            the same journal resumes the rest.
        min_pieces: Pieces to settle before ``max_failure_rate`` is checked.
        chunk_size: Send this many items per task to worker processes or a cluster (the
            process, Dask and Ray backends), like a process pool's ``chunksize``: for many
            small CPU-bound items. Outcomes, retries and usage stay per item (retries run in
            the worker); a chunk that crashes or times out has its items run again one by one.
            Not with keys, rates, a journal or ``stream`` (see ``shoal._chunked``).

    Raises:
        TypeError, ValueError: anything that cannot work, at construction.
    """

    @overload
    def __init__(
        self,
        work: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        batch_size: int,
        key: Callable[[T], Any] | None = None,
        limits: Limits | None = None,
        retry: Retry | None = None,
        combine: Callable[[list[R]], Any] | None = None,
        backend: str | Backend = "auto",
        name: str | None = None,
        timeout: float | None = None,
        id: Callable[[T], Any] | None = None,
        codec: Codec | None = None,
        cpu_bound: bool = False,
        hedge: bool | Hedge | None = None,
        retry_budget: bool | float | RetryBudget | None = None,
        breaker: bool | Breaker | None = None,
        max_failure_rate: float | None = None,
        min_pieces: int = 50,
        chunk_size: int | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        work: Callable[[list[T]], Sequence[R]],
        *,
        batch_size: int,
        key: Callable[[T], Any] | None = None,
        limits: Limits | None = None,
        retry: Retry | None = None,
        combine: Callable[[list[R]], Any] | None = None,
        backend: str | Backend = "auto",
        name: str | None = None,
        timeout: float | None = None,
        id: Callable[[T], Any] | None = None,
        codec: Codec | None = None,
        cpu_bound: bool = False,
        hedge: bool | Hedge | None = None,
        retry_budget: bool | float | RetryBudget | None = None,
        breaker: bool | Breaker | None = None,
        max_failure_rate: float | None = None,
        min_pieces: int = 50,
        chunk_size: int | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        work: Callable[[T], Awaitable[R]],
        *,
        key: Callable[[T], Any] | None = None,
        limits: Limits | None = None,
        retry: Retry | None = None,
        combine: Callable[[list[R]], Any] | None = None,
        backend: str | Backend = "auto",
        name: str | None = None,
        timeout: float | None = None,
        id: Callable[[T], Any] | None = None,
        codec: Codec | None = None,
        cpu_bound: bool = False,
        hedge: bool | Hedge | None = None,
        retry_budget: bool | float | RetryBudget | None = None,
        breaker: bool | Breaker | None = None,
        max_failure_rate: float | None = None,
        min_pieces: int = 50,
        chunk_size: int | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        work: Callable[[T], R],
        *,
        key: Callable[[T], Any] | None = None,
        limits: Limits | None = None,
        retry: Retry | None = None,
        combine: Callable[[list[R]], Any] | None = None,
        backend: str | Backend = "auto",
        name: str | None = None,
        timeout: float | None = None,
        id: Callable[[T], Any] | None = None,
        codec: Codec | None = None,
        cpu_bound: bool = False,
        hedge: bool | Hedge | None = None,
        retry_budget: bool | float | RetryBudget | None = None,
        breaker: bool | Breaker | None = None,
        max_failure_rate: float | None = None,
        min_pieces: int = 50,
        chunk_size: int | None = None,
    ) -> None: ...

    def __init__(
        self,
        work: (
            Callable[[T], R]
            | Callable[[T], Awaitable[R]]
            | Callable[[list[T]], Sequence[R]]
            | Callable[[list[T]], Awaitable[Sequence[R]]]
        ),
        *,
        key: Callable[[T], Any] | None = None,
        limits: Limits | None = None,
        retry: Retry | None = None,
        combine: Callable[[list[R]], Any] | None = None,
        backend: str | Backend = "auto",
        name: str | None = None,
        timeout: float | None = None,
        id: Callable[[T], Any] | None = None,
        codec: Codec | None = None,
        cpu_bound: bool = False,
        batch_size: int | None = None,
        hedge: bool | Hedge | None = None,
        retry_budget: bool | float | RetryBudget | None = None,
        breaker: bool | Breaker | None = None,
        max_failure_rate: float | None = None,
        min_pieces: int = 50,
        chunk_size: int | None = None,
    ) -> None:
        if not callable(work):
            raise TypeError(
                f"work={work!r} is not callable; pass the function to run on each item "
                "(a plain function or an async def)"
            )
        if key is not None and not callable(key):
            raise TypeError(f"key={key!r}: expected a callable item -> key, or None")
        if limits is None:
            limits = Limits()
        elif not isinstance(limits, Limits):
            raise TypeError(f"limits={limits!r}: expected shoal.Limits(...)")
        if retry is None:
            retry = Retry()
        elif not isinstance(retry, Retry):
            raise TypeError(f"retry={retry!r}: expected shoal.Retry(...)")
        if combine is not None and not callable(combine):
            raise TypeError(f"combine={combine!r}: expected a callable values -> result, or None")
        if limits.per_key is not None and key is None:
            raise ValueError(
                f"per_key={limits.per_key} needs a key function (key=lambda item: ...): without "
                "one every item has the same key; use concurrency= for a global limit"
            )
        _check_backend(backend)
        if id is not None and not callable(id):
            raise TypeError(f"id={id!r}: expected a callable item -> unique string, or None")
        if codec is None:
            codec = JSONCodec()
        elif not isinstance(codec, Codec):
            raise TypeError(f"codec={codec!r}: expected an object with name, encode and decode")
        self.id = id
        self.codec = codec
        self.work = work
        self.key = key
        self.limits = limits
        self.retry = retry
        self.combine = combine
        self.backend = backend
        self.timeout = _check_timeout(timeout)
        if not isinstance(cpu_bound, bool):
            raise TypeError(f"cpu_bound={cpu_bound!r}: expected True or False")
        self.cpu_bound = cpu_bound
        self.batch_size = check_batch_size(batch_size)
        self.name = name if name is not None else getattr(work, "__name__", type(work).__name__)
        self.hedge = as_hedge(hedge)
        self.retry_budget = as_budget(retry_budget)
        self.breaker = as_breaker(breaker)
        self.max_failure_rate = check_abort(max_failure_rate, min_pieces)
        self.min_pieces = min_pieces
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(
                f"chunk_size={chunk_size!r}: expected a whole number >= 1 (items per task sent to "
                "a worker process or cluster), or None"
            )
        self.chunk_size = chunk_size
        check_chunk_size(self)

    def __repr__(self) -> str:
        return f"Job({self.name!r}, {self.limits!r}, {self.retry!r}, backend={self.backend!r})"

    def plan(
        self,
        items: Iterable[T] | int | None = None,
        *,
        observed: Run[Any] | Iterable[Outcome[Any]] | Iterable[float] | None = None,
    ) -> Plan:
        """The resource check for a run over ``items``: see :func:`shoal.plan`."""
        return plan(self, items, observed=observed)

    def _per_item(self, outcomes: list[Outcome[Any]]) -> list[Outcome[Any]]:
        """The scheduler's outcomes as the user's: per item, also in limited mode."""
        return outcomes if self.batch_size is None else ungroup(outcomes, self.batch_size)

    # ------------------------------------------------------------------ running

    def _scheduler(
        self,
        items: Items[T],
        *,
        clock: Clock | None,
        rng: random.Random | None,
        subscribers: Subscriber | Sequence[Subscriber] | None,
        ordered: bool,
        journal: str | os.PathLike[str] | Journal | None = None,
        resume: bool = True,
        mode: str = "run",
        progress: Progress = None,
        lazy_resume: bool = False,
    ) -> Scheduler:
        clock = clock if clock is not None else MonotonicClock()
        work: Callable[..., Any] = self.work
        if self.batch_size is not None:  # limited mode: the scheduler's pieces are groups
            items = group_items(items, self.batch_size)
            work = (AsyncGroupWork if is_async_callable(work) else GroupWork)(work)
        session = None
        if journal is not None:
            session = JournalSession(
                Journal.of(journal),
                job=self.name,
                fingerprint=self.fingerprint(),
                config=self.describe(),
                resume=resume,
                mode=mode,
            )
        return Scheduler(
            work,
            items,
            limits=self.limits,
            retry=self.retry,
            timeout=self.timeout,
            key=self.key,
            backend=resolve(self.backend, self.work, cpu_bound=self.cpu_bound),
            clock=clock,
            rng=rng if rng is not None else random.Random(),
            subscribers=_subscribers(subscribers) + _progress_subscribers(progress),
            ordered=ordered,
            journal=session,
            piece_id=self.id,
            codec=self.codec,
            name=self.name,
            hedge=self.hedge,
            retry_budget=self.retry_budget,
            breaker=self.breaker,
            max_failure_rate=self.max_failure_rate,
            min_pieces=self.min_pieces,
            lazy_resume=lazy_resume,
        )

    def fingerprint(self) -> str:
        """A hash of what decides this job's results: the work function (its name and source),
        the id function and the codec. Not the limits, retries or backend: a resumed run may use
        other ones."""
        # A wrapper that changes only which attempts fail (shoal.testing.chaos) is fingerprinted
        # as the work it wraps, so a chaos run and a plain run share a journal.
        work = getattr(self.work, "__shoal_inner_work__", self.work)
        return job_fingerprint(work, self.id, self.codec)

    def describe(self) -> dict[str, Any]:
        """The job's configuration as plain data (stored in journals, shown in reports)."""
        return {
            "name": self.name,
            "work": callable_name(self.work),
            "limits": repr(self.limits),
            "retry": repr(self.retry),
            "backend": self.backend if isinstance(self.backend, str) else repr(self.backend),
            "timeout": self.timeout,
            "codec": self.codec.name,
            **describe_policies(self.hedge, self.retry_budget, self.breaker),
            "max_failure_rate": self.max_failure_rate,
            "chunk_size": self.chunk_size,
        }

    async def arun(
        self,
        items: Items[T],
        *,
        errors: Errors = "return",
        journal: str | os.PathLike[str] | Journal | None = None,
        resume: bool = True,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        subscribers: Subscriber | Sequence[Subscriber] | None = None,
        progress: Progress = None,
        on_interrupt: Callable[[int], object] | None = None,
    ) -> Run[R]:
        """Run every item; return the :class:`Run` (see :meth:`run`)."""
        return await self._arun(
            items,
            errors=errors,
            journal=journal,
            resume=resume,
            clock=clock,
            rng=rng,
            subscribers=subscribers,
            progress=progress,
            on_interrupt=on_interrupt,
        )

    async def _arun(
        self,
        items: Items[T],
        *,
        errors: Errors,
        journal: str | os.PathLike[str] | Journal | None,
        resume: bool,
        clock: Clock | None,
        rng: random.Random | None,
        subscribers: Subscriber | Sequence[Subscriber] | None,
        mode: str = "run",
        progress: Progress = None,
        on_interrupt: Callable[[int], object] | None = None,
    ) -> Run[R]:
        errors = _check_errors(errors)
        if self.chunk_size is not None:
            if journal is not None or mode != "run":
                raise ValueError(
                    f"chunk_size={self.chunk_size}: a journal records pieces, and a chunk is not "
                    "a stable piece; run without the journal, or without chunk_size"
                )
            chunked: Run[R] = await arun_chunked(
                self,
                items,
                clock=clock,
                rng=rng,
                subscribers=subscribers,
                progress=progress,
                on_interrupt=on_interrupt,
            )
            if errors == "raise" and not chunked.ok:
                raise JobFailed(chunked)
            return chunked
        scheduler = self._scheduler(
            items,
            clock=clock,
            rng=rng,
            subscribers=subscribers,
            ordered=False,
            journal=journal,
            resume=resume,
            mode=mode,
            progress=progress,
            # Pieces read back from the journal need no outcome until one is asked for (limited
            # mode turns the groups' outcomes into the items' at once).
            lazy_resume=self.batch_size is None,
        )
        settled: list[Outcome[R]] = []
        with (
            _flush_on_sigterm(enabled=journal is not None),
            _drain_on_sigint(scheduler, on_interrupt),
        ):
            async for batch in scheduler.batches():
                settled.extend(batch)
        if scheduler.stored_blocks:
            resumed: Run[R] = _run_with_stored(self, scheduler, settled)
            if errors == "raise" and not resumed.ok:
                raise JobFailed(resumed)
            return resumed
        if self.batch_size is not None:  # limited mode: one outcome per item, not per group
            settled = ungroup(settled, self.batch_size)
        outcomes: list[Outcome[R]]
        if scheduler.aborted is not None:
            # Stopped early: the pieces that settled, in input order (index says which item).
            outcomes = sorted(settled, key=lambda o: o.index)
        else:
            outcomes = [None] * len(settled)  # type: ignore[list-item]
            for outcome in settled:
                outcomes[outcome.index] = outcome
        run: Run[R] = Run(
            outcomes,
            scheduler.stats()
            if self.batch_size is None
            else item_stats(scheduler.stats(), settled),
            combine=self.combine,
            name=self.name,
            completion_order=[o.index for o in settled],
        )
        if errors == "raise" and not run.ok:
            raise JobFailed(run)
        return run

    def run(
        self,
        items: Items[T],
        *,
        errors: Errors = "return",
        journal: str | os.PathLike[str] | Journal | None = None,
        resume: bool = True,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        subscribers: Subscriber | Sequence[Subscriber] | None = None,
        progress: Progress = None,
        on_interrupt: Callable[[int], object] | None = None,
    ) -> Run[R]:
        """Run every item and wait for the end.

        Every item is attempted; one failure never stops or touches another. Works from plain
        code and from inside a running event loop (a notebook): then the run gets a loop of its
        own in a helper thread.

        Args:
            items: Any iterable or async iterable, pulled lazily (an endless generator is fine).
            errors: ``"return"`` (default): failures are in ``run.failures``. ``"raise"``: raise
                :class:`JobFailed`, carrying the whole run, if any piece failed.
            journal: An SQLite file that records every piece. Running again with the same file
                resumes: pieces settled before (done or failed) are read back, not run again;
                pieces that were in flight when the process died run again.
            resume: ``False`` starts over in the journal file (its pieces are deleted).
            clock: Where time comes from (``shoal.testing.FakeClock`` in tests).
            rng: The random source for backoff jitter (seed it for repeatable runs).
            subscribers: ``callable(event)`` observers of the run's events.
            on_interrupt: ``callable(presses)``: makes Ctrl-C drain the run instead of
                stopping it at once. At the first Ctrl-C no piece starts any more and those in
                flight finish; at the second, they are cancelled. Either way everything settled
                is committed to the journal, then ``KeyboardInterrupt`` is raised, and a run
                with the same journal resumes where this one stopped. It is called at each
                Ctrl-C with the count so far (to say what is happening). Only on the main
                thread, where the event loop supports signal handlers.
            progress: ``True``: a live view on standard error when it is a terminal, a plain
                line every few seconds otherwise; ``"live"`` or ``"plain"`` to choose; or a
                ``callable(event)`` (e.g. ``shoal.progress.LiveProgress(console=...)``).

        Returns:
            The :class:`Run`: ``outcomes`` (input order), ``values``, ``failures``, ``result``,
            ``stats``.

        Raises:
            shoal.journal.JournalError: the journal belongs to another job, is not a journal,
                cannot be written, or was written by a newer shoal (nothing is changed in it).
        """
        return run_sync(
            lambda: self.arun(
                items,
                errors=errors,
                journal=journal,
                resume=resume,
                clock=clock,
                rng=rng,
                subscribers=subscribers,
                progress=progress,
                on_interrupt=on_interrupt,
            ),
            clock,
        )

    def retry_failed(
        self,
        journal: str | os.PathLike[str] | Journal,
        *,
        items: Items[T] | None = None,
        errors: Errors = "return",
        clock: Clock | None = None,
        rng: random.Random | None = None,
        subscribers: Subscriber | Sequence[Subscriber] | None = None,
        on_interrupt: Callable[[int], object] | None = None,
    ) -> Run[R]:
        """Run the pieces that failed in ``journal`` again; the others are read back.

        Args:
            journal: The journal of an earlier run of this job.
            items: The input again. Without it, the items stored in the journal are used (every
                item that could be stored as JSON is).
            on_interrupt: Ctrl-C drains the run (see :meth:`run`).

        Returns:
            The :class:`Run` of every piece in the journal (or in ``items``).
        """
        return run_sync(
            lambda: self.aretry_failed(
                journal,
                items=items,
                errors=errors,
                clock=clock,
                rng=rng,
                subscribers=subscribers,
                on_interrupt=on_interrupt,
            ),
            clock,
        )

    async def aretry_failed(
        self,
        journal: str | os.PathLike[str] | Journal,
        *,
        items: Items[T] | None = None,
        errors: Errors = "return",
        clock: Clock | None = None,
        rng: random.Random | None = None,
        subscribers: Subscriber | Sequence[Subscriber] | None = None,
        on_interrupt: Callable[[int], object] | None = None,
    ) -> Run[R]:
        """``await``-able :meth:`retry_failed`."""
        options = Journal.of(journal)
        source: Items[Any]
        if items is None:
            loop = asyncio.get_running_loop()
            source = await loop.run_in_executor(None, load_stored_items, os.fspath(options.path))
        else:
            source = items
        return await self._arun(
            source,
            errors=errors,
            journal=options,
            resume=True,
            clock=clock,
            rng=rng,
            subscribers=subscribers,
            mode="retry",
            on_interrupt=on_interrupt,
        )

    async def stream(
        self,
        items: Items[T],
        *,
        ordered: bool = False,
        journal: str | os.PathLike[str] | Journal | None = None,
        resume: bool = True,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        subscribers: Subscriber | Sequence[Subscriber] | None = None,
        progress: Progress = None,
    ) -> AsyncIterator[Outcome[R]]:
        """Yield each item's :class:`Outcome` as it settles (``ordered=True``: in input order).

        Memory stays bounded however many items come in: at most a window of a few times the
        concurrency is held at once. Leaving the loop early cancels what is in flight (use
        ``contextlib.aclosing`` to do that at once rather than when the generator is collected).
        With a ``journal``, pieces settled by an earlier run are yielded from it, not run again.
        """
        if self.chunk_size is not None:
            raise ValueError(
                f"chunk_size={self.chunk_size}: chunked jobs give their outcomes at the end; use "
                "run() / arun(), or a job without chunk_size to stream"
            )
        scheduler = self._scheduler(
            items,
            clock=clock,
            rng=rng,
            subscribers=subscribers,
            ordered=ordered,
            journal=journal,
            resume=resume,
            progress=progress,
        )
        with _flush_on_sigterm(enabled=journal is not None):
            async with contextlib.aclosing(scheduler.batches()) as batches:
                async for batch in batches:
                    for outcome in self._per_item(batch):
                        yield outcome


@contextlib.contextmanager
def _flush_on_sigterm(*, enabled: bool) -> Iterator[None]:
    """While a journaled run goes on, SIGTERM stops it like Ctrl-C: what is in flight is
    cancelled, everything settled is committed, and then the process ends by SIGTERM as it
    would have. Only where nobody else handles SIGTERM, and only on the main thread."""
    if (
        not enabled
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
    ):
        yield
        return
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received: list[bool] = []

    def on_sigterm() -> None:
        received.append(True)
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError, ValueError):  # no signal support on this loop
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        if received:
            signal.raise_signal(signal.SIGTERM)  # the default action: end the process


@contextlib.contextmanager
def _drain_on_sigint(
    scheduler: Scheduler, on_interrupt: Callable[[int], object] | None
) -> Iterator[None]:
    """With ``on_interrupt``, Ctrl-C drains the run (``scheduler.drain()``) and a second one
    cancels what is in flight; then ``KeyboardInterrupt`` is raised, once the scheduler has shut
    down and committed everything settled. Without it, or off the main thread, Ctrl-C does what
    it always does."""
    if on_interrupt is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    previous = signal.getsignal(signal.SIGINT)
    presses: list[int] = []

    def on_sigint() -> None:
        presses.append(1)
        if len(presses) == 1:
            scheduler.drain()
        elif len(presses) == 2 and task is not None:
            task.cancel()
        on_interrupt(len(presses))

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):  # no signal support on this loop
        yield
        return
    try:
        yield
    except asyncio.CancelledError:
        if len(presses) < 2 or task is None:
            raise
        task.uncancel()  # cancelled by the second Ctrl-C: say so as Ctrl-C does
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)  # asyncio.Runner's own, for instance
    if presses:
        raise KeyboardInterrupt


def run_sync(make: Callable[[], Awaitable[T]], clock: Clock | None) -> T:
    """Run a coroutine to completion from synchronous code, on the clock's loop."""
    factory = clock.loop_factory() if clock is not None else None
    if factory is None:
        factory = new_event_loop

    def run_here() -> T:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(make())  # type: ignore[arg-type]

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:  # outside the except block: errors of the run must not chain to it
        return run_here()
    # Called from inside a running loop (a notebook, an async framework): a loop of our own in a
    # helper thread, so the caller's loop is not re-entered.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="shoal-run") as pool:
        return pool.submit(run_here).result()


def _job_for_map(
    fn: Callable[..., Any],
    *,
    concurrency: int,
    rate: str | float | Rate | Sequence[str | float | Rate] | None,
    retries: int,
    timeout: float | None,
    key: Callable[[Any], Any] | None,
    per_key: int | None,
    backend: str | Backend,
    chunk_size: int | None = None,
) -> Job[Any, Any]:
    if concurrency is None:
        raise TypeError("concurrency=None: map needs a whole number >= 1 (the default is 16)")
    return Job(
        fn,
        key=key,
        limits=Limits(concurrency=concurrency, per_key=per_key, rate=rate),
        retry=Retry.from_retries(retries),
        backend=backend,
        timeout=timeout,
        chunk_size=chunk_size,
    )


def _run_with_stored(
    job: Job[Any, Any], scheduler: Scheduler, settled: list[Outcome[Any]]
) -> Run[Any]:
    """The run of a resume whose pieces read back from the journal came in stored blocks: their
    outcomes are made when first asked for; the values (when all succeeded) at once."""
    blocks = scheduler.stored_blocks
    stats = scheduler.stats()
    aborted = scheduler.aborted is not None
    total = len(settled) + sum(len(block) for block in blocks)  # (map here is shoal.map)
    # Where each piece settled: the blocks' pieces between the outcomes yielded around them.
    completion: list[int] = []
    done = 0
    for block in blocks:
        completion.extend(o.index for o in settled[done : block.after])
        completion.extend(range(block.start, block.start + len(block)))
        done = block.after  # (the blocks come in the order they settled)
    completion.extend(o.index for o in settled[done:])

    def build() -> list[Outcome[Any]]:
        everything = list(settled)
        for block in blocks:
            everything.extend(block.outcomes())
        if aborted:  # stopped early: those that settled, in input order
            return sorted(everything, key=lambda o: o.index)
        outcomes: list[Outcome[Any]] = [None] * total  # type: ignore[list-item]
        for outcome in everything:
            outcomes[outcome.index] = outcome
        return outcomes

    values: list[Any] | None = None
    if stats.failed == 0 and not aborted:
        values = [None] * total
        for outcome in settled:
            values[outcome.index] = outcome.value
        for block in blocks:
            values[block.start : block.start + len(block)] = block.values
    return Run.deferred(
        build,
        stats,
        values=values,
        combine=job.combine,
        name=job.name,
        completion_order=completion,
    )


def _map_result(run: Run[Any], errors: Errors, ordered: bool) -> list[Any]:
    if errors == "raise" and not run.ok:
        raise JobFailed(run)
    if run.ok and ordered:
        return run.values  # every item's value, in input order (no outcome needs making)
    outcomes = run.outcomes
    if not ordered:
        outcomes = [outcomes[i] for i in run.completion_order]
    if errors == "raise":
        return [o.value for o in outcomes]
    return [o.value if o.ok else o.as_failure() for o in outcomes]


def _progress_subscribers(progress: object) -> tuple[Subscriber, ...]:
    if progress is None or progress is False:
        return ()
    if progress is True or progress in ("live", "plain"):
        from ._progress import progress_view  # rich is imported only when progress is on

        return (progress_view(progress),)
    if callable(progress):
        return (progress,)
    raise TypeError(
        f"progress={progress!r}: expected True (live on a terminal, plain lines elsewhere), "
        "'live', 'plain', False, None or a callable(event)"
    )


@overload
async def amap(
    fn: Callable[[T], Awaitable[R]],
    items: Items[T],
    *,
    concurrency: int = 16,
    rate: str | float | Rate | Sequence[str | float | Rate] | None = None,
    retries: int = 3,
    timeout: float | None = None,
    key: Callable[[T], Any] | None = None,
    per_key: int | None = None,
    errors: Literal["raise"] = "raise",
    ordered: bool = True,
    backend: str | Backend = "auto",
    progress: Progress = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    resume: bool = True,
    chunk_size: int | None = None,
) -> list[R]: ...


@overload
async def amap(
    fn: Callable[[T], Awaitable[R]],
    items: Items[T],
    *,
    concurrency: int = 16,
    rate: str | float | Rate | Sequence[str | float | Rate] | None = None,
    retries: int = 3,
    timeout: float | None = None,
    key: Callable[[T], Any] | None = None,
    per_key: int | None = None,
    errors: Literal["return"],
    ordered: bool = True,
    backend: str | Backend = "auto",
    progress: Progress = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    resume: bool = True,
    chunk_size: int | None = None,
) -> list[R | Failure]: ...


@overload
async def amap(
    fn: Callable[[T], R],
    items: Items[T],
    *,
    concurrency: int = 16,
    rate: str | float | Rate | Sequence[str | float | Rate] | None = None,
    retries: int = 3,
    timeout: float | None = None,
    key: Callable[[T], Any] | None = None,
    per_key: int | None = None,
    errors: Literal["raise"] = "raise",
    ordered: bool = True,
    backend: str | Backend = "auto",
    progress: Progress = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    resume: bool = True,
    chunk_size: int | None = None,
) -> list[R]: ...


@overload
async def amap(
    fn: Callable[[T], R],
    items: Items[T],
    *,
    concurrency: int = 16,
    rate: str | float | Rate | Sequence[str | float | Rate] | None = None,
    retries: int = 3,
    timeout: float | None = None,
    key: Callable[[T], Any] | None = None,
    per_key: int | None = None,
    errors: Literal["return"],
    ordered: bool = True,
    backend: str | Backend = "auto",
    progress: Progress = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    resume: bool = True,
    chunk_size: int | None = None,
) -> list[R | Failure]: ...


async def amap(
    fn: Callable[[T], Any],
    items: Items[T],
    *,
    concurrency: int = 16,
    rate: str | float | Rate | Sequence[str | float | Rate] | None = None,
    retries: int = 3,
    timeout: float | None = None,
    key: Callable[[T], Any] | None = None,
    per_key: int | None = None,
    errors: Errors = "raise",
    ordered: bool = True,
    backend: str | Backend = "auto",
    progress: Progress = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    resume: bool = True,
    chunk_size: int | None = None,
) -> list[Any]:
    """``await``-able :func:`map`."""
    errors = _check_errors(errors)
    job = _job_for_map(
        fn,
        concurrency=concurrency,
        rate=rate,
        retries=retries,
        timeout=timeout,
        key=key,
        per_key=per_key,
        backend=backend,
        chunk_size=chunk_size,
    )
    run = await job.arun(
        items, subscribers=_progress_subscribers(progress), journal=journal, resume=resume
    )
    return _map_result(run, errors, ordered)


@overload
def map(
    fn: Callable[[T], Awaitable[R]],
    items: Items[T],
    *,
    concurrency: int = 16,
    rate: str | float | Rate | Sequence[str | float | Rate] | None = None,
    retries: int = 3,
    timeout: float | None = None,
    key: Callable[[T], Any] | None = None,
    per_key: int | None = None,
    errors: Literal["raise"] = "raise",
    ordered: bool = True,
    backend: str | Backend = "auto",
    progress: Progress = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    resume: bool = True,
    chunk_size: int | None = None,
) -> list[R]: ...


@overload
def map(
    fn: Callable[[T], Awaitable[R]],
    items: Items[T],
    *,
    concurrency: int = 16,
    rate: str | float | Rate | Sequence[str | float | Rate] | None = None,
    retries: int = 3,
    timeout: float | None = None,
    key: Callable[[T], Any] | None = None,
    per_key: int | None = None,
    errors: Literal["return"],
    ordered: bool = True,
    backend: str | Backend = "auto",
    progress: Progress = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    resume: bool = True,
    chunk_size: int | None = None,
) -> list[R | Failure]: ...


@overload
def map(
    fn: Callable[[T], R],
    items: Items[T],
    *,
    concurrency: int = 16,
    rate: str | float | Rate | Sequence[str | float | Rate] | None = None,
    retries: int = 3,
    timeout: float | None = None,
    key: Callable[[T], Any] | None = None,
    per_key: int | None = None,
    errors: Literal["raise"] = "raise",
    ordered: bool = True,
    backend: str | Backend = "auto",
    progress: Progress = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    resume: bool = True,
    chunk_size: int | None = None,
) -> list[R]: ...


@overload
def map(
    fn: Callable[[T], R],
    items: Items[T],
    *,
    concurrency: int = 16,
    rate: str | float | Rate | Sequence[str | float | Rate] | None = None,
    retries: int = 3,
    timeout: float | None = None,
    key: Callable[[T], Any] | None = None,
    per_key: int | None = None,
    errors: Literal["return"],
    ordered: bool = True,
    backend: str | Backend = "auto",
    progress: Progress = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    resume: bool = True,
    chunk_size: int | None = None,
) -> list[R | Failure]: ...


def map(
    fn: Callable[[T], Any],
    items: Items[T],
    *,
    concurrency: int = 16,
    rate: str | float | Rate | Sequence[str | float | Rate] | None = None,
    retries: int = 3,
    timeout: float | None = None,
    key: Callable[[T], Any] | None = None,
    per_key: int | None = None,
    errors: Errors = "raise",
    ordered: bool = True,
    backend: str | Backend = "auto",
    progress: Progress = None,
    journal: str | os.PathLike[str] | Journal | None = None,
    resume: bool = True,
    chunk_size: int | None = None,
) -> list[Any]:
    """Run ``fn`` over every item, many at once; return the results in input order.

    Args:
        fn: ``item -> result``, a plain function (run in threads) or an ``async def``.
        items: Any iterable or async iterable, pulled lazily.
        concurrency: Attempts in flight at once.
        rate: Starts per period: ``"100/s"``, ``"600/min"``, ``"5000/h"``, ``"10/2s"`` or a
            number per second.
        retries: Re-tries after the first attempt (``retries=3``: up to 4 attempts).
        timeout: Seconds one attempt may take.
        key: ``item -> key`` for ``per_key`` limits and throttle pauses.
        per_key: Attempts in flight at once per key.
        errors: ``"raise"``: every item is attempted, then :class:`JobFailed` lists all failures.
            ``"return"``: failures come back as :class:`Failure` objects in their places.
        ordered: Results in input order (default) or in completion order.
        backend: ``"auto"``, ``"async"``, ``"thread"`` or a backend object.
        progress: ``True``: a live view on standard error when it is a terminal (done, failed,
            retrying, in flight, rate, ETA, limits), a plain line every few seconds otherwise;
            ``"live"`` or ``"plain"`` to choose; or a ``callable(event)``. Off by default.
        journal: An SQLite file recording every piece: run again with the same file to resume
            (pieces settled before are read back, not run again).
        resume: ``False`` starts over in the journal file.
        chunk_size: With the process, Dask or Ray backend, send this many items per task (for
            many small CPU-bound items); see :class:`Job`'s ``chunk_size``.

    Raises:
        JobFailed: with ``errors="raise"``, after everything ran, if any item failed.
        ValueError, TypeError: bad arguments, before anything runs.
    """
    errors = _check_errors(errors)
    job = _job_for_map(
        fn,
        concurrency=concurrency,
        rate=rate,
        retries=retries,
        timeout=timeout,
        key=key,
        per_key=per_key,
        backend=backend,
        chunk_size=chunk_size,
    )
    subscribers = _progress_subscribers(progress)
    run = run_sync(
        lambda: job.arun(items, subscribers=subscribers, journal=journal, resume=resume), None
    )
    return _map_result(run, errors, ordered)
