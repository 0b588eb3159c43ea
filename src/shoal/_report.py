"""The run report: a run as data first, then rendered as text, Markdown, JSON or one HTML page.

:class:`Report` is built from a finished :class:`~shoal.Run` (``run.report``) or from a journal
alone (``Report.from_journal("run.db")``, safe while a run is still writing it). Both go through
the same code: each source is first turned into plain piece rows, and every figure is computed
from those rows, so a report rebuilt from a journal gives the same counts and latencies as the
in-memory report of the same run.

What covers what:

- ``counts`` and ``failures`` cover every piece of the run, including the pieces an earlier run
  settled and this one read back from the journal (``counts.resumed``).
- Everything that measures the work itself (latency, the slowest pieces, attempts and retries,
  throttles, usage, the per-key table, throughput and the timeline) covers only the pieces that
  ran in this run: a resumed piece's timings belong to the run that settled it.

Percentiles use the nearest-rank method (the smallest duration with at least p% of the pieces
at or below it), so every percentile is a duration some piece actually took.

Rendering never trusts the data: HTML is escaped (and the page forbids scripts through its
Content-Security-Policy), Markdown cells are escaped, and the terminal text shows control
characters (an ANSI escape in an error message, say) as visible escapes. Tracebacks are never
shown: only error types and messages.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import os
import re
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._codec import JSONCodec
from ._journal import JournalError
from ._version import __version__

if TYPE_CHECKING:
    from ._outcome import Run

SCHEMA = "shoal.report/1"

TOP_KEYS = 20  # the per-key table shows this many keys; the rest are summed as one row
SLOWEST = 10  # how many of the slowest pieces are listed
EXAMPLES = 3  # examples per failure group
MAX_BUCKETS = 100  # the timeline has at most this many buckets
HISTOGRAM_BINS = 30  # at most this many latency bins
PREVIEW = 80  # characters of an item's repr shown
MESSAGE = 300  # characters of an error message shown
TABLE_LIMIT = 50  # rows kept by add_table by default
CHART_KINDS = ("bar", "line")  # what add_chart draws
CHART_LABELS = 400  # at most this many x labels in a chart
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}\Z")

_EPS = 1e-9


# ---------------------------------------------------------------------- the data


@dataclass(frozen=True, slots=True)
class Counts:
    """Pieces by state.

    Attributes:
        total: Every piece the report knows of (settled, pending and running).
        succeeded, failed: Settled pieces by how they ended (resumed ones included).
        resumed: Settled pieces read back from a journal, settled by an earlier run.
        pending: Journal only: pieces that were in flight when an earlier run stopped and have
            not run again yet.
        running: Journal only: pieces in flight while the run is still going.
    """

    total: int
    succeeded: int
    failed: int
    resumed: int = 0
    pending: int = 0
    running: int = 0

    @property
    def settled(self) -> int:
        return self.succeeded + self.failed


@dataclass(frozen=True, slots=True)
class Latency:
    """Piece durations (first attempt's start to the end, waits included), in seconds.

    Percentiles are nearest-rank: each is the duration of an actual piece.
    """

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    histogram: tuple[tuple[float, float, int], ...] = ()  # (low, high, pieces), equal widths


@dataclass(frozen=True, slots=True)
class SlowPiece:
    """One of the slowest pieces."""

    index: int
    key: str
    id: str
    provenance: str | None
    duration: float
    ok: bool
    item: str  # repr of the item, truncated


@dataclass(frozen=True, slots=True)
class KeyStats:
    """The pieces of one key (or of every key past the top ones, as ``key="(other)"``)."""

    key: str
    count: int
    ok: int
    failed: int
    retries: int
    throttles: int
    p50: float | None


@dataclass(frozen=True, slots=True)
class FailureExample:
    """One failed piece, as an example of its group."""

    index: int
    key: str
    id: str
    message: str
    provenance: str | None
    item: str


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """The failed pieces of one error type."""

    type: str
    count: int
    examples: tuple[FailureExample, ...]


@dataclass(frozen=True, slots=True)
class Timeline:
    """Pieces in flight and completions over the run, in equal buckets.

    Attributes:
        start: When bucket 0 starts (seconds since the epoch, the run's clock).
        bucket: Each bucket's width in seconds (1, 2 or 5 times a power of ten; 0 for a run
            that took no time, which has no buckets).
        in_flight: Per bucket, the average number of pieces between their start and their end.
        succeeded, failed: Per bucket, the pieces that settled in it.
        peak_in_flight: The most pieces in flight at any one moment.
    """

    start: float
    bucket: float
    in_flight: tuple[float, ...]
    succeeded: tuple[int, ...]
    failed: tuple[int, ...]
    peak_in_flight: int


@dataclass(frozen=True, slots=True)
class Resilience:
    """What the job's resilience policies did (``Job(hedge=, retry_budget=, breaker=,
    max_failure_rate=)``).

    Attributes:
        hedges: Hedged attempts started (a second attempt of a piece whose attempt ran long).
        hedges_won: Hedges that finished first with a value.
        retries_denied: Transient failures that failed at once because the retry budget was
            spent.
        breaker_opened: Times a key's circuit breaker opened.
        aborted: Why the run stopped early, or ``None``.
    """

    hedges: int = 0
    hedges_won: int = 0
    retries_denied: int = 0
    breaker_opened: int = 0
    aborted: str | None = None

    @classmethod
    def of(cls, stats: Any) -> Resilience | None:
        """From a RunStats or the stats dict a journal keeps; ``None`` when nothing happened."""
        data: dict[str, Any] = stats if isinstance(stats, dict) else {}
        if not isinstance(stats, dict):
            for name in ("hedges", "hedges_won", "retries_denied", "breaker_opened", "aborted"):
                data[name] = getattr(stats, name, None)
        counts = [
            int(data[name]) if _is_number(data.get(name)) else 0
            for name in ("hedges", "hedges_won", "retries_denied", "breaker_opened")
        ]
        aborted = data.get("aborted")
        found = cls(
            hedges=counts[0],
            hedges_won=counts[1],
            retries_denied=counts[2],
            breaker_opened=counts[3],
            aborted=aborted if isinstance(aborted, str) else None,
        )
        return found if any(counts) or found.aborted else None


@dataclass(frozen=True, slots=True)
class Table:
    """A table a job attached with :meth:`Report.add_table`."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    total: int  # rows given (``rows`` holds at most the limit)


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart a job attached with :meth:`Report.add_chart`: one value per label and series."""

    title: str
    kind: str  # "bar" (grouped, or stacked) or "line"
    labels: tuple[str, ...]  # the x axis: categories, days...
    series: tuple[tuple[str, tuple[float | None, ...]], ...]  # (name, one value per label)
    x_label: str = ""
    y_label: str = ""
    stacked: bool = False
    colors: tuple[str | None, ...] = ()  # per series, "#rrggbb" or None (the palette's)

    def as_table(self) -> Table:
        """The chart's data as a table (what text, Markdown and JSON readers see)."""
        columns = (self.x_label or "label", *(name for name, _ in self.series))
        rows = tuple(
            (label, *(values[i] for _, values in self.series))
            for i, label in enumerate(self.labels)
        )
        return Table(self.title, columns, rows, len(rows))


