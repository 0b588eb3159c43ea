"""The journal: real SQLite files, real child processes killed for real, resume and retry."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal
from shoal.journal import (
    SCHEMA_VERSION,
    Journal,
    JournalError,
    JSONCodec,
    PickleCodec,
    content_id,
    read_status,
)
from shoal.testing import FakeClock

CHILD = Path(__file__).with_name("journal_child.py")


async def square(x: int) -> dict[str, int]:
    return {"x": x, "square": x * x}


class Counting:
    """Async work that counts its calls and fails the items it is told to fail."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.calls: Counter[int] = Counter()
        self.fail = fail or set()

    async def __call__(self, x: int) -> int:
        self.calls[x] += 1
        await asyncio.sleep(0)
        if x in self.fail:
            raise ValueError(f"cannot do {x}")
        return x * 10


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def edit(path: Path, *statements: str) -> None:
    """Change a journal by hand, as a user (or a damaged disk) might."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            for sql in statements:
                conn.execute(sql)
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_journal_records_run_pieces_and_attempts(tmp_path: Path) -> None:
    """Every piece is stored with its state, item, result, attempts and errors; the run too."""
    db = tmp_path / "run.db"
    work = Counting(fail={3})
    calls_of_1 = []

    async def tens(x: int) -> int:
        if x == 1:
            calls_of_1.append(x)
            if len(calls_of_1) == 1:
                raise ConnectionError("once")
        return await work(x)

    job = shoal.Job(tens, retry=shoal.Retry(attempts=2, base_delay=0), name="tens")
    run = job.run(range(5), journal=db)
    assert run.stats.failed == 1

    (mode,) = rows(db, "PRAGMA journal_mode")[0]
    assert mode == "wal"
    meta = dict(rows(db, "SELECT key, value FROM meta"))
    assert meta == {"app": "shoal", "schema_version": str(SCHEMA_VERSION)}
    ((job_name, fingerprint, version, status, started, finished),) = rows(
        db, "SELECT job, fingerprint, shoal_version, status, started, finished FROM runs"
    )
    assert (job_name, fingerprint, version, status) == (
        "tens",
        job.fingerprint(),
        shoal.__version__,
        "finished",
    )
    assert started <= finished

    pieces = {
        r[0]: r[1:]
        for r in rows(
            db,
            "SELECT idx, state, item, result, attempts, error_type, error_message FROM pieces",
        )
    }
    assert pieces == {
        0: ("done", "0", "0", 1, None, None),
        1: ("done", "1", "10", 2, None, None),
        2: ("done", "2", "20", 1, None, None),
        3: ("failed", "3", None, 2, "ValueError", "cannot do 3"),
        4: ("done", "4", "40", 1, None, None),
    }
    attempts = rows(
        db,
        "SELECT p.idx, a.attempt, a.outcome, a.error_type FROM attempts a "
        "JOIN pieces p ON p.id = a.piece_id ORDER BY p.idx, a.attempt",
    )
    # the history of every piece that took more than one attempt; the others are their rows
    assert attempts == [
        (1, 1, "error", "ConnectionError"),
        (1, 2, "ok", None),
        (3, 1, "error", "ValueError"),
        (3, 2, "error", "ValueError"),
    ]
    assert [o.id for o in run.outcomes] == [content_id(i) for i in range(5)]


def test_resume_reads_back_settled_pieces(tmp_path: Path) -> None:
    """A second run with the same journal runs only new pieces; the rest are read back."""
    db = tmp_path / "run.db"
    first = Counting(fail={2})
    job = shoal.Job(first, retry=shoal.Retry(attempts=1))
    run1 = job.run(range(6), journal=db)

    again = shoal.Job(first, retry=shoal.Retry(attempts=1))  # same work function
    first.calls.clear()
    run2 = again.run(range(9), journal=db)
    assert sorted(first.calls) == [6, 7, 8]
    assert run2.stats.resumed == 6
    assert run2.stats.attempts == 3
    assert [o.value for o in run2.outcomes[:6]] == [o.value for o in run1.outcomes]
    assert [o.ok for o in run2.outcomes] == [True, True, False, True, True, True, True, True, True]
    assert run2.outcomes[2].error is not None
    assert run2.outcomes[2].error.message == "cannot do 2"
    assert run2.outcomes[0].started == run1.outcomes[0].started  # the stored timings


def test_resume_works_for_streams_and_async_sources(tmp_path: Path) -> None:
    """Resume applies to job.stream and to async iterables too."""
    db = tmp_path / "run.db"
    work = Counting()
    job = shoal.Job(work)
    job.run(range(4), journal=db)
    work.calls.clear()

    async def items() -> Any:
        for i in range(6):
            yield i

    async def consume() -> list[tuple[int, int]]:
        return [(o.index, o.value) async for o in job.stream(items(), journal=db, ordered=True)]

    assert asyncio.run(consume()) == [(i, i * 10) for i in range(6)]
    assert sorted(work.calls) == [4, 5]


@pytest.mark.parametrize("preload", [0, 1_000_000])
def test_resume_in_chunks_or_preloaded_gives_the_same(tmp_path: Path, preload: int) -> None:
    """Settled pieces are found whether they are preloaded or looked up in chunks."""
    db = tmp_path / "run.db"
    work = Counting()
    job = shoal.Job(work, limits=shoal.Limits(concurrency=4))
    job.run(range(0, 3000, 2), journal=db)  # the even numbers
    work.calls.clear()
    run = job.run(range(3000), journal=Journal(db, preload=preload))
    assert sorted(work.calls) == list(range(1, 3000, 2))
    assert run.values == [i * 10 for i in range(3000)]
    assert run.stats.resumed == 1500


def _fields(outcome: shoal.Outcome[Any]) -> tuple[Any, ...]:
    error = outcome.error
    return (
        outcome.index,
        outcome.item,
        outcome.ok,
        outcome.value,
        None if error is None else (error.type, error.message),
        outcome.attempts,
        outcome.started,
        outcome.finished,
        outcome.key,
        outcome.throttles,
        outcome.id,
        outcome.provenance,
        outcome.usage,
    )


def test_resumed_outcomes_equal_the_first_runs(tmp_path: Path) -> None:
    """Pieces read back come back as they ended: plain ones (done at the first try, read in
    blocks) and the others (failed, retried, throttled, with usage, keyed) alike."""
    db = tmp_path / "run.db"
    tries: Counter[int] = Counter()

    async def work(x: int) -> Any:
        tries[x] += 1
        await asyncio.sleep(0)
        if x % 7 == 3:
            raise ValueError(f"no {x}")
        if x % 11 == 5 and tries[x] == 1:
            raise ConnectionError("once")
        if x % 13 == 6:
            shoal.usage(tokens=x)
        return (x, "t") if x % 5 == 0 else {"x": x}

    job = shoal.Job(
        work,
        key=lambda x: f"k{x % 3}",
        retry=shoal.Retry(attempts=2, base_delay=0, on=(ConnectionError,)),
    )
    first = job.run(range(1500), journal=db)
    assert first.stats.failed > 0 and first.stats.retries > 0
    tries.clear()
    again = job.run(range(1500), journal=db)
    assert not tries
    assert again.stats.resumed == 1500
    assert (again.stats.succeeded, again.stats.failed) == (
        first.stats.succeeded,
        first.stats.failed,
    )
    assert [_fields(o) for o in again.outcomes] == [_fields(o) for o in first.outcomes]
    assert again.values == first.values
    assert sorted(again.completion_order) == list(range(1500))


def test_a_resume_with_stored_failures(tmp_path: Path) -> None:
    """A resumed run with stored failures raises when asked to; values skip the failures."""
    db = tmp_path / "run.db"
    work = Counting(fail={4})
    job = shoal.Job(work)
    job.run(range(1200), journal=db)
    with pytest.raises(shoal.JobFailed):
        job.run(range(1200), journal=db, errors="raise")
    run = job.run(range(1200), journal=db)
    assert run.values == [i * 10 for i in range(1200) if i != 4]
    assert [o.index for o in run.outcomes] == list(range(1200))
    assert run.failures[0].item == 4
    assert sorted(run.completion_order) == list(range(1200))


def test_resume_mixes_stored_and_new_items(tmp_path: Path) -> None:
    """Stored pieces between items that must run: each item settles once, in its place."""
    db = tmp_path / "run.db"
    work = Counting()
    job = shoal.Job(work, limits=shoal.Limits(concurrency=3))
    job.run([i for i in range(2000) if i % 97 != 0], journal=db)
    work.calls.clear()
    run = job.run(range(2000), journal=db)
    assert sorted(work.calls) == list(range(0, 2000, 97))
    assert run.values == [i * 10 for i in range(2000)]
    assert run.stats.resumed == 2000 - len(range(0, 2000, 97))
    assert sorted(run.completion_order) == list(range(2000))


def test_resume_keeps_provenance_of_split_items(tmp_path: Path) -> None:
    """Items from a splitter keep where they came from when they are read back."""
    from shoal import split

    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"n": {i}}}\n' for i in range(900)))
    db = tmp_path / "run.db"

    async def double(record: dict[str, int]) -> int:
        return record["n"] * 2

    job = shoal.Job(double)
    first = job.run(split.jsonl(source), journal=db)
    again = job.run(split.jsonl(source), journal=db)
    assert again.stats.resumed == 900
    assert [_fields(o) for o in again.outcomes] == [_fields(o) for o in first.outcomes]
    assert str(again.outcomes[7].provenance) == f"{source}:8"


def test_resume_finds_int_and_str_items_by_value_and_others_by_id(tmp_path: Path) -> None:
    """Short ints and strs are found by their stored item; 1, True, 1.0 and "1" stay four
    pieces; long strs and other items are found by their hash; all come back as they were."""
    db = tmp_path / "run.db"
    long = "y" * 100
    items: list[Any] = [1, True, 1.0, "1", long, None, [1], {"a": 1}, -3, "ü", 10**20]
    items += list(range(100, 1100)) + [f"s{i}" for i in range(1000)]
    seen: Counter[str] = Counter()

    async def show(x: Any) -> str:
        seen[repr(x)] += 1
        return f"{type(x).__name__}:{x!r}"

    job = shoal.Job(show)
    first = job.run(items, journal=db)
    assert len(rows(db, "SELECT 1 FROM pieces")) == len(items)
    seen.clear()
    again = job.run(list(reversed(items)), journal=db)
    assert not seen
    assert again.values == list(reversed(first.values))
    assert [o.id for o in again.outcomes] == [content_id(i) for i in reversed(items)]
    # an id= function decides identity itself: nothing is looked up by item
    keyed = shoal.Job(show, id=lambda x: f"id-{x!r}")
    keyed.run(items[:50], journal=tmp_path / "keyed.db")
    seen.clear()
    assert keyed.run(items[:60], journal=tmp_path / "keyed.db").values[:50] == first.values[:50]
    assert sorted(seen) == sorted(repr(i) for i in items[50:60])


def test_item_keys_match_what_the_journal_stores() -> None:
    """Ints are their own keys and strs the JSON text the journal stores them as; other kinds
    are refused. A journal's preload gives the int for a text that is exactly an int's."""
    from shoal._codec import item_keys
    from shoal._journal import _PRELOAD_COLUMNS

    codec = JSONCodec()
    strs = ["", "1", "ü", 'a "quoted" \\ back\nslash', "\x00\t\u2028", "😀"]
    assert item_keys(strs) == [codec.encode(s) for s in strs]
    assert item_keys([0, -7, 10**30]) == [0, -7, 10**30]
    assert item_keys([1, "1"]) == [1, '"1"']
    for other in ([True], [1.0], [None], [[1]], [1, (2,)]):
        with pytest.raises(TypeError):
            item_keys(other)

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE pieces (id, key, result, started, finished, item)")
    stored = ["1", "-7", "0123", "1.0", "true", '"1"', str(10**30), "9223372036854775807", None]
    stored.append('"' + "x" * 300 + '"')
    conn.executemany(
        "INSERT INTO pieces VALUES ('i', '', '0', 1.0, 2.0, ?)", [(t,) for t in stored]
    )
    keys = [row[5] for row in conn.execute(f"SELECT {_PRELOAD_COLUMNS} FROM pieces")]  # noqa: S608
    conn.close()
    assert keys == [1, -7, "0123", "1.0", "true", '"1"', str(10**30), 2**63 - 1, None, None]


def test_preloaded_rows_are_found_by_their_item() -> None:
    """The plain rows are indexed by their item's key (NULL when it was too long); the others
    and every row by id."""
    from shoal._journal import Preloaded

    def row(n: int, item: int | str | None) -> tuple[Any, ...]:
        return (f"id{n}", "", "0", 1.0, 2.0, item)

    keys: list[int | str | None] = [1, '"1"', "true", None, -7]
    plain = [row(n, k) for n, k in enumerate(keys)]
    preloaded = Preloaded(plain, {"other": ("other",)})
    assert preloaded.by_item[1] == plain[0]
    assert preloaded.by_item['"1"'] == plain[1]
    assert preloaded.by_item[-7] == plain[4]
    assert preloaded.get("id3") == plain[3]
    assert preloaded.get("other") == ("other",)


def test_a_journal_from_before_usage_and_the_plain_index_is_brought_up_to_date(
    tmp_path: Path,
) -> None:
    """A journal written before pieces had a usage column and the index of pieces that are not
    plain: opening it adds both, and a resume reads back its failures as failures."""
    db = tmp_path / "run.db"
    work = Counting(fail={3})
    job = shoal.Job(work, retry=shoal.Retry(attempts=1))
    job.run(range(10), journal=db)
    edit(db, "DROP INDEX pieces_not_plain", "ALTER TABLE pieces DROP COLUMN usage")
    work.calls.clear()
    run = job.run(range(10), journal=db)
    assert not work.calls
    assert [o.ok for o in run.outcomes] == [i != 3 for i in range(10)]
    assert run.failures[0].error.message == "cannot do 3"
    assert rows(db, "SELECT name FROM sqlite_master WHERE name = 'pieces_not_plain'") == [
        ("pieces_not_plain",)
    ]
    assert ("usage",) in [(r[1],) for r in rows(db, "PRAGMA table_info(pieces)")]


def test_a_damaged_stored_result_runs_again(tmp_path: Path) -> None:
    """A result that cannot be read back (a file edited by hand) is run again, alone."""
    db = tmp_path / "run.db"
    work = Counting()
    job = shoal.Job(work)
    job.run(range(1000), journal=db)
    edit(
        db,
        "UPDATE pieces SET result = '[1' WHERE idx = 10",
        "UPDATE pieces SET result = '2]' WHERE idx = 11",
    )
    work.calls.clear()
    run = job.run(range(1000), journal=db)
    assert sorted(work.calls) == [10, 11]
    assert run.values == [i * 10 for i in range(1000)]


def test_an_items_error_during_a_resume_keeps_what_came_before(tmp_path: Path) -> None:
    """The items iterable raising in the middle of a block read back: the items before it are
    settled and the run stops with the error, naming where."""
    db = tmp_path / "run.db"
    work = Counting()
    job = shoal.Job(work)
    job.run(range(1000), journal=db)

    def items() -> Iterator[int]:
        yield from range(700)
        raise OSError("the source broke")

    work.calls.clear()
    with pytest.raises(OSError, match="the source broke") as caught:
        job.run(items(), journal=db)
    assert "after 700 items" in "".join(caught.value.__notes__)
    assert not work.calls


def test_content_ids_in_bulk_equal_one_at_a_time() -> None:
    """content_ids takes the fast way for lists of ints or of strs, with the same ids."""
    from shoal._codec import content_ids

    cases: list[list[Any]] = [
        [0, -5, 10**30, 7],
        ["", "a", "ü\ud800", "x" * 500],
        [1, "1", True, 1.5, None, [1, 2], {"a": 1}],
        [True, False],
    ]
    for items in cases:
        assert content_ids(items) == [content_id(i) for i in items]
    with pytest.raises(TypeError):
        content_ids([object()])


def test_decode_many_reads_back_what_json_codec_wrote() -> None:
    """Results decoded together equal results decoded one by one; a bad text gives None."""
    from shoal._codec import decode_many

    codec = JSONCodec()
    values: list[Any] = [1, "two", [3], {"four": 4}, None, (5, 6), b"7", 8.5, {"$shoal": 1}]
    texts = [codec.encode(v) for v in values]
    assert decode_many(codec, texts) == [codec.decode(t) for t in texts]
    plain = texts[:5]
    assert decode_many(codec, plain) == values[:5]
    assert decode_many(codec, ["1", "[2"]) is None
    assert decode_many(codec, ["1,2"]) is None  # two values from one text
    assert decode_many(codec, ["1", None]) is None
    pickled = PickleCodec()
    assert decode_many(pickled, [pickled.encode((1, 2))]) == [(1, 2)]
    assert decode_many(pickled, [b"not a pickle"]) is None


def test_resume_false_starts_over(tmp_path: Path) -> None:
    """resume=False runs everything again in the same file, even for another job."""
    db = tmp_path / "run.db"
    work = Counting()
    shoal.Job(work).run(range(3), journal=db)
    run = shoal.Job(square).run(range(3), journal=db, resume=False)
    assert run.stats.resumed == 0
    assert run.values == [{"x": i, "square": i * i} for i in range(3)]
    assert len(rows(db, "SELECT 1 FROM pieces")) == 3
    assert len(rows(db, "SELECT 1 FROM runs")) == 2


def test_retry_failed_runs_only_the_failures(tmp_path: Path) -> None:
    """retry_failed re-runs the failed pieces (items read from the journal); others are kept."""
    db = tmp_path / "run.db"
    work = Counting(fail={1, 4})
    job = shoal.Job(work, retry=shoal.Retry(attempts=1))
    assert job.run(range(6), journal=db).stats.failed == 2
    work.fail = {4}
    work.calls.clear()
    run = job.retry_failed(db)
    assert sorted(work.calls) == [1, 4]
    assert [o.ok for o in run.outcomes] == [True, True, True, True, False, True]
    assert run.values == [0, 10, 20, 30, 50]
    assert run.stats.resumed == 4
    status = read_status(db)
    assert status.counts == {"done": 5, "failed": 1}
    assert status.last_errors == [(4, "ValueError", "cannot do 4")]
    # the piece that failed, then was done at its first attempt of the retry, keeps no error
    assert rows(
        db,
        "SELECT state, attempts, throttles, result, error_type, error_message, "
        "error_traceback, usage, item FROM pieces WHERE idx = 1",
    ) == [("done", 1, 0, "10", None, None, None, None, "1")]


def test_retry_failed_needs_items_that_could_not_be_stored(tmp_path: Path) -> None:
    """Items with no JSON form run fine, but retrying them needs the input again."""
    db = tmp_path / "run.db"

    class Opaque:
        def __init__(self, n: int) -> None:
            self.n = n

    calls: list[int] = []

    async def work(item: Opaque) -> int:
        calls.append(item.n)
        if item.n == 1 and calls.count(1) == 1:
            raise RuntimeError("first time")
        return item.n

    items = [Opaque(0), Opaque(1)]
    job = shoal.Job(work, id=lambda o: f"opaque-{o.n}", retry=shoal.Retry(attempts=1))
    assert job.run(items, journal=db).stats.failed == 1
    with pytest.raises(JournalError, match="items=") as info:
        job.retry_failed(db)
    assert "index 1" in str(info.value)
    run = job.retry_failed(db, items=items)
    assert run.values == [0, 1]
    assert calls == [0, 1, 1]


def test_unstorable_result_fails_only_that_piece(tmp_path: Path) -> None:
    """A result the codec cannot store fails its piece with an error naming it; no pickling."""
    db = tmp_path / "run.db"

    async def work(x: int) -> object:
        return object() if x == 1 else x

    run = shoal.Job(work).run(range(3), journal=db)
    assert [o.ok for o in run.outcomes] == [True, False, True]
    error = run.outcomes[1].error
    assert error is not None
    assert "result of piece 1 (a object) cannot be stored" in error.message
    assert "codec=" in error.message
    assert rows(db, "SELECT state FROM pieces WHERE idx = 1") == [("failed",)]


def test_pickle_codec_is_opt_in(tmp_path: Path) -> None:
    """With PickleCodec the user chose, any picklable result is stored and read back."""
    db = tmp_path / "run.db"

    async def work(x: int) -> complex:
        return complex(x, 1)

    job = shoal.Job(work, codec=PickleCodec())
    assert job.run(range(3), journal=db).values == [0 + 1j, 1 + 1j, 2 + 1j]
    resumed = job.run(range(3), journal=db)
    assert resumed.stats.resumed == 3
    assert resumed.values == [0 + 1j, 1 + 1j, 2 + 1j]
    assert job.fingerprint() != shoal.Job(work).fingerprint()  # the codec is part of it


def test_json_codec_round_trips_rich_values() -> None:
    """Tuples, sets, bytes, paths, dates and odd dict keys come back as themselves."""
    import datetime as dt
    import decimal

    codec = JSONCodec()
    values: list[Any] = [
        (1, "a", None),
        {1: "one", (2, 3): [4]},
        {"$shoal": "not a tag"},
        {frozenset({1, 2})},
        b"\x00\xffdata",
        Path("/srv/data/x"),
        dt.datetime(2026, 1, 2, 3, 4, 5),
        dt.date(2026, 1, 2),
        decimal.Decimal("1.10"),
        float("inf"),
        [1.5, True, {"nested": (1,)}],
    ]
    for value in values:
        assert codec.decode(codec.encode(value)) == value
    with pytest.raises(TypeError, match="has no JSON form"):
        codec.encode(object())


def test_content_ids_are_stable_and_canonical() -> None:
    """The same item has the same id on every run; dict order does not matter."""
    assert content_id({"a": 1, "b": 2}) == content_id({"b": 2, "a": 1})
    assert content_id(1) != content_id("1")
    assert content_id((1, 2)) != content_id([1, 2])
    # pinned: changing how ids are made would orphan every existing journal
    assert content_id("x") == hashlib.blake2b(b"sx", digest_size=16).hexdigest()
    assert content_id(7) == hashlib.blake2b(b"i7", digest_size=16).hexdigest()
    assert content_id([1, "a"]) == hashlib.blake2b(b'j[1,"a"]', digest_size=16).hexdigest()


def _reference_id(item: Any) -> str:
    """How piece ids were first made (kept here: a faster content_id must give the same ids)."""
    from shoal._codec import to_jsonable

    kind = type(item)
    if kind is str:
        raw = "s" + item
    elif kind is int:
        raw = "i" + repr(item)
    else:
        raw = "j" + json.dumps(
            to_jsonable(item, canonical=True),
            ensure_ascii=False,
            sort_keys=True,
            separators=(",", ":"),
        )
    return hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4) | st.sampled_from(["$shoal", "v"]), inner, max_size=4)
        | st.dictionaries(st.integers(), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_content_ids_are_the_same_as_ever(item: Any) -> None:
    """Records and lists encoded without the tagging copy still get the ids they always had."""
    assert content_id(item) == _reference_id(item)


def test_fingerprint_covers_work_not_pace() -> None:
    """Other limits, retries or backend keep the fingerprint; other work changes it."""
    base = shoal.Job(square)
    assert (
        base.fingerprint()
        == shoal.Job(
            square, limits=shoal.Limits(concurrency=3, rate="5/s"), retry=shoal.Retry(attempts=9)
        ).fingerprint()
    )
    assert base.fingerprint() != shoal.Job(Counting()).fingerprint()
    assert base.fingerprint() != shoal.Job(square, id=str).fingerprint()


def test_other_jobs_journal_is_refused_untouched(tmp_path: Path) -> None:
    """A journal written by another job is refused, names both and the fix, and is not changed."""
    db = tmp_path / "run.db"
    shoal.Job(square, name="squares").run(range(3), journal=db)
    before = digest(db)
    with pytest.raises(JournalError) as info:
        shoal.Job(Counting(), name="tens").run(range(3), journal=db)
    message = str(info.value)
    assert "'squares'" in message
    assert "'tens'" in message
    assert "resume=False" in message
    assert str(db) in message
    assert digest(db) == before


def test_non_journals_are_refused_untouched(tmp_path: Path) -> None:
    """A text file, or an SQLite file of something else, is refused and left as it was."""
    text = tmp_path / "notes.db"
    text.write_text("my notes\n")
    with pytest.raises(JournalError, match="not a shoal journal"):
        shoal.Job(square).run(range(2), journal=text)
    assert text.read_text() == "my notes\n"

    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    before = digest(other)
    with pytest.raises(JournalError, match="not a shoal journal"):
        shoal.Job(square).run(range(2), journal=other)
    assert digest(other) == before


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A journal from a newer shoal says to upgrade, and is not changed."""
    db = tmp_path / "run.db"
    shoal.Job(square).run(range(2), journal=db)
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    conn.commit()
    conn.close()
    before = digest(db)
    with pytest.raises(JournalError, match="newer shoal") as info:
        shoal.Job(square).run(range(2), journal=db)
    assert "upgrade shoal" in str(info.value)
    assert digest(db) == before


