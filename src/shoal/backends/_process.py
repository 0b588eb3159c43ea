"""The process backend: CPU-bound work in worker processes that shoal owns one by one.

Why not ``concurrent.futures.ProcessPoolExecutor``: when one of its workers dies, the whole pool
is broken (every pending future fails with ``BrokenProcessPool``), and it cannot stop one running
call. Here each worker is its own process with its own pipes, so:

- a worker that dies (``os._exit``, a segfault, the OOM killer) fails only the item it was running,
  with :class:`WorkerCrashed` (which the retry policy retries like any error); the items batched
  behind it never started and go back to the front of the queue without using an attempt; a new
  worker takes its place and the run goes on;
- an attempt that is cancelled while it runs (its timeout expired, the run stopped) is stopped for
  real: its worker is killed and replaced. Items batched with it that had not finished are run
  again later without using an attempt (they were not at fault). When the item being cut off is
  not the timed-out one but a batch-mate ahead of it, that batch-mate starts over from scratch.

Small items travel in batches (see ``_batching``): a worker gets several items in one message
and reports each one as it finishes, so the pipe round trip is paid per batch; a busy worker is
also sent its next batch, so it never waits for us between two. When an item runs
far longer than items have so far (it stalls), the items queued behind it in its worker's batch
are taken back (a "steal", answered exactly by the worker, see ``_process_worker``) and run by
other workers, so a slow item does not hold up its batch-mates, nor eat into their timeouts. An
item cancelled while still queued in a batch is taken back the same way, without killing anyone.

Workers never start by ``fork`` (unsafe in a process that runs threads): by default with
``forkserver`` where the platform has it (a server process, started once, imports shoal and the
main module, and forks each worker from there: a worker is ready in milliseconds, where a fresh
interpreter takes 100-250 ms), else with ``spawn``. Either way the work function, items and
results must pickle, and a script that uses this backend needs the usual
``if __name__ == "__main__":`` guard. The work function is checked up front.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import pickle
import signal
import time
from collections import deque
from collections.abc import Callable
from multiprocessing import forkserver, spawn
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from .._exceptions import ShoalError
from . import _process_worker
from ._base import Invoker
from ._batching import DEFAULT_TARGET, BatchSizer
from ._process_worker import HEADER

# What one read of a worker's pipe asks for. Not more: os.read allocates the whole size first, and
# a 1 MB buffer cost 15 µs per read where 64 KB costs 1.5 µs (larger frames take a few reads).
_READ_CHUNK = 1 << 16
# What a worker's pipes hold (where the OS lets us size a pipe: Linux, up to its pipe-max-size,
# 1 MB by default): a batch sent behind the one a worker runs waits in its inbox whole, instead of
# 64 KB at a time for each of the worker's reads, and a big result goes out without waiting for us
# to read the first 64 KB. A pipe takes memory only for what is in it.
_PIPE_SIZE = 1 << 20
try:
    import fcntl
except ImportError:  # not on this platform: pipes keep their size
    _SETPIPE_SZ: int | None = None
else:
    _SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", None)

_MAX_START_FAILURES = 3
# An item stalls when it runs this many times longer than items have on average, and at least
# STALL_MIN seconds: then the items queued behind it in its batch are taken back.
STALL_FACTOR = 10.0
STALL_MIN = 0.05


class WorkerCrashed(ShoalError):
    """The worker process running this piece died (a crash, ``os._exit``, killed by the OS).

    Only the piece it was running gets this error; the retry policy decides whether it runs again
    (by default it does, in a new worker).
    """

    def __init__(self, message: str, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode


def describe_exit(exitcode: int | None) -> str:
    """``exited with code 3`` / ``was killed by SIGSEGV``."""
    if exitcode is None:
        return "died"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"


def check_picklable(work: Callable[..., Any], backend: str, dumps: Callable[[Any], bytes]) -> bytes:
    """``dumps(work)``, or a :class:`TypeError` that says why and how to fix it."""
    try:
        return dumps(work)
    except Exception as exc:
        name = getattr(work, "__qualname__", None) or repr(work)
        hint = ""
        if "<lambda>" in name or "<locals>" in name:
            hint = "; a lambda or a local function cannot be pickled: define it at module level"
        raise TypeError(
            f"the {backend} backend sends work to other processes by pickling it, and the work "
            f"function {name} cannot be pickled ({type(exc).__name__}: {exc}){hint}"
        ) from exc


class _Entry:
    """One invocation: its item and the future the scheduler awaits."""

    __slots__ = ("future", "item", "worker")

    def __init__(self, item: Any, future: asyncio.Future[Any]) -> None:
        self.item = item
        self.future = future
        self.worker: _Worker | None = None


class _Worker:
    __slots__ = (
        "batch",
        "batch_seconds",
        "cfd",
        "control",
        "ctlbuf",
        "dead",
        "inbox",
        "killed",
        "last_progress",
        "next",
        "next_seq",
        "outbox",
        "outbuf",
        "pid",
        "proc",
        "rbuf",
        "ready",
        "received",
        "rfd",
        "sent",
        "seq",
        "stealing",
        "wfd",
        "writing",
    )

    def __init__(
        self, proc: BaseProcess, inbox: Connection, control: Connection, outbox: Connection
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.inbox = inbox  # we write batches here
        self.control = control  # and steals here
        self.outbox = outbox  # we read results here
        self.wfd = inbox.fileno()
        self.cfd = control.fileno()
        self.rfd = outbox.fileno()
        self.rbuf = bytearray()
        self.outbuf = bytearray()  # what the inbox has not taken yet
        self.ctlbuf = bytearray()  # what the control pipe has not taken yet
        self.writing: set[int] = set()  # the pipes the loop watches until they take the rest
        self.batch: list[_Entry] | None = None
        self.received = 0
        self.batch_seconds = 0.0
        self.ready = False
        self.killed = False
        self.dead = False
        self.seq = 0  # the number of the batch in progress
        # The batch sent behind it, so that the worker never waits for us between two batches.
        self.next: list[_Entry] | None = None
        self.next_seq = 0
        self.sent = 0  # batches sent so far (their numbers)
        self.stealing: set[int] = set()  # batches with a steal asked for and not answered yet
        self.last_progress = 0.0  # loop time of the batch's start or its latest result

    def holds(self, entry: _Entry) -> bool:
        """Whether ``entry`` is sent to this worker and not reported yet."""
        batch = self.batch
        if batch is not None and entry in batch[self.received :]:
            return True
        return self.next is not None and entry in self.next

    def unfinished(self) -> list[_Entry]:
        """The entries sent to this worker and not reported yet, in order."""
        rest = [] if self.batch is None else self.batch[self.received :]
        return rest + (self.next or [])


class ProcessBackend:
    """Runs work in worker processes; a crashed or timed-out worker is replaced, not fatal.

    Args:
        workers: Worker processes; by default the usable CPUs, and never more than the run's
            concurrency.
        max_batch: The most items sent to a worker at once (``None``: chosen from measured
            durations, about 20 ms of work per batch).
        batch_seconds: Seconds of work a batch aims for.
        start_method: The ``multiprocessing`` start method, ``"forkserver"`` or ``"spawn"``
            (default: ``"forkserver"`` where the platform has it).

    Raises:
        TypeError: at the start of a run, when the work function cannot be pickled.
    """

    name = "process"
    remote = True  # the work runs in other processes (see Backend)

    def __init__(
        self,
        workers: int | None = None,
        *,
        max_batch: int | None = None,
        batch_seconds: float = DEFAULT_TARGET,
        start_method: str | None = None,
    ) -> None:
        if workers is not None and (isinstance(workers, bool) or workers < 1):
            raise ValueError(f"workers={workers!r}: must be a whole number >= 1, or None")
        if start_method is None:
            start_method = default_start_method()
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(
                f"start_method={start_method!r}: use 'spawn' or 'forkserver' (fork is unsafe "
                "in a process that runs threads)"
            )
        BatchSizer(batch_seconds, max_batch)  # validates both
        self.workers = workers
        self.max_batch = max_batch
        self.batch_seconds = batch_seconds
        self.start_method = start_method
        self._pool: _Pool | None = None

    async def start(self, work: Callable[..., Any], *, concurrency: int) -> Invoker:
        work_bytes = check_picklable(
            work, "process", lambda w: pickle.dumps(w, pickle.HIGHEST_PROTOCOL)
        )
        workers = min(self.workers or usable_cpus(), max(1, concurrency))
        self._pool = _Pool(
            work_bytes,
            workers,
            BatchSizer(self.batch_seconds, self.max_batch),
            _context(self.start_method),
        )
        return self._pool.submit

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def pids(self) -> list[int]:
        """The process ids of the live workers (for tests and diagnostics)."""
        return self._pool.pids if self._pool is not None else []

    def __repr__(self) -> str:
        return f"ProcessBackend(workers={self.workers}, max_batch={self.max_batch})"


def default_start_method() -> str:
    """``"forkserver"`` where the platform has it, else ``"spawn"``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


