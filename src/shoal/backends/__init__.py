"""Where attempts run: ``"async"`` (the event loop), ``"thread"`` (a thread pool), ``"process"``
(worker processes), ``"dask"`` (a Dask cluster) and ``"ray"`` (a Ray cluster).

``resolve(name, work)`` turns a ``backend=`` argument into a backend object; ``"auto"`` picks the
event loop for ``async def`` work, worker processes for CPU-bound work (``Job(cpu_bound=True)``)
and threads for other plain functions. Dask and Ray are optional extras, imported only when
chosen; a missing one fails with its install command.

Every backend is the same small interface (:class:`Backend`: ``start`` gives an invoker,
``item -> awaitable result``; ``close``); limits, retries, timeouts and ordering stay in the
scheduler, so a job behaves the same on each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._async import AsyncBackend
from ._base import Backend, Invoker, is_async_callable
from ._dask import DaskBackend
from ._process import ProcessBackend, WorkerCrashed
from ._ray import RayBackend
from ._remote import RemoteError
from ._thread import ThreadBackend

__all__ = [
    "AsyncBackend",
    "Backend",
    "DaskBackend",
    "Invoker",
    "ProcessBackend",
    "RayBackend",
    "RemoteError",
    "ThreadBackend",
    "WorkerCrashed",
    "is_async_callable",
    "resolve",
]

NAMES = ("auto", "async", "thread", "process", "dask", "ray")


def auto_name(work: Callable[..., Any], cpu_bound: bool = False) -> str:
    """The backend ``"auto"`` stands for, for this work."""
    if is_async_callable(work):
        return "async"
    return "process" if cpu_bound else "thread"


def check_name(backend: str) -> str:
    """The normalised name; raises for an unknown name or a missing extra (before any run)."""
    name = backend.strip().lower()
    if name not in NAMES:
        raise ValueError(
            f"backend={backend!r} is not a backend; use one of {', '.join(map(repr, NAMES))}, "
            "or an object with start() and close()"
        )
    if name == "dask":
        from ._dask import require_dask

        require_dask()
    elif name == "ray":
        from ._ray import require_ray

        require_ray()
    return name


def resolve(
    backend: str | Backend, work: Callable[..., Any], *, cpu_bound: bool = False
) -> Backend:
    """A backend object for ``backend=`` (a name or an object implementing :class:`Backend`).

    Raises:
        ValueError: an unknown backend name (the message lists the known ones).
        TypeError: neither a name nor a backend object.
        shoal.ShoalError: the Dask or Ray extra is not installed (with the install command).
    """
    if isinstance(backend, str):
        name = check_name(backend)
        if name == "auto":
            name = auto_name(work, cpu_bound)
        if name == "async":
            return AsyncBackend()
        if name == "thread":
            return ThreadBackend()
        if name == "process":
            return ProcessBackend()
        if name == "dask":
            return DaskBackend()
        return RayBackend()
    if isinstance(backend, Backend):
        return backend
    raise TypeError(f"backend={backend!r}: expected a backend name or a Backend object")
