"""The resource check ("do we have resources?"): a job and its items in, a :class:`Plan` out.

The plan is data first (the command line's ``--dry-run`` prints it; a program can read it): which
backend the job will run on, how many workers and how many attempts at once, the batch size, and
what will bound the pace, the workers or the rate limit. Before anything has run, the time a
piece takes is unknown, and so is the ETA; give the plan a few finished pieces (a run, its
outcomes, or their durations) and it adds the throughput and an ETA range.

Nothing here starts anything: CPUs come from the affinity mask, memory from ``/proc/meminfo``
(or ``os.sysconf``), and an items iterable is only measured with ``len()`` when it has one (a
generator is never consumed).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._outcome import Outcome, Run
from .backends import DaskBackend, ProcessBackend, RayBackend, ThreadBackend, auto_name
from .backends._process import usable_cpus

if TYPE_CHECKING:
    from ._job import Job

LimitedBy = Literal["workers", "rate", "unknown"]

# A spawned worker process with the standard library loaded takes about 20-40 MB; the work's own
# data comes on top. Leave room for that: a worker per this much available memory at most.
MEMORY_PER_PROCESS = 256 * 1024 * 1024
# Fewer finished pieces than this say too little about the rest for an ETA.
MIN_SAMPLE = 3


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run of a job will use, and how long it may take.

    Attributes:
        backend: Where attempts run: ``"async"``, ``"thread"``, ``"process"``, ``"dask"``,
            ``"ray"``, or the repr of a backend object.
        workers: Attempts that can *execute* at once (threads, processes, cluster slots; for the
            event loop, the concurrency).
        concurrency: The job's limit on attempts in flight.
        batch_size: Items per call in limited mode (``Job(batch_size=N)``), else ``None``.
        micro_batching: Whether small attempts travel to the workers in adaptive batches.
        limited_by: ``"workers"`` or ``"rate"``: which bounds the pace; ``"unknown"`` while a
            rate is set and no piece has been timed.
        items: The number of items (pieces), when known.
        calls: Calls of the work (``items`` divided into batches in limited mode), when known.
        cpus: Usable CPUs on this machine.
        memory_total, memory_available: Bytes, when the OS tells.
        rate: The tightest rate limit, in calls per second (``None``: no rate limit).
        per_call: Mean seconds one call took in the sample given (``None``: no sample).
        throughput: Expected calls per second (``None`` until it can be estimated).
        eta: ``(low, high)`` seconds for the whole run, once a sample and the item count are
            known.
        notes: Why the numbers are what they are, in a sentence each.
    """

    backend: str
    workers: int
    concurrency: int
    batch_size: int | None
    micro_batching: bool
    limited_by: LimitedBy
    items: int | None
    calls: int | None
    cpus: int
    memory_total: int | None
    memory_available: int | None
    rate: float | None
    per_call: float | None
    throughput: float | None
    eta: tuple[float, float] | None
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        def gib(n: int | None) -> str:
            return "unknown" if n is None else f"{n / 2**30:.1f} GiB"

        lines = [
            f"backend:      {self.backend}"
            + (" (small pieces sent in adaptive batches)" if self.micro_batching else ""),
            f"workers:      {self.workers} ({self.concurrency} attempts in flight at most)",
            f"machine:      {self.cpus} CPUs, {gib(self.memory_available)} of "
            f"{gib(self.memory_total)} memory available",
            "items:        " + ("unknown (no len())" if self.items is None else f"{self.items:,}"),
        ]
        if self.batch_size is not None:
            calls = "" if self.calls is None else f" ({self.calls:,} calls)"
            lines.append(f"batch size:   {self.batch_size} items per call{calls}")
        lines.append("rate limit:   " + ("none" if self.rate is None else f"{self.rate:g} calls/s"))
        lines.append(f"limited by:   {self.limited_by}")
        if self.per_call is not None:
            lines.append(f"per call:     {human_duration(self.per_call)} (measured)")
        if self.throughput is not None:
            lines.append(f"throughput:   {self.throughput:,.1f} calls/s")
        if self.eta is not None:
            lines.append(
                f"ETA:          {human_duration(self.eta[0])} to {human_duration(self.eta[1])}"
            )
        else:
            lines.append("ETA:          unknown until a few pieces have run")
        lines.extend(f"note:         {note}" for note in self.notes)
        return "\n".join(lines)


