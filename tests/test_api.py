"""The public surface: exactly these names, documented, and the helpers in shoal.testing."""

from __future__ import annotations

import asyncio

import pytest

import shoal
import shoal.events
import shoal.testing

PUBLIC = {
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
}


def test_exported_members_are_exactly_the_public_api() -> None:
    """shoal exports a small, fixed set of names; each public one is documented."""
    assert set(shoal.__all__) == PUBLIC
    for name in PUBLIC - {"__version__"}:
        assert getattr(shoal, name).__doc__, name


def test_exception_tree() -> None:
    """Every shoal exception derives from ShoalError."""
    assert issubclass(shoal.Throttled, shoal.ShoalError)
    assert issubclass(shoal.JobFailed, shoal.ShoalError)
    assert issubclass(shoal.CircuitOpen, shoal.ShoalError)


def test_version_is_a_string() -> None:
    """__version__ is set."""
    assert isinstance(shoal.__version__, str)
    assert shoal.__version__


def test_fake_clock_records_sleeps_and_jumps() -> None:
    """FakeClock.sleep records the delay and takes no real time."""
    clock = shoal.testing.FakeClock(start=5.0, wall_start=100.0)

    async def main() -> float:
        await clock.sleep(3600)
        await asyncio.sleep(60)
        return clock.now()

    assert clock.run(main()) == 5.0 + 3600 + 60
    assert clock.sleeps == [3600]
    assert clock.wall() == 100.0 + 3660


def test_fake_clock_refuses_a_foreign_loop() -> None:
    """FakeClock.sleep on an ordinary loop says how to use it."""
    clock = shoal.testing.FakeClock()
    with pytest.raises(RuntimeError, match=r"clock.run"):
        asyncio.run(clock.sleep(1))


def test_fake_clock_advance() -> None:
    """advance() moves time forward only."""
    clock = shoal.testing.FakeClock()
    clock.advance(2.5)
    assert clock.now() == 2.5
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_event_log_filters_by_kind() -> None:
    """EventLog keeps events and filters them by class."""
    log = shoal.testing.EventLog()
    started = shoal.events.AttemptStarted(0.0, 0, "", 1)
    log(started)
    assert log.of(shoal.events.AttemptStarted) == [started]
    assert log.of(shoal.events.PieceFailed) == []
    assert len(log) == 1


def test_events_are_frozen() -> None:
    """Event records cannot be changed by a subscriber."""
    event = shoal.events.PieceSucceeded(1.0, 3, "k", 1, 0.5)
    with pytest.raises(AttributeError):
        event.index = 4  # type: ignore[misc]


def test_outcome_unwrap() -> None:
    """Outcome.unwrap gives the value or raises the original error."""
    run = shoal.Job(lambda x: 1 // x, retry=shoal.Retry(attempts=1)).run([1, 0])
    assert run.outcomes[0].unwrap() == 1
    with pytest.raises(ZeroDivisionError):
        run.outcomes[1].unwrap()
    assert "1 succeeded, 1 failed" in repr(run)
    assert not run.ok


def test_outcome_is_a_frozen_record_with_its_documented_signature() -> None:
    """Outcome's quicker __init__ keeps the dataclass's signature and behaviour."""
    import dataclasses
    import inspect
    import pickle

    names = [f.name for f in dataclasses.fields(shoal.Outcome)]
    assert list(inspect.signature(shoal.Outcome).parameters) == names
    one = shoal.Outcome(0, "a", True, 1, None, 1, 10.0, 11.5, key="k")
    assert one == shoal.Outcome(0, "a", True, 1, None, 1, 10.0, 11.5, "k")
    assert hash(one) == hash(shoal.Outcome(0, "a", True, 1, None, 1, 10.0, 11.5, "k"))
    assert (one.throttles, one.id, one.retry_causes, one.usage) == (0, "", (), None)
    assert one.duration == 1.5
    assert pickle.loads(pickle.dumps(one)) == one  # noqa: S301 - our own bytes
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.value = 2  # type: ignore[misc]
    assert dataclasses.replace(one, value=3).value == 3
    with pytest.raises(TypeError):
        shoal.Outcome(0, "a")  # type: ignore[call-arg]


def test_error_type_names_are_short_for_scripts_and_job_files() -> None:
    """Built-ins and scripts by class name, job files by file name, the rest by module."""
    from shoal._outcome import type_name

    job_error = type("ParseError", (Exception,), {"__module__": "shoal._jobfiles./jobs/my%2Escan"})
    script_error = type("Oops", (Exception,), {"__module__": "__main__"})
    assert type_name(job_error()) == "my.scan.ParseError"
    assert type_name(script_error()) == "Oops"
    assert type_name(KeyError()) == "KeyError"
    assert type_name(shoal.Throttled()) == "shoal._exceptions.Throttled"
    assert shoal.ErrorInfo.from_exception(job_error("x")).type == "my.scan.ParseError"


def test_the_job_file_package_name_is_written_once() -> None:
    """shoal._modnames names the package job files load into; it must be that package."""
    from shoal import _jobfiles, _modnames

    assert _jobfiles.__name__ + "." == _modnames.JOB_FILES
    path = "/jobs/my.scan.py"
    assert _modnames.file_of(_modnames.module_name(path)) == path
    assert _modnames.job_file_stem(_modnames.module_name(path)) == "my.scan"
