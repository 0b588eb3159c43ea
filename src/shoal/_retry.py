"""The retry policy: which failures are tried again, and how long to wait first.

Pure: ``Retry.backoff(attempt, rng)`` takes the random source as an argument, and the scheduler
decides everything else (it is the only place that reads the clock).

Backoff is exponential with "full jitter" (a uniform draw between 0 and the exponential ceiling),
which AWS's architecture blog ("Exponential Backoff And Jitter", 2015) showed spreads a crowd of
retrying clients best: ``uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1)))``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._exceptions import Throttled

ErrorPredicate = Callable[[BaseException], bool]


def _check_delay(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Retry({name}={value!r}): expected a number of seconds")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Retry({name}={value!r}): must be a finite number of seconds >= 0")


@dataclass(frozen=True, slots=True)
class Retry:
    """How failed attempts are tried again.

    Args:
        attempts: Attempts per piece, the first included (``attempts=1``: never retry). Note that
            ``map(retries=N)`` counts only the re-tries, so ``retries=3`` is ``attempts=4``.
        base_delay: Backoff ceiling after the first failure, in seconds; it doubles each time.
        max_delay: The ceiling never grows past this.
        on: Which failures are retried: exception classes (a tuple of them) or a predicate
            ``exc -> bool``. Others fail the piece at once, and so does an exception whose
            ``retryable`` attribute is ``False``.
        jitter: Draw the delay uniformly between 0 and the ceiling ("full jitter"); without it
            the delay is the ceiling itself.
        max_throttles: How often one piece may be throttled (``Throttled`` or an exception with a
            ``retry_after``) before it fails; throttles never use up ``attempts``.
        deadline: Seconds after a piece's first attempt started after which it is not tried
            again (``None``: no deadline).

    Raises:
        ValueError, TypeError: attempts below 1, negative delays, or ``on`` that is not exception
            classes or a callable.
    """

    attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 30.0
    on: type[BaseException] | tuple[type[BaseException], ...] | ErrorPredicate = (Exception,)
    jitter: bool = True
    max_throttles: int = 100
    deadline: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError(f"Retry(attempts={self.attempts!r}): expected a whole number >= 1")
        if self.attempts < 1:
            raise ValueError(
                f"Retry(attempts={self.attempts!r}): attempts counts the first one too, so it "
                "must be at least 1 (attempts=1 never retries)"
            )
        _check_delay("base_delay", self.base_delay)
        _check_delay("max_delay", self.max_delay)
        _check_delay("deadline", self.deadline, allow_none=True)
        if isinstance(self.max_throttles, bool) or not isinstance(self.max_throttles, int):
            raise TypeError(f"Retry(max_throttles={self.max_throttles!r}): expected an int >= 0")
        if self.max_throttles < 0:
            raise ValueError(f"Retry(max_throttles={self.max_throttles!r}): must be >= 0")
        on = self.on
        if isinstance(on, type):
            if not issubclass(on, BaseException):
                raise TypeError(f"Retry(on={on!r}): expected exception classes or a predicate")
            object.__setattr__(self, "on", (on,))
        elif isinstance(on, tuple):
            for cls in on:
                if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                    raise TypeError(
                        f"Retry(on={on!r}): {cls!r} is not an exception class; pass exception "
                        "classes or a predicate exc -> bool"
                    )
        elif not callable(on):
            raise TypeError(f"Retry(on={on!r}): expected exception classes or a predicate")

    @classmethod
    def from_retries(cls, retries: int) -> Retry:
        """``map(retries=N)``: up to N re-tries after the first attempt."""
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError(f"retries={retries!r}: expected a whole number >= 0")
        if retries < 0:
            raise ValueError(
                f"retries={retries!r}: must be >= 0 (the number of re-tries after the first "
                "attempt; 0 means try once)"
            )
        return cls(attempts=retries + 1)

    def retries_on(self, exc: BaseException) -> bool:
        """Whether a failure with ``exc`` may be tried again. An exception whose ``retryable``
        attribute is ``False`` (``shoal.http``'s permanent errors: a 400, a 401) never is."""
        if getattr(exc, "retryable", True) is False:
            return False
        on = self.on
        if isinstance(on, tuple):
            return isinstance(exc, on)
        return bool(on(exc))

    def ceiling(self, attempt: int) -> float:
        """The backoff ceiling after ``attempt`` failures (1-based)."""
        if attempt < 1:
            return 0.0
        exponent = min(attempt - 1, 1024)  # 2.0 ** 1024 overflows
        try:
            grown = self.base_delay * (2.0**exponent)
        except OverflowError:
            grown = math.inf
        return min(self.max_delay, grown)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after the ``attempt``-th failure: always in ``[0, ceiling(attempt)]``."""
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return ceiling
        return rng.uniform(0.0, ceiling)


def throttle_delay(exc: BaseException) -> float | bool | None:
    """If ``exc`` is a throttle, its ``retry_after`` (``None`` when unknown); else ``False``."""
    if isinstance(exc, Throttled):
        return exc.retry_after
    retry_after: Any = getattr(exc, "retry_after", False)
    if retry_after is False or retry_after is None:
        return False
    if isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
        return False
    if not math.isfinite(retry_after) or retry_after < 0:
        return False
    return float(retry_after)
