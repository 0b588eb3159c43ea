"""The journal: one SQLite file that remembers every piece, so a rerun does only what is left.

What is stored (schema version 1)::

    meta     key/value: app = "shoal", schema_version, and what the caller stored with
             ``Journal(meta=...)``, as JSON (the command line: how to run the job again)
    runs     one row per run: job name, fingerprint, configuration, shoal version, start, end,
             status (running, finished, interrupted, failed), process id, mode
    pieces   one row per piece id: index, key, provenance, the item (JSON), state (running, done,
             failed; "pending" for a piece that was running when its run stopped), attempts,
             throttles, first start, end, the result (through the job's codec), the error
    attempts one row per ended attempt of every piece that took more than one (a piece done at
             its first try is its own record: its row's start and end): piece, attempt
             number, start, end, outcome (ok, error, throttled), error type and message

and an index of the pieces that are not plain (not done at their first attempt with nothing else
to say), which a resume reads whole.

The file is in WAL mode, so readers (``shoal status``) never block the run and the run never
blocks them. All SQLite work happens in one writer thread that owns the connection: the event
loop only gathers records and hands them over a batch at a time, so a slow disk never stalls the
scheduler. A batch is handed over, and committed, by count (``commit_every`` settled pieces) or by
time (``commit_interval``), whichever comes first; a normal end,
Ctrl-C and SIGTERM flush everything. Every row is written in an SQLite transaction (a batch of
pieces alone: one statement per 2,047 rows, each its own transaction; a batch with attempt rows:
one transaction for all of it), so a ``kill -9`` at any moment loses at most the records of the
batches not yet committed, never half of a row: results are written whole or not at all, and a
piece id is a primary key, so nothing is recorded twice. The scheduler stops starting pieces
while more than ``2 * commit_every`` settled pieces wait to be committed, so after a crash at
most ``2 * commit_every + concurrency`` settled pieces run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import json
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from ._codec import Codec, JSONCodec
from ._exceptions import ShoalError
from ._modnames import job_file_stem
from ._version import __version__

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    config TEXT NOT NULL,
    shoal_version TEXT NOT NULL,
    mode TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL,
    pid INTEGER,
    stats TEXT
);
CREATE TABLE IF NOT EXISTS pieces (
    id TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    key TEXT NOT NULL,
    provenance TEXT,
    item TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    throttles INTEGER NOT NULL,
    started REAL,
    finished REAL,
    result BLOB,
    error_type TEXT,
    error_message TEXT,
    error_traceback TEXT,
    run_id INTEGER NOT NULL,
    usage TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    piece_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started REAL NOT NULL,
    finished REAL NOT NULL,
    outcome TEXT NOT NULL,
    error_type TEXT,
    error_message TEXT,
    run_id INTEGER NOT NULL
);
"""

_UPSERT_PIECE = """
INSERT INTO pieces (id, idx, key, provenance, item, state, attempts, throttles, started, finished,
                    result, error_type, error_message, error_traceback, usage, run_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    idx = excluded.idx, key = excluded.key, provenance = excluded.provenance,
    item = coalesce(excluded.item, pieces.item), state = excluded.state,
    attempts = excluded.attempts, throttles = excluded.throttles, started = excluded.started,
    finished = excluded.finished, result = excluded.result, error_type = excluded.error_type,
    error_message = excluded.error_message, error_traceback = excluded.error_traceback,
    usage = excluded.usage, run_id = excluded.run_id
"""

# A piece done at its first attempt, with nothing else to say (most of them): nine values a row
# instead of sixteen, which halves what the writer binds while it holds the GIL.
_UPSERT_DONE = """
INSERT INTO pieces (id, idx, key, provenance, item, started, finished, result, run_id, state,
                    attempts, throttles)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'done', 1, 0)
ON CONFLICT (id) DO UPDATE SET
    idx = excluded.idx, key = excluded.key, provenance = excluded.provenance,
    item = coalesce(excluded.item, pieces.item), state = 'done', attempts = 1, throttles = 0,
    started = excluded.started, finished = excluded.finished, result = excluded.result,
    error_type = NULL, error_message = NULL, error_traceback = NULL, usage = NULL,
    run_id = excluded.run_id
"""