def test_bad_paths_say_what_to_do(tmp_path: Path) -> None:
    """A folder, a missing folder, or a place nothing can be written to: clear errors."""
    with pytest.raises(JournalError, match="is a folder"):
        shoal.Job(square).run(range(1), journal=tmp_path)
    with pytest.raises(JournalError, match="does not exist"):
        shoal.Job(square).run(range(1), journal=tmp_path / "missing" / "run.db")
    with pytest.raises(JournalError, match="/proc"):
        shoal.Job(square).run(range(1), journal="/proc/shoal-journal.db")


_READ_ONLY_CHILD = """
import os, sys
import shoal
from shoal.journal import JournalError

async def square(x):
    return x * x

shoal.Job(square).run(range(1))  # everything a run imports is imported now
if len(sys.argv) > 2:  # root may write to any file: go on as nobody (who cannot read the tree)
    os.setgid(int(sys.argv[2]))
    os.setuid(int(sys.argv[2]))
try:
    shoal.Job(square).run(range(1), journal=sys.argv[1])
except JournalError as exc:
    print(exc)
    sys.exit(3)
"""


def test_read_only_journal_is_refused(tmp_path: Path) -> None:
    """A journal file that cannot be written, or read, is refused before anything runs, and left
    as it was. (Run by an unprivileged user in a child process when the tests run as root.)"""
    folder = Path(tempfile.mkdtemp(prefix="shoal-ro-"))
    try:
        folder.chmod(0o755)
        db = folder / "run.db"
        shoal.Job(square).run(range(1), journal=db)
        for extra in (folder / "run.db-wal", folder / "run.db-shm"):
            assert not extra.exists()  # closed cleanly: nothing beside the file
        db.chmod(0o444)
        before = digest(db)
        script = tmp_path / "child.py"
        script.write_text(_READ_ONLY_CHILD)
        argv = [sys.executable, str(script), str(db)]
        if os.geteuid() == 0:
            argv.append("65534")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 3, done.stderr
        assert "read-only" in done.stdout
        assert digest(db) == before
        db.chmod(0o000)  # and one that cannot even be read
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 3, done.stderr
        assert "cannot be read" in done.stdout
        db.chmod(0o444)
        assert digest(db) == before
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


