"""The process backend: real crashes and real timeouts in real worker processes.

A worker that dies (os._exit, SIGSEGV, SIGKILL) fails or retries only the piece it was running,
and is replaced; a timed-out attempt's worker is killed (its pid is gone afterwards).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

import _workers as w
import shoal
from shoal import Job, Limits, Retry
from shoal.backends import ProcessBackend, WorkerCrashed, resolve


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(
    ("how", "says"),
    [("exit", "exited with code 3"), ("segv", "killed by SIGSEGV"), ("kill", "killed by SIGKILL")],
)
def test_a_dead_worker_fails_only_its_piece(how: str, says: str) -> None:
    """The piece whose worker died fails with WorkerCrashed; every other piece succeeds."""
    items = [("ok", n) for n in range(12)]
    items[5] = (how, 5)
    backend = ProcessBackend(workers=2)
    run = Job(w.crash, backend=backend, retry=Retry(attempts=1), limits=Limits(8)).run(items)
    [failure] = run.failures
    assert failure.index == 5
    assert failure.error.type == "shoal.backends._process.WorkerCrashed"
    assert says in failure.error.message
    assert run.values == [n for n in range(12) if n != 5]
    assert all(o.attempts == 1 for o in run.outcomes)  # batch-mates were not charged
    assert multiprocessing.active_children() == []


def test_a_crash_is_retried_in_a_new_worker(tmp_path: Path) -> None:
    """A piece whose worker died once succeeds on its retry; the run goes on."""
    items = [(str(tmp_path), n) for n in range(10)]
    run = Job(w.crash_once, backend="process", retry=Retry(attempts=2, base_delay=0.01)).run(items)
    assert run.values == list(range(10))
    assert run.outcomes[3].attempts == 2
    assert [o.attempts for i, o in enumerate(run.outcomes) if i != 3] == [1] * 9


def test_many_crashes_in_one_run() -> None:
    """Several workers dying in one run cost only their own pieces."""
    items = [("exit" if n % 7 == 3 else "ok", n) for n in range(40)]
    result = shoal.map(w.crash, items, backend="process", retries=0, errors="return")
    for n, value in enumerate(result):
        if n % 7 == 3:
            assert isinstance(value, shoal.Failure)
            assert isinstance(value.error.exception, WorkerCrashed)
        else:
            assert value == n


def test_timeout_kills_the_worker(tmp_path: Path) -> None:
    """A timed-out attempt is stopped for real: its worker process is gone afterwards."""
    started = time.monotonic()
    result = shoal.map(
        w.pid_then_sleep,
        [(str(tmp_path), 30.0)],
        timeout=0.5,
        retries=0,
        errors="return",
        backend="process",
    )
    assert time.monotonic() - started < 10
    assert isinstance(result[0], shoal.Failure)
    assert result[0].error.type == "TimeoutError"
    pid = int((tmp_path / "pid").read_text(encoding="ascii"))
    assert pid_gone(pid)
    assert multiprocessing.active_children() == []


def test_a_stalled_item_does_not_hold_up_its_batch_mates() -> None:
    """Fast items queued behind a slow one are taken back and run elsewhere, within their
    timeout, at their first attempt; only the slow one times out."""
    items = [0.001] * 40 + [3.0] + [0.001] * 40
    run = Job(
        w.sleepy,
        timeout=1.0,
        retry=Retry(attempts=1),
        limits=Limits(concurrency=40),
        backend=ProcessBackend(workers=2),
    ).run(items)
    [failure] = run.failures
    assert failure.index == 40
    assert failure.error.type == "TimeoutError"
    assert len(run.values) == 80


def test_small_pieces_travel_in_batches() -> None:
    """Thousands of tiny pieces take well under a second: they are shipped in batches."""
    started = time.monotonic()
    assert shoal.map(w.square, range(5000), concurrency=500, backend="process") == [
        x * x for x in range(5000)
    ]
    assert time.monotonic() - started < 5


def test_lambda_is_refused_with_the_fix() -> None:
    """A lambda cannot reach another process: the error says so and how to fix it."""
    with pytest.raises(TypeError, match="define it at module level"):
        shoal.map(lambda x: x, [1], backend="process")


def test_unpicklable_item_fails_on_its_own() -> None:
    """An item that cannot be pickled fails alone, with a message that says why."""
    items: list[object] = [1, 2, lambda: 3, 4]
    result = shoal.map(w.square, items, retries=0, errors="return", backend="process")
    assert result[0:2] == [1, 4]
    assert result[3] == 16
    failure = result[2]
    assert isinstance(failure, shoal.Failure)
    assert "cannot be pickled" in failure.error.message


def test_async_work_runs_in_processes() -> None:
    """An async def runs on a loop inside the worker process."""
    assert shoal.map(w.asquare, range(5), backend="process") == [0, 1, 4, 9, 16]


def test_worker_traceback_is_kept() -> None:
    """The error from a worker carries its traceback there."""
    run = Job(w.fail_odd, backend="process", retry=Retry(attempts=1)).run([1])
    error = run.failures[0].error
    assert "raised in worker process" in error.traceback
    assert "fail_odd" in error.traceback


def test_cpu_bound_auto_means_processes() -> None:
    """backend='auto' runs CPU-bound plain functions in processes, async def on the loop."""
    assert isinstance(resolve("auto", w.square, cpu_bound=True), ProcessBackend)
    assert resolve("auto", w.asquare, cpu_bound=True).name == "async"
    assert resolve("auto", w.square).name == "thread"
    job = Job(w.square, cpu_bound=True)
    assert job.run(range(3)).values == [0, 1, 4]


def test_options_are_checked() -> None:
    """Bad backend options fail at construction with the fix."""
    with pytest.raises(ValueError, match="workers"):
        ProcessBackend(workers=0)
    with pytest.raises(ValueError, match="start_method"):
        ProcessBackend(start_method="fork")
    with pytest.raises(ValueError, match="max_size"):
        ProcessBackend(max_batch=0)
    with pytest.raises(TypeError, match="cpu_bound"):
        Job(w.square, cpu_bound="yes")  # type: ignore[arg-type]


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Choosing Dask or Ray without its extra fails at once with the pip command."""
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        if name in ("ray", "distributed"):
            return None
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(shoal.ShoalError, match=r"pip install 'shoal\[ray\]'"):
        Job(w.square, backend="ray")
    with pytest.raises(shoal.ShoalError, match=r"pip install 'shoal\[dask\]'"):
        resolve("dask", w.square)
    with pytest.raises(shoal.ShoalError, match=r"pip install 'shoal\[ray\]'"):
        shoal.backends.RayBackend()