_INSERT_ATTEMPT = """
INSERT INTO attempts (piece_id, attempt, started, finished, outcome, error_type, error_message,
                      run_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

SETTLED_STATES = ("done", "failed")

# Meta keys of shoal's own; the others are the caller's (``Journal(meta=...)``).
_RESERVED_META = frozenset(("app", "schema_version"))

# The columns of a StoredPiece, in order.
_STORED_COLUMNS = (
    "id, idx, key, state, attempts, throttles, started, finished, result, error_type, "
    "error_message, error_traceback, usage"
)

# Most settled pieces are plain: done at the first attempt, with nothing else to say. A resume
# reads five columns of theirs (half the time of reading all thirteen) and their item's key (see
# Preloaded.by_item); the few others are read again, whole. An item's key is the int it stores
# when its text is exactly that int's, else its stored text when that is short, else NULL.
_PLAIN = "state = 'done' AND attempts = 1 AND throttles = 0 AND usage IS NULL"
_PRELOAD_COLUMNS = (
    "id, key, result, started, finished, "
    "CASE WHEN item = CAST(CAST(item AS INTEGER) AS TEXT) THEN CAST(item AS INTEGER) "
    "WHEN length(item) <= 200 THEN item END"
)
PLAIN_ROW = 6  # a preloaded plain row's length


class JournalError(ShoalError):
    """A journal that cannot be used: another job's, not a journal, unreadable, too new."""


@dataclass(frozen=True, slots=True)
class Journal:
    """Where and how a run is journaled.

    Args:
        path: The SQLite file (created if missing).
        commit_every: Commit after this many settled pieces. Fewer, larger commits cost less
            per piece (a commit rewrites the index pages its rows touch, and content-hash ids
            touch pages all over the index); after a ``kill -9``, at most
            ``2 * commit_every + concurrency`` settled pieces (or ``commit_interval`` seconds of
            them) run again.
        commit_interval: ... or after this many seconds, whichever comes first.
        preload: On resume, up to this many settled pieces are read into memory at once (the
            fastest way; about 200 bytes each plus their results). A journal with more is
            looked up in chunks as the items arrive instead, in bounded memory.
        meta: Key/values (JSON data) to store in the journal's meta table when a run opens it,
            after every check has passed; read them back with :func:`read_meta`. The command
            line stores there how to run the job again (``shoal retry``). Never put secrets
            here: anyone who can read the file can read them.
    """

    path: str | os.PathLike[str]
    commit_every: int = 2000
    commit_interval: float = 0.5
    preload: int = 1_000_000
    meta: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if isinstance(self.commit_every, bool) or not isinstance(self.commit_every, int):
            raise TypeError(f"Journal(commit_every={self.commit_every!r}): expected an int >= 1")
        if self.commit_every < 1:
            raise ValueError(f"Journal(commit_every={self.commit_every!r}): must be >= 1")
        if isinstance(self.preload, bool) or not isinstance(self.preload, int) or self.preload < 0:
            raise ValueError(f"Journal(preload={self.preload!r}): must be a whole number >= 0")
        if not isinstance(self.commit_interval, int | float) or not (
            0 < self.commit_interval < float("inf")
        ):
            raise ValueError(
                f"Journal(commit_interval={self.commit_interval!r}): must be seconds > 0"
            )
        if self.meta is not None:
            if not isinstance(self.meta, Mapping):
                raise TypeError(f"Journal(meta={self.meta!r}): expected a dict of JSON data")
            for key, value in self.meta.items():
                if not isinstance(key, str) or key in _RESERVED_META:
                    raise ValueError(
                        f"Journal(meta=...): the key {key!r} cannot be used; keys are strings "
                        f"other than {', '.join(sorted(_RESERVED_META))}"
                    )
                try:
                    json.dumps(value)
                except (TypeError, ValueError) as exc:
                    raise TypeError(
                        f"Journal(meta=...): the value of {key!r} is not JSON data ({exc})"
                    ) from exc

    @classmethod
    def of(cls, journal: str | os.PathLike[str] | Journal) -> Journal:
        if isinstance(journal, Journal):
            return journal
        if isinstance(journal, str | os.PathLike):
            return cls(journal)
        raise TypeError(f"journal={journal!r}: expected a file path or shoal.journal.Journal")


