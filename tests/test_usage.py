"""shoal.usage(): what the work reports reaches its outcome, on every backend, through retries
and the journal; and what each piece went through (retry causes, throttle waits)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

import _workers
import shoal
from shoal import Job, Limits, Retry, Throttled
from shoal.testing import FakeClock


async def ask(x: int) -> int:
    await asyncio.sleep(0)
    shoal.usage(tokens=x, cost=0.25)
    shoal.usage(tokens=1, input_tokens=x)
    return x


def test_usage_is_summed_per_piece_on_the_event_loop() -> None:
    run = Job(ask).run([3, 5])
    assert [o.usage for o in run.outcomes] == [
        {"tokens": 4, "cost": 0.25, "input_tokens": 3},
        {"tokens": 6, "cost": 0.25, "input_tokens": 5},
    ]


def test_work_that_reports_nothing_has_no_usage() -> None:
    run = Job(_workers.square).run([1, 2])
    assert [o.usage for o in run.outcomes] == [None, None]


def test_usage_outside_a_run_does_nothing() -> None:
    assert asyncio.run(ask(2)) == 2  # no attempt: nothing to add to, no error


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"tokens": -1}, ValueError),
        ({"cost": float("nan")}, ValueError),
        ({"tokens": "12"}, TypeError),
        ({"requests": True}, TypeError),
    ],
)
def test_bad_usage_values_are_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error, match=r"shoal\.usage"):
        shoal.usage(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_usage_crosses_threads_and_processes_failed_attempts_included(backend: str) -> None:
    job = Job(
        _workers.metered,
        backend=backend,
        limits=Limits(concurrency=2),
        retry=Retry(attempts=2, base_delay=0),
    )
    run = job.run([2, -3])
    ok, failed = run.outcomes
    assert ok.usage == {"tokens": 20, "cost": 0.5, "requests": 1}
    assert not failed.ok and failed.attempts == 2
    # both failed attempts reported before raising: their usage counts
    assert failed.usage == {"tokens": 60, "cost": 1.0, "requests": 2}
    assert failed.retry_causes == ("_workers.Boom",)


def test_retry_causes_and_throttle_wait_on_a_fake_clock(
    clock: FakeClock, rng: random.Random
) -> None:
    calls: dict[int, int] = {}

    async def flaky(x: int) -> int:
        calls[x] = calls.get(x, 0) + 1
        n = calls[x]
        if x == 1 and n == 1:
            raise Throttled(retry_after=2.5)
        if x == 1 and n == 2:
            raise TimeoutError("slow")
        if x == 1 and n == 3:
            raise ConnectionError("reset")
        await asyncio.sleep(1)
        return x

    job = Job(flaky, retry=Retry(attempts=4, base_delay=0))
    run = job.run([0, 1], clock=clock, rng=rng)
    first, second = run.outcomes
    assert first.retry_causes == () and first.throttle_wait == 0
    assert second.retry_causes == ("TimeoutError", "ConnectionError")
    assert second.throttle_wait == 2.5
    assert second.attempts == 3 and second.throttles == 1


def test_usage_survives_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "run.db"
    first = Job(ask).run([1, 2], journal=journal)
    again = Job(ask).run([1, 2], journal=journal)
    assert again.stats.resumed == 2
    assert [o.usage for o in again.outcomes] == [o.usage for o in first.outcomes]
    assert again.outcomes[0].usage == {"tokens": 2, "cost": 0.25, "input_tokens": 1}
