"""The scheduler: the one coordinator. The only module that starts tasks or reads the clock.

It pulls items lazily, asks the limits whether a piece may start, hands attempts to the backend,
applies the retry policy, and emits events. Everything it decides is decided here, on one event
loop, so a single injected clock and a single seeded random source make a whole run exact and
repeatable.

Life of a piece::

    source ─pull─▶ ready ─admit─▶ in flight ─ok─────────▶ settled (Outcome)
                     ▲   │ key busy or paused: parked   │
                     │   └ rate: wait for a timer       │ failed, retriable: backoff timer
                     └──────────────────────────────────┘ throttled: retry_after timer, key paused

Memory stays bounded: at most ``window`` pieces are pulled and not yet settled (and, in ordered
streams, not yet emitted), so an endless generator is fine. A piece waiting for its retry or for
its key holds no worker slot.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import json
import math
import random
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from itertools import islice
from operator import itemgetter
from typing import Any, cast

from ._adaptive import AdaptiveLimit
from ._clock import Clock
from ._codec import Codec, JSONCodec, content_id, content_ids, decode_many, item_keys
from ._events import (
    AnyEvent,
    AttemptStarted,
    BreakerChanged,
    Counts,
    HedgeStarted,
    LimitChanged,
    PieceFailed,
    PieceSucceeded,
    RetryScheduled,
    RunFinished,
    RunStarted,
    Subscriber,
    ThrottleWait,
)
from ._exceptions import CircuitOpen
from ._journal import PLAIN_ROW, JournalSession, Preloaded, Preset
from ._limits import EPSILON, KeyState, Limits, RateMeter
from ._outcome import ErrorInfo, Outcome, RunStats, explain, type_name
from ._resilience import (
    CLOSED,
    GAVE_UP,
    HALF_OPEN,
    OPEN,
    Breaker,
    BreakerState,
    Budget,
    Hedge,
    Latencies,
    RetryBudget,
)
from ._retry import Retry, throttle_delay
from ._split import Malformed, MalformedInput, Provenance, Sourced
from ._usage import Reported
from ._usage import current as _usage_meter
from ._usage import merge as merge_usage
from .backends import Backend, Invoker
from .backends._base import call_split, split_work

# Items that carry more than the work's input: an id read back from a journal, or provenance.
_WRAPPERS = frozenset((Preset, Sourced, Malformed))

# Timer kinds.
_RETRY = 0  # payload: a piece whose backoff or throttle wait is over
_set_meter = _usage_meter.set

_KEY = 1  # payload: a key whose throttle pause is over
_WAKE = 2  # payload: None; the rate limit allows starts again
_HEDGE = 3  # payload: (piece, race); its attempt has run past the hedging percentile


class _Piece:
    """One unit of work, while it is in the scheduler."""

    __slots__ = (
        "attempt_start",
        "attempts",
        "charges",
        "error",
        "first_start",
        "hold",
        "id",
        "index",
        "item",
        "key",
        "probe",
        "provenance",
        "race",
        "reports",
        "reservations",
        "retry_causes",
        "stored_item",
        "throttle_wait",
        "throttles",
        "unparked",
        "usage",
        "weights",
    )

    def __init__(self, index: int, item: Any, key: str) -> None:
        self.index = index
        self.item = item
        self.key = key
        self.attempts = 0
        self.throttles = 0
        self.first_start = -1.0
        self.attempt_start = 0.0
        self.weights: tuple[float, ...] = ()
        self.error: BaseException | None = None  # a failure found before any attempt
        self.unparked = False
        self.id = ""  # the journal's piece id ("" without a journal)
        self.stored_item: str | None = None  # the item as the journal stores it
        self.reservations: tuple[list[float], ...] = ()  # its entries in the rate windows
        self.provenance: Provenance | None = None  # where its input came from
        self.retry_causes: tuple[str, ...] = ()  # error types of the attempts that were retried
        self.throttle_wait = 0.0
        self.usage: dict[str, float] | None = None  # what the work reported (shoal.usage)
        self.reports = 0  # how often it called shoal.usage() (a change: this attempt reported)
        self.hold = 0.0  # the work asked its key to pause this long (shoal.http: budget used up)
        # Rates counted from what the attempt reports (Rate(actual=...)): (meter, entries,
        # counter name, its total and the report count when the attempt was admitted).
        self.charges: tuple[tuple[RateMeter, list[list[float]], str, float, int], ...] = ()
        self.probe = False  # this attempt is its key's circuit breaker's probe
        self.race: _Race | None = None  # hedging: the attempts of this try running at once


class StoredBlock:
    """Consecutive items a resume found done in the journal (plain rows: done at the first
    attempt, nothing else to say), kept as columns; their outcomes are made only when asked for
    (:meth:`outcomes`). Their results are decoded already: one that cannot be runs again.

    ``after``: how many outcomes the scheduler had yielded when these settled (their place in the
    completion order).
    """

    __slots__ = (
        "after",
        "finished",
        "ids",
        "items",
        "keys",
        "provenance",
        "start",
        "started",
        "values",
        "wall0",
    )

    def __init__(
        self,
        start: int,
        items: list[Any],
        ids: list[str],
        provenance: list[Provenance | None] | None,
        rows: list[tuple[Any, ...]],
        values: list[Any],
        after: int,
        wall0: float,
    ) -> None:
        self.start = start
        self.items = items
        self.ids = ids
        self.provenance = provenance
        # From the plain rows (the journal's _PRELOAD_COLUMNS), only what outcomes need: the rows
        # also hold each result's stored text, which a run kept for its values need not keep.
        self.keys: list[str] = list(map(itemgetter(1), rows))
        self.started: list[float | None] = list(map(itemgetter(3), rows))
        self.finished: list[float | None] = list(map(itemgetter(4), rows))
        self.values = values
        self.after = after
        self.wall0 = wall0  # the run's start: a row's missing times

    def __len__(self) -> int:
        return len(self.items)

    def outcomes(self) -> list[Outcome[Any]]:
        """One outcome per item, as :meth:`Scheduler._settle_from_journal` would make it."""
        wall0 = self.wall0
        provenance = self.provenance or [None] * len(self.items)
        return [
            Outcome(
                index,
                item,
                True,
                value,
                None,
                1,
                wall0 if started is None else started,
                (wall0 if started is None else started) if finished is None else finished,
                key,
                0,
                piece_id,
                source,
                (),
                0.0,
                None,
            )
            for index, item, value, key, started, finished, piece_id, source in zip(
                range(self.start, self.start + len(self.items)),
                self.items,
                self.values,
                self.keys,
                self.started,
                self.finished,
                self.ids,
                provenance,
                strict=True,
            )
        ]


class _Race:
    """The attempts of one try of a piece running at once (hedging): the first success wins.

    Each attempt ("racer") is a task of its own, so the loser can be cancelled: on the event loop
    that stops the coroutine; a thread cannot be stopped, so its call runs on and its result is
    dropped; on the process backend cancelling kills and replaces the worker (as a timeout does).
    """

    __slots__ = ("errors", "hedged", "racers", "threshold", "waiter")

    def __init__(self, waiter: asyncio.Future[tuple[Any, BaseException | None]]) -> None:
        # Settled with (value, None) by the first success, or (None, error) once every racer
        # failed (the first error).
        self.waiter = waiter
        self.racers: list[asyncio.Task[None]] = []
        self.errors: list[BaseException] = []
        self.hedged = False  # a hedge was asked for (one per try at most)
        self.threshold = math.inf  # the hedging percentile when the try started


class Scheduler:
    """Runs one job's items to completion and yields their outcomes in batches.

    Args:
        work: The user's callable (the backend wraps it).
        items: An iterable or async iterable of items.
        limits, retry, timeout, key: The job's policy.
        backend: Where attempts run.
        clock, rng: Injected time and randomness.
        subscribers: ``callable(event)`` observers.
        ordered: Emit outcomes in input order (otherwise as they complete).
        window: Max pieces pulled and not yet settled (or emitted, when ordered).
        lazy_resume: Pieces a resume reads back from the journal may be left out of the yielded
            batches and kept in ``stored_blocks`` instead, their outcomes made later (the caller
            collects a whole run and watches no single outcome).
    """

    def __init__(
        self,
        work: Callable[..., Any],
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        limits: Limits,
        retry: Retry,
        timeout: float | None,
        key: Callable[[Any], Any] | None,
        backend: Backend,
        clock: Clock,
        rng: random.Random,
        subscribers: tuple[Subscriber, ...] = (),
        ordered: bool = False,
        window: int | None = None,
        journal: JournalSession | None = None,
        piece_id: Callable[[Any], Any] | None = None,
        codec: Codec | None = None,
        name: str = "",
        hedge: Hedge | None = None,
        retry_budget: RetryBudget | None = None,
        breaker: Breaker | None = None,
        max_failure_rate: float | None = None,
        min_pieces: int = 50,
        lazy_resume: bool = False,
    ) -> None:
        self._work = work
        self._name = name
        self._limits = limits
        # Told to RunStarted: how many items there are, if the input knows (a list, a range).
        self._total = _length(items) if subscribers else None
        if isinstance(items, AsyncIterable):
            self._sync_iter: Iterator[Any] | None = None
            self._async_iter: AsyncIterator[Any] | None = aiter(items)
        elif isinstance(items, Iterable):
            self._sync_iter = iter(items)
            self._async_iter = None
        else:
            raise TypeError(f"items={items!r}: expected an iterable or an async iterable of items")
        self._retry = retry
        self._timeout = timeout
        self._key_fn = key
        self._backend = backend
        self._clock = clock
        self._rng = rng
        self._subs = subscribers
        # Who gets the two events every piece emits (see _events: `piece_events = False`).
        self._piece_subs = subscribers
        self._ordered = ordered

        self._concurrency = limits.effective_concurrency
        self._per_key = limits.per_key
        self._rates = [RateMeter(r) for r in limits.rates]
        self._weighted = any(r.weight is not None for r in limits.rates)
        self._window = window if window is not None else self._concurrency * 4 + 64

        self._journal = journal
        self._piece_id = piece_id
        self._codec: Codec = codec if codec is not None else JSONCodec()
        self._decode = self._codec.decode
        self._item_codec = JSONCodec()
        self._to_check: list[_Piece] = []
        self._checker: asyncio.Task[None] | None = None
        self._journal_blocked = False
        # Stop starting pieces while this many settled ones wait to be committed (the crash bound).
        self._journal_limit = 2 * journal.options.commit_every if journal is not None else 0
        self._status = "interrupted"
        self._pull_inline = self._sync_iter is not None  # else the feeder task pulls
        self._preloaded: Preloaded | None = None
        self._lazy_resume = lazy_resume and not ordered  # ordered: each is emitted in its turn
        self.stored_blocks: list[StoredBlock] = []
        self._yielded = 0  # outcomes yielded in batches so far
        # Adaptive concurrency (Limits(adaptive=True)): one AIMD limit per key ("" without keys),
        # under the ceiling of per_key, else concurrency.
        self._adaptive: dict[str, AdaptiveLimit] | None = {} if limits.adaptive else None
        self._adaptive_ceiling = min(self._per_key or self._concurrency, self._concurrency)
        # Attempts in flight per key are counted when a per-key limit (fixed or adaptive) holds.
        self._count_keys = self._per_key is not None or limits.adaptive
        self._tally_keys = False  # pieces done and failed per key (a live view asked for them)
        # Rates that count what attempts report (Rate(actual="tokens")): (meter index, counter).
        self._actuals = tuple((i, r.actual) for i, r in enumerate(limits.rates) if r.actual)
        # Key and rate checks are skipped entirely until something needs them.
        self._gated = bool(self._per_key or self._rates or limits.adaptive)

        self._invoke: Invoker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0  # clock.now() at start
        self._wall0 = 0.0  # clock.wall() at start
        self._offset = 0.0

        self._next_index = 0
        self._exhausted = False
        self._unsettled = 0
        # Waiting pieces are kept in input order (heaps by index), so retries and pieces released
        # by their key go before newer ones.
        self._ready: list[tuple[int, _Piece]] = []
        self._parked: dict[str, list[tuple[int, _Piece]]] = {}
        self._keys: dict[str, KeyState] = {}
        self._in_flight = 0
        self._blocked_until = -math.inf
        self._timers: list[tuple[float, int, int, Any]] = []
        self._timer_seq = 0
        self._timer_handle: asyncio.TimerHandle | None = None
        self._timer_when = math.inf
        self._workers: set[asyncio.Task[None]] = set()
        self._idle: list[asyncio.Future[_Piece | None]] = []
        self._feeder: asyncio.Task[None] | None = None
        self._room: asyncio.Event | None = None

        self._batch: list[Outcome[Any]] = []
        self._reorder: dict[int, Outcome[Any]] = {}
        self._next_emit = 0
        self._wake: asyncio.Future[None] | None = None
        self._fatal: BaseException | None = None
        self._closing = False
        self._filling = False
        self._backend_started = False
        self._draining = False  # drain(): start nothing more, end when nothing is in flight

        self.attempts = 0
        self.retries = 0
        self.throttles = 0
        self.throttle_wait = 0.0
        self.succeeded = 0
        self.failed = 0
        self.resumed = 0

        # Resilience (see _resilience): hedged attempts, the retry budget, circuit breakers, the
        # abort threshold. Each costs nothing when it is off.
        self._hedge = hedge
        self._latencies = Latencies(hedge) if hedge is not None else None
        self._hedge_wanted: list[tuple[_Piece, _Race]] = []
        self._racers: set[asyncio.Task[None]] = set()
        self._budget = Budget(retry_budget) if retry_budget is not None else None
        self._breaker = breaker
        self._breakers: dict[str, BreakerState] = {}
        self._open_breakers: set[str] = set()  # keys whose breaker is not closed
        self._max_failure_rate = max_failure_rate
        self._min_pieces = min_pieces
        self._ran = 0  # pieces this run settled (for the abort threshold)
        self._ran_failed = 0
        self.aborted: str | None = None
        self.hedges = 0
        self.hedges_won = 0
        self.retries_denied = 0
        self.breaker_opened = 0

    # ------------------------------------------------------------------ driving

    async def batches(self) -> AsyncGenerator[list[Outcome[Any]], None]:
        """Run everything; yield outcomes in batches as they settle."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        clock = self._clock
        self._t0 = clock.now()
        self._wall0 = clock.wall()
        self._offset = self._wall0 - self._t0  # clock reading + offset = seconds since the epoch
        if self._subs:
            self._emit_run_started()
        try:
            journal = self._journal
            lookups = False
            if journal is not None:  # first: a journal that cannot be used stops the run early
                journal.on_commit = self._on_journal_commit
                journal.on_error = self._on_journal_error
                await journal.open()
                lookups = journal.has_settled and journal.preloaded is None
                self._preloaded = journal.preloaded
            self._backend_started = True
            room = 0
            if self._hedge is not None:
                # A hedge's losing attempt in a thread cannot be stopped: give the pool room for
                # the few that run on (hedges are capped at max_share of the attempts).
                room = math.ceil(self._concurrency * self._hedge.max_share)
            self._invoke = await self._start_backend(self._concurrency + room)
            if self._async_iter is not None or lookups:
                # Pieces that may be settled already are checked against the journal in chunks
                # before they run; that needs the feeder even for a plain iterable.
                self._pull_inline = False
                self._room = asyncio.Event()
                self._feeder = loop.create_task(self._feed(lookups))
            self._fill()
            while True:
                if self._fatal is not None:
                    raise self._fatal  # noqa: TRY301 - the error of a task, carried here
                batch = self._batch
                if batch:
                    self._batch = []
                    self._yielded += len(batch)
                    # The consumer has them now: there is room to pull more.
                    self._wake_feeder()
                    self._fill()
                    yield batch
                    continue
                if self._draining and self._in_flight == 0:
                    # Drained: what never started stays for a resume ("interrupted"), also when
                    # the abort threshold drained it.
                    if self.aborted is not None:
                        self._status = "aborted"
                    break
                if self._exhausted and self._unsettled == 0 and not self._reorder:
                    self._status = "finished"
                    break
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt):
                self._status = "failed"
            raise
        finally:
            try:
                await self._shutdown()
            finally:
                if self._subs:
                    self._emit(RunFinished(clock.now() - self._t0, self._status, self.counts()))

    async def _start_backend(self, concurrency: int) -> Invoker:
        """The backend's invoker for the work. Work that has a part to run here for each call
        (``shoal.testing.chaos`` draws its fates) is split when the backend runs the work in
        other processes: this process runs that part and sends its answer with the item."""
        backend = self._backend
        work = self._work
        parts = split_work(work) if getattr(backend, "remote", False) else None
        if parts is None:  # nothing to split, or nowhere else to run
            return await backend.start(work, concurrency=concurrency)
        here, there = parts
        inner = await backend.start(there, concurrency=concurrency)
        return functools.partial(call_split, here, inner)

    def counts(self) -> Counts:
        """The run's totals now (cheap: for progress views that sample them)."""
        return Counts(
            self.succeeded,
            self.failed,
            self.resumed,
            self._in_flight,
            self.attempts,
            self.retries,
            self.throttles,
        )

    def _emit_run_started(self) -> None:
        limits = self._limits
        self._emit(
            RunStarted(
                0.0,
                self._total,
                self._concurrency,
                self._per_key,
                ", ".join(str(r) for r in limits.rates) or None,
                self._name,
                self._key_fn is not None,
                self.counts,
                self.key_counts,
            )
        )
        self._piece_subs = tuple(s for s in self._subs if getattr(s, "piece_events", True))
        if self._key_fn is not None and any(getattr(s, "key_counts", False) for s in self._subs):
            self._count_keys = True  # attempts in flight per key (nothing is in flight yet)
            self._tally_keys = True  # and pieces done and failed per key

    def key_counts(self) -> dict[str, tuple[int, int, int]]:
        """``{key: (done, failed, in flight)}`` now, when a subscriber asked for them."""
        return {k: (s.done, s.failed, s.in_flight) for k, s in self._keys.items()}

    def drain(self) -> None:
        """Stop early but gently: start no more pieces (nor retries), let the attempts in flight
        end, then end the run; its journal records it as interrupted, so a resume does the rest.
        Safe to call from a signal handler on the run's loop (Ctrl-C on the command line)."""
        self._draining = True
        self._notify()

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called."""
        return self._draining

    def stats(self) -> RunStats:
        """Counts so far (final once ``batches()`` is exhausted)."""
        now = self._clock.now()
        return RunStats(
            total=self.succeeded + self.failed,
            succeeded=self.succeeded,
            failed=self.failed,
            attempts=self.attempts,
            retries=self.retries,
            throttles=self.throttles,
            throttle_wait=self.throttle_wait,
            wall_time=now - self._t0,
            started=self._wall0,
            finished=self._wall0 + (now - self._t0),
            resumed=self.resumed,
            hedges=self.hedges,
            hedges_won=self.hedges_won,
            retries_denied=self.retries_denied,
            breaker_opened=self.breaker_opened,
            aborted=self.aborted,
        )

    def _notify(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _shutdown(self) -> None:
        self._closing = True
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        pending = [t for t in self._workers if not t.done()]
        pending.extend(t for t in self._racers if not t.done())
        pending.extend(
            helper
            for helper in (self._feeder, self._checker)
            if helper is not None and not helper.done()
        )
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._workers.clear()
        self._idle.clear()
        try:
            if self._backend_started:
                await self._backend.close()
        finally:
            if self._journal is not None:
                # Everything settled is committed, whatever ended the run (Ctrl-C included).
                stats = self.stats()
                await self._journal.close(
                    self._status,
                    {
                        "total": stats.total,
                        "succeeded": stats.succeeded,
                        "failed": stats.failed,
                        "resumed": stats.resumed,
                        "attempts": stats.attempts,
                        "retries": stats.retries,
                        "throttles": stats.throttles,
                        "wall_time": stats.wall_time,
                        "hedges": stats.hedges,
                        "hedges_won": stats.hedges_won,
                        "retries_denied": stats.retries_denied,
                        "breaker_opened": stats.breaker_opened,
                        "aborted": stats.aborted,
                    },
                )

    def _wake_feeder(self) -> None:
        room = self._room
        if room is not None and not room.is_set() and self._window_room() > 0:
            room.set()

    def _on_journal_commit(self) -> None:
        if self._journal is not None:
            self._journal.waiting = False
        if self._journal_blocked:
            self._journal_blocked = False
            self._fill()

    def _on_journal_error(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
            self._notify()

    # ------------------------------------------------------------------ the source

    def _make_piece(self, item: Any, known_id: str | None = None) -> _Piece:
        index = self._next_index
        self._next_index = index + 1
        self._unsettled += 1
        preset = None
        provenance = None
        kind = type(item)
        if kind in _WRAPPERS:  # most items are plain: one set lookup for them
            if kind is Preset:  # read back from a journal, with its id
                preset = item
                item = preset.item
                kind = type(item)
            if kind is Sourced:  # from a splitter: the work gets the value
                provenance = item.provenance
                item = item.value
            elif kind is Malformed:  # an input line that could not be read fails on its own
                piece = _Piece(index, item, "")
                piece.provenance = item.provenance
                piece.error = MalformedInput(f"{item.provenance}: {item.error}")
                if self._journal is not None:
                    piece.id = (
                        preset.id
                        if preset is not None
                        else content_id(["malformed input", str(item.provenance)])
                    )
                return piece
        piece = _Piece(index, item, "")
        if provenance is not None:
            piece.provenance = provenance
        key_fn = self._key_fn
        try:
            if key_fn is not None:
                raw = key_fn(item)
                piece.key = "" if raw is None else str(raw)
            if self._weighted:
                piece.weights = tuple(m.weight_of(item) for m in self._rates)
            elif self._rates:
                piece.weights = (1.0,) * len(self._rates)
        except Exception as exc:
            piece.error = exc
        if preset is not None:
            piece.id = preset.id
        elif known_id is not None:
            piece.id = known_id
        elif self._journal is not None:
            try:
                fn = self._piece_id
                piece.id = content_id(item) if fn is None else str(fn(item))
            except Exception as exc:
                piece.id = ""
                if piece.error is None:
                    piece.error = ValueError(
                        f"item {index} has no stable id for the journal ({exc}); give the job an "
                        "id= function (item -> a unique string)"
                    )
        return piece

    def _window_room(self) -> int:
        """How many more items may be pulled (each adds at most one to what the window counts):
        pulled and not yet handed to the consumer stays under the window (plus the one batch the
        consumer is going through)."""
        if self._ordered:
            return self._window - (self._next_index - self._next_emit + len(self._batch))
        return self._window - (self._unsettled + len(self._batch))

    def _pull_sync(self) -> _Piece | None:
        assert self._sync_iter is not None
        try:
            item = next(self._sync_iter)
        except Exception as exc:  # StopIteration included
            self._source_ended(exc)
            return None
        return self._make_piece(item)

    def _source_ended(self, exc: Exception) -> None:
        """The synchronous source stopped: it ended (``StopIteration``) or raised ``exc``, which
        then stops the run."""
        self._exhausted = True
        if not isinstance(exc, StopIteration):
            exc.add_note(f"(raised by the items iterable after {self._next_index} items)")
            self._fatal = exc
        self._notify()

    async def _feed(self, lookups: bool) -> None:
        """Pull items into the ready queue, up to the window (the read-ahead).

        With ``lookups``, pulled pieces are first checked against the journal (in chunks, by
        ``_check``), and the ones settled by an earlier run are settled from it without running.
        """
        assert self._room is not None
        room = self._room
        sync_iter = self._sync_iter
        async_iter = self._async_iter
        try:
            while True:
                while self._window_room() <= 0:
                    room.clear()
                    await room.wait()
                fresh: list[_Piece] = []
                ended = False
                if async_iter is not None:
                    try:
                        item = await anext(async_iter)
                    except StopAsyncIteration:
                        break
                    fresh.append(self._make_piece(item))
                else:
                    assert sync_iter is not None
                    while len(fresh) < 256 and self._window_room() > 0:
                        try:
                            item = next(sync_iter)
                        except StopIteration:
                            ended = True
                            break
                        fresh.append(self._make_piece(item))
                if lookups:
                    self._to_check.extend(fresh)
                    if self._checker is None:
                        assert self._loop is not None
                        self._checker = self._loop.create_task(self._check())
                else:
                    for piece in fresh:
                        heapq.heappush(self._ready, (piece.index, piece))
                    self._fill()
                if ended:
                    break
                if async_iter is None:
                    await asyncio.sleep(0)  # let the checker and the attempts run between chunks
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            exc.add_note(f"(raised by the items iterable after {self._next_index} items)")
            self._fatal = exc
        finally:
            self._exhausted = True
            self._notify()

    async def _check(self) -> None:
        """Settle, from the journal, the pulled pieces an earlier run settled already."""
        journal = self._journal
        assert journal is not None
        try:
            while self._to_check:
                batch, self._to_check = self._to_check, []
                stored = await journal.lookup([p.id for p in batch if p.id])
                for piece in batch:
                    row = stored.get(piece.id) if piece.id else None
                    if row is None or not self._settle_from_journal(
                        piece.index, piece.item, piece.id, piece.provenance, row
                    ):
                        heapq.heappush(self._ready, (piece.index, piece))
                self._fill()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._fatal is None:
                self._fatal = exc
                self._notify()
        finally:
            self._checker = None

    def _settle_from_journal(
        self,
        index: int,
        item: Any,
        piece_id: str,
        provenance: Provenance | None,
        row: tuple[Any, ...],
    ) -> bool:
        """Settle item ``index`` as an earlier run did (``row``: a StoredPiece's fields, or a
        plain row's: see the journal's _PRELOAD_COLUMNS)."""
        if len(row) == PLAIN_ROW:  # done at the first attempt, nothing else to say
            _, key, result, started, finished, _ = row
            state, attempts, throttles, etype, emsg, etb, used = (
                "done",
                1,
                0,
                None,
                None,
                None,
                None,
            )
        else:
            (
                _,
                _,
                key,
                state,
                attempts,
                throttles,
                started,
                finished,
                result,
                etype,
                emsg,
                etb,
                used,
            ) = row
        error: ErrorInfo | None = None
        if state == "done":
            ok = True
            try:
                value = self._decode(result) if result is not None else None
            except Exception:
                return False  # unreadable (another codec, a damaged row): run it again
            self.succeeded += 1
        else:
            ok = False
            value = None
            self.failed += 1
            error = ErrorInfo(etype or "Exception", emsg or "", etb or "")
        self.resumed += 1
        if started is None:
            started = self._wall0
        self._settle(
            Outcome(
                index,
                item,
                ok,
                value,
                error,
                attempts,
                started,
                started if finished is None else finished,
                key,
                throttles,
                piece_id,
                provenance,
                (),
                0.0,
                None if used is None else _load_usage(used),
            )
        )
        return True

    def _resume_pulled(self, preloaded: Preloaded) -> _Piece | None:
        """Pull a block of items, settling from ``preloaded`` those an earlier run settled,
        without making pieces of them; those that must run are queued as pieces and the first
        is returned (``None``: none must run now)."""
        sync_iter = self._sync_iter
        assert sync_iter is not None and self._loop is not None
        want = min(self._window_room(), 512)
        pulled: list[Any] = []
        ended: Exception | None = None
        try:
            pulled.extend(islice(sync_iter, want))  # keeps what came before an error
        except Exception as exc:
            ended = exc
        else:
            if len(pulled) < want:
                ended = StopIteration()
        stored, ids = False, None
        if pulled and self._lazy_resume and not self._tally_keys:
            stored, ids = self._store_block(pulled, preloaded)
        if not stored:
            for n, item in enumerate(pulled):
                self._resume_one(item, preloaded, None if ids is None else ids[n])
        if ended is not None:  # after the pulled items have their places
            self._source_ended(ended)
        ready = self._ready
        if ready:
            return heapq.heappop(ready)[1]
        if not self._exhausted:  # let the consumer and the attempts run before pulling more
            self._loop.call_soon(self._fill)
        return None

    def _store_block(
        self, pulled: list[Any], preloaded: Preloaded
    ) -> tuple[bool, list[str] | None]:
        """Settle all of ``pulled`` lazily, as a :class:`StoredBlock`, if every item is one
        the journal holds as a plain row with a readable result; else change nothing. Also
        returns the items' ids when they were made (so that they are not made again)."""
        kinds = set(map(type, pulled))
        items = pulled
        provenance: list[Provenance | None] | None = None
        if not kinds.isdisjoint(_WRAPPERS):
            if kinds & _WRAPPERS != {Sourced}:  # journal presets, malformed lines
                return False, None
            items = [x.value if type(x) is Sourced else x for x in pulled]
            provenance = [x.provenance if type(x) is Sourced else None for x in pulled]
        fn = self._piece_id
        rows: list[tuple[Any, ...]] | None = None
        if fn is None and (kinds if items is pulled else set(map(type, items))) <= {int, str}:
            # Found by what the journal stores them as: no hashing (plain rows only).
            by_key = list(map(preloaded.by_item.get, item_keys(items)))
            if None not in by_key:
                rows = cast(list[tuple[Any, ...]], by_key)
                ids = list(map(itemgetter(0), rows))
        if rows is None:  # found by id: a hash of each item, or the job's id function
            try:
                ids = content_ids(items) if fn is None else [str(fn(item)) for item in items]
            except Exception:
                return False, None  # one has no id: it fails, with the reason, on the long way
            by_id = list(map(preloaded.by_id().get, ids))
            if None in by_id or set(map(len, by_id)) != {PLAIN_ROW}:  # type: ignore[arg-type]
                return False, ids
            rows = cast(list[tuple[Any, ...]], by_id)
        values = decode_many(self._codec, list(map(itemgetter(2), rows)))
        if values is None:
            return False, ids
        start = self._next_index
        self._next_index = start + len(pulled)
        self.succeeded += len(pulled)
        self.resumed += len(pulled)
        self.stored_blocks.append(
            StoredBlock(
                start,
                items,
                ids,
                provenance,
                rows,
                values,
                self._yielded + len(self._batch),
                self._wall0,
            )
        )
        return True, ids

    def _resume_one(self, item: Any, preloaded: Preloaded, piece_id: str | None) -> None:
        """Settle ``item`` from ``preloaded`` if an earlier run settled it, else queue it
        (``piece_id``: its id, when it is known already)."""
        kind = type(item)
        value = item
        provenance = None
        if kind is Sourced:
            provenance = item.provenance
            value = item.value
        if kind not in _WRAPPERS or kind is Sourced:  # journal presets, malformed lines: below
            fn = self._piece_id
            if piece_id is None:
                try:
                    piece_id = content_id(value) if fn is None else str(fn(value))
                except Exception:
                    piece_id = None  # it fails when made a piece, with the reason
            row = None if piece_id is None else preloaded.get(piece_id)
            if row is not None:
                assert piece_id is not None
                index = self._next_index
                self._next_index = index + 1
                self._unsettled += 1
                if self._settle_from_journal(index, value, piece_id, provenance, row):
                    return
                self._unsettled -= 1  # unreadable: it runs again
                self._next_index = index
        piece = self._make_piece(item, piece_id)
        heapq.heappush(self._ready, (piece.index, piece))

    # ------------------------------------------------------------------ admission

    def _fill(self) -> None:
        """Hand every piece that may start now to a worker: an idle one, or a new one."""
        if self._filling or self._closing:
            return
        self._filling = True
        try:
            while (piece := self._take()) is not None:
                self._hand_off(piece)
        finally:
            self._filling = False

    def _hand_off(self, piece: _Piece) -> None:
        idle = self._idle
        while idle:
            waiter = idle.pop()
            if not waiter.done():
                waiter.set_result(piece)
                return
        assert self._loop is not None
        worker = self._loop.create_task(self._worker(piece))
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    async def _worker(self, piece: _Piece | None) -> None:
        """Run attempts one after another: one worker is one slot of the concurrency.

        A worker that finishes an attempt takes the next piece itself, so a busy run creates no
        task per piece; a worker with nothing to do waits until one is handed to it.
        """
        assert self._loop is not None
        loop = self._loop
        streak = 0
        while piece is not None:
            if not await self._attempt(piece) or self._closing:
                return
            piece = self._take()
            if piece is not None:
                if self._idle and self._ready:
                    self._fill()  # more became ready at once (a key released, retries due)
                streak += 1
                if streak >= 64:
                    # Work that never suspends would otherwise keep the loop to itself: let the
                    # consumer take what has settled and the other tasks run.
                    streak = 0
                    await asyncio.sleep(0)
                continue
            waiter: asyncio.Future[_Piece | None] = loop.create_future()
            self._idle.append(waiter)
            piece = await waiter

    def _take(self) -> _Piece | None:
        """The next piece that may start now, counted as started; ``None`` if there is none."""
        if self._in_flight >= self._concurrency or self._closing or self._draining:
            return None
        journal = self._journal
        if journal is not None and journal.backlog >= self._journal_limit:
            # Resumed by the next commit. The flag goes up before the backlog is read again: a
            # commit that ended in between is seen here, one that ends after sees the flag.
            journal.waiting = True
            if journal.backlog >= self._journal_limit:
                self._journal_blocked = True
                return None
            journal.waiting = False
        if self._hedge_wanted:  # stragglers' hedges go before new pieces
            self._start_hedges()
            if self._in_flight >= self._concurrency:
                return None
        ready = self._ready
        sync_iter = self._sync_iter if self._pull_inline else None
        gated = self._gated
        now = self._clock.now() if gated else 0.0
        resumed = 0
        while True:
            if ready:
                piece = heapq.heappop(ready)[1]
            elif sync_iter is not None and not self._exhausted and self._window_room() > 0:
                preloaded = self._preloaded
                pulled = self._pull_sync() if preloaded is None else self._resume_pulled(preloaded)
                if pulled is None:
                    return None
                piece = pulled
            else:
                return None
            if piece.error is not None:
                self._fail(piece, piece.error, self._clock.now(), before_start=True)
                continue
            if self._preloaded is not None and piece.attempts == 0:
                stored = self._preloaded.get(piece.id)
                if stored is not None and self._settle_from_journal(
                    piece.index, piece.item, piece.id, piece.provenance, stored
                ):
                    resumed += 1
                    if resumed >= 512:  # let the consumer see them before pulling more
                        assert self._loop is not None
                        self._loop.call_soon(self._fill)
                        return None
                    continue
            if gated or self._gated:
                if not gated:
                    gated = True
                    now = self._clock.now()
                verdict = self._admit(piece, now)
                if verdict == 1:  # parked under its key; others may go on
                    continue
                if verdict == 2:  # the whole job waits (rate); keep the order
                    heapq.heappush(ready, (piece.index, piece))
                    return None
                if verdict == 3:  # can never fit
                    continue
            piece.attempts += 1
            self.attempts += 1
            self._in_flight += 1
            if self._count_keys:
                self._key_state(piece.key).in_flight += 1
            if self._budget is not None and piece.first_start < 0:
                self._budget.deposit(self._clock.now())  # a first attempt: retries may follow
            return piece

    def _admit(self, piece: _Piece, now: float) -> int:
        """0: start it; 1: parked for its key; 2: everything waits; 3: failed (never fits)."""
        key = piece.key
        parked = self._parked.get(key)
        if parked and not piece.unparked:
            heapq.heappush(parked, (piece.index, piece))  # its key has pieces waiting already
            return 1
        state = self._keys.get(key)
        if state is not None:
            if state.paused_until > now + EPSILON:
                self._park(piece)
                self._resume_later(key, state)
                return 1
            per_key = self._per_key if self._adaptive is None else self._limit_of(key).value
            if per_key is not None and state.in_flight >= per_key:
                self._park(piece)  # its key's next release unparks it
                return 1
        probe = 0
        if self._open_breakers and key in self._open_breakers:
            probe = self._breakers[key].peek(now)
            if probe == 2:
                self._wait_for_breaker(piece, now)
                return 1
            if probe == 3:
                self._fail(
                    piece,
                    CircuitOpen(
                        key,
                        f"not sent: the circuit breaker of key {key!r} gave up after "
                        f"{self._breakers[key].failed_probes} failed probes in a row; run the "
                        "failed pieces again later (shoal retry, job.retry_failed)",
                    ),
                    now,
                    before_start=True,
                )
                return 3
        if self._rates:
            if now < self._blocked_until - EPSILON:
                return 2
            wait = 0.0
            for meter, weight in zip(self._rates, piece.weights, strict=True):
                w = meter.wait(weight, now)
                wait = max(wait, w)
            if wait == math.inf:
                rate = next(
                    m.rate
                    for m, w in zip(self._rates, piece.weights, strict=True)
                    if w > m.rate.count + EPSILON or (m.rate.burst and w > m.rate.burst + EPSILON)
                )
                self._fail(
                    piece,
                    ValueError(
                        f"piece {piece.index} weighs {max(piece.weights):g} units, more than the "
                        f"rate {rate} allows in one window; raise the rate (or its burst) or "
                        "split the piece"
                    ),
                    now,
                    before_start=True,
                )
                return 3
            if wait > 0.0:
                self._blocked_until = now + wait
                self._add_timer(now + wait, _WAKE, None)
                return 2
            reservations: list[list[float]] = []
            starts = []
            for meter, weight in zip(self._rates, piece.weights, strict=True):
                entries = meter.start(weight, now)
                reservations.extend(entries)
                starts.append(entries)
            piece.reservations = tuple(reservations)
            if self._actuals:
                usage = piece.usage
                piece.charges = tuple(
                    (
                        self._rates[i],
                        starts[i],
                        name,
                        0.0 if usage is None else usage.get(name, 0.0),
                        piece.reports,
                    )
                    for i, name in self._actuals
                )
        if probe == 1:
            self._start_probe(piece, now)
        piece.unparked = False
        return 0

    def _park(self, piece: _Piece) -> None:
        piece.unparked = False
        parked = self._parked.get(piece.key)
        if parked is None:
            parked = self._parked[piece.key] = []
        heapq.heappush(parked, (piece.index, piece))

    def _unpark(self, key: str, now: float) -> None:
        """Move the pieces that may now start for ``key`` back to the ready queue."""
        parked = self._parked.get(key)
        if not parked:
            return
        state = self._keys.get(key)
        if state is not None and state.paused_until > now + EPSILON:
            self._resume_later(key, state)  # the pause was extended meanwhile
            return
        free = len(parked)
        if self._count_keys and state is not None:
            cap = self._per_key if self._adaptive is None else self._limit_of(key).value
            if cap is not None:
                free = min(free, cap - state.in_flight)
        for _ in range(free):
            entry = heapq.heappop(parked)
            entry[1].unparked = True
            heapq.heappush(self._ready, entry)
        if not parked:
            del self._parked[key]

    def _requeue(self, piece: _Piece, now: float) -> None:
        """A piece back from a wait: ahead of its key's newer pieces, or ready to go."""
        parked = self._parked.get(piece.key)
        if parked:
            self._park(piece)
            self._unpark(piece.key, now)
        else:
            heapq.heappush(self._ready, (piece.index, piece))

    def _resume_later(self, key: str, state: KeyState) -> None:
        """Make sure a timer will unpark ``key`` when its pause ends."""
        if state.resume_at != state.paused_until:
            state.resume_at = state.paused_until
            self._add_timer(state.paused_until, _KEY, key)

    def _limit_of(self, key: str) -> AdaptiveLimit:
        """``key``'s adaptive limit (made at its first use)."""
        assert self._adaptive is not None
        limit = self._adaptive.get(key)
        if limit is None:
            ceiling = self._adaptive_ceiling
            limit = self._adaptive[key] = AdaptiveLimit(initial=min(4, ceiling), maximum=ceiling)
        return limit

    def _adapt(self, piece: _Piece, now: float, *, drop: bool) -> None:
        """Tell ``piece``'s key's adaptive limit how its attempt went; emit a change."""
        limit = self._limit_of(piece.key)
        started = piece.attempt_start
        if drop:
            changed = limit.on_throttle(started, now)
        else:
            in_flight = self._keys[piece.key].in_flight
            changed = limit.on_success(now - started, started, now, in_flight)
        if changed and self._subs:
            self._emit(LimitChanged(now - self._t0, piece.key, "concurrency", limit.value))

    def _charge(self, piece: _Piece) -> None:
        """Count, in rates with ``actual=``, what the attempt reported instead of its estimate."""
        usage = piece.usage
        for meter, entries, name, before, reports in piece.charges:
            if piece.reports == reports:
                continue  # it reported nothing: the reservation stands
            used = 0.0 if usage is None else usage.get(name, 0.0) - before
            meter.correct(entries, max(used, 0.0))
            self._blocked_until = -math.inf  # room may have come back: look again
        piece.charges = ()

    def _hold_key(self, piece: _Piece, now: float) -> None:
        """The work asked its key to pause (a server said its budget is used up for now)."""
        delay, piece.hold = piece.hold, 0.0
        self._gated = True
        state = self._key_state(piece.key)
        state.paused_until = max(state.paused_until, now + delay)

    def _key_state(self, key: str) -> KeyState:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = KeyState()
        return state

    # ------------------------------------------------------------------ timers

    def _add_timer(self, when: float, kind: int, payload: Any) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, payload))
        if when < self._timer_when:
            self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        if not self._timers or self._closing:
            self._timer_when = math.inf
            return
        when = self._timers[0][0]
        self._timer_when = when
        assert self._loop is not None
        delay = max(0.0, when - self._clock.now())
        self._timer_handle = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer_handle = None
        self._timer_when = math.inf
        now = self._clock.now()
        timers = self._timers
        while timers and timers[0][0] <= now + EPSILON:
            _, _, kind, payload = heapq.heappop(timers)
            if kind == _RETRY:
                self._requeue(payload, now)
            elif kind == _KEY:
                self._unpark(payload, now)
            elif kind == _HEDGE:
                self._want_hedge(*payload)
        if timers:
            self._arm_timer()
        self._fill()

    # ------------------------------------------------------------------ attempts

    async def _attempt(self, piece: _Piece) -> bool:
        """One attempt, start to settle (or retry). ``False`` if the run must stop."""
        clock = self._clock
        started = clock.now()
        if piece.reservations:
            for entry in piece.reservations:
                entry[0] = started  # a rate counts the real start, not the admission
            piece.reservations = ()
        piece.attempt_start = started
        if piece.first_start < 0:
            piece.first_start = started
        if self._piece_subs:
            self._emit(
                AttemptStarted(started - self._t0, piece.index, piece.key, piece.attempts),
                self._piece_subs,
            )
        journal = self._journal
        if journal is not None and piece.attempts == 1 and piece.throttles == 0 and piece.id:
            try:
                piece.stored_item = self._item_codec.encode(piece.item)
            except (TypeError, ValueError):
                piece.stored_item = None  # runs all the same; `retry_failed` will need items=
            journal.started(
                piece.id, piece.index, piece.key, piece.stored_item, self._wall(started)
            )
        invoke = self._invoke
        assert invoke is not None
        _set_meter(piece)  # shoal.usage() in the work adds to this piece (this worker's context)
        if self._hedge is not None:
            return await self._race(piece, started)
        try:
            if self._timeout is None:
                value = await invoke(piece.item)
            else:
                value = await self._invoke_with_timeout(invoke, piece.item, self._timeout)
            if type(value) is Reported:  # from another process, with the usage it reported
                piece.usage = merge_usage(piece.usage, value.usage)
                piece.reports += 1
                value = value.value
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closing or (task is not None and task.cancelling()):
                raise
            # The work itself raised CancelledError (not us cancelling it): a failure like others.
            self._on_error(piece, asyncio.CancelledError("the work raised CancelledError"))
        except Exception as exc:
            self._on_error(piece, exc)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit from the work: stop the run
            self._fatal = exc
            self._notify()
            return False
        else:
            self._on_success(piece, value)
        return True

    @staticmethod
    async def _invoke_with_timeout(invoke: Invoker, item: Any, timeout: float) -> Any:
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await invoke(item)
        except TimeoutError:
            if scope.expired():
                raise TimeoutError(
                    f"the attempt took longer than its timeout of {timeout:g}s"
                ) from None
            raise

    def _release(self, piece: _Piece, now: float) -> None:
        self._in_flight -= 1
        if self._draining and not self._in_flight:
            self._notify()  # the last attempt in flight ended: the drained run can end
        if piece.charges:
            self._charge(piece)
        if piece.hold:
            self._hold_key(piece, now)
        if self._count_keys:
            self._keys[piece.key].in_flight -= 1
            if piece.key in self._parked:
                self._unpark(piece.key, now)

    def _record_attempt(
        self,
        piece: _Piece,
        now: float,
        outcome: str,
        exc: BaseException | None,
        *,
        attempt: int | None = None,
    ) -> None:
        """Journal one ended attempt of ``piece`` (ok, error or throttled)."""
        assert self._journal is not None
        self._journal.attempt_ended(
            piece.id,
            piece.attempts if attempt is None else attempt,
            self._wall(piece.attempt_start),
            self._wall(now),
            outcome,
            None if exc is None else type_name(exc),
            None if exc is None else str(exc),
        )

    def _record_settled(
        self, piece: _Piece, first: float, end: float, result: Any, error: ErrorInfo | None
    ) -> None:
        """Journal how ``piece`` ended (``first``, ``end``: seconds since the epoch): done with
        its encoded result, or failed with its error."""
        journal = self._journal
        assert journal is not None
        if error is None and piece.attempts == 1 and not piece.throttles and piece.usage is None:
            journal.settled_done(
                (
                    piece.id,
                    piece.index,
                    piece.key,
                    None if piece.provenance is None else str(piece.provenance),
                    piece.stored_item,
                    first,
                    end,
                    result,
                    journal.run_id,
                )
            )
            return
        journal.settled(
            (
                piece.id,
                piece.index,
                piece.key,
                None if piece.provenance is None else str(piece.provenance),
                piece.stored_item,
                "done" if error is None else "failed",
                piece.attempts,
                piece.throttles,
                first,
                end,
                result,
                None if error is None else error.type,
                None if error is None else error.message,
                None if error is None else error.traceback,
                None if piece.usage is None else json.dumps(piece.usage),
                journal.run_id,
            )
        )

    def _wall(self, t: float) -> float:
        """A clock reading as seconds since the epoch."""
        return t + self._offset

    def _on_success(self, piece: _Piece, value: Any) -> None:
        now = self._clock.now()
        journal = self._journal
        encoded: Any = None
        if journal is not None and piece.id:
            try:
                encoded = self._codec.encode(value)
            except Exception as exc:
                self._release(piece, now)
                error = ValueError(
                    f"the result of piece {piece.index} (a {type(value).__qualname__}) cannot be "
                    f"stored in the journal by the {self._codec.name} codec: {exc}. Return "
                    "data the codec can store, or give the job another codec= (e.g. "
                    "shoal.journal.PickleCodec(), which is not safe for journals you did not "
                    "write yourself)"
                )
                error.__cause__ = exc
                self._fail(piece, error, now)
                return
            if piece.attempts > 1 or piece.throttles:
                # A piece done at its first try is its own record (its row's start and end);
                # the attempts table holds the history of the pieces that needed more.
                self._record_attempt(piece, now, "ok", None)
        offset = self._offset
        first = piece.first_start + offset
        end = now + offset
        if journal is not None and piece.id:
            self._record_settled(piece, first, end, encoded, None)
        if self._adaptive is not None:
            self._adapt(piece, now, drop=False)
        if self._breaker is not None:
            self._breaker_record(piece, False, now)
        self._release(piece, now)
        self.succeeded += 1
        if self._piece_subs:
            self._emit(
                PieceSucceeded(
                    now - self._t0,
                    piece.index,
                    piece.key,
                    piece.attempts,
                    now - piece.attempt_start,
                ),
                self._piece_subs,
            )
        self._settle(
            Outcome(
                piece.index,
                piece.item,
                True,
                value,
                None,
                piece.attempts,
                first,
                end,
                piece.key,
                piece.throttles,
                piece.id,
                piece.provenance,
                piece.retry_causes,
                piece.throttle_wait,
                piece.usage,
            )
        )
        if self._max_failure_rate is not None:
            self._check_abort(failed=False)

    def _on_error(self, piece: _Piece, exc: BaseException) -> None:
        now = self._clock.now()
        remote_usage = getattr(exc, "shoal_usage", None)
        if type(remote_usage) is dict:  # reported in another process before the work failed
            piece.usage = merge_usage(piece.usage, remote_usage)
            piece.reports += 1
            del exc.shoal_usage  # type: ignore[attr-defined]
        retry = self._retry
        delay: float
        retry_after = throttle_delay(exc)
        if self._adaptive is not None and (retry_after is not False or type(exc) is TimeoutError):
            self._adapt(piece, now, drop=True)
        if self._breaker is not None:
            if retry_after is False:
                self._breaker_record(piece, retry.retries_on(exc), now)
            elif piece.probe:  # a throttled probe tells nothing: the next attempt probes
                piece.probe = False
                self._breaker_of(piece.key).probe_void()
        self._release(piece, now)
        if retry_after is not False:
            piece.attempts -= 1  # a throttle does not use up an attempt
            piece.throttles += 1
            self.throttles += 1
            if piece.throttles > retry.max_throttles:
                explain(
                    exc,
                    f"(throttled {piece.throttles} times, more than Retry(max_throttles="
                    f"{retry.max_throttles}) allows)",
                )
                piece.attempts += 1  # report the attempt that ended it
                self._fail(piece, exc, now)
                return
            if retry_after is None or retry_after is True:
                delay = retry.backoff(piece.throttles, self._rng)
            else:
                delay = float(retry_after)
            if not self._within_deadline(piece, now, delay):
                explain(exc, "(the piece's retry deadline passed while it was throttled)")
                piece.attempts += 1
                self._fail(piece, exc, now)
                return
            self.throttle_wait += delay
            piece.throttle_wait += delay
            if self._journal is not None and piece.id:
                self._record_attempt(piece, now, "throttled", exc, attempt=piece.attempts + 1)
            # Pause the key so its neighbours do not pile on while the server wants quiet.
            self._gated = True
            state = self._key_state(piece.key)
            until = now + delay
            state.paused_until = max(state.paused_until, until)
            if self._subs:
                self._emit(
                    ThrottleWait(
                        now - self._t0,
                        piece.index,
                        piece.key,
                        piece.attempts + 1,
                        delay,
                        None if retry_after is None else float(retry_after),
                    )
                )
            self._add_timer(until, _RETRY, piece)
            return
        if (
            piece.attempts < retry.attempts
            and retry.retries_on(exc)
            and self._within_deadline(piece, now, delay := retry.backoff(piece.attempts, self._rng))
        ):
            budget = self._budget
            if budget is not None and not budget.withdraw(now):
                self.retries_denied += 1
                explain(
                    exc,
                    f"(not retried: the job's retry budget is spent: {budget.describe(now)}; "
                    "failing fast rather than piling retries onto a failing dependency. "
                    "Job(retry_budget=...) sets it)",
                )
                self._fail(piece, exc, now)
                return
            self.retries += 1
            piece.retry_causes = (*piece.retry_causes, type_name(exc))
            if self._journal is not None and piece.id:
                self._record_attempt(piece, now, "error", exc)
            if self._subs:
                self._emit(
                    RetryScheduled(
                        now - self._t0,
                        piece.index,
                        piece.key,
                        piece.attempts,
                        delay,
                        type_name(exc),
                        str(exc),
                    )
                )
            if delay <= 0.0:
                self._requeue(piece, now)
            else:
                self._add_timer(now + delay, _RETRY, piece)
            return
        self._fail(piece, exc, now)

    def _within_deadline(self, piece: _Piece, now: float, delay: float) -> bool:
        deadline = self._retry.deadline
        if deadline is None:
            return True
        return (now + delay) - piece.first_start <= deadline + EPSILON

    def _fail(
        self, piece: _Piece, exc: BaseException, now: float, *, before_start: bool = False
    ) -> None:
        self.failed += 1
        error = ErrorInfo.from_exception(exc)
        if self._subs:
            duration = 0.0 if before_start else now - piece.attempt_start
            self._emit(
                PieceFailed(
                    now - self._t0,
                    piece.index,
                    piece.key,
                    piece.attempts,
                    duration,
                    error.type,
                    error.message,
                )
            )
        first = self._wall(piece.first_start if piece.first_start >= 0 else now)
        end = self._wall(now)
        if self._journal is not None and piece.id:
            if not before_start:
                self._record_attempt(piece, now, "error", exc)
            self._record_settled(piece, first, end, None, error)
        self._settle(
            Outcome(
                piece.index,
                piece.item,
                False,
                None,
                error,
                piece.attempts,
                first,
                end,
                piece.key,
                piece.throttles,
                piece.id,
                piece.provenance,
                piece.retry_causes,
                piece.throttle_wait,
                piece.usage,
            )
        )
        if self._max_failure_rate is not None:
            self._check_abort(failed=True)

    def _settle(self, outcome: Outcome[Any]) -> None:
        self._unsettled -= 1
        if self._tally_keys:
            state = self._key_state(outcome.key)
            if outcome.ok:
                state.done += 1
            else:
                state.failed += 1
        if self._ordered:
            reorder = self._reorder
            index = outcome.index
            if index == self._next_emit and not reorder:  # the next in order: no reordering
                self._batch.append(outcome)
                self._next_emit = index + 1
            else:
                reorder[index] = outcome
                nxt = self._next_emit
                while nxt in reorder:
                    self._batch.append(reorder.pop(nxt))
                    nxt += 1
                self._next_emit = nxt
        else:
            self._batch.append(outcome)
        self._notify()
        self._wake_feeder()

    # ------------------------------------------------------------------ hedging

    async def _race(self, piece: _Piece, started: float) -> bool:
        """One try of ``piece`` that may be hedged: its first attempt runs as a task, a timer
        asks for a hedge once it runs past the percentile, and the first success settles it."""
        loop = self._loop
        assert loop is not None and self._latencies is not None
        race = _Race(loop.create_future())
        piece.race = race
        self._start_racer(piece, race, hedge=False)
        threshold = self._latencies.threshold()
        if threshold is not None:
            race.threshold = threshold
            self._add_timer(started + threshold, _HEDGE, (piece, race))
        try:
            value, exc = await race.waiter
        except asyncio.CancelledError:
            for task in race.racers:
                task.cancel()
            raise
        finally:
            piece.race = None
        if exc is None:
            self._on_success(piece, value)
        elif isinstance(exc, Exception | asyncio.CancelledError):
            self._on_error(piece, exc)
        else:  # KeyboardInterrupt, SystemExit from the work: the racer stopped the run
            return False
        return True

    def _start_racer(self, piece: _Piece, race: _Race, *, hedge: bool) -> None:
        loop = self._loop
        assert loop is not None
        if hedge:  # started from _take, in whatever context: shoal.usage() must find the piece
            context = contextvars.copy_context()
            context.run(_set_meter, piece)
            task = loop.create_task(self._racer(piece, race, hedge=True), context=context)
        else:
            task = loop.create_task(self._racer(piece, race, hedge=False))
        race.racers.append(task)
        self._racers.add(task)
        task.add_done_callback(self._racers.discard)

    async def _racer(self, piece: _Piece, race: _Race, *, hedge: bool) -> None:
        """One attempt of a hedged try, as its own task."""
        started = self._clock.now()
        invoke = self._invoke
        assert invoke is not None
        try:
            try:
                if self._timeout is None:
                    value = await invoke(piece.item)
                else:
                    value = await self._invoke_with_timeout(invoke, piece.item, self._timeout)
                if type(value) is Reported:
                    piece.usage = merge_usage(piece.usage, value.usage)
                    piece.reports += 1
                    value = value.value
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closing:
                    raise
                if task is not None and task.cancelling():
                    return  # it lost: the winner cancelled it
                self._racer_failed(race, asyncio.CancelledError("the work raised CancelledError"))
            except Exception as exc:
                self._racer_failed(race, exc)
            except BaseException as exc:  # KeyboardInterrupt, SystemExit from the work
                self._fatal = exc
                self._notify()
                if not race.waiter.done():
                    race.waiter.set_result((None, exc))
            else:
                self._racer_won(race, value, hedge, self._clock.now() - started)
        finally:
            task = asyncio.current_task()
            if task is not None and task in race.racers:
                race.racers.remove(task)
            if hedge:
                self._end_hedge(piece)

    def _racer_won(self, race: _Race, value: Any, hedge: bool, seconds: float) -> None:
        if race.waiter.done():
            return  # the other one finished in the same turn, and first
        if hedge:
            self.hedges_won += 1
        assert self._latencies is not None
        self._latencies.add(seconds)
        current = asyncio.current_task()
        for task in race.racers:
            if task is not current:
                task.cancel()
        race.waiter.set_result((value, None))

    def _racer_failed(self, race: _Race, exc: BaseException) -> None:
        if race.waiter.done():
            return
        race.errors.append(exc)
        if len(race.racers) > 1:
            return  # the other attempt may still succeed
        race.waiter.set_result((None, race.errors[0]))

    def _hedge_room(self, *, long: bool) -> bool:
        """Whether one more hedge stays within ``max_share`` of the other attempts. A try that
        only just crossed the percentile may use three quarters of that; the rest is kept for
        tries that ran past 1.5 times the percentile (real stragglers, not the top of the normal
        spread), so that the last straggler of a run still finds room when, near the end, no
        new attempts add any."""
        assert self._hedge is not None
        cap = self._hedge.max_share * (self.attempts - self.hedges)
        if not long:
            cap *= 0.75
        return self.hedges + 1 <= cap + 1e-9

    def _want_hedge(self, piece: _Piece, race: _Race) -> None:
        """The hedge timer of a try fired: it still runs, so it waits for a hedge (and a
        second timer, at 1.5 times the percentile, lets it use the reserve)."""
        if race.waiter.done() or self._draining:
            return
        if race.hedged:
            return  # the second timer: _on_timer's _fill looks at the queue again
        race.hedged = True
        self._hedge_wanted.append((piece, race))
        self._add_timer(piece.attempt_start + 1.5 * race.threshold, _HEDGE, (piece, race))

    def _start_hedges(self) -> None:
        """Start the hedges asked for that the limits allow now (each takes a slot).

        The tries that have run longest go first, and a try waits (until it ends) while the cap
        has no room: when the percentile lets through more attempts than the cap allows (p95
        lets through about 5%, all of a 5% cap), the stragglers far past it are the ones that
        get the hedges as room comes back, not whoever crossed the line last.
        """
        wanted, self._hedge_wanted = self._hedge_wanted, []
        if len(wanted) > 1:
            wanted.sort(key=lambda entry: entry[0].attempt_start)
        now = self._clock.now()
        for piece, race in wanted:
            if race.waiter.done():
                continue  # the try ended meanwhile
            long = now - piece.attempt_start >= 1.5 * race.threshold - EPSILON
            if self._in_flight >= self._concurrency or not self._hedge_room(long=long):
                self._hedge_wanted.append((piece, race))
                continue
            if not self._admit_hedge(piece, now):
                self._hedge_wanted.append((piece, race))  # its key or a rate: later
                continue
            self.attempts += 1
            self.hedges += 1
            self._in_flight += 1
            if self._count_keys:
                self._key_state(piece.key).in_flight += 1
            if self._subs:
                self._emit(
                    HedgeStarted(
                        now - self._t0,
                        piece.index,
                        piece.key,
                        piece.attempts,
                        now - piece.attempt_start,
                    )
                )
            self._start_racer(piece, race, hedge=True)

    def _admit_hedge(self, piece: _Piece, now: float) -> bool:
        """Whether the limits let a hedge of ``piece`` start now (its rates are then counted);
        a hedge never waits in a queue of its own key."""
        key = piece.key
        if key in self._open_breakers:
            return False
        state = self._keys.get(key)
        if state is not None:
            if state.paused_until > now + EPSILON:
                return False
            if self._count_keys:
                cap = self._per_key if self._adaptive is None else self._limit_of(key).value
                if cap is not None and state.in_flight >= cap:
                    return False
        if self._rates:
            if now < self._blocked_until - EPSILON:
                return False
            weights = piece.weights
            for meter, weight in zip(self._rates, weights, strict=True):
                if meter.wait(weight, now) > 0.0:
                    return False
            for meter, weight in zip(self._rates, weights, strict=True):
                meter.start(weight, now)
        return True

    def _end_hedge(self, piece: _Piece) -> None:
        """A hedge attempt ended (won, lost or failed): give back its slot."""
        self._in_flight -= 1
        if self._draining and not self._in_flight:
            self._notify()
        if self._count_keys:
            self._keys[piece.key].in_flight -= 1
            if piece.key in self._parked:
                self._unpark(piece.key, self._clock.now())
        if not self._closing:
            self._fill()

    # ------------------------------------------------------------------ circuit breakers

    def _breaker_of(self, key: str) -> BreakerState:
        breaker = self._breakers.get(key)
        if breaker is None:
            assert self._breaker is not None
            breaker = self._breakers[key] = BreakerState(self._breaker)
        return breaker

    def _breaker_record(self, piece: _Piece, failed: bool, now: float) -> None:
        """Tell ``piece``'s key's breaker how its attempt went; act on a change of state."""
        breaker = self._breaker_of(piece.key)
        probe, piece.probe = piece.probe, False
        change = breaker.record(failed, now, probe=probe)
        if change is None:
            return
        key = piece.key
        until: float | None = None
        if change == OPEN:
            self.breaker_opened += 1
            self._open_breakers.add(key)
            # Nothing goes to the key until the cooldown ends: its pieces park, as in a pause.
            self._gated = True
            state = self._key_state(key)
            state.paused_until = max(state.paused_until, breaker.until)
            if key in self._parked:
                self._resume_later(key, state)
            until = breaker.until - self._t0
        elif change == CLOSED:
            self._open_breakers.discard(key)
            self._unpark(key, now)
        if self._subs:
            reason = {
                OPEN: breaker.reason(),
                CLOSED: "the probe succeeded",
                GAVE_UP: f"{breaker.failed_probes} probes failed in a row",
            }[change]
            self._emit(BreakerChanged(now - self._t0, key, change, until, reason))
        if change == GAVE_UP:
            parked = self._parked.pop(key, [])
            for _, waiting in sorted(parked):
                self._fail(
                    waiting,
                    CircuitOpen(
                        key,
                        f"not sent: the circuit breaker of key {key!r} gave up after "
                        f"{breaker.failed_probes} failed probes in a row; run the failed "
                        "pieces again later (shoal retry, job.retry_failed)",
                    ),
                    now,
                    before_start=True,
                )

    def _wait_for_breaker(self, piece: _Piece, now: float) -> None:
        """Park ``piece`` while its key's breaker is open or its probe is out."""
        breaker = self._breakers[piece.key]
        self._park(piece)
        if breaker.state == OPEN:  # a timer unparks the key when the cooldown ends
            state = self._key_state(piece.key)
            state.paused_until = max(state.paused_until, breaker.until)
            self._resume_later(piece.key, state)
        # Half-open: the probe's end unparks the key.

    def _start_probe(self, piece: _Piece, now: float) -> None:
        breaker = self._breakers[piece.key]
        was = breaker.state
        breaker.start_probe()
        piece.probe = True
        if self._subs and was != HALF_OPEN:
            self._emit(
                BreakerChanged(
                    now - self._t0, piece.key, HALF_OPEN, None, "the cooldown is over: one probe"
                )
            )

    # ------------------------------------------------------------------ the abort threshold

    def _check_abort(self, *, failed: bool) -> None:
        """Count a piece this run settled; drain the run once too many failed."""
        self._ran += 1
        if failed:
            self._ran_failed += 1
        rate = self._max_failure_rate
        assert rate is not None
        if (
            self.aborted is None
            and self._ran >= self._min_pieces
            and self._ran_failed > rate * self._ran + 1e-9
        ):
            self.aborted = (
                f"aborted: {self._ran_failed:,} of the {self._ran:,} pieces settled had failed "
                f"({self._ran_failed / self._ran:.0%}), more than max_failure_rate={rate:g} "
                f"allows (checked from min_pieces={self._min_pieces}); the pieces in flight "
                "finished, the rest never started and stay for a resume"
            )
            self.drain()

    # ------------------------------------------------------------------ events

    def _emit(self, event: AnyEvent, subscribers: tuple[Subscriber, ...] | None = None) -> None:
        for subscriber in self._subs if subscribers is None else subscribers:
            try:
                subscriber(event)
            except Exception as exc:  # a failing observer (a journal on a full disk) stops the run
                if self._fatal is None:
                    exc.add_note(f"(raised by the event subscriber {subscriber!r})")
                    self._fatal = exc
                    self._notify()


def _load_usage(text: str | None) -> dict[str, float] | None:
    """A piece's usage as the journal stored it (JSON), or ``None``."""
    if not text:
        return None
    try:
        loaded = json.loads(text)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None


def _length(items: object) -> int | None:
    """``len(items)`` if it has one (a generator has none, and is never consumed here)."""
    try:
        return len(items)  # type: ignore[arg-type]
    except Exception:  # no __len__, or one that fails: the total is just unknown
        return None
