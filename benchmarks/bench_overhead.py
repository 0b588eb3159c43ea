"""Overhead: 20,000 no-op async tasks, results in input order, at most 100 at once.

The work does nothing, so what is timed is each tool's own cost per task. Every async figure is
taken inside one ``asyncio.run`` (loop creation not counted); ``shoal.map`` is the extra, sync
row and does include its loop set-up.

Target: shoal.amap at most 1.5x gather's µs per task, and faster than aiometer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import aiometer
from common import Check, Result, best, fmt, median, ratio, round_robin, time_in_loop, time_sync

import shoal

NAME = "overhead"
TITLE = "20,000 no-op async tasks, results in order, concurrency 100"
DEFAULT_REPEAT = 3

N = 20_000
CONCURRENCY = 100
MAX_VS_GATHER = 1.5

GATHER = "asyncio.gather + Semaphore(100)"
AIOMETER = "aiometer.amap(max_at_once=100)"
SHOAL = "shoal.amap(concurrency=100)"
SHOAL_SYNC = "shoal.map(concurrency=100), sync, loop set-up included"


async def noop(item: int) -> int:
    return item


async def with_gather(n: int) -> list[int]:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(item: int) -> int:
        async with semaphore:
            return await noop(item)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def with_aiometer(n: int) -> list[int]:
    # aiometer.amap yields in completion order; with no-op work that is nearly input order, and
    # the check below only asks for every result (sorting would be timed for aiometer alone).
    async with aiometer.amap(noop, range(n), max_at_once=CONCURRENCY) as results:
        return [value async for value in results]


async def with_shoal(n: int) -> list[object]:
    return await shoal.amap(noop, range(n), concurrency=CONCURRENCY)


def with_shoal_sync(n: int) -> list[int | shoal.Failure]:
    return shoal.map(noop, range(n), concurrency=CONCURRENCY)


ASYNC_TOOLS: dict[str, Callable[[int], Awaitable[Sequence[object]]]] = {
    GATHER: with_gather,
    AIOMETER: with_aiometer,
    SHOAL: with_shoal,
}


def measure(tool: str, n: int = N) -> float:
    """Seconds for one run of ``tool`` over ``n`` tasks; checks that every result came back."""
    if tool == SHOAL_SYNC:
        seconds, value = time_sync(lambda: with_shoal_sync(n))
    else:
        fn = ASYNC_TOOLS[tool]
        seconds, value = time_in_loop(lambda: fn(n))
    assert isinstance(value, list)
    expected = list(range(n))
    got = sorted(value) if tool == AIOMETER else value
    assert got == expected, f"{tool}: wrong results"
    return seconds


def run(repeat: int) -> Result:
    tools = [GATHER, AIOMETER, SHOAL, SHOAL_SYNC]
    for tool in tools:  # warm-up: imports, first-call paths, allocator arenas
        measure(tool, 1_000)
    samples = round_robin(tools, repeat, measure)
    per_task = {tool: [s / N * 1e6 for s in runs] for tool, runs in samples.items()}
    fastest = {tool: best(v) for tool, v in per_task.items()}

    result = Result(
        NAME,
        TITLE,
        ["tool", "µs/task (best)", "µs/task (median)", "vs gather (best)", "vs aiometer"],
    )
    for tool in tools:
        result.rows.append(
            [
                tool,
                fmt(fastest[tool]),
                fmt(median(per_task[tool])),
                ratio(fastest[tool], fastest[GATHER]),
                ratio(fastest[tool], fastest[AIOMETER]),
            ]
        )
    vs_gather = fastest[SHOAL] / fastest[GATHER]
    vs_aiometer = fastest[SHOAL] / fastest[AIOMETER]
    result.checks.append(
        Check(
            f"shoal.amap µs/task <= {MAX_VS_GATHER}x gather's",
            f"{fmt(fastest[SHOAL])} vs {fmt(fastest[GATHER])} µs = {vs_gather:.2f}x",
            vs_gather <= MAX_VS_GATHER,
        )
    )
    result.checks.append(
        Check(
            "shoal.amap faster than aiometer.amap",
            f"{fmt(fastest[SHOAL])} vs {fmt(fastest[AIOMETER])} µs = {vs_aiometer:.2f}x",
            vs_aiometer < 1.0,
        )
    )
    result.notes.append(
        f"best and median of {repeat} interleaved runs of {N:,} tasks each; ratios use the best."
    )
    result.notes.append(
        "aiometer.amap yields in completion order (the others in input order); "
        "its results are checked as a set."
    )
    return result
