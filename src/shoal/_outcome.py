"""What a run gives back: one Outcome per item, the failures beside the values, and the stats."""

from __future__ import annotations

import contextlib
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._codec import to_plain
from ._combine import Combined, Combiner
from ._modnames import job_file_stem
from ._records import quick_frozen_init
from ._split import Provenance

if TYPE_CHECKING:
    from ._report import Report

T = TypeVar("T")


def type_name(exc: BaseException) -> str:
    """An exception's class name for reports: qualified by its module, except built-ins and
    scripts; a job file's classes by the file's name (``scan.ParseError``)."""
    kind = type(exc)
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    module = job_file_stem(module) or module
    return f"{module}.{kind.__qualname__}"


def explain(exc: BaseException, note: str) -> None:
    """Add shoal's ``note`` on why ``exc`` ended its piece: in its traceback (a note) and in the
    message the outcome, the journal and the report keep (:attr:`ErrorInfo.message`)."""
    exc.add_note(note)
    with contextlib.suppress(AttributeError, TypeError):  # a type that refuses attributes
        why: list[str] = exc.__dict__.setdefault("_shoal_why", [])
        why.append(note)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a piece failed, as data: safe to store, compare and print.

    Attributes:
        type: The exception's class name (qualified by module unless it is a built-in).
        message: ``str(exception)``.
        traceback: The formatted traceback, as text.
        exception: The live exception when the failure happened in this process (not stored,
            not compared).
    """

    type: str
    message: str
    traceback: str = ""
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        message = str(exc)
        why = getattr(exc, "_shoal_why", None)
        if why:
            message = " ".join([message, *why]) if message else " ".join(why)
        return cls(
            type=type_name(exc),
            message=message,
            traceback="".join(traceback.format_exception(exc)),
            exception=exc,
        )

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """How one item ended.

    Attributes:
        index: The item's position in this run's input.
        item: The item itself.
        ok: Whether it succeeded.
        value: The work's return value (``None`` when it failed).
        error: Why it failed (``None`` when it succeeded).
        attempts: Attempts made (throttled attempts are not counted).
        started: When its first attempt started (seconds since the epoch, from the run's clock).
        finished: When it settled (same clock).
        key: The item's key (``""`` without a key function).
        throttles: How often it was throttled.
        id: The piece's stable id in the journal (``""`` when the run has no journal).
        provenance: Where its input came from (file and line, ...) when a splitter made it.
        retry_causes: The error type of each failed attempt that was tried again, in order.
        throttle_wait: Seconds it waited because it was throttled.
        usage: What its work reported with :func:`shoal.usage` (tokens, cost, ...), summed over
            its attempts; ``None`` when it reported nothing.
    """

    index: int
    item: Any
    ok: bool
    value: T | None
    error: ErrorInfo | None
    attempts: int
    started: float
    finished: float
    key: str = ""
    throttles: int = 0
    id: str = ""
    provenance: Provenance | None = None
    retry_causes: tuple[str, ...] = ()
    throttle_wait: float = 0.0
    usage: dict[str, float] | None = None

    @property
    def duration(self) -> float:
        """Seconds from the first attempt's start to the piece's end, waits included."""
        return self.finished - self.started

    def unwrap(self) -> T:
        """The value, or raise the failure's exception (or a ``ShoalError`` describing it)."""
        if self.ok:
            return self.value  # type: ignore[return-value]
        assert self.error is not None
        if self.error.exception is not None:
            raise self.error.exception
        from ._exceptions import ShoalError

        raise ShoalError(f"piece {self.index} failed: {self.error}")

    def as_failure(self) -> Failure:
        assert not self.ok and self.error is not None
        return Failure(self.index, self.item, self.error, self.attempts, self.key, self.provenance)


quick_frozen_init(Outcome)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed piece, standing in its item's place in ``map(..., errors="return")``."""

    index: int
    item: Any
    error: ErrorInfo
    attempts: int
    key: str = ""
    provenance: Provenance | None = None

    def __str__(self) -> str:
        where = f", at {self.provenance}" if self.provenance is not None else ""
        return f"Failure(index={self.index}, {self.error}, attempts={self.attempts}{where})"


@dataclass(frozen=True, slots=True)
class RunStats:
    """Counts and times of a finished run.

    Attributes:
        total: Pieces settled.
        succeeded, failed: How they ended.
        attempts: Attempts started, first ones and retries (throttled attempts included).
        retries: Attempts after a failure.
        throttles: Times a piece was told to slow down.
        throttle_wait: Seconds pieces spent waiting on throttles, summed.
        wall_time: Seconds from start to end.
        started, finished: Seconds since the epoch.
        resumed: Pieces settled by an earlier run and read back from the journal (counted in
            total, succeeded and failed, not in attempts).
        hedges: Hedged attempts started (``Job(hedge=...)``; counted in attempts too).
        hedges_won: Of those, how many finished first with a value.
        retries_denied: Transient failures not retried because the job's retry budget was
            spent (``Job(retry_budget=...)``): they failed at once.
        breaker_opened: Times a key's circuit breaker opened (``Job(breaker=...)``).
        aborted: Why the run stopped early (``Job(max_failure_rate=...)``), or ``None``. An
            aborted run's outcomes are the pieces that settled; the rest stay for a resume.
    """

    total: int
    succeeded: int
    failed: int
    attempts: int
    retries: int
    throttles: int
    throttle_wait: float
    wall_time: float
    started: float
    finished: float
    resumed: int = 0
    hedges: int = 0
    hedges_won: int = 0
    retries_denied: int = 0
    breaker_opened: int = 0
    aborted: str | None = None

    @property
    def throughput(self) -> float:
        """Pieces settled per second of wall time."""
        return self.total / self.wall_time if self.wall_time > 0 else float("inf")


class Run(Generic[T]):
    """A finished run: outcomes in input order, the values, the failures and the stats.

    Attributes:
        outcomes: One :class:`Outcome` per item, in input order.
        stats: :class:`RunStats`.
    """

    __slots__ = (
        "_build",
        "_combine",
        "_combined",
        "_outcomes",
        "_plain_values",
        "_report",
        "_result",
        "_result_done",
        "completion_order",
        "name",
        "stats",
    )

    def __init__(
        self,
        outcomes: list[Outcome[T]],
        stats: RunStats,
        *,
        combine: Callable[[list[T]], Any] | None = None,
        name: str | None = None,
        completion_order: list[int] | None = None,
    ) -> None:
        self._outcomes: list[Outcome[T]] | None = outcomes
        self._build: Callable[[], list[Outcome[T]]] | None = None
        self._plain_values: list[T] | None = None
        #: Indexes of ``outcomes`` in the order the pieces settled.
        self.completion_order = (
            completion_order if completion_order is not None else list(range(len(outcomes)))
        )
        self.stats = stats
        self.name = name
        self._combine = combine
        self._combined: Combined | None = None
        self._report: Report | None = None
        self._result: Any = None
        self._result_done = False

    @classmethod
    def deferred(
        cls,
        build: Callable[[], list[Outcome[T]]],
        stats: RunStats,
        *,
        values: list[T] | None,
        combine: Callable[[list[T]], Any] | None = None,
        name: str | None = None,
        completion_order: list[int],
    ) -> Run[T]:
        """A run whose outcomes are made by ``build()`` when first asked for (``values``, when
        given, are every item's value, in input order, for runs where all succeeded): chunked
        runs carry what their workers sent, and ``shoal.map`` needs only the values."""
        run: Run[T] = cls([], stats, combine=combine, name=name, completion_order=completion_order)
        run._outcomes = None
        run._build = build
        run._plain_values = values
        return run

    @property
    def outcomes(self) -> list[Outcome[T]]:
        """One :class:`Outcome` per item, in input order."""
        outcomes = self._outcomes
        if outcomes is None:
            assert self._build is not None
            outcomes = self._outcomes = self._build()
            self._build = None
        return outcomes

    @outcomes.setter
    def outcomes(self, outcomes: list[Outcome[T]]) -> None:
        self._outcomes = outcomes
        self._build = None
        self._plain_values = None

    @property
    def values(self) -> list[T]:
        """The successful values, in input order (failed items left out)."""
        if self._outcomes is None and self._plain_values is not None:
            return list(self._plain_values)
        return [o.value for o in self.outcomes if o.ok]  # type: ignore[misc]

    @property
    def failures(self) -> list[Failure]:
        """The failed pieces, in input order, with their items and errors."""
        return [o.as_failure() for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        """Whether every piece succeeded."""
        return self.stats.failed == 0

    @property
    def result(self) -> Any:
        """The job's combiner applied to ``values``; ``values`` when the job has no combiner."""
        if not self._result_done:
            combine = self._combine
            if isinstance(combine, Combiner):
                combined = self.combined
                assert combined is not None
                self._result = combined.value
            else:
                values = self.values
                self._result = values if combine is None else combine(values)
            self._result_done = True
        return self._result

    @property
    def combined(self) -> Combined | None:
        """With a ``shoal.combine`` combiner: the result with its records, each traceable to
        the pieces it came from (``run.combined.trace(i)``); ``None`` otherwise."""
        if not isinstance(self._combine, Combiner):
            return None
        if self._combined is None:
            self._combined = self._combine.apply(self.outcomes)
        return self._combined

    @property
    def report(self) -> Report:
        """The run as data (counts, latency, retries, failures, usage, a timeline), rendered by
        ``print(run.report)``, ``run.report.save("report.html")`` and the like."""
        if self._report is None:
            from ._report import Report

            self._report = Report.from_run(self)
        return self._report

    def export(self, path: str | os.PathLike[str], *, format: str | None = None) -> Path:
        """Write the outcomes, in input order, to a file: JSON Lines or Parquet.

        Each record has ``index``, ``id``, ``key``, ``ok``, ``value``, ``error`` (type and
        message), ``attempts``, ``throttles``, ``started`` and ``finished``. Values are written as
        JSON (tuples and sets as lists, bytes as base64, paths and dates as text; anything else
        as its ``str``). The file is replaced whole: a crash never leaves half of one.

        Args:
            path: Where to write; the format follows its extension (``.jsonl``, ``.parquet``).
            format: ``"jsonl"`` or ``"parquet"``, to override the extension.

        Raises:
            ValueError: an unknown format.
            ImportError: Parquet without pyarrow (the message says how to install it).
        """
        target = Path(path)
        fmt = (format or target.suffix.lstrip(".")).lower()
        if fmt in ("jsonl", "ndjson"):
            writer = _write_jsonl
        elif fmt in ("parquet", "pq"):
            writer = _write_parquet
        else:
            raise ValueError(
                f"cannot export to {str(path)!r}: use a .jsonl or .parquet path, or "
                "format='jsonl' / 'parquet'"
            )
        records = [_record(o) for o in self.outcomes]
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        try:
            writer(records, tmp)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return target

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<Run{' ' + repr(self.name) if self.name else ''}: {s.succeeded} succeeded, "
            f"{s.failed} failed, {s.attempts} attempts in {s.wall_time:.3f}s>"
        )


def _record(outcome: Outcome[Any]) -> dict[str, Any]:
    error = outcome.error
    return {
        "index": outcome.index,
        "id": outcome.id,
        "key": outcome.key,
        "ok": outcome.ok,
        "value": to_plain(outcome.value),
        "error": None if error is None else {"type": error.type, "message": error.message},
        "provenance": None if outcome.provenance is None else str(outcome.provenance),
        "attempts": outcome.attempts,
        "throttles": outcome.throttles,
        "started": outcome.started,
        "finished": outcome.finished,
    }


def _write_jsonl(records: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False))
            fh.write("\n")


def _write_parquet(records: list[dict[str, Any]], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            "exporting Parquet needs pyarrow: pip install pyarrow (or export to .jsonl)"
        ) from exc
    columns: dict[str, list[Any]] = {name: [] for name in records[0]} if records else {}
    for record in records:
        for name, value in record.items():
            if name in ("value", "error") and value is not None:
                columns[name].append(json.dumps(value, ensure_ascii=False))
            else:
                columns[name].append(value)
    pq.write_table(pa.table(columns), path)
