"""Chunked pieces (Job(chunk_size=N)): items travel N per task to worker processes, and every
item keeps its own outcome, retries, usage and crash isolation."""

from __future__ import annotations

from pathlib import Path

import pytest

import _workers as w
import shoal
from shoal import Job, Limits, Retry
from shoal.backends import ProcessBackend, WorkerCrashed


def chunked(work: object, size: int = 4, **options: object) -> Job:  # type: ignore[type-arg]
    return Job(work, backend=ProcessBackend(workers=2), chunk_size=size, **options)  # type: ignore[call-overload, no-any-return]


def test_values_in_input_order_one_outcome_per_item() -> None:
    run = chunked(w.square, 7).run(range(50))
    assert run.values == [x * x for x in range(50)]
    assert [o.index for o in run.outcomes] == list(range(50))
    assert [o.item for o in run.outcomes] == list(range(50))
    assert all(o.attempts == 1 and o.finished >= o.started for o in run.outcomes)
    assert sorted(run.completion_order) == list(range(50))
    assert run.stats.total == 50 and run.stats.succeeded == 50 and run.stats.attempts == 50


def test_a_failing_item_fails_alone_after_its_retries_in_the_worker(tmp_path: Path) -> None:
    items = [(str(tmp_path), i, 2 if i == 5 else 0) for i in range(12)]
    run = chunked(w.flaky, 4, retry=Retry(attempts=3, base_delay=0.001)).run(items)
    assert run.values == list(range(12))  # item 5 failed twice, then succeeded in its worker
    five = run.outcomes[5]
    assert five.attempts == 3 and five.retry_causes == ("ConnectionError", "ConnectionError")
    assert run.stats.retries == 2 and run.stats.attempts == 14

    run = chunked(w.fail_odd, 4, retry=Retry(attempts=2, base_delay=0.001)).run(range(10))
    assert [o.ok for o in run.outcomes] == [i % 2 == 0 for i in range(10)]
    failure = run.outcomes[3]
    assert failure.error is not None and failure.error.type == "_workers.Boom"
    assert failure.error.message == "odd 3" and failure.attempts == 2
    assert run.stats.failed == 5 and run.stats.retries == 5


def test_throttles_wait_in_the_worker_without_using_an_attempt(tmp_path: Path) -> None:
    run = chunked(w.throttled_once, 3).run([(str(tmp_path), i) for i in range(6)])
    assert run.values == list(range(6))
    two = run.outcomes[2]
    assert (two.attempts, two.throttles, two.throttle_wait) == (1, 1, 0.01)
    assert run.stats.throttles == 1


def test_usage_is_per_item() -> None:
    run = chunked(w.metered, 3, retry=Retry(attempts=1)).run([1, 2, -1, 4])
    assert [o.usage for o in run.outcomes] == [
        {"tokens": 10, "cost": 0.5, "requests": 1},
        {"tokens": 20, "cost": 0.5, "requests": 1},
        {"tokens": 10, "cost": 0.5, "requests": 1},
        {"tokens": 40, "cost": 0.5, "requests": 1},
    ]


def test_a_crash_costs_its_chunk_mates_nothing() -> None:
    """The chunk with the crashing item is split; only that item fails."""
    items = [("ok", i) for i in range(10)]
    items[6] = ("exit", 6)
    run = chunked(w.crash, 4, retry=Retry(attempts=2, base_delay=0.001)).run(items)
    assert [o.ok for o in run.outcomes] == [i != 6 for i in range(10)]
    assert [o.value for o in run.outcomes if o.ok] == [i for i in range(10) if i != 6]
    bad = run.outcomes[6]
    assert bad.error is not None and bad.error.type.endswith("WorkerCrashed")
    assert isinstance(bad.error.exception, WorkerCrashed) and bad.attempts == 2
    assert sorted(run.completion_order) == list(range(10))


@pytest.mark.timeout(60)
def test_a_chunk_past_its_timeout_is_split_and_only_the_slow_item_times_out() -> None:
    run = chunked(w.slow_some, 4, timeout=0.5, retry=Retry(attempts=1)).run(range(8))
    assert [o.ok for o in run.outcomes] == [i != 3 for i in range(8)]
    assert run.outcomes[3].error is not None and run.outcomes[3].error.type == "TimeoutError"
    assert [o.value for o in run.outcomes if o.ok] == [0, 2, 4, 8, 10, 12, 14]


def test_errors_raise_and_map_style_use() -> None:
    with pytest.raises(shoal.JobFailed) as caught:
        chunked(w.fail_odd, 3, retry=Retry(attempts=1)).run(range(4), errors="raise")
    assert len(caught.value.failures) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "thread"}, "the thread backend"),
        ({"backend": "auto"}, "async or thread backend"),
        ({"key": str}, "key="),
        ({"limits": Limits(rate="10/s")}, "rates"),
        ({"batch_size": 3}, "batch_size"),
        ({"chunk_size": 0}, "chunk_size=0"),
    ],
)
def test_chunk_size_refuses_what_it_cannot_keep(options: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"backend": "process", "chunk_size": 4, **options}
    with pytest.raises(ValueError, match=message):
        Job(w.square, **settings)  # type: ignore[call-overload]


def test_chunk_size_with_a_journal_or_stream_is_refused(tmp_path: Path) -> None:
    job = Job(w.square, backend="process", chunk_size=4)
    with pytest.raises(ValueError, match="journal"):
        job.run(range(3), journal=tmp_path / "run.db")
    assert not (tmp_path / "run.db").exists()

    async def consume() -> None:
        async for _ in job.stream(range(3)):
            pass

    import asyncio

    with pytest.raises(ValueError, match="stream"):
        asyncio.run(consume())


def test_map_takes_a_chunk_size() -> None:
    assert shoal.map(w.square, range(30), backend="process", chunk_size=8) == [
        x * x for x in range(30)
    ]


def test_values_come_without_making_outcomes_and_outcomes_when_asked() -> None:
    run = chunked(w.square, 5).run(range(23))
    assert run.values == [x * x for x in range(23)]
    assert run.values is not run.values  # a fresh list each time: callers may change theirs
    outcomes = run.outcomes
    assert outcomes is run.outcomes  # made once
    assert [o.value for o in outcomes] == run.values and len(outcomes) == 23
    assert run.result == run.values


def test_a_splitters_items_reach_the_work_as_values_with_their_provenance(
    tmp_path: Path,
) -> None:
    """Chunks of split.jsonl: the work gets the values, outcomes keep file and line, and a line
    that is not JSON fails alone, unsent, naming its place."""
    from shoal import split

    data = tmp_path / "numbers.jsonl"
    data.write_text("1\n2\nnot json\n4\n5\n")
    run = chunked(w.square, 2).run(split.jsonl(data))
    assert [o.value for o in run.outcomes] == [1, 4, None, 16, 25]
    assert [str(o.provenance) for o in run.outcomes] == [f"{data}:{n}" for n in range(1, 6)]
    (bad,) = run.failures
    assert bad.index == 2 and bad.attempts == 0
    assert bad.error.type == "shoal._split.MalformedInput"
    assert f"{data}:3: not valid JSON" in bad.error.message
    assert run.stats.attempts == 4  # the unread line was never sent
