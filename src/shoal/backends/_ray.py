"""The Ray backend: attempts run as Ray tasks.

``ray`` is an optional extra (``pip install 'shoal[ray]'``), imported only here and only when this
backend is chosen. If Ray is not initialised yet, the run starts a local Ray (or connects to
``address=``) and shuts it down at its end; if it is, the run uses it and leaves it running.

Ray's own cost per task is about half a millisecond, so items travel in batches (see
``_batching``): one Ray task runs several items and reports each one's result. A worker lost
mid-run is Ray's to handle: it retries the lost task (``max_retries``), and only a task that keeps
failing for system reasons fails, each of its items then going through shoal's retry policy on its
own. An attempt whose whole batch was cancelled (a timeout) is stopped with
``ray.cancel(force=True)``, which ends the worker process running it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Awaitable, Callable
from typing import Any

from .._exceptions import ShoalError
from ._base import Invoker
from ._batching import BatchSizer, MicroBatcher
from ._process import check_picklable
from ._remote import Result, run_batch

INSTALL = "pip install 'shoal[ray]'"


def require_ray() -> None:
    """Raise an error with the install command when the extra is missing."""
    if importlib.util.find_spec("ray") is None:
        raise ShoalError(f"the ray backend needs Ray, which is not installed: {INSTALL}")


class RayBackend:
    """Runs attempts as Ray tasks, several small items per task.

    Args:
        address: A Ray cluster's address for ``ray.init`` (``None``: start Ray on this machine,
            unless it is running in this process already).
        num_cpus: CPUs for a Ray started here (default: Ray's choice, all of them).
        max_batch: The most items in one Ray task (``None``: about 20 ms of work each).
        batch_seconds: Seconds of work a batch aims for.
        max_retries: Times Ray reruns a task whose worker died.
        init_options: More keyword arguments for ``ray.init``.

    Raises:
        ShoalError: Ray is not installed (the message has the install command).
    """

    name = "ray"
    remote = True  # the work runs in other processes (see Backend)

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        max_batch: int | None = None,
        batch_seconds: float = 0.02,
        max_retries: int = 3,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        require_ray()
        BatchSizer(batch_seconds, max_batch)  # validates both
        self.address = address
        self.num_cpus = num_cpus
        self.max_batch = max_batch
        self.batch_seconds = batch_seconds
        self.max_retries = max_retries
        self.init_options = dict(init_options or {})
        self._own_ray = False
        self._batcher: MicroBatcher[Any] | None = None

    async def start(self, work: Callable[..., Any], *, concurrency: int) -> Invoker:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Typed as Any: Ray's annotations are partial, and it may not be installed where mypy runs.
        ray: Any = importlib.import_module("ray")

        check_picklable(work, "ray", ray.cloudpickle.dumps)
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "configure_logging": False,
                "log_to_driver": True,
            }
            if self.num_cpus is not None:
                options["num_cpus"] = self.num_cpus
            options.update(self.init_options)
            ray.init(address=self.address, **options)
            self._own_ray = True
        cpus = int(ray.available_resources().get("CPU", 0)) or int(
            ray.cluster_resources().get("CPU", 1)
        )
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries)(run_batch)
        work_ref = ray.put(work)  # sent once, not with every batch

        def ship(items: list[Any]) -> tuple[Any, Awaitable[list[Result]]]:
            ref = remote.remote(work_ref, items)
            return ref, ref

        def cancel(ref: Any) -> None:
            ray.cancel(ref, force=True)

        self._batcher = MicroBatcher(
            ship,
            cancel,
            slots=max(1, min(concurrency, max(1, cpus) * 2)),
            sizer=BatchSizer(self.batch_seconds, self.max_batch),
        )
        return self._batcher.submit

    async def close(self) -> None:
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            await batcher.close()
        if self._own_ray:
            self._own_ray = False
            importlib.import_module("ray").shutdown()

    def __repr__(self) -> str:
        return f"RayBackend(address={self.address!r}, num_cpus={self.num_cpus})"
