"""The resource check (shoal.plan) and limited mode (Job(batch_size=N))."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import pytest

import _workers as w
import shoal
from shoal import Job, Limits, Plan, Retry
from shoal._limited import BatchResultError
from shoal._plan import memory
from shoal.backends import DaskBackend, ProcessBackend, ThreadBackend
from shoal.backends._process import usable_cpus
from shoal.testing import FakeClock


async def fetch(x: int) -> int:
    await asyncio.sleep(0)
    return x


def test_plan_for_async_work() -> None:
    """async def work runs on the event loop, as many at once as the concurrency."""
    plan = shoal.plan(Job(fetch, limits=Limits(concurrency=50)), range(1000))
    assert isinstance(plan, Plan)
    assert plan.backend == "async"
    assert plan.workers == 50
    assert plan.items == 1000
    assert plan.calls == 1000
    assert plan.limited_by == "workers"
    assert plan.eta is None
    assert not plan.micro_batching
    assert plan.cpus == usable_cpus()


def test_plan_for_cpu_bound_work() -> None:
    """CPU-bound work gets one worker process per CPU, and its small pieces travel in batches."""
    plan = Job(w.square, cpu_bound=True, limits=Limits(concurrency=64)).plan(range(10))
    assert plan.backend == "process"
    assert plan.workers == min(usable_cpus(), 64)
    assert plan.micro_batching
    assert any("CPU-bound" in note for note in plan.notes)
    assert Job(w.square, backend=ProcessBackend(workers=1)).plan().workers == 1


def test_plan_reads_backend_objects() -> None:
    """Workers come from a backend object's own settings."""
    assert Job(w.square, backend=ThreadBackend(max_workers=3)).plan().workers == 3
    dask_plan = Job(w.square, backend=DaskBackend(workers=5)).plan()
    assert dask_plan.backend.startswith("DaskBackend")
    assert dask_plan.workers == 5


def test_rate_limited_run_with_a_sample() -> None:
    """With a rate below what the workers could do, the rate bounds the pace and the ETA."""
    job = Job(fetch, limits=Limits(concurrency=10, rate="2/s"))
    before = job.plan(range(100))
    assert before.limited_by == "rate"  # 2/s is under one call per second per worker
    assert before.rate == 2.0
    after = job.plan(range(100), observed=[0.1, 0.1, 0.1, 0.1])
    assert after.limited_by == "rate"
    assert after.throughput == 2.0
    assert after.eta == (50.0, 50.0)


def test_worker_limited_eta_range_from_a_run(clock: FakeClock) -> None:
    """Durations of finished pieces give the throughput and an ETA range around the mean."""

    async def work(x: float) -> float:
        await asyncio.sleep(x)
        return x

    job = Job(work, limits=Limits(concurrency=4))
    sample = job.run([1.0, 2.0, 3.0, 2.0], clock=clock)
    plan = job.plan(1000, observed=sample)
    assert plan.per_call == 2.0
    assert plan.limited_by == "workers"
    assert plan.throughput == 2.0  # 4 workers / 2 s
    assert plan.eta is not None
    low, high = plan.eta
    assert low < 500.0 < high
    assert "ETA" in str(plan)


def test_a_generator_is_not_consumed() -> None:
    """An items iterable without len() is left alone: the count (and the ETA) is unknown."""

    def items() -> Iterator[int]:
        raise AssertionError("the plan must not pull items")
        yield 0

    plan = Job(fetch).plan(items(), observed=[0.1] * 5)
    assert plan.items is None
    assert plan.eta is None
    assert plan.throughput is not None
    assert any("unknown" in note for note in plan.notes)


def test_plan_in_limited_mode_counts_calls() -> None:
    """With batch_size the plan counts calls of the work (groups), not items."""
    plan = Job(w.double_all, batch_size=40).plan(range(1000))
    assert plan.batch_size == 40
    assert plan.calls == math.ceil(1000 / 40)
    assert "40 items per call" in str(plan)


def test_plan_str_is_readable() -> None:
    """The plan prints as a short block of labelled lines (what --dry-run shows)."""
    text = str(Job(fetch, limits=Limits(rate="5/s")).plan(range(10)))
    for label in ("backend:", "workers:", "machine:", "items:", "rate limit:", "limited by:"):
        assert label in text
    assert "unknown until a few pieces have run" in text


def test_bad_plan_arguments() -> None:
    """Arguments that cannot mean anything are refused with the accepted forms."""
    job = Job(fetch)
    with pytest.raises(ValueError, match=">= 0"):
        job.plan(-1)
    with pytest.raises(TypeError, match="durations"):
        job.plan(observed=["slow"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="duration"):
        job.plan(observed=[-1.0])


def test_memory_is_read() -> None:
    """Total and available memory come from the OS."""
    total, available = memory()
    assert total is not None
    assert available is not None
    assert 0 < available <= total


# ---------------------------------------------------------------------------------- limited mode


def test_limited_mode_results_per_item() -> None:
    """The work gets lists; the run has one outcome per item, in input order."""
    calls: list[list[int]] = []

    def bulk(items: list[int]) -> list[int]:
        calls.append(items)
        return [x + 100 for x in items]

    run = Job(bulk, batch_size=3).run(range(7))
    assert sorted(calls) == [[0, 1, 2], [3, 4, 5], [6]]
    assert run.values == [x + 100 for x in range(7)]
    assert [o.index for o in run.outcomes] == list(range(7))


def test_limited_mode_a_failed_call_fails_its_items() -> None:
    """A call that raises is retried as a whole; if it keeps failing, each of its items fails."""
    attempts: list[int] = []

    def bulk(items: list[int]) -> list[int]:
        attempts.append(items[0])
        if 3 in items:
            raise ConnectionError("bulk insert failed")
        return items

    run = Job(bulk, batch_size=2, retry=Retry(attempts=2, base_delay=0)).run(range(6))
    assert run.values == [0, 1, 4, 5]
    assert [f.item for f in run.failures] == [2, 3]
    assert all(f.attempts == 2 for f in run.failures)
    assert attempts.count(2) == 2


def test_limited_mode_wrong_length_is_an_error() -> None:
    """Work that returns fewer results than items fails those items with a clear message."""
    run = Job(lambda items: items[:1], batch_size=2, retry=Retry(attempts=1)).run(range(2))
    assert not run.ok
    assert run.failures[0].error.type == "shoal._limited.BatchResultError"
    assert "one result per item" in run.failures[0].error.message
    assert issubclass(BatchResultError, TypeError)


def test_limited_mode_stream_in_order() -> None:
    """stream(ordered=True) yields per-item outcomes in input order in limited mode too."""

    async def bulk(items: list[int]) -> list[int]:
        await asyncio.sleep(0.001 * (10 - items[0]))
        return items

    async def main() -> list[int]:
        job = Job(bulk, batch_size=3, limits=Limits(concurrency=4))
        return [o.index async for o in job.stream(range(10), ordered=True)]

    assert asyncio.run(main()) == list(range(10))


def test_limited_mode_rate_counts_calls(clock: FakeClock) -> None:
    """The rate limit applies to calls: 10 items in groups of 5 under 1/s take one second."""
    starts: list[float] = []

    async def bulk(items: list[int]) -> list[int]:
        starts.append(clock.now())
        return items

    run = Job(bulk, batch_size=5, limits=Limits(rate="1/s")).run(range(10), clock=clock)
    assert run.values == list(range(10))
    assert starts == [0.0, 1.0]


def test_batch_size_is_checked() -> None:
    """batch_size must be a whole number >= 1."""
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            Job(fetch, batch_size=bad)  # type: ignore[arg-type]