class StoredPiece(NamedTuple):
    """A settled piece, as read back from a journal (a named tuple: rows load fast)."""

    id: str
    idx: int  # the index it had in the run that settled it
    key: str
    state: str
    attempts: int
    throttles: int
    started: float | None
    finished: float | None
    result: Any
    error_type: str | None
    error_message: str | None
    error_traceback: str | None
    usage: str | None  # JSON: what the work reported with shoal.usage(), summed over attempts


# What goes on the writer's queue.
_BATCH = 3  # (kind, piece rows, done rows, attempt rows, settled pieces among them): one commit
_CALL = 4  # (kind, fn, future): run fn(conn) in the writer thread; fn None: stop


def _connect(path: str) -> sqlite3.Connection:
    # Readers never block a WAL writer; only another writer can, and that is a second run on
    # the same journal, which should fail soon and clearly rather than wait.
    return sqlite3.connect(path, timeout=2.0, isolation_level="DEFERRED", check_same_thread=True)


def _rows_per_statement(conn: sqlite3.Connection, width: int) -> int:
    """How many rows of ``width`` values one statement may insert (SQLite's limit on host
    parameters: 32,766 since SQLite 3.32, 999 before)."""
    return max(1, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width)


def _insert_many(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows many at a time, with as few multi-row statements as SQLite allows.

    Each statement gives the GIL back while SQLite works and must take it again after, and a
    writer thread beside a busy event loop then waits up to the interpreter's switch interval
    (5 ms) for it. ``executemany`` does that once per row; this, once per 2,047 rows of 16.
    """
    head, one, tail = _split_values(sql)
    per = _rows_per_statement(conn, one.count("?"))
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        statement = f"{head} VALUES {','.join([one] * len(chunk))} {tail}"
        conn.execute(statement, list(chain.from_iterable(chunk)))


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[None]:
    """One explicit transaction on a connection in autocommit mode (``isolation_level=None``)."""
    conn.execute(begin)
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite rolls some failures back by itself
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@functools.lru_cache(maxsize=8)
def _split_values(sql: str) -> tuple[str, str, str]:
    """``INSERT ... VALUES (?, ...) rest`` as what comes before VALUES, its row, what follows."""
    head, _, rest = sql.partition("VALUES")
    row, _, tail = rest.strip().partition(")")
    return head.strip(), row.replace(" ", "").replace("\n", "") + ")", tail.strip()


class Preloaded:
    """The settled pieces a resume read up front: by id (a dict made when first asked for: a
    resume of int or str items may never need it) and, the plain ones, by their item.

    A row is a StoredPiece's fields, or a plain row's (PLAIN_ROW long: see _PRELOAD_COLUMNS).
    """

    __slots__ = ("_by_id", "_full", "_plain", "by_item")

    def __init__(self, plain: list[tuple[Any, ...]], full: dict[str, tuple[Any, ...]]) -> None:
        self._plain = plain
        self._full = full
        self._by_id: dict[str, tuple[Any, ...]] | None = None
        # The plain rows by their item's key (codec.item_keys: an int item is its own key, a str
        # its stored JSON text). An int or a str whose key is a stored one is that piece's item,
        # so it has that piece's id (a hash of the same JSON form): a resume finds such items
        # without hashing each. Items stored as longer texts are not here (NULL).
        self.by_item: dict[int | str | None, tuple[Any, ...]] = dict(
            zip(map(itemgetter(5), plain), plain, strict=True)
        )

    def by_id(self) -> dict[str, tuple[Any, ...]]:
        """Every row, by piece id."""
        by_id = self._by_id
        if by_id is None:
            by_id = dict(zip(map(itemgetter(0), self._plain), self._plain, strict=True))
            by_id.update(self._full)
            self._by_id = by_id
        return by_id

    def get(self, piece_id: str) -> tuple[Any, ...] | None:
        return self.by_id().get(piece_id)


def _alive(pid: int | None) -> bool:
    """Whether a process with this id runs on this machine (a crashed run leaves a stale pid)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fix_hint(path: str) -> str:
    return (
        f"pass resume=False to start over in {path} (its pieces are deleted), or give the "
        "run a new journal path"
    )


def check_journal_file(path: str) -> sqlite3.Connection:
    """Open ``path`` for writing as a shoal journal, or raise :class:`JournalError` saying why.

    Creates the file (and the schema) when it does not exist. Never changes a file that is not a
    shoal journal, or one written by a newer schema.
    """
    target = Path(path)
    if target.is_dir():
        raise JournalError(f"journal {path} is a folder; pass a file path such as {path}/run.db")
    if not target.parent.exists():
        raise JournalError(
            f"journal {path}: the folder {target.parent} does not exist; create it or pass "
            "another path"
        )
    exists = target.exists()
    if exists:
        if not os.access(path, os.R_OK):
            raise JournalError(
                f"journal {path} cannot be read (permission denied); fix its "
                "permissions or pass another path"
            )
        if not os.access(path, os.W_OK):
            raise JournalError(
                f"journal {path} is read-only; shoal must write to it to record "
                "the run: fix its permissions or pass another path"
            )
        with open(path, "rb") as fh:
            header = fh.read(16)
        if header and header != b"SQLite format 3\x00":
            raise JournalError(
                f"{path} is not a shoal journal (not an SQLite file); it was left untouched: "
                "pass another path"
            )
    elif not os.access(target.parent, os.W_OK):
        raise JournalError(
            f"journal {path}: the folder {target.parent} is not writable; pass another path"
        )
    try:
        conn = _connect(path)
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as exc:
        raise JournalError(
            f"{path} is not a usable shoal journal ({exc}); pass another path"
        ) from exc
    if exists and tables and "meta" not in tables:
        conn.close()
        raise JournalError(
            f"{path} is an SQLite file but not a shoal journal (it has other tables); it was left "
            "untouched: pass another path"
        )
    if "meta" in tables:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("app") != "shoal":
            conn.close()
            raise JournalError(
                f"{path} is an SQLite file but not a shoal journal; it was left untouched: pass "
                "another path"
            )
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            conn.close()
            raise JournalError(
                f"journal {path} was written by a newer shoal (schema {version}; this shoal "
                f"{__version__} reads up to {SCHEMA_VERSION}): upgrade shoal, or pass another path"
            )
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(pieces)")}
        if "usage" not in columns:  # a journal written before usage was recorded
            conn.execute("ALTER TABLE pieces ADD COLUMN usage TEXT")
        # The pieces that are not plain, and only those (few: the others write nothing here): a
        # resume reads them whole without scanning the table, and so does the reset of pieces
        # that were running when a run stopped. Made when a journal written before it is opened.
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS pieces_not_plain ON pieces (state) WHERE NOT ({_PLAIN})"
        )
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('app', 'shoal')")
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        conn.commit()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise JournalError(f"journal {path} cannot be written ({exc}); pass another path") from exc
    return conn


