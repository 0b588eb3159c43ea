"""The Ray backend starting and stopping a Ray of its own (no cluster running in this process).

A module of its own: tests/test_backends.py keeps one Ray running for all its tests, and a Ray
that the run did not start is left running by it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# Before anything imports Ray: every Ray process listens on 127.0.0.1 only, and reports nothing.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest

import _workers as w
import shoal
from shoal.backends import RayBackend

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="no shoal[ray]")


@pytest.mark.timeout(120)
def test_ray_starts_and_stops_its_own() -> None:
    """With no Ray running, the run starts one (with the options given) and shuts it down."""
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray is running in this process already")
    here = str(Path(__file__).parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    backend = RayBackend(
        num_cpus=1, init_options={"runtime_env": {"env_vars": {"PYTHONPATH": path}}}
    )
    assert shoal.map(w.square, range(20), backend=backend) == [x * x for x in range(20)]
    assert not ray.is_initialized()
