"""shoal.map and shoal.amap: the one-line API, on the real clock with small, tolerant timings."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

import shoal
from shoal import Failure, JobFailed, Throttled


def test_map_plain_function_runs_in_threads_in_order() -> None:
    """A plain function runs in a thread pool; results come back in input order."""
    threads: set[str] = set()

    def work(x: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.01 * (x % 3))
        return x * x

    assert shoal.map(work, range(20), concurrency=4) == [x * x for x in range(20)]
    assert all(name.startswith("shoal") for name in threads)
    assert len(threads) > 1


def test_map_async_function_is_concurrent() -> None:
    """Fifty 50 ms coroutines at concurrency 50 take about 50 ms, not 2.5 s."""

    async def work(x: int) -> int:
        await asyncio.sleep(0.05)
        return x

    started = time.monotonic()
    assert shoal.map(work, range(50), concurrency=50) == list(range(50))
    assert time.monotonic() - started < 1.0


def test_map_threads_respect_concurrency() -> None:
    """No more than `concurrency` blocking calls run at once."""
    lock = threading.Lock()
    live = 0
    peak = 0

    def work(x: int) -> int:
        nonlocal live, peak
        with lock:
            live += 1
            peak = max(peak, live)
        time.sleep(0.005)
        with lock:
            live -= 1
        return x

    shoal.map(work, range(40), concurrency=3)
    assert peak == 3


def test_map_errors_raise_attempts_everything_first() -> None:
    """errors='raise' attempts every item, then raises JobFailed listing every failure."""
    seen: list[int] = []

    def work(x: int) -> int:
        seen.append(x)
        if x % 4 == 0:
            raise ValueError(f"bad {x}")
        return x

    with pytest.raises(JobFailed) as info:
        shoal.map(work, range(10), retries=0)
    assert sorted(seen) == list(range(10))
    failed = info.value.failures
    assert [f.index for f in failed] == [0, 4, 8]
    assert [f.error.message for f in failed] == ["bad 0", "bad 4", "bad 8"]
    message = str(info.value)
    assert "3 of 10 pieces failed" in message
    assert "[4] ValueError: bad 4 (after 1 attempt)" in message
    assert [o.value for o in info.value.outcomes if o.ok] == [1, 2, 3, 5, 6, 7, 9]


def test_map_errors_return_puts_failures_in_place() -> None:
    """errors='return' gives Failure objects in the failed items' places."""

    async def work(x: int) -> int:
        if x == 2:
            raise KeyError(x)
        return x * 10

    result = shoal.map(work, range(4), retries=1, errors="return")
    assert result[:2] == [0, 10]
    assert result[3] == 30
    failure = result[2]
    assert isinstance(failure, Failure)
    assert failure.index == 2
    assert failure.item == 2
    assert failure.attempts == 2
    assert failure.error.type == "KeyError"
    assert "KeyError" in str(failure)


def test_map_retries_transient_failures() -> None:
    """Failures are retried (retries=2 means three attempts) with a short backoff."""
    calls: dict[int, int] = {}

    def work(x: int) -> int:
        calls[x] = calls.get(x, 0) + 1
        if calls[x] < 3:
            raise ConnectionError("flaky")
        return x

    assert shoal.map(work, range(5), retries=2) == list(range(5))
    assert calls == dict.fromkeys(range(5), 3)


def test_map_unordered_gives_completion_order() -> None:
    """ordered=False returns results as they completed."""

    async def work(x: int) -> int:
        await asyncio.sleep(0.05 * (3 - x))
        return x

    assert shoal.map(work, range(4), ordered=False) == [3, 2, 1, 0]


def test_map_rate_limit_real_time() -> None:
    """rate='20/s': 30 quick calls take about one second (20 at once, then 10 more)."""
    starts: list[float] = []

    async def work(x: int) -> int:
        starts.append(time.monotonic())
        return x

    shoal.map(work, range(30), rate="20/s", concurrency=30)
    starts.sort()
    for s in starts:
        assert sum(1 for t in starts if s <= t < s + 1.0) <= 20
    assert 0.95 <= starts[-1] - starts[0] < 2.0


def test_map_timeout_real_time() -> None:
    """A blocking call past its timeout fails with TimeoutError; the others succeed."""

    async def work(x: int) -> int:
        await asyncio.sleep(5 if x == 1 else 0)
        return x

    result = shoal.map(work, range(3), timeout=0.1, retries=0, errors="return")
    assert result[0] == 0
    assert result[2] == 2
    assert isinstance(result[1], Failure)
    assert result[1].error.type == "TimeoutError"


