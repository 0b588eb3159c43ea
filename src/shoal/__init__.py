"""shoal: run a big job as many small pieces at once, and never lose a piece.

Layering (each module uses only those above it)::

    _exceptions, _clock, _events       records and protocols, no logic
    _limits, _retry, _outcome,         pure policy and data: take `now` and `rng` as arguments
    _resilience
    backends/                          where one attempt runs: event loop, threads, processes,
                                       Dask, Ray (the last two imported only when chosen)
    _limited, _plan                    limited mode (work on lists); the resource check
    _run                               the scheduler: the only place that starts tasks or reads time
    _job                               the public entry points: Job, map, amap
    testing, events                    public helpers and records, re-exported thinly
"""

from ._exceptions import CircuitOpen, JobFailed, ShoalError, Throttled
from ._job import Job, amap, map
from ._limits import Limits, Rate
from ._outcome import ErrorInfo, Failure, Outcome, Run, RunStats
from ._plan import Plan, plan
from ._report import Report
from ._resilience import Breaker, Hedge, RetryBudget
from ._retry import Retry
from ._usage import usage
from ._version import __version__

__all__ = [
    "Breaker",
    "CircuitOpen",
    "ErrorInfo",
    "Failure",
    "Hedge",
    "Job",
    "JobFailed",
    "Limits",
    "Outcome",
    "Plan",
    "Rate",
    "Report",
    "Retry",
    "RetryBudget",
    "Run",
    "RunStats",
    "ShoalError",
    "Throttled",
    "__version__",
    "amap",
    "map",
    "plan",
    "usage",
]