@dataclass(slots=True)
class _Row:
    """One piece, from either source: everything the report is computed from."""

    index: int
    key: str
    id: str
    provenance: str | None
    item: str
    state: str  # done, failed, pending, running
    resumed: bool
    attempts: int
    throttles: int
    started: float | None
    finished: float | None
    error_type: str | None = None
    error_message: str | None = None
    retry_causes: tuple[str, ...] = ()
    throttle_wait: float = 0.0
    usage: dict[str, float] | None = None

    @property
    def duration(self) -> float:
        if self.started is None or self.finished is None:
            return 0.0
        return self.finished - self.started


@dataclass(frozen=True, slots=True)
class Report:
    """A run, as data: build it with ``run.report`` or :meth:`Report.from_journal`.

    Render it with ``str(report)`` (terminal text), :meth:`to_markdown`, :meth:`to_dict` /
    :meth:`to_json` (schema ``shoal.report/1``, see docs/report-schema.md), :meth:`to_html`
    (one self-contained page with charts), or :meth:`save`.

    Attributes:
        name: The job's name.
        shoal_version: The shoal that ran it.
        source: ``"run"`` or ``"journal"``.
        status: ``finished``, or from a journal: ``running``, ``interrupted``, ``failed``.
        started, finished: Seconds since the epoch, on the run's clock.
        wall_time: Seconds from start to end (so far, for a run still going).
        counts: :class:`Counts` by state.
        throughput: Pieces settled by this run per second of wall time (``None`` without time).
        latency: :class:`Latency` of the pieces this run settled (``None`` without any).
        slowest: The slowest pieces, slowest first.
        attempts: Attempts made (throttled ones are counted in ``throttles`` instead).
        retries: Attempts made after a failure.
        retries_by_cause: Retries per error type of the failure that caused them, most first.
        throttles: Times pieces were told to slow down.
        throttle_wait: Seconds pieces waited on throttles, summed.
        keys: The per-key table (empty when the job has no key function), busiest first.
        other_keys: The keys past the first ``TOP_KEYS``, summed as one row (or ``None``).
        failures: Failed pieces grouped by error type, most first, with examples.
        usage: What the work reported with ``shoal.usage(...)``, summed (``None`` when nothing).
        timeline: :class:`Timeline`.
        tables: Tables the job attached with :meth:`add_table`.
        charts: Charts the job attached with :meth:`add_chart`.
        resilience: :class:`Resilience`: hedges run and won, retries the budget denied, circuit
            breakers opened, and why the run was aborted (``None`` when none of it happened).
    """

    name: str
    shoal_version: str
    source: str
    status: str
    started: float
    finished: float
    wall_time: float
    counts: Counts
    throughput: float | None
    latency: Latency | None
    slowest: tuple[SlowPiece, ...]
    attempts: int
    retries: int
    retries_by_cause: dict[str, int]
    throttles: int
    throttle_wait: float
    keys: tuple[KeyStats, ...]
    other_keys: KeyStats | None
    failures: tuple[FailureGroup, ...]
    usage: dict[str, float] | None
    timeline: Timeline
    tables: list[Table] = field(default_factory=list, compare=False)
    charts: list[Chart] = field(default_factory=list, compare=False)
    resilience: Resilience | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def from_run(cls, run: Run[Any]) -> Report:
        """The report of a finished run (what ``run.report`` gives)."""
        stats = run.stats
        rows: list[_Row] = []
        for o in run.outcomes:
            error = o.error
            rows.append(
                _Row(
                    index=o.index,
                    key=o.key,
                    id=o.id,
                    provenance=None if o.provenance is None else str(o.provenance),
                    item=_preview(o.item),
                    state="done" if o.ok else "failed",
                    resumed=_was_resumed(o, stats.started, stats.resumed),
                    attempts=o.attempts,
                    throttles=o.throttles,
                    started=o.started,
                    finished=o.finished,
                    error_type=None if error is None else error.type,
                    error_message=None if error is None else error.message,
                    retry_causes=tuple(o.retry_causes),
                    throttle_wait=float(o.throttle_wait),
                    usage=None if o.usage is None else dict(o.usage),
                )
            )
        return _build(
            name=run.name or "",
            version=__version__,
            source="run",
            status="finished" if stats.aborted is None else "aborted",
            started=stats.started,
            finished=stats.finished,
            wall_time=stats.wall_time,
            rows=rows,
            resilience=Resilience.of(stats),
        )

    @classmethod
    def from_journal(cls, path: str | os.PathLike[str], *, run: int | None = None) -> Report:
        """The report of a run, rebuilt from its journal alone.

        Reads the file through a read-only connection in one snapshot, so it is safe (and
        consistent) while a run is writing it.

        Args:
            path: The journal (an SQLite file a run wrote).
            run: The run's id in the journal (1 for the first); the latest run by default. A
                piece settled again by a later run shows only in the later run's report.

        A resumed piece keeps the index it had in the run that settled it (the journal stores
        no other); the in-memory report shows this run's index.

        Raises:
            shoal.journal.JournalError: the file is missing, not a shoal journal, or has no
                such run.
        """
        return _from_journal(os.fspath(path), run)

    def add_table(
        self,
        title: str,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
        *,
        limit: int = TABLE_LIMIT,
    ) -> None:
        """Attach a table of the job's own (top findings, say), shown in every format.

        Values are kept as they are when they are text, numbers, booleans or ``None``, and as
        their ``str`` otherwise; every format escapes them.

        Args:
            title: The table's heading.
            rows: One mapping per row.
            columns: Which keys to show, in order; by default every key, in the order first seen.
            limit: Keep at most this many rows (the report says how many there were).

        Raises:
            TypeError: rows that are not mappings.
            ValueError: an empty title or a limit below 1.
        """
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"add_table(title={title!r}): give the table a non-empty title")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"add_table(limit={limit!r}): must be a whole number >= 1")
        for n, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(
                    f"add_table: row {n} is a {type(row).__name__}, not a mapping; pass one "
                    "dict per row"
                )
        if columns is None:
            seen: dict[str, None] = {}
            for row in rows:
                for name in row:
                    seen.setdefault(str(name), None)
            names = tuple(seen)
        else:
            names = tuple(str(c) for c in columns)
        kept = tuple(tuple(_plain(row.get(name)) for name in names) for row in list(rows)[:limit])
        self.tables.append(Table(title, names, kept, len(rows)))

    def add_chart(
        self,
        title: str,
        labels: Sequence[Any],
        series: Mapping[str, Sequence[float | None]],
        *,
        kind: str = "bar",
        stacked: bool = False,
        x_label: str = "",
        y_label: str = "",
        colors: Mapping[str, str] | None = None,
    ) -> None:
        """Attach a chart of the job's own (sentiment per day, say).

        The HTML page draws it with matplotlib as inline SVG, like the report's own charts;
        text and Markdown show its data as a table, and JSON keeps the data (``charts``).

        Args:
            title: The chart's heading.
            labels: The x axis: one label per point or bar group (shown as their ``str``).
            series: Name -> one number per label (``None`` for a missing value); a bar chart
                draws the series side by side, or stacked with ``stacked=True``.
            kind: ``"bar"`` or ``"line"``.
            stacked: Stack a bar chart's series.
            x_label, y_label: The axes' titles.
            colors: Series name -> ``"#rrggbb"``, for the series whose colour means something
                (negative in red, say); the others take the report's palette.

        Raises:
            ValueError: an empty title, an unknown kind, no series, more than 400 labels, a
                series whose length differs from the labels', a value that is not a finite
                number, or a colour that is not ``"#rrggbb"`` or names no series.
        """
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"add_chart(title={title!r}): give the chart a non-empty title")
        if kind not in CHART_KINDS:
            raise ValueError(f"add_chart(kind={kind!r}): use one of {', '.join(CHART_KINDS)}")
        names = tuple(str(label) for label in labels)
        if len(names) > CHART_LABELS:
            raise ValueError(
                f"add_chart: {len(names):,} labels; a chart shows at most {CHART_LABELS} "
                "(group the data, or attach it with add_table)"
            )
        if not isinstance(series, Mapping) or not series:
            raise ValueError(
                "add_chart(series=...): give a mapping of series name -> one number per label"
            )
        kept: list[tuple[str, tuple[float | None, ...]]] = []
        for name, given in series.items():
            values = list(given)
            if len(values) != len(names):
                raise ValueError(
                    f"add_chart: series {name!r} has {len(values)} values for {len(names)} "
                    "labels; give one value per label (None where there is none)"
                )
            for value in values:
                if value is not None and (
                    isinstance(value, bool) or not _is_number(value) or not math.isfinite(value)
                ):
                    raise ValueError(
                        f"add_chart: series {name!r} has the value {value!r}; values are finite "
                        "numbers or None"
                    )
            kept.append((str(name), tuple(None if v is None else float(v) for v in values)))
        chosen = dict(colors or {})
        for name, colour in chosen.items():
            if name not in series or not isinstance(colour, str) or not _COLOUR.match(colour):
                raise ValueError(
                    f"add_chart(colors={{{name!r}: {colour!r}}}): give a series name and a "
                    'colour as "#rrggbb"'
                )
        self.charts.append(
            Chart(
                title,
                kind,
                names,
                tuple(kept),
                str(x_label),
                str(y_label),
                bool(stacked),
                tuple(chosen.get(name) for name, _ in kept),
            )
        )

    # ------------------------------------------------------------------ rendering

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON data (schema ``shoal.report/1``, in docs/report-schema.md)."""
        latency = self.latency
        c = self.counts
        t = self.timeline
        res = self.resilience or Resilience()
        return {
            "schema": SCHEMA,
            "name": self.name,
            "shoal_version": self.shoal_version,
            "source": self.source,
            "status": self.status,
            "started": self.started,
            "finished": self.finished,
            "wall_time": self.wall_time,
            "counts": {
                "total": c.total,
                "succeeded": c.succeeded,
                "failed": c.failed,
                "resumed": c.resumed,
                "pending": c.pending,
                "running": c.running,
            },
            "throughput": self.throughput,
            "latency": None
            if latency is None
            else {
                "count": latency.count,
                "p50": latency.p50,
                "p90": latency.p90,
                "p99": latency.p99,
                "max": latency.max,
                "mean": latency.mean,
                "histogram": [
                    {"low": lo, "high": hi, "count": n} for lo, hi, n in latency.histogram
                ],
            },
            "slowest": [
                {
                    "index": p.index,
                    "key": p.key,
                    "id": p.id,
                    "provenance": p.provenance,
                    "duration": p.duration,
                    "ok": p.ok,
                    "item": p.item,
                }
                for p in self.slowest
            ],
            "attempts": {
                "total": self.attempts,
                "retries": self.retries,
                "retries_by_cause": dict(self.retries_by_cause),
            },
            "throttles": {"count": self.throttles, "wait": self.throttle_wait},
            "keys": {
                "rows": [_key_dict(k) for k in self.keys],
                "other": None if self.other_keys is None else _key_dict(self.other_keys),
            },
            "failures": [
                {
                    "type": g.type,
                    "count": g.count,
                    "examples": [
                        {
                            "index": e.index,
                            "key": e.key,
                            "id": e.id,
                            "message": e.message,
                            "provenance": e.provenance,
                            "item": e.item,
                        }
                        for e in g.examples
                    ],
                }
                for g in self.failures
            ],
            "usage": None if self.usage is None else dict(self.usage),
            "timeline": {
                "start": t.start,
                "bucket": t.bucket,
                "in_flight": list(t.in_flight),
                "succeeded": list(t.succeeded),
                "failed": list(t.failed),
                "peak_in_flight": t.peak_in_flight,
            },
            "resilience": {
                "hedges": res.hedges,
                "hedges_won": res.hedges_won,
                "retries_denied": res.retries_denied,
                "breaker_opened": res.breaker_opened,
                "aborted": res.aborted,
            },
            "tables": [
                {
                    "title": tb.title,
                    "columns": list(tb.columns),
                    "rows": [list(r) for r in tb.rows],
                    "total": tb.total,
                }
                for tb in self.tables
            ],
            "charts": [
                {
                    "title": ch.title,
                    "kind": ch.kind,
                    "labels": list(ch.labels),
                    "series": [{"name": n, "values": list(v)} for n, v in ch.series],
                    "x_label": ch.x_label,
                    "y_label": ch.y_label,
                    "stacked": ch.stacked,
                }
                for ch in self.charts
            ],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    def to_text(self) -> str:
        """Plain terminal text: a summary and aligned tables (no colours, no control codes)."""
        out: list[str] = [f"shoal report: {_clean(self.name) or '(unnamed job)'}"]
        summary = _summary(self)
        width = max(len(label) for label, _ in summary)
        out.extend(f"  {label.ljust(width)}  {value}" for label, value in summary)
        for view in _views(self):
            out.append("")
            out.append(view.title)
            if view.note:
                out.append(f"  {view.note}")
            out.extend("  " + line for line in _grid(view))
        if self.timeline.in_flight:
            out.append("")
            out.append(f"Timeline ({_secs(self.timeline.bucket)} buckets)")
            out.append(f"  in flight  {_spark(self.timeline.in_flight)}")
            done = [
                s + f for s, f in zip(self.timeline.succeeded, self.timeline.failed, strict=True)
            ]
            out.append(f"  settled    {_spark(done)}")
        return "\n".join(out) + "\n"

    def __str__(self) -> str:
        return self.to_text()

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown: a summary list and tables (cells escaped)."""
        out = [f"# shoal report: {_md(self.name) or '(unnamed job)'}", ""]
        out.extend(f"- **{label}**: {_md(value)}" for label, value in _summary(self))
        for view in _views(self):
            out.append("")
            out.append(f"## {_md(view.title)}")
            out.append("")
            if view.note:
                out.append(_md(view.note))
                out.append("")
            out.append("| " + " | ".join(_md(h) for h in view.headers) + " |")
            out.append("| " + " | ".join("---:" if n else "---" for n in view.numeric) + " |")
            out.extend("| " + " | ".join(_md(c) for c in row) + " |" for row in view.rows)
        return "\n".join(out) + "\n"

    def to_html(self) -> str:
        """One self-contained HTML page: no scripts, no network; charts as inline SVG.

        Raises:
            ShoalError: matplotlib is not installed (the message has the install command).
        """
        from ._report_html import render_html

        return render_html(self)

    def save(self, path: str | os.PathLike[str], *, format: str | None = None) -> Path:
        """Write the report to a file, in the format its extension names.

        Args:
            path: ``.html``/``.htm``, ``.md``, ``.json`` or ``.txt``.
            format: ``"html"``, ``"md"``, ``"json"`` or ``"txt"``, to override the extension.

        Raises:
            ValueError: an unknown format.
            ShoalError: HTML without matplotlib.
        """
        target = Path(path)
        fmt = (format or target.suffix.lstrip(".")).lower()
        renderers = {
            "html": self.to_html,
            "htm": self.to_html,
            "md": self.to_markdown,
            "markdown": self.to_markdown,
            "json": self.to_json,
            "txt": self.to_text,
            "text": self.to_text,
        }
        render = renderers.get(fmt)
        if render is None:
            raise ValueError(
                f"cannot save a report as {str(path)!r}: use a .html, .md, .json or .txt path, "
                "or format='html' / 'md' / 'json' / 'txt'"
            )
        target.write_text(render(), encoding="utf-8")
        return target


