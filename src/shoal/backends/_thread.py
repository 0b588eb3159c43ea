"""The thread backend: blocking work in a thread pool owned by the run."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._base import Invoker


class ThreadBackend:
    """Runs blocking work in a pool of ``concurrency`` threads.

    Each call carries the caller's context variables into its thread. A thread cannot be stopped
    from outside: when an attempt times out, the scheduler moves on and the call keeps its thread
    until it returns (the process backend kills and replaces its worker instead).

    Args:
        max_workers: Threads in the pool; by default the run's concurrency.
    """

    name = "thread"

    def __init__(self, max_workers: int | None = None) -> None:
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None

    async def start(self, work: Callable[..., Any], *, concurrency: int) -> Invoker:
        workers = self._max_workers or concurrency
        self._pool = pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shoal")
        loop = asyncio.get_running_loop()
        copy_context = contextvars.copy_context

        async def call_in_thread(item: Any) -> Any:
            result = await loop.run_in_executor(pool, copy_context().run, work, item)
            if inspect.isawaitable(result):  # a plain function that returned a coroutine
                result = await result
            return result

        return call_in_thread

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # Threads still running (abandoned after a timeout) are not waited for.
            pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"ThreadBackend(max_workers={self._max_workers})"
