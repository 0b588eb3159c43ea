"""Shared fixtures: a fake clock and a seeded random source for exact schedules."""

from __future__ import annotations

import random

import pytest

from shoal.testing import EventLog, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def events() -> EventLog:
    return EventLog()