def test_export_jsonl_and_parquet(tmp_path: Path) -> None:
    """run.export writes one record per item in input order, as JSON Lines or Parquet."""
    work = Counting(fail={1})
    run = shoal.Job(work, retry=shoal.Retry(attempts=1)).run(range(3), journal=tmp_path / "r.db")
    path = run.export(tmp_path / "out.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["index"], r["ok"], r["value"]) for r in records] == [
        (0, True, 0),
        (1, False, None),
        (2, True, 20),
    ]
    assert records[1]["error"] == {"type": "ValueError", "message": "cannot do 1"}
    assert records[0]["id"] == content_id(0)

    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(run.export(tmp_path / "out.parquet"))
    assert table.column("index").to_pylist() == [0, 1, 2]
    assert table.column("ok").to_pylist() == [True, False, True]
    with pytest.raises(ValueError, match=r"\.jsonl or \.parquet"):
        run.export(tmp_path / "out.xlsx")


def test_journal_options_are_checked() -> None:
    """Journal options are validated when built."""
    with pytest.raises(ValueError, match="commit_every"):
        Journal("x.db", commit_every=0)
    with pytest.raises(ValueError, match="commit_interval"):
        Journal("x.db", commit_interval=0)
    with pytest.raises(TypeError, match="journal="):
        shoal.Job(square).run(range(1), journal=42)  # type: ignore[arg-type]


