"""Efficiency: 5,000 tasks of ``asyncio.sleep(0.02)``, 100 at once; the ideal wall is 1.0 s.

Efficiency is ideal / wall: how much of the concurrency limit the tool keeps busy. Each tool
also reports the most tasks it had in flight at once, which must be exactly 100.

The first row is no tool at all: 100 tasks that each sleep 50 times in a row, the best any
limiter could do on this event loop (its timers fire late by up to a millisecond, and 100 wake-ups
per round queue behind each other). "vs floor" is that row's wall divided by the tool's.

Target: shoal's efficiency >= 0.97.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import aiometer
from common import (
    Check,
    Result,
    best,
    fmt,
    median,
    ratio,
    round_robin,
    time_in_loop,
    time_sync,
)

import shoal

NAME = "efficiency"
TITLE = "5,000 tasks x 20 ms asyncio.sleep, concurrency 100 (ideal 1.0 s)"
DEFAULT_REPEAT = 3

N = 5_000
SLEEP = 0.02
CONCURRENCY = 100
IDEAL = N / CONCURRENCY * SLEEP
MIN_EFFICIENCY = 0.97

FLOOR = "floor: 100 fixed chains of 50 sleeps, no limiter"
GATHER = "asyncio.gather + Semaphore(100)"
AIOMETER = "aiometer.amap(max_at_once=100)"
SHOAL_AMAP = "shoal.amap(concurrency=100) in asyncio.run"
SHOAL = "shoal.map(concurrency=100) (its own loop)"

Work = Callable[[int], Awaitable[int]]


class Gauge:
    """Counts the tasks in flight and remembers the most at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def work(self, sleep: float) -> Work:
        async def sleeper(item: int) -> int:
            self.now += 1
            self.peak = max(self.peak, self.now)
            try:
                await asyncio.sleep(sleep)
            finally:
                self.now -= 1
            return item

        return sleeper


async def with_chains(work: Work, n: int) -> Sequence[object]:
    """The floor: each of 100 tasks runs its share of the items in a row, nothing to schedule."""

    async def chain(first: int) -> list[int]:
        return [await work(item) for item in range(first, n, CONCURRENCY)]

    chains = await asyncio.gather(*(chain(i) for i in range(CONCURRENCY)))
    return [value for values in chains for value in values]


async def with_gather(work: Work, n: int) -> Sequence[object]:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(item: int) -> int:
        async with semaphore:
            return await work(item)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def with_aiometer(work: Work, n: int) -> Sequence[object]:
    async with aiometer.amap(work, range(n), max_at_once=CONCURRENCY) as results:
        return [value async for value in results]


async def with_shoal(work: Work, n: int) -> Sequence[object]:
    return await shoal.amap(work, range(n), concurrency=CONCURRENCY)


TOOLS: dict[str, Callable[[Work, int], Awaitable[Sequence[object]]]] = {
    FLOOR: with_chains,
    GATHER: with_gather,
    AIOMETER: with_aiometer,
    SHOAL_AMAP: with_shoal,
}
SYNC_TOOLS: dict[str, Callable[[Work, int], Sequence[object]]] = {
    # shoal's synchronous entry point makes its own loop, whose timers fire on time
    SHOAL: lambda work, n: shoal.map(work, range(n), concurrency=CONCURRENCY),
}


def measure(tool: str, peaks: dict[str, int], n: int = N, sleep: float = SLEEP) -> float:
    """Wall seconds for one run; records the tool's peak in-flight count in ``peaks``."""
    gauge = Gauge()
    if tool in SYNC_TOOLS:
        call = SYNC_TOOLS[tool]
        seconds, value = time_sync(lambda: call(gauge.work(sleep), n))
    else:
        fn = TOOLS[tool]
        seconds, value = time_in_loop(lambda: fn(gauge.work(sleep), n))
    assert isinstance(value, list)
    assert sorted(value) == list(range(n)), f"{tool}: wrong results"
    peaks[tool] = max(peaks.get(tool, 0), gauge.peak)
    return seconds


def run(repeat: int) -> Result:
    tools = [*TOOLS, *SYNC_TOOLS]
    peaks: dict[str, int] = {}
    for tool in tools:  # warm-up
        measure(tool, {}, n=500, sleep=0.001)
    samples = round_robin(tools, repeat, lambda tool: measure(tool, peaks))
    wall = {tool: best(v) for tool, v in samples.items()}

    result = Result(
        NAME,
        TITLE,
        [
            "tool",
            "wall s (best)",
            "wall s (median)",
            "efficiency (best)",
            "max in flight",
            "wall vs gather",
            "vs floor",
        ],
    )
    for tool in tools:
        result.rows.append(
            [
                tool,
                fmt(wall[tool], 3),
                fmt(median(samples[tool]), 3),
                fmt(IDEAL / wall[tool], 3),
                str(peaks[tool]),
                ratio(wall[tool], wall[GATHER]),
                f"{wall[FLOOR] / wall[tool]:.3f}",
            ]
        )
    efficiency = IDEAL / wall[SHOAL]
    result.checks.append(
        Check(
            f"shoal efficiency (ideal {IDEAL:.1f} s / wall) >= {MIN_EFFICIENCY}",
            f"{efficiency:.3f} (wall {wall[SHOAL]:.3f} s; gather {IDEAL / wall[GATHER]:.3f}, "
            f"no-limiter floor {IDEAL / wall[FLOOR]:.3f})",
            efficiency >= MIN_EFFICIENCY,
        )
    )
    result.checks.append(
        Check(
            f"shoal never over {CONCURRENCY} in flight",
            f"max {peaks[SHOAL]}",
            peaks[SHOAL] <= CONCURRENCY,
        )
    )
    result.notes.append(
        f"best and median of {repeat} interleaved runs; efficiency = {IDEAL:.1f} s / best wall."
    )
    return result
