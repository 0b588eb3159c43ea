"""The backend conformance suite: every backend gives a job the same behaviour.

Each test runs on the async, thread, process, Dask and Ray backends (Dask and Ray are skipped only
where their extra is not installed; CI installs both). One Dask LocalCluster and one Ray cluster
are started for the whole module, on 127.0.0.1, and stopped at its end.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Before anything imports Ray: every Ray process listens on 127.0.0.1 only, and reports nothing.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest

import _workers as w
import shoal
from shoal import Job, Limits, Retry
from shoal.backends import (
    AsyncBackend,
    Backend,
    DaskBackend,
    ProcessBackend,
    RayBackend,
    ThreadBackend,
)
from shoal.testing import ChaosError, chaos

HAVE_DASK = importlib.util.find_spec("distributed") is not None
HAVE_RAY = importlib.util.find_spec("ray") is not None

BACKENDS = [
    "async",
    "thread",
    "process",
    pytest.param("dask", marks=pytest.mark.skipif(not HAVE_DASK, reason="no shoal[dask] extra")),
    pytest.param("ray", marks=pytest.mark.skipif(not HAVE_RAY, reason="no shoal[ray] extra")),
]
REMOTE = [b for b in BACKENDS if (b if isinstance(b, str) else b.values[0]) != "async"]
REMOTE = [b for b in REMOTE if (b if isinstance(b, str) else b.values[0]) != "thread"]


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """One local Dask cluster (two single-threaded worker processes) for the module."""
    import dask
    import distributed

    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # no fixed port: 8787 may be taken
        )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local Ray (two CPUs) for the module; RayBackend uses it and leaves it running."""
    import ray

    # Ray's workers do not inherit this process's sys.path: point them at this folder so that
    # the work functions in _workers import there by name, as in any project's own package.
    here = str(Path(__file__).parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        yield
    finally:
        ray.shutdown()


class Kind:
    """A backend under test: makes a fresh backend object per run, and picks work variants."""

    def __init__(self, name: str, request: pytest.FixtureRequest) -> None:
        self.name = name
        self._address: str | None = None
        if name == "dask":
            self._address = request.getfixturevalue("dask_address")
        elif name == "ray":
            request.getfixturevalue("ray_cluster")

    def __call__(self) -> Backend:
        if self.name == "async":
            return AsyncBackend()
        if self.name == "thread":
            return ThreadBackend()
        if self.name == "process":
            return ProcessBackend(workers=2)
        if self.name == "dask":
            return DaskBackend(address=self._address)
        return RayBackend()

    def fn(self, sync: Callable[..., Any], async_: Callable[..., Any] | None = None) -> Any:
        """The async variant of blocking work on the event loop backend (it would block it)."""
        if self.name == "async" and async_ is not None:
            return async_
        return sync


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    return Kind(request.param, request)


@pytest.fixture(params=REMOTE)
def remote(request: pytest.FixtureRequest) -> Kind:
    return Kind(request.param, request)


# ---------------------------------------------------------------------------------- conformance


@pytest.mark.timeout(120)  # the first test on Dask or Ray also starts its cluster
def test_order_kept(kind: Kind) -> None:
    """Results come back in input order (and all of them in completion order)."""
    work = kind.fn(w.square, w.asquare)
    assert shoal.map(work, range(60), concurrency=8, backend=kind()) == [x * x for x in range(60)]
    unordered = shoal.map(work, range(30), concurrency=8, ordered=False, backend=kind())
    assert sorted(unordered) == [x * x for x in range(30)]  # type: ignore[type-var]


def test_every_item_exactly_one_outcome(kind: Kind) -> None:
    """Every item has exactly one outcome, at its index; failures keep their type and message."""
    run = Job(w.fail_odd, retry=Retry(attempts=1), backend=kind(), limits=Limits(8)).run(range(40))
    assert [o.index for o in run.outcomes] == list(range(40))
    assert [o.item for o in run.outcomes] == list(range(40))
    assert sorted(run.completion_order) == list(range(40))
    assert run.values == list(range(0, 40, 2))
    assert [f.index for f in run.failures] == list(range(1, 40, 2))
    failure = run.failures[0]
    assert failure.error.type == "_workers.Boom"
    assert failure.error.message == "odd 1"
    assert failure.attempts == 1
    assert run.stats.total == 40
    assert run.stats.failed == 20


def test_retries_and_their_limit(kind: Kind, tmp_path: Path) -> None:
    """Failures are retried up to the attempts allowed; each attempt really runs once."""
    items = [(str(tmp_path), i, i % 4) for i in range(12)]  # fails 0..3 times before success
    retry = Retry(attempts=3, base_delay=0.001, max_delay=0.01)
    run = Job(w.flaky, retry=retry, backend=kind(), limits=Limits(6)).run(items)
    for outcome in run.outcomes:
        fails = outcome.index % 4
        calls = (tmp_path / f"flaky-{outcome.index}").stat().st_size
        if fails < 3:
            assert outcome.ok, outcome
            assert outcome.value == outcome.index
            assert outcome.attempts == fails + 1
            assert calls == fails + 1
        else:
            assert not outcome.ok
            assert outcome.error is not None
            assert outcome.error.type == "ConnectionError"
            assert outcome.attempts == 3
            assert calls == 3
    assert run.stats.retries == sum(min(i % 4, 2) for i in range(12))


CHAOS: dict[str, Any] = {"fail": 0.4, "slow": 0.1, "seed": 3, "stall": 0.001}
CHAOS_RETRY = Retry(attempts=3, base_delay=0.001, max_delay=0.002)


def chaos_expected(size: int) -> tuple[list[tuple[int, int, bool]], dict[str, int]]:
    """What chaos(**CHAOS) does to range(30) under CHAOS_RETRY, worked out by a plain loop over
    the same draws: (item, attempts, ok) per item, and the counts of what it injected. ``size``
    > 1: the work gets lists of that many items (limited mode)."""
    reference = chaos(lambda x: x, **CHAOS)
    expected = []
    for start in range(0, 30, size):
        call = list(range(start, min(start + size, 30)))
        for calls in range(1, CHAOS_RETRY.attempts + 1):
            try:
                reference(call if size > 1 else call[0])
            except ChaosError:
                continue
            expected += [(item, calls, True) for item in call]
            break
        else:
            expected += [(item, CHAOS_RETRY.attempts, False) for item in call]
    assert any(not ok for *_, ok in expected) and any(c > 1 for _, c, ok in expected if ok)
    return expected, reference.injected


def check_chaos_run(run: shoal.Run[int, Any], expected: list[tuple[int, int, bool]]) -> None:
    assert [(o.index, o.attempts, o.ok) for o in run.outcomes] == expected
    assert all("chaos: injected failure" in str(f.error) for f in run.failures)
    assert [o.value for o in run.outcomes if o.ok] == [o.index**2 for o in run.outcomes if o.ok]


@pytest.mark.parametrize("batch_size", [None, 3])
def test_chaos_meets_the_same_fates_on_every_backend(kind: Kind, batch_size: int | None) -> None:
    """A seeded chaos run fails, stalls and retries the same attempts on every backend, as a
    plain loop over the same draws says (the process, Dask and Ray backends get each fate with
    its item, or with its group in limited mode), and its ``injected`` counts them all."""
    expected, injected = chaos_expected(batch_size or 1)
    if batch_size:
        wrapped = chaos(kind.fn(w.square_all, w.asquare_all), **CHAOS)
    else:
        wrapped = chaos(kind.fn(w.square, w.asquare), **CHAOS)
    job = Job(wrapped, retry=CHAOS_RETRY, backend=kind(), limits=Limits(6), batch_size=batch_size)
    check_chaos_run(job.run(range(30)), expected)
    assert wrapped.injected == injected


def test_chaos_in_chunks_meets_the_same_fates(remote: Kind) -> None:
    """With chunk_size the workers make every attempt themselves, and draw for each: the same
    fates as everywhere else."""
    expected, _ = chaos_expected(1)
    job = Job(chaos(w.square, **CHAOS), retry=CHAOS_RETRY, backend=remote(), chunk_size=4)
    check_chaos_run(job.run(range(30)), expected)


def test_timeout_fails_the_slow_attempt(kind: Kind) -> None:
    """An attempt past its timeout fails with TimeoutError (and is retried); the others succeed.

    (On Dask and Ray an item batched behind a slow one waits for it, and a running Dask task
    cannot be stopped, so on a two-CPU cluster a quick item sent after the slow one can time out
    behind it: the slow item comes last here. The process backend takes such items back, see
    test_process.)
    """
    work = kind.fn(w.sleepy, w.asleepy)
    items = [0.0, 0.0, 0.0, 0.0, 1.5]
    # A timeout in an earlier test may have killed a Ray worker; wait until the cluster has its
    # workers again, or quick items would time out waiting for one.
    Job(work, limits=Limits(concurrency=4), backend=kind()).run([0.0] * 4, errors="raise")
    started = time.monotonic()
    run = Job(
        work,
        timeout=0.5,
        retry=Retry(attempts=2, base_delay=0.001, on=(TimeoutError,)),
        limits=Limits(concurrency=4),
        backend=kind(),
    ).run(items)
    assert time.monotonic() - started < 15
    [failure] = run.failures
    assert failure.index == 4
    assert failure.error.type == "TimeoutError"
    assert failure.attempts == 2
    assert run.values == [0.0] * 4


def test_failure_isolation(kind: Kind) -> None:
    """One item's error, even one that cannot be pickled back, touches no other item."""
    result = shoal.map(w.raise_unpicklable, range(6), retries=0, errors="return", backend=kind())
    assert [r for i, r in enumerate(result) if i != 2] == [0, 1, 3, 4, 5]
    failure = result[2]
    assert isinstance(failure, shoal.Failure)
    assert "2/2" in failure.error.message


def test_per_key_limits(kind: Kind, tmp_path: Path) -> None:
    """per_key=1 keeps each key's attempts apart, while other keys run at the same time."""
    work = kind.fn(w.record, w.arecord)
    items = [(str(tmp_path), "ab"[i % 2], i, 0.05) for i in range(10)]
    values = shoal.map(
        work, items, key=lambda item: item[1], per_key=1, concurrency=4, backend=kind()
    )
    assert values == list(range(10))
    spans: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    for i in range(10):
        key, start, end = (tmp_path / str(i)).read_text(encoding="ascii").split()
        spans[key].append((float(start), float(end)))
    for key_spans in spans.values():
        key_spans.sort()
        for (_, end), (start, _) in itertools.pairwise(key_spans):
            assert start >= end - 0.005  # the next one starts after the previous one ended


def test_limited_mode_batches_per_item_outcomes(kind: Kind) -> None:
    """batch_size=4 hands the work lists of 4 items; outcomes are still one per item."""
    work = kind.fn(w.double_all, w.adouble_all)
    run = Job(work, batch_size=4, backend=kind(), retry=Retry(attempts=1)).run(range(10, 20))
    assert len(run.outcomes) == 10
    assert [o.index for o in run.outcomes] == list(range(10))
    assert [o.item for o in run.outcomes] == list(range(10, 20))
    assert run.outcomes[0].value == (20, 4)
    assert run.outcomes[9].value == (38, 2)  # the last list had two items
    assert [f.item for f in run.failures] == [13]
    assert run.failures[0].error.message == "13 rejected"
    assert run.stats.total == 10
    assert run.stats.failed == 1


# ---------------------------------------------------------------------------------- remote


def test_unpicklable_work_fails_before_any_piece(remote: Kind) -> None:
    """Work that cannot cross a process boundary gives a clear error before anything runs."""
    work = functools.partial(w.with_lock, threading.Lock())
    with pytest.raises(TypeError, match="cannot be pickled"):
        shoal.map(work, range(3), backend=remote())


def test_unpicklable_result_fails_only_its_item(remote: Kind) -> None:
    """A result that cannot be sent back fails its own item only."""
    result = shoal.map(w.return_unpicklable, range(5), retries=0, errors="return", backend=remote())
    assert [r for i, r in enumerate(result) if i != 2] == [0, 1, 3, 4]
    failure = result[2]
    assert isinstance(failure, shoal.Failure)
    assert "pickle" in failure.error.message or "pickle" in failure.error.traceback


def test_worker_lost_mid_run_costs_only_a_retry(remote: Kind, tmp_path: Path) -> None:
    """A worker process that dies mid-run does not lose the run: every item completes."""
    items = [(str(tmp_path), n) for n in range(8)]
    run = Job(w.crash_once, backend=remote(), retry=Retry(attempts=3, base_delay=0.01)).run(items)
    assert run.values == list(range(8))
    assert (tmp_path / "crashed").stat().st_size >= 1
    assert all(o.attempts <= 2 for o in run.outcomes)


# ---------------------------------------------------------------------------------- options


@pytest.mark.skipif(not HAVE_DASK, reason="no shoal[dask] extra")
@pytest.mark.timeout(120)
def test_dask_default_starts_and_stops_a_local_cluster() -> None:
    """backend='dask' starts a LocalCluster for the run and stops it at the end."""
    import multiprocessing

    before = {p.pid for p in multiprocessing.active_children()}  # the module's own cluster
    assert shoal.map(w.square, range(30), backend="dask") == [x * x for x in range(30)]
    assert {p.pid for p in multiprocessing.active_children()} <= before


@pytest.mark.skipif(not HAVE_DASK, reason="no shoal[dask] extra")
def test_dask_accepts_a_client(dask_address: str) -> None:
    """A distributed.Client given as address= is used through its scheduler, and left open."""
    import distributed

    with distributed.Client(dask_address) as client:
        values = shoal.map(w.square, range(10), backend=DaskBackend(address=client))
        assert values == [x * x for x in range(10)]
        assert client.status == "running"


def test_usage_reported_by_the_work_reaches_its_outcome(kind: Kind) -> None:
    """shoal.usage() from inside the work, on every backend, failed attempts included."""
    job = shoal.Job(
        w.metered, backend=kind(), limits=shoal.Limits(concurrency=4), retry=shoal.Retry(1)
    )
    run = job.run([1, 2, -1])
    assert [o.usage for o in run.outcomes] == [
        {"tokens": 10, "cost": 0.5, "requests": 1},
        {"tokens": 20, "cost": 0.5, "requests": 1},
        {"tokens": 10, "cost": 0.5, "requests": 1},
    ]
    assert [o.ok for o in run.outcomes] == [True, True, False]
