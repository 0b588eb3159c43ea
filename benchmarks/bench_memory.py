"""Memory: 1,000,000 items from a lazy generator, no-op work, concurrency 100.

Each variant runs in a fresh subprocess (this file, run as a script with the variant's name),
which reads the peak RSS (``ru_maxrss``) after imports and a small warm-up run, then again after
the big run: the growth is what the run itself needed at its peak. The time per item is taken
inside the event loop, as for the other workloads.

Variants: shoal's ``Job.stream`` (outcomes consumed as they come), ``asyncio.gather`` with a
semaphore (every task created up front) and a bounded ``asyncio.Queue(100)`` with 100 workers.

Target: shoal's growth <= 20 MB, and its µs per item <= 2x the bounded queue's.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from common import Check, Result, best, fmt, ratio, time_in_loop

import shoal

NAME = "memory"
TITLE = "1,000,000 lazy items, no-op, concurrency 100, consumed as a stream"
DEFAULT_REPEAT = 3

N = 1_000_000
WARMUP = 2_000
CONCURRENCY = 100
MAX_GROWTH_MB = 20.0
MAX_VS_QUEUE = 2.0
CHILD_TIMEOUT = 300.0  # seconds; the child is killed if it takes longer

SHOAL = "shoal.Job(...).stream(gen())"
GATHER = "asyncio.gather + Semaphore(100), all tasks up front"
QUEUE = "asyncio.Queue(100) + 100 workers"


def items(n: int) -> Iterator[int]:
    """The lazy source: nothing is materialised ahead of the consumer."""
    yield from range(n)


async def noop(item: int) -> int:
    return item


async def with_shoal(n: int) -> int:
    job: shoal.Job[int, int] = shoal.Job(noop, limits=shoal.Limits(concurrency=CONCURRENCY))
    count = 0
    async for outcome in job.stream(items(n)):
        count += outcome.ok
    return count


async def with_gather(n: int) -> int:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(item: int) -> int:
        async with semaphore:
            return await noop(item)

    results = await asyncio.gather(*(one(i) for i in items(n)))
    return len(results)


async def with_queue(n: int) -> int:
    queue: asyncio.Queue[int | None] = asyncio.Queue(CONCURRENCY)
    count = 0

    async def worker() -> None:
        nonlocal count
        while (item := await queue.get()) is not None:
            await noop(item)
            count += 1

    workers = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
    for item in items(n):
        await queue.put(item)
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    return count


VARIANTS: dict[str, tuple[str, Callable[[int], Awaitable[int]]]] = {
    "gather": (GATHER, with_gather),
    "queue": (QUEUE, with_queue),
    "shoal": (SHOAL, with_shoal),
}


def peak_rss_kib() -> int:
    """The process's peak resident set size so far (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(variant: str, n: int) -> dict[str, float]:
    """Run one variant in this process; return its figures."""
    _, fn = VARIANTS[variant]
    _, count = time_in_loop(lambda: fn(WARMUP))
    assert count == WARMUP, f"{variant}: warm-up settled {count} of {WARMUP}"
    gc.collect()
    before = peak_rss_kib()
    seconds, count = time_in_loop(lambda: fn(n))
    after = peak_rss_kib()
    assert count == n, f"{variant}: settled {count} of {n}"
    return {"seconds": seconds, "rss_before_kib": before, "rss_after_kib": after}


def spawn(variant: str, n: int) -> dict[str, float]:
    """Run one variant in a fresh interpreter and read its figures from its last line."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), variant, str(n)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} child failed ({proc.returncode}):\n{proc.stderr}")
    figures: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


def run(repeat: int) -> Result:
    order = ["gather", "queue", "shoal"]
    micros: dict[str, list[float]] = {v: [] for v in order}
    growth: dict[str, list[float]] = {v: [] for v in order}
    for round_ in range(repeat):
        for variant in order:
            if variant == "gather" and round_ > 0:
                continue  # the 1 GB baseline: once is enough to show its growth and speed
            figures = spawn(variant, N)
            micros[variant].append(figures["seconds"] / N * 1e6)
            growth[variant].append((figures["rss_after_kib"] - figures["rss_before_kib"]) / 1024)

    fastest = {v: best(micros[v]) for v in order}
    most = {v: max(growth[v]) for v in order}
    result = Result(
        NAME,
        TITLE,
        ["tool", "peak RSS growth, MB (worst)", "µs/item (best)", "µs/item vs queue"],
    )
    for variant in order:
        label, _ = VARIANTS[variant]
        result.rows.append(
            [
                label,
                fmt(most[variant], 1),
                fmt(fastest[variant]),
                ratio(fastest[variant], fastest["queue"]),
            ]
        )
    result.checks.append(
        Check(
            f"shoal stream: peak RSS growth <= {MAX_GROWTH_MB:g} MB",
            f"{most['shoal']:.1f} MB (gather {most['gather']:,.0f} MB, "
            f"queue {most['queue']:.1f} MB)",
            most["shoal"] <= MAX_GROWTH_MB,
        )
    )
    vs_queue = fastest["shoal"] / fastest["queue"]
    result.checks.append(
        Check(
            f"shoal stream: µs/item <= {MAX_VS_QUEUE:g}x the bounded queue's",
            f"{fmt(fastest['shoal'])} vs {fmt(fastest['queue'])} µs = {vs_queue:.2f}x",
            vs_queue <= MAX_VS_QUEUE,
        )
    )
    result.notes.append(
        f"{N:,} items; each variant in a fresh subprocess, {repeat} run(s) each (gather once); "
        "growth = "
        "ru_maxrss after the run minus ru_maxrss after imports and a warm-up run."
    )
    result.notes.append(
        "the designs differ: gather creates one asyncio.Task per item; the queue and shoal reuse "
        "100 long-lived workers; shoal holds at most a window of items, gather all of them."
    )
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in VARIANTS:
        print(f"usage: bench_memory.py {{{','.join(VARIANTS)}}} N", file=sys.stderr)
        return 2
    print(json.dumps(child(argv[0], int(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