class JournalSession:
    """One run's connection to its journal: a writer thread fed by a queue.

    Everything here is called from the event loop and never blocks it: records go on a queue;
    the calls that need an answer (``open``, ``lookup``, ``flush``, ``close``) are awaitables
    answered by the writer thread.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        job: str,
        fingerprint: str,
        config: dict[str, Any],
        resume: bool,
        mode: str = "run",
    ) -> None:
        self.options = journal
        self.path = os.fspath(journal.path)
        self.job = job
        self.fingerprint = fingerprint
        self.config = config
        self.resume = resume
        self.mode = mode
        self.run_id = 0
        self.has_settled = False  # the file holds settled pieces from earlier runs
        self.error: BaseException | None = None
        # Called (on the loop) after a commit while `waiting` is set: the run waits for the
        # writer to catch up. Waking the loop costs the writer the GIL again, which beside a busy
        # loop takes up to the switch interval (5 ms), so it is not done when nobody waits.
        self.on_commit: Callable[[], None] | None = None
        self.waiting = False
        self.on_error: Callable[[BaseException], None] | None = None
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None
        self.enqueued_settled = 0
        self.committed_settled = 0
        # Rows gathered on the event loop's side, ready to insert (run_id included), handed to
        # the writer a batch at a time.
        self._settled_rows: list[tuple[Any, ...]] = []
        self._done_rows: list[tuple[Any, ...]] = []  # see settled_done
        self._attempt_rows: list[tuple[Any, ...]] = []
        # Pieces started since the last hand-over and not settled yet: written as "running"
        # at the hand-over. A piece that starts and settles between two hand-overs (most of
        # them) costs one row, its settled one.
        self._running: dict[str, tuple[int, str, str | None, float]] = {}
        self._hand_over_timer: asyncio.TimerHandle | None = None
        self._lookup_states: tuple[str, ...] = ("done",) if mode == "retry" else SETTLED_STATES
        # On resume: every settled piece, when there are few enough to hold in memory.
        self.preloaded: Preloaded | None = None

    # ------------------------------------------------------------------ event-loop side

    @property
    def backlog(self) -> int:
        """Settled pieces handed to the writer and not yet committed."""
        return self.enqueued_settled - self.committed_settled

    async def open(self) -> None:
        """Check the file, start the run's row, and start the writer thread."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._writer, name=f"shoal-journal:{Path(self.path).name}", daemon=True
        )
        self._thread.start()
        await self._call(self._open)

    async def lookup(self, ids: Sequence[str]) -> dict[str, StoredPiece]:
        """The settled pieces among ``ids`` (done only, when retrying failures)."""
        return await self._call(lambda conn: self._lookup(conn, ids))  # type: ignore[no-any-return]

    async def close(self, status: str, stats: dict[str, Any] | None) -> None:
        """Flush, record how the run ended, stop the writer thread."""
        if self._thread is None:
            return
        try:
            await self._call(lambda conn: self._finish(conn, status, stats))
        finally:
            self._hand_over()  # nothing is left behind (and no timer outlives the run)
            stopped: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._queue.put((_CALL, None, stopped))  # stop
            thread, self._thread = self._thread, None
            await stopped
            thread.join()  # it has closed the file and is returning

    def started(self, piece_id: str, index: int, key: str, item: str | None, at: float) -> None:
        self._running[piece_id] = (index, key, item, at)
        if self._hand_over_timer is None:
            self._arm()

    def attempt_ended(
        self,
        piece_id: str,
        attempt: int,
        started: float,
        finished: float,
        outcome: str,
        error_type: str | None,
        error_message: str | None,
    ) -> None:
        self._attempt_rows.append(
            (piece_id, attempt, started, finished, outcome, error_type, error_message, self.run_id)
        )
        if self._hand_over_timer is None:
            self._arm()

    def settled(self, row: tuple[Any, ...]) -> None:
        """``row``: (id, idx, key, provenance, item, state, attempts, throttles, started,
        finished, result, error_type, error_message, error_traceback, usage, run_id)."""
        self._settled_rows.append(row)
        self._gathered(row[0])

    def settled_done(self, row: tuple[Any, ...]) -> None:
        """A piece done at its first attempt, not throttled, with no usage: ``row`` is (id,
        idx, key, provenance, item, started, finished, result, run_id)."""
        self._done_rows.append(row)
        self._gathered(row[0])

    def _gathered(self, piece_id: str) -> None:
        """A settled piece's row is gathered: hand the batch over when it is full."""
        self.enqueued_settled += 1
        self._running.pop(piece_id, None)
        if len(self._settled_rows) + len(self._done_rows) >= self.options.commit_every:
            self._hand_over()
        elif self._hand_over_timer is None:
            self._arm()

    def _arm(self) -> None:
        # Rows gather here, on the event loop's side, and go to the writer a batch at a time:
        # waking the writer for every row would hand the GIL back and forth between the two
        # threads thousands of times a second.
        assert self._loop is not None
        self._hand_over_timer = self._loop.call_later(self.options.commit_interval, self._hand_over)

    def _hand_over(self) -> None:
        """Give the gathered rows to the writer: one batch, one commit."""
        if self._hand_over_timer is not None:
            self._hand_over_timer.cancel()
            self._hand_over_timer = None
        settled = self._settled_rows
        done = self._done_rows
        if not (settled or done or self._attempt_rows or self._running):
            return
        rows = settled
        if self._running:
            run_id = self.run_id
            rows = settled + [
                (pid, idx, key, None, item, "running", 0, 0, at, None, None, None, None, None,
                 None, run_id)
                for pid, (idx, key, item, at) in self._running.items()
            ]  # fmt: skip
            self._running = {}
        self._queue.put((_BATCH, rows, done, self._attempt_rows, len(settled) + len(done)))
        self._settled_rows = []
        self._done_rows = []
        self._attempt_rows = []

    def _call(self, fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        assert self._loop is not None
        self._hand_over()  # what came before the call is committed before it runs
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((_CALL, fn, future))
        return future

    # ------------------------------------------------------------------ writer thread

    def _resolve(
        self, future: asyncio.Future[Any], value: Any, error: BaseException | None
    ) -> None:
        def settle() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(settle)

    def _writer(self) -> None:
        get = self._queue.get
        while True:
            record = get()
            if record[0] == _BATCH:
                _, pieces, done, attempts, settled = record
                if self.error is None:
                    try:
                        self._commit(pieces, done, attempts)
                    except BaseException as exc:  # a full disk, a vanished file
                        self.error = exc
                        self._report_error(exc)
                self.committed_settled += settled  # first: see Scheduler._take
                if self.waiting and self.on_commit is not None and self._loop is not None:
                    with contextlib.suppress(RuntimeError):
                        self._loop.call_soon_threadsafe(self.on_commit)
                continue
            _, fn, future = record  # a call
            if fn is None:  # stop; the future is set once the file is closed
                break
            if self.error is not None and self._conn is not None:
                self._resolve(future, None, self.error)
                continue
            try:
                value = fn(self._conn)
            except BaseException as exc:
                self._resolve(future, None, exc)
            else:
                self._resolve(future, value, None)
        error: BaseException | None = None
        try:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        except BaseException as exc:  # the run is told (its pieces were committed before)
            error = exc
        self._resolve(future, None, error)

    def _report_error(self, exc: BaseException) -> None:
        exc.add_note(f"(while writing the journal {self.path})")
        if self.on_error is not None and self._loop is not None:
            callback = self.on_error
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(callback, exc)

    def _commit(
        self,
        pieces: list[tuple[Any, ...]],
        done: list[tuple[Any, ...]],
        attempts: list[tuple[Any, ...]],
    ) -> None:
        """Pieces alone: each statement is a transaction of its own (a row is never half
        written; a crash between two loses a part of the batch, within the bound). With attempt
        rows: one transaction, so a piece's history and its row are written together. A BEGIN
        and a COMMIT would each wait for the GIL again (see _insert_many): that made a batch
        three times slower beside a busy event loop. The done rows go last: of two pieces with
        one id (equal items) in a batch, the one done is the one kept."""
        conn = self._conn
        assert conn is not None
        with _transaction(conn) if attempts else contextlib.nullcontext():
            if pieces:
                _insert_many(conn, _UPSERT_PIECE, pieces)
            if done:
                _insert_many(conn, _UPSERT_DONE, done)
            if attempts:
                _insert_many(conn, _INSERT_ATTEMPT, attempts)

    # Calls run in the writer thread.

    def _open(self, conn: sqlite3.Connection | None) -> None:
        conn = check_journal_file(self.path)
        conn.isolation_level = None  # transactions are explicit (_transaction, _commit)
        self._conn = conn
        with _transaction(conn, "BEGIN IMMEDIATE"):  # no other run gets in between
            running = conn.execute(
                "SELECT pid FROM runs WHERE status = 'running' ORDER BY run_id DESC LIMIT 1"
            ).fetchone()
            if running is not None and running[0] != os.getpid() and _alive(running[0]):
                raise JournalError(
                    f"journal {self.path} is being written by another run (process "
                    f"{running[0]}); wait for it to end, stop it, or pass another path"
                )
            last = conn.execute(
                "SELECT job, fingerprint, status FROM runs ORDER BY run_id DESC LIMIT 1"
            ).fetchone()
            if last is not None and self.resume and last[1] != self.fingerprint:
                raise JournalError(
                    f"journal {self.path} holds a run of another job ({last[0]!r}, fingerprint "
                    f"{last[1][:12]}; this job is {self.job!r}, fingerprint "
                    f"{self.fingerprint[:12]}): its results may not fit this job. "
                    + _fix_hint(self.path)
                )
            if not self.resume:
                conn.execute("DELETE FROM pieces")
                conn.execute("DELETE FROM attempts")
            if self.resume and last is not None and last[2] != "finished":
                # In flight when the last run stopped: they run again. (A run that finished
                # left none: every piece it started settled, and was committed before the end.)
                conn.execute(
                    "UPDATE pieces SET state = 'pending' "  # noqa: S608
                    f"WHERE state = 'running' AND NOT ({_PLAIN})"  # (never plain: the index)
                )
            cursor = conn.execute(
                "INSERT INTO runs (job, fingerprint, config, shoal_version, mode, started, status, "
                "pid) VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
                (
                    self.job,
                    self.fingerprint,
                    json.dumps(self.config, sort_keys=True),
                    __version__,
                    self.mode,
                    time.time(),
                    os.getpid(),
                ),
            )
            self.run_id = int(cursor.lastrowid or 0)
            for key, value in (self.options.meta or {}).items():
                conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
            # One scan tells whether anything is settled and, when there are few enough rows,
            # reads them all: a resume then needs no more trips to this thread. Of the plain
            # pieces (most of them) only _PRELOAD_COLUMNS are read; the others are read whole
            # (a StoredPiece) by id. Rows stay tuples: making 20,000 named tuples would cost a
            # third of the scan again.
            states = self._lookup_states
            settled = f"state IN ({','.join('?' * len(states))})"
            limit = self.options.preload
            rows = conn.execute(
                f"SELECT {_PRELOAD_COLUMNS} FROM pieces WHERE {settled} LIMIT ?",  # noqa: S608
                (*states, limit + 1),
            ).fetchall()
            self.has_settled = bool(rows)
            if rows and len(rows) <= limit:  # else: look them up in chunks as items arrive
                # The pieces that are not plain, whole (found by the index pieces_not_plain).
                full: dict[str, tuple[Any, ...]] = {
                    row[0]: row
                    for row in conn.execute(
                        f"SELECT {_STORED_COLUMNS} FROM pieces "  # noqa: S608
                        f"WHERE {settled} AND NOT ({_PLAIN})",
                        states,
                    )
                }
                if full:
                    rows = [row for row in rows if row[0] not in full]
                self.preloaded = Preloaded(rows, full)

    def _lookup(self, conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, StoredPiece]:
        found: dict[str, StoredPiece] = {}
        states = self._lookup_states
        step = 500  # SQLite's limit on host parameters is at least 999
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            # The state is checked here, not in SQL: an `AND state IN (...)` made SQLite's
            # planner twenty times slower on this query.
            sql = (
                f"SELECT {_STORED_COLUMNS} FROM pieces "  # noqa: S608
                f"WHERE id IN ({','.join('?' * len(chunk))})"
            )
            for row in conn.execute(sql, chunk):
                if row[3] in states:
                    found[row[0]] = StoredPiece._make(row)
        return found

    def _finish(
        self, conn: sqlite3.Connection | None, status: str, stats: dict[str, Any] | None
    ) -> None:
        if conn is None:  # the journal never opened
            return
        conn.execute(
            "UPDATE runs SET finished = ?, status = ?, stats = ? WHERE run_id = ?",
            (time.time(), status, json.dumps(stats) if stats else None, self.run_id),
        )


# ---------------------------------------------------------------------- readers


@dataclass(frozen=True, slots=True)
class JournalStatus:
    """What a journal says about its latest run (readable while the run is writing)."""

    path: str
    job: str
    run_status: str
    started: float
    finished: float | None
    counts: dict[str, int]
    last_errors: list[tuple[int, str, str]]

    @property
    def settled(self) -> int:
        return self.counts.get("done", 0) + self.counts.get("failed", 0)


def read_status(path: str | os.PathLike[str]) -> JournalStatus:
    """Counts by state and the last errors, read without disturbing a run that is writing.

    Raises:
        JournalError: the file is missing or not a shoal journal.
    """
    path = os.fspath(path)
    if not Path(path).is_file():
        raise JournalError(f"journal {path} does not exist; pass the path a run wrote")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"{path} cannot be opened as a shoal journal ({exc})") from exc
    try:
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{path} is not a shoal journal ({exc})") from exc
        if meta.get("app") != "shoal":
            raise JournalError(f"{path} is not a shoal journal")
        run = conn.execute(
            "SELECT job, status, started, finished FROM runs ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        if run is None:
            raise JournalError(f"journal {path} has no run yet")
        counts = dict(conn.execute("SELECT state, count(*) FROM pieces GROUP BY state").fetchall())
        errors = conn.execute(
            "SELECT idx, error_type, error_message FROM pieces WHERE state = 'failed' "
            "ORDER BY finished DESC LIMIT 5"
        ).fetchall()
        return JournalStatus(
            path=path,
            job=run[0],
            run_status=run[1],
            started=run[2],
            finished=run[3],
            counts={str(k): int(v) for k, v in counts.items()},
            last_errors=[(int(i), str(t), str(m)) for i, t, m in errors],
        )
    finally:
        conn.close()


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What runs stored in a journal's meta table with ``Journal(meta=...)`` (the latest value
    of each key), decoded from JSON. Safe while a run is writing.

    Raises:
        JournalError: the file is missing or not a shoal journal.
    """
    path = os.fspath(path)
    read_status(path)  # the same checks and messages as `shoal status`
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        rows = conn.execute("SELECT key, value FROM meta").fetchall()
    finally:
        conn.close()
    found: dict[str, Any] = {}
    for key, value in rows:
        if key in _RESERVED_META:
            continue
        try:
            found[str(key)] = json.loads(value)
        except ValueError:
            continue  # not ours to read
    return found


# ---------------------------------------------------------------------- identity


_SCRIPTS = ("__main__", "__mp_main__")


def callable_name(fn: object, *, stable: bool = False) -> str:
    """``module.qualname`` of a function, a partial's function, or a callable object's class.

    ``stable``: a script's module (``__main__``, or a job file the command line loaded by its
    path) is named by its file's stem, so the same job has the same name whether it runs as
    ``python job.py`` or ``shoal run job.py``, and after its folder moved.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    module = getattr(target, "__module__", None) or "?"
    if stable:
        stem = job_file_stem(module)
        if stem is not None:
            module = stem
        elif module in _SCRIPTS:
            file = getattr(sys.modules.get(module), "__file__", None)
            if file:
                module = Path(file).stem
    return f"{module}.{getattr(target, '__qualname__', repr(target))}"