def test_map_throttle_real_time() -> None:
    """A Throttled piece waits retry_after and succeeds without using a retry."""
    left = [1]

    async def work(x: int) -> int:
        if x == 0 and left[0]:
            left[0] -= 1
            raise Throttled(retry_after=0.05)
        return x

    assert shoal.map(work, range(3), retries=0) == [0, 1, 2]


def test_map_async_iterable_input() -> None:
    """Items may come from an async iterable."""

    async def items() -> AsyncIterator[int]:
        for i in range(5):
            await asyncio.sleep(0)
            yield i

    async def double(x: int) -> int:
        return 2 * x

    assert shoal.map(double, items()) == [0, 2, 4, 6, 8]


def test_map_per_key() -> None:
    """per_key limits each key; results stay in input order."""
    live: dict[str, int] = {}
    peak: dict[str, int] = {}

    async def work(item: tuple[str, int]) -> int:
        key = item[0]
        live[key] = live.get(key, 0) + 1
        peak[key] = max(peak.get(key, 0), live[key])
        await asyncio.sleep(0.01)
        live[key] -= 1
        return item[1]

    items = [(k, i) for i in range(6) for k in "ab"]
    result = shoal.map(work, items, key=lambda it: it[0], per_key=2, concurrency=10)
    assert result == [i for i in range(6) for _ in "ab"]
    assert peak == {"a": 2, "b": 2}


def test_amap_in_a_running_loop() -> None:
    """amap is awaited from async code, on the caller's loop."""

    async def work(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    async def main() -> list[int]:
        return await shoal.amap(work, range(5))

    assert asyncio.run(main()) == [1, 2, 3, 4, 5]


def test_map_from_inside_a_running_loop() -> None:
    """shoal.map called from async code (a notebook) runs on a loop of its own, not deadlocking."""

    async def caller() -> list[int]:
        return shoal.map(lambda x: x + 1, range(3))

    assert asyncio.run(caller()) == [1, 2, 3]


def test_map_empty_input() -> None:
    """No items, no work, an empty list."""
    assert shoal.map(lambda x: x, []) == []


def test_map_progress_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """progress="plain" prints plain progress lines to stderr, and a summary at the end."""

    async def work(x: int) -> int:
        await asyncio.sleep(0.01)
        return x

    from shoal._progress import PlainProgress

    progress = PlainProgress(every=0.0)
    shoal.map(work, range(5), progress=progress)
    assert progress.done == 5
    assert progress.in_flight == 0
    shoal.map(work, range(5), progress="plain")
    err = capsys.readouterr().err
    assert err.count("shoal work: finished in 0:00: 5 done, 0 failed") == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"concurrency": 0}, ValueError, "at least 1"),
        ({"concurrency": -5}, ValueError, "at least 1"),
        ({"concurrency": None}, TypeError, "concurrency"),
        ({"rate": "10/parsec"}, ValueError, "100/s"),
        ({"rate": 0}, ValueError, "> 0"),
        ({"retries": -1}, ValueError, "re-tries"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"errors": "ignore"}, ValueError, "'raise'"),
        ({"backend": "gpu"}, ValueError, "'thread'"),
        ({"per_key": 2}, ValueError, "needs a key function"),
        ({"key": "host"}, TypeError, "key="),
        ({"progress": "yes"}, TypeError, "progress"),
    ],
)
def test_map_bad_arguments_fail_before_running(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """Bad arguments raise clear errors before any item runs."""
    ran: list[int] = []
    with pytest.raises(error, match=match):
        shoal.map(ran.append, range(3), **kwargs)  # type: ignore[arg-type]
    assert ran == []


def test_non_callable_work_is_refused() -> None:
    """A work that cannot be called is refused at construction."""
    with pytest.raises(TypeError, match="not callable"):
        shoal.Job(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not callable"):
        shoal.map("upper", ["a"])  # type: ignore[arg-type]


def test_job_rejects_wrong_option_types() -> None:
    """Job checks its limits, retry, combine and items."""
    with pytest.raises(TypeError, match="Limits"):
        shoal.Job(abs, limits={"concurrency": 2})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Retry"):
        shoal.Job(abs, retry=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="combine"):
        shoal.Job(abs, combine="sum")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iterable"):
        shoal.Job(abs).run(42)  # type: ignore[arg-type]
