"""The retry policy: validation, which errors retry, backoff bounds, throttle detection."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal import Retry, Throttled
from shoal._retry import throttle_delay


def test_retries_counts_only_the_retries() -> None:
    """map(retries=3) is Retry(attempts=4); retries=0 tries once."""
    assert Retry.from_retries(3).attempts == 4
    assert Retry.from_retries(0).attempts == 1


@pytest.mark.parametrize("bad", [-1, -10])
def test_negative_retries_is_a_clear_error(bad: int) -> None:
    """retries=-1 says what the number means."""
    with pytest.raises(ValueError, match="re-tries after the first attempt"):
        Retry.from_retries(bad)


def test_bad_policies_raise_at_construction() -> None:
    """Attempts below 1, negative delays and non-exception `on` are refused."""
    with pytest.raises(ValueError, match="at least 1"):
        Retry(attempts=0)
    with pytest.raises(ValueError, match="base_delay"):
        Retry(base_delay=-1)
    with pytest.raises(ValueError, match="max_delay"):
        Retry(max_delay=float("inf"))
    with pytest.raises(TypeError, match="not an exception class"):
        Retry(on=(ValueError, "KeyError"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Retry(on=int)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Retry(attempts=2.0)  # type: ignore[arg-type]


def test_on_accepts_a_class_a_tuple_or_a_predicate() -> None:
    """`on` may be one class, a tuple of classes, or a predicate."""
    assert Retry(on=KeyError).retries_on(KeyError("x"))
    assert not Retry(on=KeyError).retries_on(ValueError("x"))
    assert Retry(on=(KeyError, ValueError)).retries_on(ValueError())
    only_503 = Retry(on=lambda exc: "503" in str(exc))
    assert only_503.retries_on(RuntimeError("HTTP 503"))
    assert not only_503.retries_on(RuntimeError("HTTP 404"))


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    """Without jitter the delays are 0.1, 0.2, 0.4 ... capped at max_delay."""
    policy = Retry(base_delay=0.1, max_delay=1.0, jitter=False)
    rng = random.Random(0)
    assert [policy.backoff(n, rng) for n in range(1, 7)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )


def test_backoff_with_jitter_is_repeatable_from_the_seed() -> None:
    """The same seed gives the same delays."""
    policy = Retry(base_delay=1.0, max_delay=60.0)
    first = [policy.backoff(n, random.Random(42)) for n in range(1, 6)]
    second = [policy.backoff(n, random.Random(42)) for n in range(1, 6)]
    assert first == second


@given(
    base=st.floats(0, 10),
    cap=st.floats(0, 100),
    attempt=st.integers(1, 5000),
    seed=st.integers(0, 2**32),
)
def test_backoff_stays_in_bounds(base: float, cap: float, attempt: int, seed: int) -> None:
    """Property: a delay is always within [0, min(cap, base * 2**(attempt-1))]."""
    policy = Retry(base_delay=base, max_delay=cap)
    delay = policy.backoff(attempt, random.Random(seed))
    assert 0.0 <= delay <= policy.ceiling(attempt) <= cap
    if attempt < 60:
        assert policy.ceiling(attempt) == min(cap, base * 2 ** (attempt - 1))


def test_throttle_detection() -> None:
    """Throttled and any exception with a numeric retry_after are throttles."""
    assert throttle_delay(Throttled(2.5)) == 2.5
    assert throttle_delay(Throttled()) is None

    class RateLimited(Exception):
        retry_after = 7

    assert throttle_delay(RateLimited()) == 7.0
    assert throttle_delay(ValueError()) is False

    class Odd(Exception):
        retry_after = "soon"

    assert throttle_delay(Odd()) is False


def test_throttled_validates_retry_after() -> None:
    """retry_after must be a finite, non-negative number of seconds."""
    with pytest.raises(ValueError, match="retry_after"):
        Throttled(-1)
    assert "retry after 2s" in str(Throttled(2))


def test_why_a_piece_gave_up_is_kept_in_its_stored_message(tmp_path: object) -> None:
    """The scheduler's reason (too many throttles) reaches ErrorInfo.message, which outcomes,
    the journal and the report keep, and not only the live exception's notes."""
    import asyncio

    import shoal
    from shoal.testing import FakeClock

    async def always_throttled(x: int) -> int:
        await asyncio.sleep(0)
        raise Throttled(0.5, "slow down")

    job = shoal.Job(always_throttled, retry=Retry(attempts=2, max_throttles=2))
    run = job.run([1], clock=FakeClock(), rng=random.Random(1))
    (failure,) = run.failures
    assert failure.error.message == (
        "slow down (throttled 3 times, more than Retry(max_throttles=2) allows)"
    )
