"""Backends: CPU-bound work in processes; the per-task cost of the process, Dask, Ray backends.

Four workloads, each against baselines from the same run:

- ``cpu``: 400 pure-Python tasks of about 5 ms on 2 workers, against a serial loop,
  ``ProcessPoolExecutor(2).map`` and mpire's ``WorkerPool(2).map``. Target: shoal's speedup over
  the serial loop >= 1.85 (two cores). A fifth row shows what the machine's two cores gave in the
  same run with no tool at all: two forked processes taking the items from a shared counter and
  sending nothing back (the most two worker processes can get out of this machine's two cores).
- ``process-noop``: 20,000 no-op tasks on the process backend, against
  ``ProcessPoolExecutor(2).map(chunksize=500)``. Target: at most 2x its µs per task.
- ``dask-noop``: 20,000 no-op tasks on the Dask backend, against ``client.map`` + ``gather`` on the
  same LocalCluster (two single-threaded workers). Target: at most 0.5x its µs per task.
- ``ray-noop``: 20,000 no-op tasks on the Ray backend, against plain ``ray.remote`` tasks on the
  same Ray. Target: at most 0.5x its µs per task.

Every timing includes what a user's call pays: the pools' start-up and shutdown for the process
rows (shoal's workers fork from a fork server, whose start-up once per process is timed in the
first run only; the executor's and mpire's default on Linux is plain ``fork``), and
shoal's connection to the cluster for the Dask row (the baseline's client is made once, outside
the timing). shoal's no-op rows use ``concurrency=1000``, so that there are items to batch.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from common import Check, Result, best, fmt, median, ratio, round_robin, time_sync

import shoal
from shoal.backends import DaskBackend, ProcessBackend, RayBackend

N_CPU = 400
CPU_SECONDS = 0.005
MIN_SPEEDUP = 1.85
N_NOOP = 20_000
NOOP_CONCURRENCY = 1000
MAX_VS_EXECUTOR = 2.0
MAX_VS_ENGINE = 0.5


def noop(item: int) -> int:
    return item


def burn(item: tuple[int, int]) -> int:
    """About 5 ms of pure-Python arithmetic (``loops`` is calibrated in the parent)."""
    n, loops = item
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total + n


def calibrate() -> int:
    """Loops of :func:`burn` that take about ``CPU_SECONDS`` on this machine."""
    loops = 20_000
    while True:
        took = min(_time_burn(loops) for _ in range(3))
        if took > 0.05:
            return max(1, int(loops * CPU_SECONDS / took))
        loops *= 2


def _time_burn(loops: int) -> float:
    start = time.perf_counter()
    burn((0, loops))
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------- cpu

SERIAL = "serial loop"
EXECUTOR = "ProcessPoolExecutor(2).map"
MPIRE = "mpire WorkerPool(2).map"
SHOAL_CPU = "shoal.map(backend=ProcessBackend(workers=2))"
NO_TOOL = "no tool: 2 forked processes sharing a counter, nothing sent"


def _two_sharing(items: list[tuple[int, int]]) -> None:
    """Two forked children run :func:`burn` over ``items``, each taking the next one from a shared
    counter (so neither waits while the other has work left); nothing is sent back."""
    counter = multiprocessing.RawValue("q", 0)
    lock = multiprocessing.Lock()
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # the child: compute, then leave at once
            try:
                while True:
                    with lock:
                        n = counter.value
                        counter.value = n + 1
                    if n >= len(items):
                        break
                    burn(items[n])
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def run_cpu(repeat: int) -> Result:
    import mpire

    loops = calibrate()
    items = [(n, loops) for n in range(N_CPU)]
    expected = [burn(item) for item in items[:3]]

    def measure(tool: str) -> float:
        if tool == SERIAL:
            seconds, value = time_sync(lambda: [burn(item) for item in items])
        elif tool == EXECUTOR:

            def with_executor() -> list[int]:
                with ProcessPoolExecutor(2) as pool:
                    return list(pool.map(burn, items))

            seconds, value = time_sync(with_executor)
        elif tool == MPIRE:

            def with_mpire() -> list[int]:
                with mpire.WorkerPool(n_jobs=2) as pool:
                    # mpire unpacks a tuple into arguments: wrap each item in one.
                    return list(pool.map(burn, [(i,) for i in items], progress_bar=False))

            seconds, value = time_sync(with_mpire)
        elif tool == NO_TOOL:
            seconds, _ = time_sync(lambda: _two_sharing(items))
            return seconds
        else:
            seconds, value = time_sync(
                lambda: shoal.map(burn, items, backend=ProcessBackend(workers=2))
            )
        assert isinstance(value, list)
        assert value[:3] == expected, tool
        assert len(value) == N_CPU
        return seconds

    tools = [SERIAL, EXECUTOR, MPIRE, SHOAL_CPU, NO_TOOL]
    samples = round_robin(tools, repeat, measure)
    fastest = {tool: best(s) for tool, s in samples.items()}
    result = Result(
        "cpu",
        f"{N_CPU} pure-Python tasks of ~{CPU_SECONDS * 1000:.0f} ms, 2 workers",
        ["tool", "wall s (best)", "wall s (median)", "speedup over serial (best)"],
    )
    for tool in tools:
        result.rows.append(
            [
                tool,
                fmt(fastest[tool], 3),
                fmt(median(samples[tool]), 3),
                f"{fastest[SERIAL] / fastest[tool]:.2f}x",
            ]
        )
    speedup = fastest[SERIAL] / fastest[SHOAL_CPU]
    result.checks.append(
        Check(
            f"shoal speedup over serial >= {MIN_SPEEDUP} (2 cores)",
            f"{speedup:.2f}x (executor {fastest[SERIAL] / fastest[EXECUTOR]:.2f}x, "
            f"mpire {fastest[SERIAL] / fastest[MPIRE]:.2f}x; no tool "
            f"{fastest[SERIAL] / fastest[NO_TOOL]:.2f}x)",
            speedup >= MIN_SPEEDUP,
        )
    )
    result.notes.append(
        f"best and median of {repeat} interleaved runs; every pool's start-up and shutdown is "
        "timed (shoal's workers fork from its fork server, the executor's and mpire's straight "
        "from this process). The no-tool row forks two processes that take the items in turn "
        "from a shared counter and send nothing back: what two cores gave in this run with no "
        "pool, no pipes and no results (one process alone runs each item faster than two side "
        "by side do on this host, so this row, not 2.0x, is the ceiling)."
    )
    return result


# ---------------------------------------------------------------------------------- no-op


def noop_result(
    name: str,
    title: str,
    baseline: str,
    tool: str,
    samples: dict[str, list[float]],
    target: float,
    repeat: int,
    notes: list[str],
    others: tuple[str, ...] = (),
) -> Result:
    per_task = {t: [s / N_NOOP * 1e6 for s in runs] for t, runs in samples.items()}
    fastest = {t: best(v) for t, v in per_task.items()}
    result = Result(
        name, title, ["tool", "µs/task (best)", "µs/task (median)", "vs baseline (best)"]
    )
    for t in (baseline, tool, *others):
        result.rows.append(
            [t, fmt(fastest[t]), fmt(median(per_task[t])), ratio(fastest[t], fastest[baseline])]
        )
    vs = fastest[tool] / fastest[baseline]
    result.checks.append(
        Check(
            f"shoal µs/task <= {target}x {baseline}'s",
            f"{fmt(fastest[tool])} vs {fmt(fastest[baseline])} µs = {vs:.2f}x",
            vs <= target,
        )
    )
    result.notes.append(f"best and median of {repeat} interleaved runs of {N_NOOP:,} tasks.")
    result.notes.extend(notes)
    return result


def check_values(value: object) -> None:
    assert value == list(range(N_NOOP)), "wrong results"


EXECUTOR_NOOP = "ProcessPoolExecutor(2).map(chunksize=500)"
SHOAL_CHUNKED = "shoal.map(backend=ProcessBackend(workers=2), chunk_size=500)"
SHOAL_PROCESS = "shoal.map(backend=ProcessBackend(workers=2), concurrency=1000), per item"


def run_process_noop(repeat: int) -> Result:
    def measure(tool: str) -> float:
        if tool == EXECUTOR_NOOP:

            def with_executor() -> list[int]:
                with ProcessPoolExecutor(2) as pool:
                    return list(pool.map(noop, range(N_NOOP), chunksize=500))

            seconds, value = time_sync(with_executor)
        elif tool == SHOAL_CHUNKED:
            seconds, value = time_sync(
                lambda: shoal.map(
                    noop, range(N_NOOP), backend=ProcessBackend(workers=2), chunk_size=500
                )
            )
        else:
            seconds, value = time_sync(
                lambda: shoal.map(
                    noop,
                    range(N_NOOP),
                    concurrency=NOOP_CONCURRENCY,
                    backend=ProcessBackend(workers=2),
                )
            )
        check_values(value)
        return seconds

    tools = [EXECUTOR_NOOP, SHOAL_CHUNKED, SHOAL_PROCESS]
    samples = round_robin(tools, repeat, measure)
    return noop_result(
        "process-noop",
        f"{N_NOOP:,} no-op tasks, process backend",
        EXECUTOR_NOOP,
        SHOAL_CHUNKED,
        samples,
        MAX_VS_EXECUTOR,
        repeat,
        [
            "every tool starts and stops its two worker processes inside the timing.",
            "chunk_size=500 sends items 500 per task, as the executor's chunksize=500 does; each "
            "item still gets its own outcome (retries in the worker, usage, timing).",
            "per item (no chunk_size), shoal pays its scheduler's bookkeeping (limits, retries, "
            "one outcome) for every item on top of the pipe traffic.",
        ],
        others=(SHOAL_PROCESS,),
    )


CLIENT_MAP = "client.map + client.gather"
SHOAL_DASK = "shoal.map(backend=DaskBackend(address=...), concurrency=1000)"


def run_dask_noop(repeat: int) -> Result:
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
    client = distributed.Client(cluster)
    try:

        def measure(tool: str) -> float:
            if tool == CLIENT_MAP:

                def with_client() -> list[int]:
                    futures = client.map(noop, range(N_NOOP), pure=False)
                    return list(client.gather(futures))

                seconds, value = time_sync(with_client)
            else:
                seconds, value = time_sync(
                    lambda: shoal.map(
                        noop,
                        range(N_NOOP),
                        concurrency=NOOP_CONCURRENCY,
                        backend=DaskBackend(address=cluster.scheduler_address),
                    )
                )
            check_values(value)
            return seconds

        tools = [CLIENT_MAP, SHOAL_DASK]
        measure(SHOAL_DASK)  # warm-up: the workers import this module and shoal
        samples = round_robin(tools, repeat, measure)
    finally:
        client.close()
        cluster.close()
    return noop_result(
        "dask-noop",
        f"{N_NOOP:,} no-op tasks, dask backend, LocalCluster of 2 single-threaded workers",
        CLIENT_MAP,
        SHOAL_DASK,
        samples,
        MAX_VS_ENGINE,
        repeat,
        [
            "the cluster runs with distributed.scheduler.worker-saturation: inf, which helps "
            "the baseline's many tiny tasks most; shoal's connection to it is timed.",
        ],
    )


RAY_TASKS = "ray.get([f.remote(i) for i in range(n)])"
SHOAL_RAY = "shoal.map(backend=RayBackend(), concurrency=1000)"


def run_ray_noop(repeat: int) -> Result:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        remote_noop: Any = ray.remote(noop)

        def measure(tool: str) -> float:
            if tool == RAY_TASKS:
                seconds, value = time_sync(
                    lambda: ray.get([remote_noop.remote(i) for i in range(N_NOOP)])
                )
            else:
                seconds, value = time_sync(
                    lambda: shoal.map(
                        noop, range(N_NOOP), concurrency=NOOP_CONCURRENCY, backend=RayBackend()
                    )
                )
            check_values(value)
            return seconds

        tools = [RAY_TASKS, SHOAL_RAY]
        ray.get([remote_noop.remote(i) for i in range(100)])  # warm-up: start the workers
        samples = round_robin(tools, repeat, measure)
    finally:
        ray.shutdown()
    return noop_result(
        "ray-noop",
        f"{N_NOOP:,} no-op tasks, ray backend, local Ray with 2 CPUs",
        RAY_TASKS,
        SHOAL_RAY,
        samples,
        MAX_VS_ENGINE,
        repeat,
        ["both use the same Ray, started once for the workload (not timed)."],
    )


WORKLOADS: list[tuple[str, int, Callable[[int], Result]]] = [
    ("cpu", 5, run_cpu),
    ("process-noop", 5, run_process_noop),
    ("dask-noop", 2, run_dask_noop),
    ("ray-noop", 2, run_ray_noop),
]