# ---------------------------------------------------------------------- from the sources


def _was_resumed(outcome: Any, run_started: float, resumed: int) -> bool:
    """Whether an outcome was read back from a journal rather than run by this run."""
    flag = getattr(outcome, "resumed", None)
    if isinstance(flag, bool):
        return flag
    # Without a flag: a resumed piece settled before this run started.
    return resumed > 0 and outcome.finished < run_started


def _from_journal(path: str, run_id: int | None) -> Report:
    target = Path(path)
    if not target.is_file():
        raise JournalError(f"journal {path} does not exist; pass the path a run wrote")
    try:
        conn = sqlite3.connect(
            target.resolve().as_uri() + "?mode=ro", uri=True, timeout=30.0, isolation_level=None
        )
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"{path} cannot be opened as a shoal journal ({exc})") from exc
    try:
        try:
            conn.execute("BEGIN")  # one snapshot for every read below
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{path} is not a shoal journal ({exc})") from exc
        if meta.get("app") != "shoal":
            raise JournalError(f"{path} is not a shoal journal")
        if run_id is None:
            head = conn.execute(
                "SELECT run_id, job, shoal_version, started, finished, status, stats FROM runs "
                "ORDER BY run_id DESC LIMIT 1"
            ).fetchone()
            if head is None:
                raise JournalError(f"journal {path} has no run yet")
        else:
            head = conn.execute(
                "SELECT run_id, job, shoal_version, started, finished, status, stats FROM runs "
                "WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if head is None:
                known = [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY run_id")]
                raise JournalError(
                    f"journal {path} has no run {run_id} (its runs: "
                    f"{', '.join(map(str, known)) or 'none'}); pass one of those, or run=None "
                    "for the latest"
                )
        rid, job, version, run_started, run_finished, status, stats_text = head
        columns = {row[1] for row in conn.execute("PRAGMA table_info(pieces)")}
        # Columns newer journals have; their names come from this fixed tuple, never the file.
        extra = [c for c in ("usage", "throttle_wait") if c in columns]
        select = (
            "SELECT id, idx, key, provenance, item, state, attempts, throttles, started, "  # noqa: S608
            "finished, error_type, error_message, run_id"
            + "".join(f", {c}" for c in extra)
            + " FROM pieces WHERE run_id <= ? ORDER BY idx, id"
        )
        pieces = conn.execute(select, (rid,)).fetchall()
        history: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for row in conn.execute(
            "SELECT piece_id, attempt, started, finished, outcome, error_type, run_id "
            "FROM attempts WHERE run_id <= ? ORDER BY rowid",
            (rid,),
        ):
            history[row[0]].append(row)
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"journal {path} could not be read ({exc})") from exc
    finally:
        conn.close()

    codec = JSONCodec()
    rows: list[_Row] = []
    for piece in pieces:
        pid, idx, key, provenance, item, state, attempts, throttles, started, finished = piece[:10]
        error_type, error_message, piece_run = piece[10:13]
        more = dict(zip(extra, piece[13:], strict=True))
        own = [a for a in history.get(pid, ()) if a[6] == piece_run]
        causes, waited = _from_attempts(own, state)
        if more.get("throttle_wait") is not None:
            waited = float(more["throttle_wait"])
        usage: dict[str, float] | None = None
        if more.get("usage"):
            try:
                loaded = json.loads(more["usage"])
            except ValueError:
                loaded = None
            if isinstance(loaded, dict):
                usage = {str(k): float(v) for k, v in loaded.items() if _is_number(v)}
        preview = ""
        if item is not None:
            try:
                preview = _preview(codec.decode(item))
            except Exception:  # a damaged row: show what is stored
                preview = _truncate(str(item), PREVIEW)
        rows.append(
            _Row(
                index=int(idx),
                key=str(key),
                id=str(pid),
                provenance=provenance,
                item=preview,
                state=str(state),
                resumed=piece_run != rid and state in ("done", "failed"),
                attempts=int(attempts),
                throttles=int(throttles),
                started=started,
                finished=finished,
                error_type=error_type,
                error_message=error_message,
                retry_causes=causes,
                throttle_wait=waited,
                usage=usage,
            )
        )

    stats: dict[str, Any] = {}
    if stats_text:
        try:
            loaded_stats = json.loads(stats_text)
        except ValueError:
            loaded_stats = None
        if isinstance(loaded_stats, dict):
            stats = loaded_stats
    # The runs table's own times are the machine's; the pieces' are the run's clock. Prefer the
    # run's clock (what the in-memory report uses), from the stats or the pieces.
    here = [r for r in rows if not r.resumed and r.started is not None]
    if _is_number(stats.get("started")):
        started_at = float(stats["started"])
    elif here:
        started_at = min(float(r.started) for r in here if r.started is not None)
    else:
        started_at = float(run_started)
    if _is_number(stats.get("wall_time")):
        wall = float(stats["wall_time"])
    elif run_finished is not None:
        ends = [float(r.finished) for r in here if r.finished is not None]
        wall = max(ends, default=started_at) - started_at
    else:  # still running: until now
        wall = max(0.0, time.time() - started_at)
    return _build(
        name=str(job),
        version=str(version),
        source="journal",
        status=str(status),
        started=started_at,
        finished=started_at + wall,
        wall_time=wall,
        rows=rows,
        resilience=Resilience.of(stats),
    )


def _from_attempts(attempts: list[tuple[Any, ...]], state: str) -> tuple[tuple[str, ...], float]:
    """A piece's retry causes and throttle wait, from its rows in the attempts table.

    Rows: (piece, attempt, started, finished, outcome, error type, run), in the order written.
    The last error of a failed piece is what ended it, not a retry. A throttle's wait is the
    time from the throttled attempt's end to the next attempt's start.
    """
    errors = [a for a in attempts if a[4] == "error"]
    if state == "failed" and errors:
        errors = errors[:-1]
    causes = tuple(str(a[5] or "Exception") for a in errors)
    waited = 0.0
    for n, a in enumerate(attempts):
        if a[4] == "throttled" and n + 1 < len(attempts):
            waited += max(0.0, float(attempts[n + 1][2]) - float(a[3]))
    return causes, waited


# ---------------------------------------------------------------------- the figures


def _build(
    *,
    name: str,
    version: str,
    source: str,
    status: str,
    started: float,
    finished: float,
    wall_time: float,
    rows: list[_Row],
    resilience: Resilience | None = None,
) -> Report:
    settled = [r for r in rows if r.state in ("done", "failed")]
    here = [r for r in settled if not r.resumed]
    states = Counter(r.state for r in rows)
    counts = Counts(
        total=len(rows),
        succeeded=states["done"],
        failed=states["failed"],
        resumed=sum(1 for r in settled if r.resumed),
        pending=states["pending"],
        running=states["running"],
    )
    durations = sorted(r.duration for r in here)
    latency = (
        Latency(
            count=len(durations),
            p50=_percentile(durations, 50),
            p90=_percentile(durations, 90),
            p99=_percentile(durations, 99),
            max=durations[-1],
            mean=sum(durations) / len(durations),
            histogram=_histogram(durations),
        )
        if durations
        else None
    )
    slowest = tuple(
        SlowPiece(r.index, r.key, r.id, r.provenance, r.duration, r.state == "done", r.item)
        for r in sorted(here, key=lambda r: (-r.duration, r.index))[:SLOWEST]
    )
    causes: Counter[str] = Counter()
    for r in here:
        causes.update(r.retry_causes)
    keys, other = _per_key(here, settled)
    usage: dict[str, float] = {}
    for r in here:
        for k, v in (r.usage or {}).items():
            usage[k] = usage.get(k, 0.0) + v
    return Report(
        name=name,
        shoal_version=version,
        source=source,
        status=status,
        started=started,
        finished=finished,
        wall_time=wall_time,
        counts=counts,
        throughput=len(here) / wall_time if wall_time > 0 else None,
        latency=latency,
        slowest=slowest,
        attempts=sum(r.attempts for r in here),
        retries=sum(causes.values()),
        retries_by_cause=dict(sorted(causes.items(), key=lambda kv: (-kv[1], kv[0]))),
        throttles=sum(r.throttles for r in here),
        throttle_wait=sum(r.throttle_wait for r in here),
        keys=keys,
        other_keys=other,
        failures=_failures(settled),
        usage=_usage_order(usage) if usage else None,
        timeline=_timeline(rows, started, wall_time),
        resilience=resilience,
    )


def _percentile(ordered: Sequence[float], p: int) -> float:
    """Nearest rank: the smallest value with at least ``p`` percent of the values at or below."""
    n = len(ordered)
    rank = -(-p * n // 100)  # ceil(p * n / 100), in integers: 0.9 * 10 is not 9 in floats
    return ordered[max(rank, 1) - 1]


def _histogram(ordered: Sequence[float]) -> tuple[tuple[float, float, int], ...]:
    """Equal-width bins from the shortest duration to the longest (the last bin includes it)."""
    low, high = ordered[0], ordered[-1]
    if high <= low:
        return ((low, high, len(ordered)),)
    bins = min(HISTOGRAM_BINS, len(set(ordered)))
    width = (high - low) / bins
    counts = [0] * bins
    for d in ordered:
        counts[min(bins - 1, int((d - low) / width))] += 1
    return tuple((low + k * width, low + (k + 1) * width, counts[k]) for k in range(bins))


def _per_key(here: list[_Row], settled: list[_Row]) -> tuple[tuple[KeyStats, ...], KeyStats | None]:
    if not any(r.key for r in settled):
        return (), None
    groups: dict[str, list[_Row]] = defaultdict(list)
    for r in here:
        groups[r.key].append(r)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    top = tuple(_key_stats(k, rs) for k, rs in ranked[:TOP_KEYS])
    rest = [r for _, rs in ranked[TOP_KEYS:] for r in rs]
    return top, (_key_stats(f"({len(ranked) - TOP_KEYS} other keys)", rest) if rest else None)


def _key_stats(key: str, rows: list[_Row]) -> KeyStats:
    durations = sorted(r.duration for r in rows)
    return KeyStats(
        key=key,
        count=len(rows),
        ok=sum(1 for r in rows if r.state == "done"),
        failed=sum(1 for r in rows if r.state == "failed"),
        retries=sum(len(r.retry_causes) for r in rows),
        throttles=sum(r.throttles for r in rows),
        p50=_percentile(durations, 50) if durations else None,
    )


def _failures(settled: list[_Row]) -> tuple[FailureGroup, ...]:
    groups: dict[str, list[_Row]] = defaultdict(list)
    for r in settled:
        if r.state == "failed":
            groups[r.error_type or "Exception"].append(r)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return tuple(
        FailureGroup(
            kind,
            len(rs),
            tuple(
                FailureExample(
                    r.index,
                    r.key,
                    r.id,
                    _truncate(r.error_message or "", MESSAGE),
                    r.provenance,
                    r.item,
                )
                for r in sorted(rs, key=lambda r: r.index)[:EXAMPLES]
            ),
        )
        for kind, rs in ranked
    )


def _usage_order(usage: dict[str, float]) -> dict[str, float]:
    """Tokens and cost first (the figures everyone looks for), then the rest by name."""
    first = [k for k in ("tokens", "cost") if k in usage]
    return {k: usage[k] for k in [*first, *sorted(k for k in usage if k not in first)]}


def _bucket_width(wall: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten that covers ``wall`` in MAX_BUCKETS."""
    exponent = math.floor(math.log10(wall / MAX_BUCKETS))
    for m in (1, 2, 5, 10):
        width = float(f"{m}e{exponent}")  # exact decimal: 5e-2, not 5 * 0.01
        if wall / width <= MAX_BUCKETS + _EPS:
            return width
    return float(f"1e{exponent + 1}")


def _timeline(rows: list[_Row], start: float, wall: float) -> Timeline:
    spans: list[tuple[float, float]] = []
    for r in rows:
        if r.resumed or r.started is None or r.state == "pending":
            continue
        end = r.finished if r.finished is not None else start + wall  # still running
        spans.append((max(0.0, r.started - start), max(0.0, end - start)))
    peak = 0
    level = 0
    # Ends sort before starts at the same moment: a piece that ends as another starts never
    # overlaps it.
    for _, step in sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans]):
        level += step
        peak = max(peak, level)
    if wall <= 0:
        return Timeline(start, 0.0, (), (), (), peak)
    width = _bucket_width(wall)
    n = max(1, math.ceil(wall / width - _EPS))
    busy = [0.0] * n
    for s, e in spans:
        first = min(n - 1, int(s / width + _EPS))
        last = min(n - 1, int(e / width + _EPS))
        for k in range(first, last + 1):
            overlap = min(e, (k + 1) * width) - max(s, k * width)
            if overlap > 0:
                busy[k] += overlap
    ok = [0] * n
    bad = [0] * n
    for r in rows:
        if r.resumed or r.finished is None or r.state not in ("done", "failed"):
            continue
        k = min(n - 1, max(0, int((r.finished - start) / width + _EPS)))
        (ok if r.state == "done" else bad)[k] += 1
    return Timeline(
        start=start,
        bucket=width,
        in_flight=tuple(round(b / width, 6) for b in busy),
        succeeded=tuple(ok),
        failed=tuple(bad),
        peak_in_flight=peak,
    )


# ---------------------------------------------------------------------- shared by renderers


@dataclass(frozen=True, slots=True)
class _View:
    """A table as text cells, the same in every format."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    numeric: tuple[bool, ...]
    note: str = ""


def _summary(report: Report) -> list[tuple[str, str]]:
    c = report.counts
    pieces = f"{c.total:,}: {c.succeeded:,} succeeded, {c.failed:,} failed"
    if c.resumed:
        pieces += f" ({c.resumed:,} resumed from the journal)"
    if c.pending or c.running:
        pieces += f", {c.running:,} running, {c.pending:,} pending"
    lines = [
        ("status", f"{report.status} (shoal {report.shoal_version}, from the {report.source})"),
        ("started", _when(report.started)),
        ("wall time", _secs(report.wall_time)),
        ("pieces", pieces),
        (
            "throughput",
            "-" if report.throughput is None else f"{report.throughput:,.3f} pieces/s",
        ),
    ]
    lat = report.latency
    if lat is not None:
        lines.append(
            (
                "latency",
                f"p50 {_secs(lat.p50)}, p90 {_secs(lat.p90)}, p99 {_secs(lat.p99)}, "
                f"max {_secs(lat.max)} (mean {_secs(lat.mean)}, {lat.count:,} pieces)",
            )
        )
    lines.append(("attempts", f"{report.attempts:,} ({report.retries:,} retries)"))
    lines.append(("throttles", f"{report.throttles:,} ({_secs(report.throttle_wait)} waited)"))
    lines.append(
        (
            "peak in flight",
            f"{report.timeline.peak_in_flight:,} pieces (started and not yet settled)",
        )
    )
    if report.usage:
        lines.append(
            ("usage", ", ".join(f"{_clean(k)} {_number(v)}" for k, v in report.usage.items()))
        )
    res = report.resilience
    if res is not None:
        if res.hedges:
            lines.append(("hedges", f"{res.hedges:,} run, {res.hedges_won:,} won (finished first)"))
        if res.retries_denied:
            lines.append(
                (
                    "retry budget",
                    f"{res.retries_denied:,} transient failures failed fast (budget spent)",
                )
            )
        if res.breaker_opened:
            lines.append(("circuit breakers", f"opened {res.breaker_opened:,} times"))
        if res.aborted:
            lines.append(("stopped early", _clean(res.aborted)))
    return lines


def _views(report: Report, *, charts: bool = True) -> list[_View]:
    views: list[_View] = []
    if report.retries_by_cause:
        views.append(
            _View(
                "Retries by cause",
                ("cause", "retries"),
                [(_clean(k), f"{v:,}") for k, v in report.retries_by_cause.items()],
                (False, True),
            )
        )
    if report.failures:
        rows: list[tuple[str, ...]] = []
        for g in report.failures:
            for n, e in enumerate(g.examples):
                rows.append(
                    (
                        _clean(g.type) if n == 0 else "",
                        f"{g.count:,}" if n == 0 else "",
                        str(e.index),
                        _clean(e.provenance or ""),
                        _clean(_truncate(e.message, 120)),
                        _clean(e.item),
                    )
                )
        views.append(
            _View(
                "Failures by error type",
                ("error", "count", "index", "provenance", "message", "item"),
                rows,
                (False, True, True, False, False, False),
                note=f"up to {EXAMPLES} examples each",
            )
        )
    if report.slowest:
        views.append(
            _View(
                "Slowest pieces",
                ("index", "key", "duration", "ok", "provenance", "item"),
                [
                    (
                        str(p.index),
                        _clean(p.key),
                        _secs(p.duration),
                        "yes" if p.ok else "no",
                        _clean(p.provenance or ""),
                        _clean(p.item),
                    )
                    for p in report.slowest
                ],
                (True, False, True, False, False, False),
            )
        )
    if report.keys:
        keyed = list(report.keys)
        if report.other_keys is not None:
            keyed.append(report.other_keys)
        views.append(
            _View(
                "Per key",
                ("key", "pieces", "ok", "failed", "retries", "throttles", "p50"),
                [
                    (
                        _clean(k.key),
                        f"{k.count:,}",
                        f"{k.ok:,}",
                        f"{k.failed:,}",
                        f"{k.retries:,}",
                        f"{k.throttles:,}",
                        "-" if k.p50 is None else _secs(k.p50),
                    )
                    for k in keyed
                ],
                (False, True, True, True, True, True, True),
            )
        )
    if report.usage:
        views.append(
            _View(
                "Usage",
                ("counter", "total"),
                [(_clean(k), _number(v)) for k, v in report.usage.items()],
                (False, True),
            )
        )
    views.extend(
        _View(
            _clean(table.title),
            tuple(_clean(c) for c in table.columns),
            [tuple(_clean(_cell(v)) for v in row) for row in table.rows],
            tuple(
                bool(table.rows) and all(_is_number(row[i]) or row[i] is None for row in table.rows)
                for i in range(len(table.columns))
            ),
            note=(
                f"first {len(table.rows):,} of {table.total:,} rows"
                if table.total > len(table.rows)
                else ""
            ),
        )
        for table in [*report.tables, *(c.as_table() for c in report.charts if charts)]
    )
    return views


def _grid(view: _View) -> list[str]:
    widths = [len(h) for h in view.headers]
    for row in view.rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, view.numeric, strict=True)
        ).rstrip()

    return [line(view.headers), line(["-" * w for w in widths]), *(line(r) for r in view.rows)]


_SPARKS = "▁▂▃▄▅▆▇█"


def _spark(values: Sequence[float]) -> str:
    top = max(values, default=0)
    if top <= 0:
        return _SPARKS[0] * len(values)
    return "".join(
        " " if v <= 0 else _SPARKS[min(len(_SPARKS) - 1, int(v / top * (len(_SPARKS) - 1) + 0.5))]
        for v in values
    )


def _secs(seconds: float) -> str:
    return f"{seconds:,.3f} s"


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) < 1:
        return f"{value:.6g}"
    return f"{value:,.4f}".rstrip("0").rstrip(".")


