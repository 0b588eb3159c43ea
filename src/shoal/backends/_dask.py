"""The Dask backend: attempts run as tasks on a Dask distributed cluster.

``dask[distributed]`` is an optional extra (``pip install 'shoal[dask]'``), imported only here and
only when this backend is chosen. By default a ``LocalCluster`` (one single-threaded worker
process per CPU, on 127.0.0.1, its dashboard on a free port) is started for the run and stopped
at its end; with ``address=`` the run uses an existing scheduler and leaves it running.

Dask's own cost per task is about a millisecond (1.6 ms on a small machine with default
settings), so items travel in batches (see ``_batching``): one Dask task runs several items and
reports each one's result. A worker lost mid-run is Dask's to handle: it reruns the lost tasks
elsewhere (their items run again; nothing is lost), and only a task lost more often than Dask
allows fails, each of its items then going through shoal's retry policy on its own.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any

from .._exceptions import ShoalError
from ._base import Invoker
from ._batching import BatchSizer, MicroBatcher
from ._process import check_picklable, usable_cpus
from ._remote import Result, run_batch

INSTALL = "pip install 'shoal[dask]'"


def require_dask() -> None:
    """Raise an error with the install command when the extra is missing."""
    if importlib.util.find_spec("distributed") is None:
        raise ShoalError(
            f"the dask backend needs Dask distributed, which is not installed: {INSTALL}"
        )


class DaskBackend:
    """Runs attempts on a Dask cluster, several small items per Dask task.

    Args:
        address: A running scheduler's address (``"tcp://127.0.0.1:8786"``), or a
            ``distributed.Client`` connected to one (the run connects a client of its own to the
            same scheduler, on its own event loop); ``None`` starts a ``LocalCluster`` for the
            run, stopped at its end.
        workers: Worker processes of the local cluster (default: the usable CPUs).
        max_batch: The most items in one Dask task (``None``: about 50 ms of work each).
        batch_seconds: Seconds of work a batch aims for.

    Raises:
        ShoalError: Dask distributed is not installed (the message has the install command).
    """

    name = "dask"
    remote = True  # the work runs in other processes (see Backend)

    def __init__(
        self,
        address: Any = None,
        *,
        workers: int | None = None,
        max_batch: int | None = None,
        batch_seconds: float = 0.05,
    ) -> None:
        require_dask()
        if workers is not None and (isinstance(workers, bool) or workers < 1):
            raise ValueError(f"workers={workers!r}: must be a whole number >= 1, or None")
        BatchSizer(batch_seconds, max_batch)  # validates both
        self.address = address
        self.workers = workers
        self.max_batch = max_batch
        self.batch_seconds = batch_seconds
        self._cluster: Any = None
        self._client: Any = None
        self._batcher: MicroBatcher[Any] | None = None
        self._cancels: set[asyncio.Task[Any]] = set()

    async def start(self, work: Callable[..., Any], *, concurrency: int) -> Invoker:
        # Typed as Any: Dask's annotations are partial, and it may not be installed where mypy runs.
        dask: Any = importlib.import_module("dask")
        distributed: Any = importlib.import_module("distributed")
        dumps = importlib.import_module("distributed.protocol.pickle").dumps

        check_picklable(work, "dask", dumps)
        address = self.address
        if isinstance(address, distributed.Client):
            # The run needs a client on its own event loop: connect one to the same scheduler.
            address = address.scheduler.address
        if address is None:
            # Tiny tasks: don't hold tasks back on the scheduler (0.4 ms instead of 1.6 ms per
            # task on a 2-core machine); batches make that matter less, not nothing.
            with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
                self._cluster = await distributed.LocalCluster(
                    n_workers=self.workers or usable_cpus(),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",  # no fixed port: 8787 may be taken
                    asynchronous=True,
                )
            address = self._cluster
        client = await distributed.Client(address, asynchronous=True)
        self._client = client
        threads = sum((await _worker_threads(client)).values()) or 1

        def ship(items: list[Any]) -> tuple[Any, Awaitable[list[Result]]]:
            future = client.submit(run_batch, work, items, pure=False)
            return future, future

        def cancel(future: Any) -> None:
            task = asyncio.ensure_future(client.cancel(future))
            self._cancels.add(task)
            task.add_done_callback(self._cancels.discard)

        self._batcher = MicroBatcher(
            ship,
            cancel,
            slots=max(1, min(concurrency, threads * 2)),
            sizer=BatchSizer(self.batch_seconds, self.max_batch),
        )
        return self._batcher.submit

    async def close(self) -> None:
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            await batcher.close()
        if self._cancels:
            await asyncio.gather(*self._cancels, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            await cluster.close()

    def __repr__(self) -> str:
        return f"DaskBackend(address={self.address!r}, workers={self.workers})"


async def _worker_threads(client: Any) -> dict[str, int]:
    """Threads per worker, as the scheduler sees them."""
    result = client.nthreads()
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        result = await result
    return dict(result)