def human_duration(seconds: float, *, ms_digits: int = 1) -> str:
    """``12.5 ms``, ``3.4 s``, ``2.5 min``, ``1.2 h``."""
    if seconds < 1:
        return f"{seconds * 1000:.{ms_digits}f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def memory() -> tuple[int | None, int | None]:
    """(total, available) bytes of memory, from ``/proc/meminfo`` or ``os.sysconf``."""
    total = available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                name, _, rest = line.partition(":")
                if name in ("MemTotal", "MemAvailable"):
                    value = int(rest.split()[0]) * 1024
                    if name == "MemTotal":
                        total = value
                    else:
                        available = value
    except (OSError, ValueError, IndexError):
        pass
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            available = available or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            pass
    return total, available


def _durations(observed: Any) -> list[float]:
    if observed is None:
        return []
    if isinstance(observed, Run):
        observed = observed.outcomes
    durations: list[float] = []
    for entry in observed:
        if isinstance(entry, Outcome):
            if entry.ok:
                durations.append(max(0.0, entry.finished - entry.started))
        elif isinstance(entry, int | float) and not isinstance(entry, bool):
            if not math.isfinite(entry) or entry < 0:
                raise ValueError(f"observed: {entry!r} is not a duration in seconds (>= 0)")
            durations.append(float(entry))
        else:
            raise TypeError(
                f"observed: {entry!r}: expected a Run, Outcome objects or durations in seconds"
            )
    return durations