def _callable_identity(fn: object) -> dict[str, Any] | None:
    if fn is None:
        return None
    name = callable_name(fn, stable=True)
    bound: list[str] = []
    while isinstance(fn, functools.partial):
        bound.append(repr((fn.args, sorted(fn.keywords.items()))))
        fn = fn.func
    code_owner: Any = fn
    if inspect.ismethod(code_owner):
        code_owner = code_owner.__func__
    elif not inspect.isfunction(code_owner):
        # A class or a callable object: the code that runs is its __call__ (or __init__). Its
        # class's own source is not read: inspect finds a class by parsing its whole module,
        # which is slow, and in CPython 3.11 not safe while other threads parse too.
        kind = code_owner if isinstance(code_owner, type) else type(code_owner)
        code_owner = getattr(kind, "__call__" if kind is type(code_owner) else "__init__", None)
    return {"name": name, "source": _source_digest(code_owner), "bound": bound}


def _source_digest(function: Any) -> str:
    """A hash of a function's source text (its bytecode where there is no source)."""
    code = getattr(function, "__code__", None)
    if code is None:
        return ""  # a built-in: its name says it all
    try:
        text = inspect.getsource(function)  # a function's lines are found without parsing
    except (OSError, TypeError):
        text = code.co_code.hex() + repr(code.co_consts)
    return hashlib.sha256(text.encode()).hexdigest()