def _when(timestamp: float) -> str:
    try:
        moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return str(timestamp)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _clean(text: str) -> str:
    """One line of text with no control characters: an escape sequence in the data must not
    drive the terminal, and a newline must not break a table."""
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md(text: str) -> str:
    """Markdown text that shows as itself: HTML escaped, inline Markdown syntax backslashed.

    Only inline syntax matters: the text never starts a line (it follows a label or sits in a
    table cell), so list and heading markers are harmless.
    """
    text = _clean(text)
    text = html.escape(text, quote=False)  # raw HTML in Markdown is rendered, so escape it
    return _MD_SPECIAL.sub(r"\\\1", text)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _preview(item: Any) -> str:
    try:
        text = repr(item)
    except Exception as exc:  # a broken __repr__ must not break the report
        text = f"<unprintable {type(item).__name__}: {type(exc).__name__}>"
    return _truncate(text, PREVIEW)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    """A table cell as JSON data: kept when it is text, a number, a boolean or None."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _number(value)
    return str(value)


def _key_dict(k: KeyStats) -> dict[str, Any]:
    return {
        "key": k.key,
        "count": k.count,
        "ok": k.ok,
        "failed": k.failed,
        "retries": k.retries,
        "throttles": k.throttles,
        "p50": k.p50,
    }