def plan(
    job: Job[Any, Any],
    items: Iterable[Any] | int | None = None,
    *,
    observed: Run[Any] | Iterable[Outcome[Any]] | Iterable[float] | None = None,
) -> Plan:
    """The resource check: what a run of ``job`` over ``items`` will use, and its ETA.

    Args:
        job: The job.
        items: The items (only ``len()`` is used, when they have one) or their number.
        observed: Pieces that ran already, to time: a :class:`Run`, its outcomes, or durations
            in seconds. With at least three, and the item count, the plan has an ETA range.

    Returns:
        A :class:`Plan` (print it for a summary).
    """
    notes: list[str] = []
    cpus = usable_cpus()
    mem_total, mem_available = memory()
    concurrency = job.limits.effective_concurrency
    backend = job.backend
    micro_batching = False

    if isinstance(backend, str):
        name = backend.strip().lower()
        if name == "auto":
            name = auto_name(job.work, job.cpu_bound)
            notes.append(
                f"auto chose {name}: "
                + (
                    "the work is an async def"
                    if name == "async"
                    else "the job is CPU-bound"
                    if name == "process"
                    else "a plain function (pass cpu_bound=True for processes)"
                )
            )
        backend_obj: Any = None
    else:
        backend_obj = backend
        name = getattr(backend, "name", type(backend).__name__)

    workers: int
    if name == "async":
        workers = concurrency
    elif name == "thread":
        configured = getattr(backend_obj, "_max_workers", None)
        if isinstance(backend_obj, ThreadBackend) and isinstance(configured, int):
            workers = configured
        else:
            workers = concurrency
    elif name == "process":
        micro_batching = True
        configured = backend_obj.workers if isinstance(backend_obj, ProcessBackend) else None
        workers = min(configured or cpus, concurrency)
        if mem_available is not None:
            by_memory = max(1, mem_available // MEMORY_PER_PROCESS)
            if by_memory < workers:
                notes.append(
                    f"memory allows about {by_memory} worker processes "
                    f"({_gib(mem_available)} available, ~{MEMORY_PER_PROCESS >> 20} MiB each)"
                )
                workers = int(by_memory)
        if concurrency < 2 * workers:
            notes.append(
                f"concurrency {concurrency} leaves little to batch for {workers} workers; "
                "raise it for many small pieces"
            )
    elif name == "dask":
        micro_batching = True
        if isinstance(backend_obj, DaskBackend) and backend_obj.address is not None:
            workers = cpus
            notes.append("an existing Dask cluster: its size is read when the run starts")
        else:
            configured = backend_obj.workers if isinstance(backend_obj, DaskBackend) else None
            workers = configured or cpus
            notes.append(f"a local Dask cluster of {workers} single-threaded workers")
    elif name == "ray":
        micro_batching = True
        if isinstance(backend_obj, RayBackend) and backend_obj.address is not None:
            workers = cpus
            notes.append("an existing Ray cluster: its size is read when the run starts")
        else:
            configured = backend_obj.num_cpus if isinstance(backend_obj, RayBackend) else None
            workers = configured or cpus
    else:
        workers = concurrency
        notes.append(f"a custom backend ({name}): taken to run up to the concurrency at once")
    parallel = max(1, min(workers, concurrency))

    count: int | None
    if isinstance(items, bool):
        raise TypeError(f"items={items!r}: expected the items, their number, or None")
    if isinstance(items, int):
        if items < 0:
            raise ValueError(f"items={items!r}: a number of items must be >= 0")
        count = items
    elif items is not None and hasattr(items, "__len__"):
        count = len(items)  # type: ignore[arg-type]
    else:
        count = None
    batch_size = job.batch_size
    calls = None if count is None else (math.ceil(count / batch_size) if batch_size else count)

    rate = _tightest_rate(job, notes)
    durations = _durations(observed)
    per_call = statistics.fmean(durations) if durations else None

    limited_by: LimitedBy
    throughput: float | None = None
    eta: tuple[float, float] | None = None
    if per_call is not None and len(durations) >= MIN_SAMPLE:
        by_workers = parallel / max(per_call, 1e-9)
        throughput = by_workers if rate is None else min(by_workers, rate)
        limited_by = "rate" if rate is not None and rate < by_workers else "workers"
        if calls is not None:
            # The mean's uncertainty (two standard errors) gives the range; a rate limit is a
            # floor on the time whichever way the durations go.
            spread = 2 * statistics.stdev(durations) / math.sqrt(len(durations))
            fast = max(per_call - spread, 1e-9)
            slow = per_call + spread
            low = calls * fast / parallel
            high = calls * slow / parallel
            if rate is not None:
                floor = calls / rate
                low, high = max(low, floor), max(high, floor)
            eta = (low, high)
    elif rate is None:
        limited_by = "workers"
    else:
        limited_by = "unknown"
        if rate < parallel:
            limited_by = "rate"
            notes.append(
                f"the rate ({rate:g}/s) is below one call per second per worker: it bounds the "
                "pace unless calls take over a second"
            )
    if count is None:
        notes.append("the number of items is unknown (an iterable without len()): no ETA")
    return Plan(
        backend=name if backend_obj is None else repr(backend_obj),
        workers=int(workers),
        concurrency=concurrency,
        batch_size=batch_size,
        micro_batching=micro_batching,
        limited_by=limited_by,
        items=count,
        calls=calls,
        cpus=cpus,
        memory_total=mem_total,
        memory_available=mem_available,
        rate=rate,
        per_call=per_call,
        throughput=throughput,
        eta=eta,
        notes=tuple(notes),
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _tightest_rate(job: Job[Any, Any], notes: list[str]) -> float | None:
    tightest: float | None = None
    for rate in job.limits.rates:
        if rate.weight is not None:
            notes.append(
                f"a weighted rate ({rate.count:g} units per {rate.per:g}s) depends on the items: "
                "left out of the estimate"
            )
            continue
        per_second = rate.per_second
        tightest = per_second if tightest is None else min(tightest, per_second)
    return tightest