def test_stress_every_item_gets_its_own_result(tmp_path: Path) -> None:
    """Crashes, stalls, steals and batches together never give an item another's result."""
    items = [(str(tmp_path), n) for n in range(400)]
    run = Job(
        w.mixed,
        backend=ProcessBackend(workers=2),
        limits=Limits(concurrency=64),
        retry=Retry(attempts=2, base_delay=0.001),
    ).run(items)
    assert [o.value for o in run.outcomes] == [n * 3 for n in range(400)]
    for outcome in run.outcomes:
        crashed = outcome.index % 37 == 5
        assert outcome.attempts == (2 if crashed else 1), outcome


def test_spawn_start_method_works() -> None:
    """Workers started with spawn (a fresh interpreter each) behave the same."""
    backend = ProcessBackend(workers=1, start_method="spawn")
    assert shoal.map(w.square, range(10), backend=backend) == [x * x for x in range(10)]
    assert multiprocessing.active_children() == []


def test_stress_timeouts_kills_and_steals() -> None:
    """A hanging item times out at every attempt (its worker killed each time), while the quick
    items batched around it are taken back and succeed at their first attempt."""
    run = Job(
        w.slow_some,
        timeout=0.3,
        backend=ProcessBackend(workers=2),
        limits=Limits(concurrency=32),
        retry=Retry(attempts=3, base_delay=0.001, on=(TimeoutError,)),
    ).run(range(300))
    [failure] = run.failures
    assert failure.index == 3
    assert failure.error.type == "TimeoutError"
    assert failure.attempts == 3
    assert [o.value for o in run.outcomes if o.ok] == [n * 2 for n in range(300) if n != 3]
    assert all(o.attempts == 1 for o in run.outcomes if o.ok)
    assert multiprocessing.active_children() == []


def test_big_items_and_results_cross_whole() -> None:
    """Items and results of 256 KB (several to a batch, beyond a pipe's default 64 KB) arrive
    intact, in order; where the OS sizes pipes (Linux), each worker's inbox and outbox hold 1 MB,
    so that a batch queued behind the running one waits there whole."""
    import asyncio

    items = [bytes([n]) * 100 + bytes(256 * 1024) for n in range(24)]
    got = shoal.map(w.reverse_bytes, items, backend=ProcessBackend(workers=2))
    assert got == [item[::-1] for item in items]

    fcntl = pytest.importorskip("fcntl")
    getter = getattr(fcntl, "F_GETPIPE_SZ", None)
    if getter is None:
        pytest.skip("this OS does not size pipes")
    with open("/proc/sys/fs/pipe-max-size", encoding="ascii") as fh:
        if int(fh.read()) < 1 << 20:
            pytest.skip("pipes here cannot hold 1 MB")

    async def sizes() -> list[int]:
        backend = ProcessBackend(workers=1)
        invoke = await backend.start(w.square, concurrency=1)
        try:
            assert await invoke(7) == 49
            [worker] = backend._pool._workers  # type: ignore[union-attr]
            return [fcntl.fcntl(fd, getter) for fd in (worker.wfd, worker.rfd)]
        finally:
            await backend.close()

    assert asyncio.run(sizes()) == [1 << 20, 1 << 20]
    assert multiprocessing.active_children() == []


def test_workers_inherit_the_main_script_instead_of_running_it_again(tmp_path: Path) -> None:
    """The fork server loads the script once; its workers (four here, two runs of two) start
    with it loaded, rather than running it again each (which costs its imports per worker)."""
    import subprocess
    import sys

    log = tmp_path / "imports.log"
    helper = tmp_path / "helper_mod.py"
    helper.write_text("def triple(x):\n    return 3 * x\n", encoding="utf-8")
    script = tmp_path / "main_script.py"
    script.write_text(
        "import os\n"
        f"with open({str(log)!r}, 'a') as fh:\n"
        "    fh.write(f'{os.getpid()} {__name__}\\n')\n"
        "import shoal\n"
        "from shoal.backends import ProcessBackend\n"
        "from helper_mod import triple\n"
        "if __name__ == '__main__':\n"
        "    for _ in range(2):\n"
        "        got = shoal.map(triple, range(10), backend=ProcessBackend(workers=2))\n"
        "        assert got == [3 * x for x in range(10)], got\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    runs = log.read_text(encoding="utf-8").splitlines()
    # The script itself, and the fork server loading it as __mp_main__: never a worker.
    assert [line.split()[1] for line in runs] == ["__main__", "__mp_main__"], runs
