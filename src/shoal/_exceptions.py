"""shoal's exceptions.

The tree::

    ShoalError                 anything shoal itself raises
     ├── Throttled             raised *by work*: "slow down", not a failure
     ├── CircuitOpen           a piece's key gave up (Breaker(give_up=...)): failed unsent
     └── JobFailed             raised by map/run with errors="raise"; carries the whole Run

Bad configuration raises the built-in ``ValueError`` or ``TypeError`` at construction, with a
message that says what was wrong and how to fix it. Failures of single pieces never raise on their
own: they are recorded as outcomes and, with ``errors="raise"``, gathered into one ``JobFailed``
after every piece has been attempted.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._outcome import Run


class ShoalError(Exception):
    """Base class of every exception shoal raises."""


class Throttled(ShoalError):
    """Raised from work to say "the other side asked us to slow down".

    A throttle is not a failure: the piece waits (at least ``retry_after`` seconds when given,
    otherwise the retry policy's backoff), its key pauses for the same time so its neighbours do
    not pile on, and no attempt is used up. A per-piece throttle budget
    (``Retry(max_throttles=...)``) keeps a piece from waiting forever.

    Any exception with a numeric ``retry_after`` attribute is treated the same way.

    Args:
        retry_after: Seconds the other side asked us to wait, or ``None`` to use the backoff.
        message: Optional text for reports.
    """

    def __init__(self, retry_after: float | None = None, message: str | None = None) -> None:
        if retry_after is not None:
            retry_after = float(retry_after)
            if not math.isfinite(retry_after) or retry_after < 0:
                raise ValueError(
                    f"Throttled(retry_after={retry_after!r}): retry_after must be a finite number "
                    "of seconds >= 0, or None to use the retry policy's backoff"
                )
        self.retry_after = retry_after
        if message is None:
            message = (
                "throttled" if retry_after is None else f"throttled, retry after {retry_after:g}s"
            )
        super().__init__(message)


class CircuitOpen(ShoalError):
    """A piece failed without being sent: its key's circuit breaker gave up on it
    (``shoal.Breaker(give_up=N)``: N probes in a row failed). ``shoal retry`` (or
    ``job.retry_failed``) runs such pieces again once the key is back.

    Args:
        key: The key whose breaker gave up.
        message: What happened, for reports.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


class JobFailed(ShoalError):
    """Some pieces failed after every piece was attempted (``errors="raise"``).

    The exception carries the whole run: ``.run.outcomes`` has one outcome per item (successes
    included) and ``.failures`` lists the failed ones with their items and errors.
    """

    def __init__(self, run: Run[Any]) -> None:
        self.run = run
        failures = run.failures
        lines = [f"{len(failures)} of {len(run.outcomes)} pieces failed"]
        for failure in failures[:5]:
            err = failure.error
            lines.append(
                f"  [{failure.index}] {err.type}: {err.message} "
                f"(after {failure.attempts} attempt{'s' if failure.attempts != 1 else ''})"
            )
        if len(failures) > 5:
            lines.append(f"  ... and {len(failures) - 5} more (see .failures)")
        super().__init__("\n".join(lines))

    @property
    def failures(self) -> list[Failure]:
        """The failed pieces, in input order."""
        return self.run.failures

    @property
    def outcomes(self) -> list[Outcome[Any]]:
        """One outcome per item, in input order, successes included."""
        return self.run.outcomes


if TYPE_CHECKING:
    from ._outcome import Failure, Outcome
