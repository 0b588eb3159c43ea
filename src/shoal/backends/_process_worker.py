"""The process backend's worker: the main loop of one worker process.

Protocol, over two pipes (frames are an 8-byte little-endian length, then a pickle):

- parent -> worker: a batch, ``list[item]``.
- worker -> parent: first one start-up frame, ``(True, None, 0.0)`` once the work function is
  loaded or ``(False, error, 0.0)`` if it cannot be; then one ``(ok, value_or_error, seconds)``
  frame per item, **written before the next item starts**. So when a worker dies, every item it
  finished has already been reported, and the first unreported item of its batch is exactly the
  one it was running: that one alone is blamed, and the rest of the batch never started.

The worker leaves at the end of its input (the parent closed the pipe or died). It ignores SIGINT:
Ctrl+C in a terminal reaches the whole process group, and the parent decides what happens.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
from multiprocessing.connection import Connection
from typing import Any

from ._remote import Runner, portable_error

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


def _dumps(result: tuple[bool, Any, float], where: str) -> bytes:
    try:
        return pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        exc.add_note("(the result of the work could not be pickled to send it back)")
        return pickle.dumps((False, portable_error(exc, where), result[2]), pickle.HIGHEST_PROTOCOL)


def main(inbox: Connection, outbox: Connection, work_bytes: bytes) -> None:
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
    try:
        while True:
            header = read_exact(rfd, HEADER.size)
            if header is None:
                return
            payload = read_exact(rfd, HEADER.unpack(header)[0])
            if payload is None:
                return
            items: list[Any] = pickle.loads(payload)  # noqa: S301 - from our own parent
            for item in items:
                write_frame(wfd, _dumps(runner.run(item), where))
    finally:
        runner.close()
