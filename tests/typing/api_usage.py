"""Read by mypy (--strict) only, never run: the public API types user code precisely.

``./scripts/test`` checks this file; a change that makes users' code fail to type-check, or
lose its types, fails there.
"""

from __future__ import annotations

import asyncio
from typing import assert_type

import shoal
from shoal.events import AnyEvent, RunStarted
from shoal.journal import Journal
from shoal.progress import LiveProgress, PlainProgress


def on_event(event: AnyEvent) -> None:
    if isinstance(event, RunStarted):
        assert_type(event.total, int | None)
        assert_type(event.counts().settled, int)


async def fetch(url: str) -> bytes:
    await asyncio.sleep(0)
    return url.encode()


def parse(line: str) -> int:
    return len(line)


def bulk_insert(rows: list[str]) -> list[int]:
    return [len(row) for row in rows]


def check() -> None:
    assert_type(shoal.map(fetch, ["a"]), list[bytes])
    assert_type(shoal.map(parse, ["a"]), list[int])
    assert_type(shoal.map(parse, ["a"], errors="return"), list[int | shoal.Failure])
    assert_type(shoal.map(fetch, ["a"], rate="10/s", retries=2, journal="run.db"), list[bytes])
    assert_type(shoal.map(fetch, ["a"], progress=True), list[bytes])
    assert_type(shoal.map(fetch, ["a"], progress="plain"), list[bytes])
    assert_type(shoal.map(fetch, ["a"], progress=on_event), list[bytes])

    job = shoal.Job(fetch, limits=shoal.Limits(concurrency=4), retry=shoal.Retry(attempts=2))
    assert_type(job, shoal.Job[str, bytes])
    run = job.run(["x"], journal=Journal("run.db", commit_every=100))
    assert_type(run, shoal.Run[bytes])
    assert_type(run.values, list[bytes])
    assert_type(run.outcomes[0], shoal.Outcome[bytes])
    assert_type(run.failures, list[shoal.Failure])
    assert_type(run.stats.resumed, int)
    assert_type(job.run(["x"], progress="live", subscribers=on_event), shoal.Run[bytes])
    assert_type(job.run(["x"], progress=LiveProgress(refresh_per_second=2)), shoal.Run[bytes])
    assert_type(job.run(["x"], progress=PlainProgress(every=10)), shoal.Run[bytes])

    cpu_job = shoal.Job(parse, cpu_bound=True, backend="process")
    assert_type(cpu_job, shoal.Job[str, int])
    bulk_job = shoal.Job(bulk_insert, batch_size=100)  # limited mode: lists in, one result each
    assert_type(bulk_job, shoal.Job[str, int])
    assert_type(bulk_job.run(["a", "b"]).values, list[int])
    assert_type(shoal.plan(job, ["a"]).eta, tuple[float, float] | None)

    sync_job = shoal.Job(parse, combine=len)
    assert_type(sync_job, shoal.Job[str, int])
    assert_type(sync_job.retry_failed("run.db").values, list[int])


async def check_async() -> None:
    assert_type(await shoal.amap(fetch, ["a"]), list[bytes])
    assert_type(await shoal.amap(parse, ["a"], errors="return"), list[int | shoal.Failure])
    job = shoal.Job(fetch)
    async for outcome in job.stream(["a"]):
        assert_type(outcome, shoal.Outcome[bytes])


def check_resilience() -> None:
    from shoal.testing import chaos

    job = shoal.Job(
        chaos(fetch, fail=0.2, seed=1),
        hedge=shoal.Hedge(percentile=95),
        retry_budget=0.2,
        breaker=shoal.Breaker(cooldown=5.0),
        max_failure_rate=0.2,
        min_pieces=50,
    )
    run = job.run(["a"])
    assert_type(run.stats.aborted, str | None)
    assert_type(run.stats.hedges_won, int)
    assert_type(shoal.Job(parse, hedge=True, retry_budget=True, breaker=True), shoal.Job[str, int])