def test_status_reader_runs_beside_a_writing_run(tmp_path: Path) -> None:
    """A reader polling the journal while a run writes neither blocks it nor sees a torn state."""
    db = tmp_path / "run.db"

    async def slow(x: int) -> int:
        await asyncio.sleep(0.002)
        return x

    job = shoal.Job(slow, limits=shoal.Limits(concurrency=10))
    done = threading.Event()
    result: list[shoal.Run[int]] = []

    def run_it() -> None:
        result.append(job.run(range(1500), journal=Journal(db, commit_every=50)))
        done.set()

    thread = threading.Thread(target=run_it)
    thread.start()
    seen: list[int] = []
    early: list[str] = []
    while not done.is_set():
        if db.exists():
            try:
                status = read_status(db)
            except JournalError as exc:  # the first moments: no run row yet
                early.append(str(exc))
            else:
                seen.append(status.counts.get("done", 0))
        time.sleep(0.005)
    assert all("no run yet" in e or "not a shoal journal" in e for e in early)
    thread.join()
    assert result[0].ok
    assert seen == sorted(seen)  # never goes backwards
    assert len(set(seen)) > 3  # it saw the run progress
    assert read_status(db).counts == {"done": 1500}


def test_journal_write_failure_stops_the_run(tmp_path: Path) -> None:
    """If the journal cannot be written mid-run, the run stops with that error."""
    db = tmp_path / "run.db"

    async def work(x: int) -> int:
        if x == 50:
            conn = sqlite3.connect(db, timeout=0.1)
            conn.execute("BEGIN EXCLUSIVE")  # a rival writer holds the lock for good
            work.conn = conn  # type: ignore[attr-defined]
        await asyncio.sleep(0.001)
        return x

    journal = Journal(db, commit_every=10, commit_interval=0.01)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked") as info:
            shoal.Job(work).run(range(2000), journal=journal)
        assert any(str(db) in note for note in info.value.__notes__)
    finally:
        work.conn.close()  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- real crashes


