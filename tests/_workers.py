"""Work functions for the backend tests, at module level so they pickle by reference.

State that must survive a process boundary (attempt counts, pids, timings) goes through files in
a directory the test passes in with the item.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any


def square(x: int) -> int:
    return x * x


def reverse_bytes(data: bytes) -> bytes:
    return data[::-1]


async def asquare(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


class Boom(Exception):
    """A work error defined outside the standard library."""


def fail_odd(x: int) -> int:
    if x % 2:
        raise Boom(f"odd {x}")
    return x


def _count(directory: str, name: str) -> int:
    """Add one to the attempt counter file ``directory/name`` (append-only, so atomic)."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b".")
    finally:
        os.close(fd)
    return os.path.getsize(path)


def flaky(item: tuple[str, int, int]) -> int:
    """Fails the first ``fails`` attempts of item ``i``, then returns ``i``."""
    directory, i, fails = item
    attempt = _count(directory, f"flaky-{i}")
    if attempt <= fails:
        raise ConnectionError(f"flaky {i}, attempt {attempt}")
    return i


def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def asleepy(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def record(item: tuple[str, str, int, float]) -> int:
    """Sleeps, and writes ``key start end`` (wall clock) to ``directory/i`` to check overlaps."""
    directory, key, i, seconds = item
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    Path(directory, str(i)).write_text(f"{key} {start} {end}", encoding="ascii")
    return i


async def arecord(item: tuple[str, str, int, float]) -> int:
    directory, key, i, seconds = item
    start = time.time()
    await asyncio.sleep(seconds)
    end = time.time()
    Path(directory, str(i)).write_text(f"{key} {start} {end}", encoding="ascii")  # noqa: ASYNC240 - tiny
    return i


def double_all(items: list[int]) -> list[Any]:
    """Limited mode: a list in, one result per item out; 13 is rejected on its own."""
    return [ValueError("13 rejected") if x == 13 else (x * 2, len(items)) for x in items]


async def adouble_all(items: list[int]) -> list[Any]:
    await asyncio.sleep(0)
    return double_all(items)


def square_all(items: list[int]) -> list[int]:
    """Limited mode: each item squared."""
    return [x * x for x in items]


async def asquare_all(items: list[int]) -> list[int]:
    await asyncio.sleep(0)
    return square_all(items)


def crash(item: tuple[str, int]) -> int:
    """``("exit", n)``: os._exit; ``("segv", n)``/``("kill", n)``: that signal; else return n."""
    how, n = item
    if how == "exit":
        os._exit(3)
    if how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return n


def crash_once(item: tuple[str, int]) -> int:
    """Item 3 kills its worker process the first time only (a marker file remembers)."""
    directory, n = item
    if n == 3 and _count(directory, "crashed") == 1:
        os._exit(1)
    return n


def pid_then_sleep(item: tuple[str, float]) -> int:
    """Writes the worker's pid to ``directory/pid``, then sleeps."""
    directory, seconds = item
    Path(directory, "pid").write_text(str(os.getpid()), encoding="ascii")
    time.sleep(seconds)
    return os.getpid()


class NeedsTwoArgs(Exception):
    """Cannot be rebuilt from its args by pickle: it needs two and gets one."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def raise_unpicklable(x: int) -> int:
    if x == 2:
        raise NeedsTwoArgs(x, x)
    return x


def return_unpicklable(x: int) -> Any:
    if x == 2:
        return threading.Lock()
    return x


def with_lock(lock: Any, x: int) -> int:
    return x


def mixed(item: tuple[str, int]) -> int:
    """A mix for stress tests: fast and slow items; some crash their worker once."""
    directory, n = item
    if n % 37 == 5 and _count(directory, f"mixed-{n}") == 1:
        os._exit(1)
    if n % 23 == 7:
        time.sleep(0.15)
    return n * 3


def slow_some(n: int) -> int:
    """Item 3 hangs for a while; the rest are quick."""
    time.sleep(5.0 if n == 3 else 0.001)
    return n * 2


def metered(x: int) -> int:
    """Reports usage, then fails on negative items (after reporting)."""
    import shoal

    shoal.usage(tokens=10 * abs(x), cost=0.5, requests=1)
    if x < 0:
        raise Boom(f"negative {x}")
    return x


def first_and_last_lines(chunk: Any) -> tuple[str, str]:
    """The first line of the first and of the last page of a shoal.split.PageRange."""
    texts = chunk.page_texts()
    return texts[0][1].splitlines()[0], texts[-1][1].splitlines()[0]


def throttled_once(item: tuple[str, int]) -> int:
    """Item 2 says "slow down" (retry after 10 ms) the first time, then returns n."""
    import shoal

    directory, n = item
    if n == 2 and _count(directory, "throttled") == 1:
        raise shoal.Throttled(retry_after=0.01)
    return n
