"""Rate: 300 tasks at 100 per second.

The work records ``time.monotonic()`` when it starts. For every start ``s`` the benchmark counts
the starts in ``[s, s + 1.0)`` (a sliding window anchored at each start) and reports the most;
a server that counts requests per second sees exactly that. It also reports the shortest span
of 101 consecutive starts: under 1.0 s means some window held 101 starts, and by how much.

The ideal wall is 2.99 s: 300 starts spaced 10 ms apart, the last at 2.99 s. A sliding-window
limiter may burst the whole count at once and finish sooner (about 2.0 s); that meets the target.

Target: shoal never has more than 100 starts in a window, and its wall <= 1.03x the ideal.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Sequence

import aiolimiter
import aiometer
from common import Check, Result, fmt, median, round_robin, time_in_loop

import shoal

NAME = "rate"
TITLE = "300 tasks at a rate of 100/s (ideal wall 2.99 s)"
DEFAULT_REPEAT = 2

N = 300
PER_SECOND = 100
WINDOW = 1.0
IDEAL = (N - 1) / PER_SECOND
MAX_WALL_VS_IDEAL = 1.03

AIOMETER = "aiometer.amap(max_per_second=100, max_at_once=100)"
AIOLIMITER = "aiolimiter.AsyncLimiter(100, 1) + gather"
SHOAL = 'shoal.amap(rate="100/s", concurrency=100)'

Work = Callable[[int], Awaitable[int]]


async def with_aiometer(work: Work, n: int) -> Sequence[object]:
    async with aiometer.amap(
        work, range(n), max_per_second=PER_SECOND, max_at_once=PER_SECOND
    ) as results:
        return [value async for value in results]


async def with_aiolimiter(work: Work, n: int) -> Sequence[object]:
    limiter = aiolimiter.AsyncLimiter(PER_SECOND, WINDOW)

    async def one(item: int) -> int:
        async with limiter:
            return await work(item)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def with_shoal(work: Work, n: int) -> Sequence[object]:
    return await shoal.amap(work, range(n), rate=f"{PER_SECOND}/s", concurrency=PER_SECOND)


TOOLS: dict[str, Callable[[Work, int], Awaitable[Sequence[object]]]] = {
    AIOMETER: with_aiometer,
    AIOLIMITER: with_aiolimiter,
    SHOAL: with_shoal,
}


def max_in_window(starts: Sequence[float], window: float = WINDOW) -> int:
    """The most starts in any ``[s, s + window)`` with ``s`` one of the starts."""
    ordered = sorted(starts)
    return max(
        (bisect.bisect_left(ordered, s + window) - i for i, s in enumerate(ordered)), default=0
    )


def tightest_span(starts: Sequence[float], limit: int = PER_SECOND) -> float:
    """The shortest time from a start to the ``limit``-th start after it (inf if too few)."""
    ordered = sorted(starts)
    spans = [ordered[i + limit] - ordered[i] for i in range(len(ordered) - limit)]
    return min(spans, default=float("inf"))


class Trace:
    """The figures from one run of one tool."""

    def __init__(self, wall: float, starts: list[float]) -> None:
        self.wall = wall
        self.max_window = max_in_window(starts)
        self.span = tightest_span(starts)


def measure(tool: str, traces: dict[str, list[Trace]], n: int = N) -> float:
    starts: list[float] = []

    async def work(item: int) -> int:
        starts.append(time.monotonic())
        return item

    fn = TOOLS[tool]
    seconds, value = time_in_loop(lambda: fn(work, n))
    assert isinstance(value, list)
    assert sorted(value) == list(range(n)), f"{tool}: wrong results"
    assert len(starts) == n, f"{tool}: {len(starts)} starts for {n} items"
    traces.setdefault(tool, []).append(Trace(seconds, starts))
    return seconds


def run(repeat: int) -> Result:
    tools = list(TOOLS)
    traces: dict[str, list[Trace]] = {}
    for tool in tools:  # warm-up, below the rate so nothing waits
        measure(tool, {}, n=50)
    round_robin(tools, repeat, lambda tool: measure(tool, traces))

    result = Result(
        NAME,
        TITLE,
        [
            "tool",
            "max starts in a 1 s window (worst run)",
            "shortest span of 101 starts, s",
            "wall s (median)",
            "wall / ideal",
        ],
    )
    worst: dict[str, int] = {}
    walls: dict[str, float] = {}
    for tool in tools:
        runs = traces[tool]
        worst[tool] = max(t.max_window for t in runs)
        walls[tool] = median([t.wall for t in runs])
        span = min(t.span for t in runs)
        result.rows.append(
            [
                tool,
                str(worst[tool]),
                fmt(span, 4),
                fmt(walls[tool], 3),
                f"{walls[tool] / IDEAL:.2f}x",
            ]
        )
    shoal_span = min(t.span for t in traces[SHOAL])
    result.checks.append(
        Check(
            f"shoal: no 1 s window with more than {PER_SECOND} starts",
            f"max {worst[SHOAL]} (shortest span of 101 starts {shoal_span:.4f} s; "
            f"aiometer {worst[AIOMETER]}, aiolimiter {worst[AIOLIMITER]})",
            worst[SHOAL] <= PER_SECOND,
        )
    )
    vs_ideal = walls[SHOAL] / IDEAL
    result.checks.append(
        Check(
            f"shoal wall <= {MAX_WALL_VS_IDEAL}x ideal ({IDEAL:.2f} s)",
            f"{walls[SHOAL]:.3f} s = {vs_ideal:.2f}x (aiometer {walls[AIOMETER] / IDEAL:.2f}x)",
            vs_ideal <= MAX_WALL_VS_IDEAL,
        )
    )
    result.notes.append(
        f"{repeat} interleaved runs per tool; the window count is the worst run's, "
        "the wall the median."
    )
    result.notes.append(
        "start times are taken inside the work function (time.monotonic()), "
        "i.e. when the work really starts, not when the limiter admitted it."
    )
    return result
