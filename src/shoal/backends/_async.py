"""The event-loop backend: attempts are coroutines on the scheduler's own loop."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ._base import Invoker, is_async_callable


class AsyncBackend:
    """Runs ``async def`` work on the event loop.

    A plain function given to this backend runs inline on the loop (fine for quick, non-blocking
    work; use the thread backend for anything that blocks). If it returns an awaitable, that is
    awaited.
    """

    name = "async"

    async def start(self, work: Callable[..., Any], *, concurrency: int) -> Invoker:
        if is_async_callable(work):
            invoker: Invoker = work  # the attempt awaits work(item) directly: nothing in between
            return invoker

        async def call_inline(item: Any) -> Any:
            result = work(item)
            if inspect.isawaitable(result):
                result = await result
            return result

        return call_inline

    async def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return "AsyncBackend()"
