"""Where attempts run: ``"async"`` (the event loop), ``"thread"`` (a thread pool).

``resolve(name, work)`` turns a ``backend=`` argument into a backend object; ``"auto"`` picks the
event loop for ``async def`` work and threads for plain functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._async import AsyncBackend
from ._base import Backend, Invoker, is_async_callable
from ._thread import ThreadBackend

__all__ = ["AsyncBackend", "Backend", "Invoker", "ThreadBackend", "is_async_callable", "resolve"]

NAMES = ("auto", "async", "thread")


def resolve(backend: str | Backend, work: Callable[..., Any]) -> Backend:
    """A backend object for ``backend=`` (a name or an object implementing :class:`Backend`).

    Raises:
        ValueError: an unknown backend name (the message lists the known ones).
        TypeError: neither a name nor a backend object.
    """
    if isinstance(backend, str):
        name = backend.strip().lower()
        if name == "auto":
            name = "async" if is_async_callable(work) else "thread"
        if name == "async":
            return AsyncBackend()
        if name == "thread":
            return ThreadBackend()
        raise ValueError(
            f"backend={backend!r} is not a backend; use one of {', '.join(map(repr, NAMES))}, "
            "or an object with start() and close()"
        )
    if isinstance(backend, Backend):
        return backend
    raise TypeError(f"backend={backend!r}: expected a backend name or a Backend object")
