"""Progress: 20,000 no-op async tasks with the live view on, beside the same run with it off.

The live view draws to a rich console on a terminal (a StringIO made to look like one, so the
frames are built and written as they would be on screen). Everything is timed inside one
``asyncio.run``. A keyed job's live view takes every piece's events (for its per-key lines) and a
plain subscriber that counts every event is shown for scale; neither has a target.

Target: live progress on costs at most 1.1x the µs per task of progress off.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from common import Check, Result, best, fmt, median, ratio, round_robin, time_in_loop
from rich.console import Console

import shoal
from shoal.events import AnyEvent
from shoal.progress import LiveProgress

NAME = "progress"
TITLE = "20,000 no-op async tasks, concurrency 100, live progress on vs off"
DEFAULT_REPEAT = 5

N = 20_000
CONCURRENCY = 100
MAX_VS_OFF = 1.1

OFF = "progress=False"
LIVE = "progress=LiveProgress (terminal console)"
LIVE_KEYED = "LiveProgress, keyed job (per-key lines)"
COUNTER = "a subscriber counting every event"


async def noop(item: int) -> int:
    return item


def console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100)


class Counter:
    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, event: AnyEvent) -> None:
        self.seen += 1


def progress_for(tool: str) -> object:
    if tool in (LIVE, LIVE_KEYED):
        return LiveProgress(console=console())
    if tool == COUNTER:
        return Counter()
    return False


def measure(tool: str, n: int = N) -> float:
    """Seconds for one run of ``tool`` over ``n`` tasks; checks that every result came back."""
    key: Callable[[int], int] | None = (lambda i: i % 4) if tool == LIVE_KEYED else None
    progress = progress_for(tool)

    async def run() -> list[int]:
        return await shoal.amap(
            noop,
            range(n),
            concurrency=CONCURRENCY,
            key=key,
            progress=progress,  # type: ignore[arg-type]
        )

    seconds, value = time_in_loop(run)
    assert value == list(range(n)), f"{tool}: wrong results"
    return seconds


def run(repeat: int) -> Result:
    tools = [OFF, LIVE, LIVE_KEYED, COUNTER]
    for tool in tools:  # warm-up: imports (rich), first-call paths
        measure(tool, 1_000)
    samples = round_robin(tools, repeat, measure)
    per_task = {tool: [s / N * 1e6 for s in runs] for tool, runs in samples.items()}
    fastest = {tool: best(v) for tool, v in per_task.items()}

    result = Result(NAME, TITLE, ["run", "µs/task (best)", "µs/task (median)", "vs off (best)"])
    for tool in tools:
        result.rows.append(
            [
                tool,
                fmt(fastest[tool]),
                fmt(median(per_task[tool])),
                ratio(fastest[tool], fastest[OFF]),
            ]
        )
    vs_off = fastest[LIVE] / fastest[OFF]
    result.checks.append(
        Check(
            f"live progress µs/task <= {MAX_VS_OFF}x progress off",
            f"{fmt(fastest[LIVE])} vs {fmt(fastest[OFF])} µs = {vs_off:.2f}x",
            vs_off <= MAX_VS_OFF,
        )
    )
    result.notes.append(
        f"best and median of {repeat} interleaved runs of {N:,} tasks each; ratios use the best."
    )
    result.notes.append(
        "the live view of an unkeyed job skips the two events every piece emits and reads the "
        "run's totals when it draws (4 times a second); a keyed job's view takes them all."
    )
    return result
