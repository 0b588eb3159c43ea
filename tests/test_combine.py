"""Combiners: compose, keep every record traceable to its pieces, never hide failures."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shoal
from shoal import combine, split


async def feed(entries: object) -> object:
    await asyncio.sleep(0)
    if entries == "broken":
        raise ValueError("malformed feed")
    return entries


FEEDS = [
    [{"link": "a", "t": 3}, {"link": "b", "t": 1}],
    "broken",
    [{"link": "a", "t": 3}, {"link": "c", "t": 2}],
]


def test_news_pipeline_dedupes_sorts_and_traces() -> None:
    """concat, dedupe by link, sort by time; each record traces to every piece that had it."""
    job = shoal.Job(
        feed,
        combine=combine.concat().then(combine.dedupe("link")).then(combine.sort("t", reverse=True)),
        retry=shoal.Retry(attempts=1),
    )
    run = job.run(FEEDS)
    assert run.result == [{"link": "a", "t": 3}, {"link": "c", "t": 2}, {"link": "b", "t": 1}]
    combined = run.combined
    assert combined is not None
    assert [o.index for o in combined.trace(0)] == [0, 2]  # "a" was in feeds 0 and 2
    assert [o.index for o in combined.trace(1)] == [2]
    assert [f.index for f in run.failures] == [1]  # beside the result, not lost


def test_trace_reaches_provenance(tmp_path: Path) -> None:
    """Through the trace, a combined record leads to the file and line of its input."""
    path = tmp_path / "posts.jsonl"
    path.write_text('{"user": "ann", "n": 1}\n{"user": "bob", "n": 2}\n{"user": "ann", "n": 3}\n')
    job = shoal.Job(feed, combine=combine.group("user"))
    run = job.run(split.jsonl(path))
    assert run.result == {
        "ann": [{"user": "ann", "n": 1}, {"user": "ann", "n": 3}],
        "bob": [{"user": "bob", "n": 2}],
    }
    assert run.combined is not None
    assert [str(o.provenance) for o in run.combined.trace(0)] == [f"{path}:1", f"{path}:3"]


def test_each_combiner() -> None:
    """merge, count, top, fold and sort do what they say on plain values too."""
    assert combine.merge()([{"a": 1}, {"b": 2}, {"a": 3}]) == {"a": 3, "b": 2}
    assert combine.count()(["x", "y", "x"]) == Counter({"x": 2, "y": 1})
    assert combine.top(2, "score")([{"score": 1}, {"score": 5}, {"score": 3}]) == [
        {"score": 5},
        {"score": 3},
    ]
    assert combine.fold(lambda acc, v: acc + v, 10)([1, 2, 3]) == 16
    assert combine.sort(len)(["ccc", "a", "bb"]) == ["a", "bb", "ccc"]
    assert combine.chain(combine.concat(), combine.count())([["a"], ["a", "b"]]) == Counter(
        {"a": 2, "b": 1}
    )


def test_bad_combiner_input_says_what_to_do() -> None:
    """A step given values of the wrong shape says so."""
    with pytest.raises(TypeError, match="not a list"):
        combine.concat()(["abc"])
    with pytest.raises(TypeError, match="not a dict"):
        combine.merge()([[1]])
    with pytest.raises(ValueError, match="fan_in"):
        combine.tree(sum, fan_in=1)
    with pytest.raises(ValueError, match="k="):
        combine.top(0)
    with pytest.raises(TypeError, match="then"):
        combine.concat().then(sorted)  # type: ignore[arg-type]


def test_tree_reduces_in_parallel_through_shoal() -> None:
    """tree() runs each level's groups at once (here: several threads meet at a barrier)."""
    barrier = threading.Barrier(3, timeout=10)
    seen_groups: list[list[int]] = []
    lock = threading.Lock()

    def summarise(values: list[int]) -> int:
        with lock:
            seen_groups.append(values)
            first_level = len(seen_groups) <= 3
        if first_level:
            barrier.wait()  # only passes if three groups of the first level run together
        return sum(values)

    job = shoal.Job(lambda x: x, combine=combine.tree(summarise, fan_in=4, concurrency=4))
    run = job.run(range(12))
    assert run.result == sum(range(12))
    assert sorted(map(sorted, seen_groups[:3])) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert run.combined is not None
    assert [o.index for o in run.combined.trace(0)] == list(range(12))


@given(st.lists(st.lists(st.integers(0, 5), max_size=4), max_size=8))
def test_property_dedupe_keeps_first_and_all_sources(batches: list[list[int]]) -> None:
    """Property: dedupe keeps the first of each value, and its sources are every piece that
    had it."""
    outcomes = [shoal.Outcome(i, b, True, b, None, 1, 0.0, 0.0) for i, b in enumerate(batches)]
    combined = combine.concat().then(combine.dedupe()).apply(outcomes)
    flat = [v for b in batches for v in b]
    assert combined.value == list(dict.fromkeys(flat))
    for position, value in enumerate(combined.value):
        assert {o.index for o in combined.trace(position)} == {
            i for i, b in enumerate(batches) if value in b
        }


def test_plain_callable_combine_still_works() -> None:
    """combine= may still be any callable over the values; run.combined is then None."""
    run = shoal.Job(lambda x: x * 2, combine=sum).run(range(4))
    assert run.result == 12
    assert run.combined is None


def test_failure_tracebacks_do_not_chain_to_shoal_internals() -> None:
    """A failure's traceback shows the work's error, not an exception shoal handled before."""

    def work(x: int) -> int:
        raise ValueError("bad")

    run = shoal.Job(work, retry=shoal.Retry(attempts=1)).run([1])
    traceback = run.failures[0].error.traceback
    assert "ValueError: bad" in traceback
    assert "During handling" not in traceback