_preloaded = False
_FORKSERVER_MAIN = __name__.rpartition(".")[0] + "._forkserver_main"


def _context(method: str) -> Any:
    """The multiprocessing context; a fork server preloads shoal's worker module and the main
    script (once), so that workers forked from it start with both loaded."""
    global _preloaded  # noqa: PLW0603 - one fork server per process, configured once
    context = multiprocessing.get_context(method)
    if method == "forkserver" and not _preloaded:
        _preloaded = True
        # In this order: the main script is loaded (by _forkserver_main, which must not be
        # imported here, where it would run while shoal itself is still being imported) once
        # shoal is complete.
        context.set_forkserver_preload(["__main__", _process_worker.__name__, _FORKSERVER_MAIN])
        data = spawn.get_preparation_data("shoal")
        main_path = data.get("init_main_from_path")
        if main_path:  # a script run by path (``python -m`` mains are imported by name)
            os.environ[_process_worker.FORKSERVER_MAIN] = main_path
            os.environ[_process_worker.FORKSERVER_PATH] = json.dumps(data.get("sys_path", []))
            try:
                forkserver.ensure_running()  # it reads both from its environment
            finally:
                os.environ.pop(_process_worker.FORKSERVER_MAIN, None)
                os.environ.pop(_process_worker.FORKSERVER_PATH, None)
    return context


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class _Pool:
    """The workers, the queue of items waiting for one, and the bookkeeping of who runs what."""

    def __init__(
        self,
        work_bytes: bytes,
        size: int,
        sizer: BatchSizer,
        context: Any,
    ) -> None:
        self._work_bytes = work_bytes
        self._size = size
        self._sizer = sizer
        self._context = context
        self._loop = asyncio.get_running_loop()
        self._pending: deque[_Entry] = deque()
        self._workers: list[_Worker] = []
        self._kick_scheduled = False
        self._closed = False
        self._fatal: BaseException | None = None
        self._start_failures = 0
        self._watchdog: asyncio.TimerHandle | None = None
        for _ in range(size):
            self._spawn()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if not w.dead and w.pid is not None]

    # ------------------------------------------------------------------ the invoker

    async def submit(self, item: Any) -> Any:
        if self._fatal is not None or self._closed:
            raise self._fatal or RuntimeError("the process backend is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        entry = _Entry(item, future)
        self._pending.append(entry)
        if not self._kick_scheduled and not self._full():
            self._kick()
        try:
            return await future
        except asyncio.CancelledError:
            # Awaiting here (not a done-callback per future) sees a cancellation at no cost per
            # item: the attempt timed out, or the run stops.
            future.cancel()
            self._on_item_done(entry, future)
            raise

    def _full(self) -> bool:
        """Whether no worker can take a batch now: each has one running and the next queued
        (or is being stolen from). That changes only when a batch is done, a steal is answered
        or a worker dies, and each of those dispatches what waits."""
        live = 0
        for worker in self._workers:
            if worker.dead:
                continue
            live += 1
            if worker.next is None and not (worker.killed or worker.stealing):
                return False
        return live >= self._size

    def _kick(self) -> None:
        if not self._kick_scheduled:
            # Let the rest of this loop turn add its items: they leave in one batch.
            self._kick_scheduled = True
            self._loop.call_soon(self._dispatch)

    def _on_item_done(self, entry: _Entry, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() or self._closed:
            return
        worker = entry.worker
        if worker is None or worker.dead or worker.killed or not worker.holds(entry):
            return  # still waiting (dropped at dispatch), or its result is in
        self._drain(worker)  # its result may be waiting in the pipe
        if worker.dead or worker.killed or not worker.holds(entry):
            return
        batch = worker.batch
        if batch is not None and worker.received < len(batch) and batch[worker.received] is entry:
            # Cancelled while it runs (a timeout): stop it for real. The worker is killed; its
            # other unfinished items go back to the queue when its death is seen.
            self._kill(worker)
        else:
            # Still queued behind another item: take the queue back. If the worker turns out to
            # have started it meanwhile, the answer to the steal kills it then.
            self._steal(worker)

    def _kill(self, worker: _Worker) -> None:
        worker.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]

    def _steal(self, worker: _Worker) -> None:
        """Ask ``worker`` not to start the items behind the one it is running (its next batch
        included)."""
        batch = worker.batch
        if (
            batch is not None
            and worker.received + 1 < len(batch)
            and worker.seq not in worker.stealing
        ):
            self._ask_steal(worker, worker.seq, worker.received + 1)
        if worker.next is not None and worker.next_seq not in worker.stealing:
            self._ask_steal(worker, worker.next_seq, 0)

    def _ask_steal(self, worker: _Worker, seq: int, k: int) -> None:
        payload = pickle.dumps(("steal", seq, k), pickle.HIGHEST_PROTOCOL)
        worker.stealing.add(seq)
        self._send_frame(worker, worker.cfd, worker.ctlbuf, payload)

    def _on_steal_answer(self, worker: _Worker, seq: int, keep: int) -> None:
        worker.stealing.discard(seq)
        if seq == worker.seq and worker.batch is not None:
            kept, taken = worker.batch[:keep], worker.batch[keep:]
            worker.batch = kept
            running = kept[worker.received :]
        elif seq == worker.next_seq and worker.next is not None:
            kept, taken = worker.next[:keep], worker.next[keep:]
            worker.next = kept or None
            running = kept
        else:
            return  # a batch that is over: all it started has been reported
        for entry in reversed(taken):
            entry.worker = None
            if not entry.future.done():
                self._pending.appendleft(entry)
        if any(e.future.cancelled() for e in running):
            self._kill(worker)  # a cancelled item had started after all
            return
        if worker.batch is not None and worker.received >= len(worker.batch):
            self._batch_done(worker)
        if self._pending:
            self._kick()

    def _check_stalls(self) -> None:
        """The watchdog: take back the items queued behind an item that stalls."""
        self._watchdog = None
        if self._closed:
            return
        now = self._loop.time()
        stall = self._stall_after()
        waiting = False
        for worker in self._workers:
            batch = worker.batch
            if batch is None or worker.dead or worker.killed or worker.stealing:
                continue
            if not worker.ready:
                waiting = True
                continue
            if worker.received + 1 >= len(batch) and worker.next is None:
                continue  # nothing queued behind the running item
            if now - worker.last_progress > stall:
                self._steal(worker)
            else:
                waiting = True
        if waiting:
            self._arm_watchdog()

    def _stall_after(self) -> float:
        """Seconds without a result after which a worker's current item counts as stalled."""
        return max(STALL_MIN, STALL_FACTOR * (self._sizer.per_item or 0.0))

    def _arm_watchdog(self) -> None:
        if self._watchdog is None and not self._closed:
            self._watchdog = self._loop.call_later(STALL_MIN, self._check_stalls)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self) -> None:
        self._kick_scheduled = False
        if self._closed or self._fatal is not None:
            return
        pending = self._pending
        while pending and pending[0].future.done():
            pending.popleft()
        if not pending:
            return
        live = [w for w in self._workers if not w.dead]
        for _ in range(self._size - len(live)):
            self._spawn()
        # Idle workers first, then a next batch for the busy ones (so that none waits for us),
        # but none for a worker whose item stalls: what waits behind it is what we take back.
        ready = [w for w in self._workers if not (w.dead or w.killed or w.stealing)]
        idle = [w for w in ready if w.batch is None]
        moving = self._loop.time() - self._stall_after()
        idle += [
            w
            for w in ready
            if w.batch is not None and w.next is None and w.ready and w.last_progress > moving
        ]
        for n, worker in enumerate(idle):
            # At most a share of what waits, so that some is left for the worker that frees up
            # next: it starts again while we still read this batch's results.
            size = self._sizer.size(len(pending), max(len(idle) - n, 2 * self._size))
            batch: list[_Entry] = []
            while pending and len(batch) < size:
                entry = pending.popleft()
                if not entry.future.done():
                    batch.append(entry)
            if not batch:
                break
            self._send(worker, batch)
            if not pending:
                break

    def _send(self, worker: _Worker, batch: list[_Entry]) -> None:
        items = [e.item for e in batch]
        worker.sent += 1
        seq = worker.sent
        try:
            payload = pickle.dumps(("batch", seq, items), pickle.HIGHEST_PROTOCOL)
        except Exception:
            # Find the items that do not pickle; each fails on its own, the rest go.
            good: list[_Entry] = []
            for entry in batch:
                try:
                    pickle.dumps(entry.item, pickle.HIGHEST_PROTOCOL)
                except Exception as exc:
                    error = TypeError(
                        f"the process backend sends each item to a worker process by pickling "
                        f"it, and this item cannot be pickled ({type(exc).__name__}: {exc})"
                    )
                    entry.future.set_exception(error)
                else:
                    good.append(entry)
            if not good:
                return
            batch = good
            payload = pickle.dumps(("batch", seq, [e.item for e in batch]), pickle.HIGHEST_PROTOCOL)
        for entry in batch:
            entry.worker = worker
        if worker.batch is None:
            worker.batch = batch
            worker.seq = seq
            worker.received = 0
            worker.batch_seconds = self._loop.time()  # its start; its wall time when done
            worker.last_progress = self._loop.time()
        else:
            worker.next = batch
            worker.next_seq = seq
        if len(batch) > 1 or worker.next is not None:
            self._arm_watchdog()
        self._send_frame(worker, worker.wfd, worker.outbuf, payload)

    def _send_frame(self, worker: _Worker, fd: int, buf: bytearray, payload: bytes) -> None:
        """Queue one frame for the pipe ``fd`` (``buf``: what it has not taken yet) and write."""
        buf += HEADER.pack(len(payload))
        buf += payload
        self._flush(worker, fd, buf)

    def _flush(self, worker: _Worker, fd: int, buf: bytearray) -> None:
        """Write what the pipe ``fd`` takes of ``buf`` now; the loop calls back when it takes
        more."""
        if worker.dead:
            return
        try:
            written = os.write(fd, buf)
        except BlockingIOError:
            written = 0
        except OSError:  # the worker is gone; its death is handled by the reader
            written = len(buf)
        del buf[:written]
        if buf:
            if fd not in worker.writing:
                worker.writing.add(fd)
                self._loop.add_writer(fd, self._flush, worker, fd, buf)
        elif fd in worker.writing:
            worker.writing.discard(fd)
            self._loop.remove_writer(fd)

    # ------------------------------------------------------------------ results

    def _on_readable(self, worker: _Worker) -> None:
        if not self._drain(worker):
            self._on_death(worker)

    def _drain(self, worker: _Worker) -> bool:
        """Read and handle every frame that has arrived; ``False`` at the end of the pipe."""
        buf = worker.rbuf
        alive = True
        while True:
            try:
                data = os.read(worker.rfd, _READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                alive = False
                break
            buf += data
            if len(data) < _READ_CHUNK:
                break
        offset = 0
        size = HEADER.size
        end = len(buf)
        while end - offset >= size:
            (length,) = HEADER.unpack_from(buf, offset)
            stop = offset + size + length
            if stop > end:
                break
            frame = bytes(buf[offset + size : stop])
            offset = stop
            self._on_frame(worker, frame)
        if offset:
            del buf[:offset]
        return alive

    def _on_frame(self, worker: _Worker, frame: bytes) -> None:
        try:
            ok, value, _seconds = pickle.loads(frame)  # noqa: S301 - from our own worker
        except Exception as exc:
            error = ShoalError(
                f"a result from a worker process could not be unpickled ({type(exc).__name__}: "
                f"{exc})"
            )
            ok, value, _seconds = False, error, 0.0
        if not worker.ready:
            if ok:
                worker.ready = True
                worker.last_progress = self._loop.time()  # a slow start is no stall
                worker.batch_seconds = worker.last_progress  # nor a slow batch
                self._start_failures = 0
            else:
                self._fail_all(
                    ShoalError(
                        "the process backend's workers cannot load the work function "
                        f"({type(value).__name__}: {value}); it must be importable by name in a "
                        "new Python process (define it at module level, in a module on sys.path)"
                    )
                )
            return
        if ok is None:
            self._on_steal_answer(worker, *value)
            return
        batch = worker.batch
        if batch is None or worker.received >= len(batch):
            return  # cannot happen with a well-behaved worker; ignore rather than crash the run
        entry = batch[worker.received]
        worker.received += 1
        worker.last_progress = self._loop.time()
        future = entry.future
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if worker.received == len(batch):
            self._batch_done(worker)
            if self._pending:
                self._dispatch()

    def _batch_done(self, worker: _Worker) -> None:
        """Every item of the current batch is reported: the next one (if any) is current."""
        now = self._loop.time()
        if worker.batch:
            # The batch's wall time, pipe and pickling included: that is what a batch costs.
            self._sizer.observe(now - worker.batch_seconds, len(worker.batch))
        worker.batch, worker.next = worker.next, None
        worker.seq = worker.next_seq
        worker.received = 0
        worker.batch_seconds = worker.last_progress = now

    def _on_death(self, worker: _Worker) -> None:
        if worker.dead:
            return
        worker.dead = True
        loop = self._loop
        loop.remove_reader(worker.rfd)
        self._stop_writing(worker)
        worker.proc.join(timeout=5)
        exitcode = worker.proc.exitcode
        self._forget(worker)
        if self._closed:
            return
        sent = worker.unfinished()
        unfinished = [e for e in sent if not e.future.done()]
        worker.batch = worker.next = None
        worker.stealing.clear()
        if not worker.ready and not worker.killed:
            self._start_failures += 1
            if self._start_failures >= _MAX_START_FAILURES and self._fatal is None:
                error = ShoalError(
                    f"{self._start_failures} worker processes in a row "
                    f"{describe_exit(exitcode)} while starting; the process backend gives up"
                )
                for entry in unfinished:
                    entry.future.set_exception(error)
                self._fail_all(error)
                return
        if sent and worker.ready and not worker.killed:
            # The worker reports every item before it starts the next, so the first item without
            # a report is the one it was running: only that one is to blame. (When it had
            # finished its batch, that is the first of the next one, unless it died in between.)
            culprit = sent[0]
            if not culprit.future.done():
                culprit.future.set_exception(
                    WorkerCrashed(
                        f"the worker process (pid {worker.pid}) running this piece "
                        f"{describe_exit(exitcode)}",
                        exitcode,
                    )
                )
                unfinished.remove(culprit)
        for entry in reversed(unfinished):  # back to the front of the queue, in order
            entry.worker = None
            self._pending.appendleft(entry)
        self._kick()

    def _stop_writing(self, worker: _Worker) -> None:
        for fd in worker.writing:
            self._loop.remove_writer(fd)
        worker.writing.clear()

    def _forget(self, worker: _Worker) -> None:
        for conn in (worker.inbox, worker.control, worker.outbox):
            with contextlib.suppress(OSError):
                conn.close()
        if worker in self._workers:
            self._workers.remove(worker)

    def _fail_all(self, error: BaseException) -> None:
        self._fatal = error
        for worker in self._workers:
            for entry in worker.unfinished():
                if not entry.future.done():
                    entry.future.set_exception(error)
            worker.batch = worker.next = None
        while self._pending:
            entry = self._pending.popleft()
            if not entry.future.done():
                entry.future.set_exception(error)

    # ------------------------------------------------------------------ workers

    def _spawn(self) -> None:
        ctx = self._context
        their_inbox, our_inbox = ctx.Pipe(duplex=False)  # (reader, writer)
        their_control, our_control = ctx.Pipe(duplex=False)
        our_outbox, their_outbox = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_process_worker.main,
            args=(their_inbox, their_control, their_outbox, self._work_bytes),
            name="shoal-worker",
        )
        proc.start()
        # Keep only our ends: the worker's death then closes the pipe and we read its end.
        for theirs in (their_inbox, their_control, their_outbox):
            theirs.close()
        worker = _Worker(proc, our_inbox, our_control, our_outbox)
        for fd in (worker.wfd, worker.rfd):
            _widen(fd, _PIPE_SIZE)
        os.set_blocking(worker.wfd, False)
        os.set_blocking(worker.cfd, False)
        os.set_blocking(worker.rfd, False)
        self._workers.append(worker)
        self._loop.add_reader(worker.rfd, self._on_readable, worker)

    async def close(self) -> None:
        """Stop every worker: idle ones leave at the end of their input, busy ones are killed."""
        self._closed = True
        loop = self._loop
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._pending:
            self._pending.popleft().future.cancel()
        workers = list(self._workers)
        for worker in workers:
            loop.remove_reader(worker.rfd)
            self._stop_writing(worker)
            if worker.batch is not None and worker.proc.is_alive():
                for entry in worker.unfinished():
                    entry.future.cancel()
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]
            for conn in (worker.inbox, worker.control):
                with contextlib.suppress(OSError):
                    conn.close()  # end of input: an idle worker returns
        if workers:
            # Joining blocks: do it in a thread so the loop stays responsive meanwhile.
            await asyncio.to_thread(_join_all, [w.proc for w in workers], 5.0)
        for worker in workers:
            worker.dead = True
            self._forget(worker)
            worker.proc.close()


def _widen(fd: int, size: int) -> None:
    """Let the pipe ``fd`` hold ``size`` bytes, where the platform allows it (best effort)."""
    if _SETPIPE_SZ is not None:
        with contextlib.suppress(OSError):  # over the system's limit: keep the default
            fcntl.fcntl(fd, _SETPIPE_SZ, size)


def _join_all(procs: list[BaseProcess], grace: float) -> None:
    """Wait up to ``grace`` seconds for the processes to leave; kill the ones that do not."""
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