def job_fingerprint(work: object, piece_id: object, codec: Codec) -> str:
    """What decides a job's results: its work function (name and source), the id function and
    the codec. Limits, retries and the backend only change the pace, so they are left out."""
    identity = {
        "format": 1,
        "work": _callable_identity(work),
        "id": _callable_identity(piece_id),
        "codec": codec.name,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class Preset:
    """An item whose piece id is already known (items read back from a journal)."""

    __slots__ = ("id", "item")

    def __init__(self, piece_id: str, item: Any) -> None:
        self.id = piece_id
        self.item = item


def load_stored_items(path: str) -> list[Preset]:
    """Every piece stored in a journal, in index order, for ``retry_failed``.

    Raises:
        JournalError: not a journal, or failed pieces whose items could not be stored.
    """
    read_status(path)  # the same checks and messages as `shoal status`
    codec = JSONCodec()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        rows = conn.execute("SELECT id, item, state, idx FROM pieces ORDER BY idx").fetchall()
    finally:
        conn.close()
    missing = [idx for _, item, state, idx in rows if item is None and state != "done"]
    if missing:
        shown = ", ".join(str(i) for i in missing[:10])
        raise JournalError(
            f"journal {path}: {len(missing)} pieces to retry (index {shown}"
            f"{', ...' if len(missing) > 10 else ''}) have no stored item, because their items "
            "could not be stored as JSON; pass the input again: job.retry_failed(journal, "
            "items=...)"
        )
    return [
        Preset(piece_id, codec.decode(item) if item is not None else None)
        for piece_id, item, _, _ in rows
    ]
