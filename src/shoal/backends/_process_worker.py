"""The process backend's worker: the main loop of one worker process.

Protocol, over three pipes (frames are an 8-byte little-endian length, then a pickle):

- parent -> worker, the inbox: ``("batch", seq, [item, ...])``, sent to an idle worker or to a
  busy one as its next batch. The main thread reads it itself, when it is done with a batch: a
  batch written while the worker computes wakes nobody and costs the worker nothing until then.
- parent -> worker, the control pipe: ``("steal", seq, k)``: "do not start the items of batch
  ``seq`` from position ``k`` on, I will run them elsewhere" (``seq`` numbers the batches, so a
  steal can never hit another batch, even one still waiting in the inbox). A reader thread waits on
  this pipe alone, so it wakes (and takes the GIL) only for a steal, which is rare.
- worker -> parent: first one start-up frame, ``(True, None, 0.0)`` once the work function is
  loaded or ``(False, error, 0.0)`` if it cannot be; then one ``(ok, value_or_error, seconds)``
  frame per item, **written before the next item starts**, and ``(None, (seq, n), 0.0)`` to
  answer a steal: only the first ``n`` items of batch ``seq`` run here. A worker holds up to two
  batches (the one it runs and the next, waiting in its inbox), so it never waits for the parent
  between batches.

Because every finished item is reported before the next one starts, when a worker dies the first
unreported item of its batch is exactly the one it was running: that one alone is blamed, and the
rest never started. A steal is answered by the reader thread under the same lock the main thread
takes before it starts an item, so the answer is exact even while the main thread is busy with a
long item (the parent steals the items queued behind an item that stalls, so they do not wait for
it).

The worker leaves at the end of its input (the parent closed the pipe or died). It ignores SIGINT:
Ctrl+C in a terminal reaches the whole process group, and the parent decides what happens.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import threading
from multiprocessing.connection import Connection
from typing import Any

from ._remote import Runner, portable_error

# The parent's main script and import path, handed to the fork server while it starts (read by
# _forkserver_main there: see _process._context).
FORKSERVER_MAIN = "SHOAL_FORKSERVER_MAIN"
FORKSERVER_PATH = "SHOAL_FORKSERVER_MAIN_PATH"

HEADER = struct.Struct("<Q")


def write_frame(fd: int, payload: bytes) -> None:
    """Write one whole frame to a blocking pipe."""
    view = memoryview(HEADER.pack(len(payload)) + payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_exact(fd: int, size: int) -> bytes | None:
    """``size`` bytes from a blocking pipe, or ``None`` at its end."""
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int) -> Any:
    """The next frame from a blocking pipe, unpickled (waiting for it), or ``None`` at its end."""
    header = read_exact(fd, HEADER.size)
    if header is None:
        return None
    payload = read_exact(fd, HEADER.unpack(header)[0])
    if payload is None:
        return None
    return pickle.loads(payload)  # noqa: S301 - from our own parent


def _dumps(result: tuple[bool, Any, float], where: str) -> bytes:
    try:
        return pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        exc.add_note("(the result of the work could not be pickled to send it back)")
        return pickle.dumps((False, portable_error(exc, where), result[2]), pickle.HIGHEST_PROTOCOL)


class _State:
    """The batch the main thread took last, shared with the reader thread (under ``lock``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seq = -1  # the batch the main thread took last
        self.stop_at = 0  # its items from this position on are not to be started
        self.started = 0  # its items started so far
        self.early: dict[int, int] = {}  # steals for batches not taken yet (in the inbox)
        self.finished: dict[int, int] = {}  # items that ran, of the batches done lately

    def steal(self, seq: int, k: int) -> int:
        """Apply a steal; return how many of batch ``seq``'s items run here."""
        if seq == self.seq:
            self.stop_at = min(self.stop_at, max(k, self.started))
            return self.stop_at
        if seq in self.finished:  # done already: every item it started ran
            return self.finished[seq]
        # Not taken yet (it waits in the inbox): none of its items has started.
        self.early[seq] = min(self.early.get(seq, k), k)
        return self.early[seq]

    def finish(self) -> None:
        """The main thread is done with its batch."""
        self.finished[self.seq] = self.started
        for old in [s for s in self.finished if s < self.seq - 2]:
            del self.finished[old]

    def take(self, seq: int, size: int) -> None:
        """The main thread starts batch ``seq`` of ``size`` items."""
        self.seq = seq
        self.stop_at = min(size, self.early.pop(seq, size))
        self.started = 0


def _read_control(rfd: int, wfd: int, write_lock: threading.Lock, state: _State) -> None:
    """The reader thread: each steal is answered at once, until the control pipe ends."""
    while (message := read_message(rfd)) is not None:
        _kind, seq, k = message
        with state.lock:
            keep = state.steal(seq, k)
            answer = pickle.dumps((None, (seq, keep), 0.0), pickle.HIGHEST_PROTOCOL)
            with write_lock:
                write_frame(wfd, answer)


def main(inbox: Connection, control: Connection, outbox: Connection, work_bytes: bytes) -> None:
    """Run batches from ``inbox`` until it ends, reporting each item to ``outbox``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    where = f"worker process {os.getpid()}"
    rfd, wfd = inbox.fileno(), outbox.fileno()
    try:
        work = pickle.loads(work_bytes)  # noqa: S301 - sent by our own parent process
    except Exception as exc:
        exc.add_note("(while loading the work function in a worker process)")
        write_frame(wfd, _dumps((False, portable_error(exc, where), 0.0), where))
        return
    write_frame(wfd, _dumps((True, None, 0.0), where))
    runner = Runner(work, where)
    state = _State()
    write_lock = threading.Lock()
    reader = threading.Thread(
        target=_read_control, args=(control.fileno(), wfd, write_lock, state), daemon=True
    )
    reader.start()
    lock = state.lock
    try:
        while (message := read_message(rfd)) is not None:
            _kind, seq, items = message
            with lock:
                state.take(seq, len(items))
            for position, item in enumerate(items):
                with lock:
                    if position >= state.stop_at:
                        break
                    state.started = position + 1
                frame = _dumps(runner.run(item), where)
                with write_lock:
                    write_frame(wfd, frame)
            with lock:
                state.finish()
    finally:
        runner.close()