_CHILDREN: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test() -> Iterator[None]:
    """Whatever happens in a test, the child processes it started are gone when it ends."""
    yield
    while _CHILDREN:
        proc = _CHILDREN.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def child(db: Path, n: int, log: Path, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), str(n), str(log), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _CHILDREN.append(proc)
    return proc


def log_lines(log: Path) -> list[tuple[str, int]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        kind, _, number = line.partition(" ")
        out.append((kind, int(number)))
    return out


def expected_records(n: int) -> list[dict[str, Any]]:
    return [{"i": i, "square": i * i} for i in range(n)]


def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    """Killed with SIGKILL at random moments, every resumed run ends with exactly one result per
    input, equal to a clean run's, and re-runs no more settled pieces than documented."""
    rng = random.Random(20261130)
    n = 400
    commit_every = 20
    concurrency = 8
    bound = 2 * commit_every + concurrency
    trials = 12
    worst = 0
    for trial in range(trials):
        db = tmp_path / f"t{trial}.db"
        log1 = tmp_path / f"t{trial}-1.log"
        proc = child(db, n, log1, "--commit-every", str(commit_every))
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()
        ended_before = {i for kind, i in log_lines(log1) if kind == "end"}

        out = tmp_path / f"t{trial}.jsonl"
        log2 = tmp_path / f"t{trial}-2.log"
        resumed = child(db, n, log2, "--export", str(out))
        _, stderr = resumed.communicate(timeout=60)
        assert resumed.returncode == 0, stderr
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["index"] for r in records] == list(range(n))
        assert [r["value"] for r in records] == expected_records(n)
        assert all(r["ok"] for r in records)

        started_after = {i for kind, i in log_lines(log2) if kind == "start"}
        rerun = len(ended_before & started_after)
        worst = max(worst, rerun)
        assert rerun <= bound, (trial, rerun, bound)
        # The journal holds exactly one row per input, every one done.
        assert rows(db, "SELECT count(*), count(DISTINCT id) FROM pieces WHERE state = 'done'") == [
            (n, n)
        ]
    assert worst <= bound


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_flush_everything_settled(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM and Ctrl-C stop the run and commit every settled piece before the process ends."""
    db = tmp_path / "run.db"
    log = tmp_path / "run.log"
    proc = child(db, 100_000, log, "--commit-every", "100000", "--commit-interval", "3600")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.8)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM
    else:
        assert proc.returncode != 0
        assert "KeyboardInterrupt" in stderr
    ended = {i for kind, i in log_lines(log) if kind == "end"}
    assert ended, "the child did some work before the signal"
    done = {i for (i,) in rows(db, "SELECT idx FROM pieces WHERE state = 'done'")}
    assert done == ended  # nothing settled was lost, nothing unsettled recorded as done
    ((status,),) = rows(db, "SELECT status FROM runs")
    assert status == "interrupted"


def test_a_second_live_run_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    """While one process writes a journal, another run on it is refused with the writer's pid."""
    db = tmp_path / "run.db"
    log = tmp_path / "run.log"
    proc = child(db, 100_000, log)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if rows(db, "SELECT 1 FROM runs"):
                    break
            except sqlite3.OperationalError:  # not created yet
                pass
            time.sleep(0.01)
        with pytest.raises(JournalError, match=rf"another run \(process {proc.pid}\)"):
            shoal.Job(square).run(range(1), journal=db)
    finally:
        proc.kill()
        proc.communicate(timeout=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 40),
    stop_at=st.integers(0, 45),
    concurrency=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_property_interrupted_then_resumed_equals_a_clean_run(
    n: int, stop_at: int, concurrency: int, seed: int
) -> None:
    """Property: stopped at any point, then resumed, a run ends exactly as a clean run does,
    and nothing that settled before the stop runs again."""
    durations = random.Random(seed).choices([0.0, 0.1, 0.5, 1.0], k=n)
    stopping = {"armed": False}
    runs: Counter[int] = Counter()

    async def work(i: int) -> int:
        runs[i] += 1
        await asyncio.sleep(durations[i])
        if i == stop_at and stopping["armed"]:
            stopping["armed"] = False
            raise KeyboardInterrupt  # the process is told to stop mid-run
        if i % 5 == 4:
            raise ValueError(f"bad {i}")
        return i * i

    job = shoal.Job(
        work, limits=shoal.Limits(concurrency=concurrency), retry=shoal.Retry(attempts=1)
    )
    clean = shoal.Job(work, retry=shoal.Retry(attempts=1)).run(
        range(n), clock=FakeClock(), rng=random.Random(seed)
    )
    runs.clear()
    stopping["armed"] = True
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "run.db"
        settled_first: set[int] = set()
        try:
            first = job.run(range(n), journal=db, clock=FakeClock(), rng=random.Random(seed))
        except KeyboardInterrupt:
            settled = rows(db, "SELECT idx FROM pieces WHERE state IN ('done', 'failed')")
            settled_first = {i for (i,) in settled}
        else:
            assert stop_at >= n  # it never reached the stopping item
            settled_first = {o.index for o in first.outcomes}
        before = Counter(runs)
        resumed = job.run(range(n), journal=db, clock=FakeClock(), rng=random.Random(seed))
    assert [(o.ok, o.value) for o in resumed.outcomes] == [(o.ok, o.value) for o in clean.outcomes]
    assert [o.error.message if o.error else None for o in resumed.outcomes] == [
        o.error.message if o.error else None for o in clean.outcomes
    ]
    rerun = {i for i in settled_first if runs[i] > before[i]}
    assert rerun == set()
    assert resumed.stats.resumed == len(settled_first)


def test_a_job_file_is_the_same_job_wherever_it_is_and_however_it_is_run(tmp_path: Path) -> None:
    """The fingerprint names a job file's functions by the file's stem: a moved folder, or the
    same file run as a script, resumes the same journal instead of refusing it."""
    import subprocess
    import sys

    from shoal import _jobfiles

    source = (
        "import shoal\n"
        "def square(x):\n"
        "    return x * x\n"
        "job = shoal.Job(square, name='squares')\n"
        "if __name__ == '__main__':\n"
        "    print(job.fingerprint())\n"
    )
    prints = []
    for folder in ("here", "moved"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "job.py").write_text(source, encoding="utf-8")
        prints.append(_jobfiles.load(tmp_path / folder / "job.py").job.fingerprint())
    script = subprocess.run(
        [sys.executable, str(tmp_path / "moved" / "job.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    prints.append(script.stdout.strip())
    assert prints[0] == prints[1] == prints[2]
