"""Shared helpers for the benchmark scripts: timing, summaries, results and Markdown tables.

Every workload module exposes ``NAME``, ``TITLE``, ``DEFAULT_REPEAT`` and
``run(repeat: int) -> Result``. A :class:`Result` holds one table of figures (one row per tool,
the baselines first) and the :class:`Check` of each target, all measured in the same run.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Check:
    """One target from the issue, and whether shoal met it in this run."""

    target: str
    measured: str
    passed: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"


@dataclass(slots=True)
class Result:
    """A workload's figures: a table (header + rows of cells), the checks, and notes."""

    name: str
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # how long the workload took to benchmark, all repeats included


# ---------------------------------------------------------------------------------- timing


def time_in_loop(make: Callable[[], Awaitable[object]]) -> tuple[float, object]:
    """Seconds taken by ``await make()`` inside a fresh ``asyncio.run``, and its value.

    The clock starts once the loop is running, so loop creation and teardown are not counted.
    A full garbage collection runs first so one tool's garbage is not collected on another's time.
    """

    async def main() -> tuple[float, object]:
        start = time.perf_counter()
        value = await make()
        return time.perf_counter() - start, value

    gc.collect()
    return asyncio.run(main())


def time_sync(call: Callable[[], object]) -> tuple[float, object]:
    """Seconds taken by ``call()`` from plain code (whatever set-up it does is counted)."""
    gc.collect()
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def round_robin(
    tools: Sequence[str], repeat: int, measure: Callable[[str], float]
) -> dict[str, list[float]]:
    """Run ``measure(tool)`` ``repeat`` times per tool, interleaved, so drift hits all alike."""
    samples: dict[str, list[float]] = {tool: [] for tool in tools}
    for _ in range(repeat):
        for tool in tools:
            samples[tool].append(measure(tool))
    return samples


def best(samples: Sequence[float]) -> float:
    return min(samples)


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


# ---------------------------------------------------------------------------------- formatting


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def ratio(value: float, baseline: float) -> str:
    """``value / baseline`` as ``1.23x`` (the baseline's own row shows ``1.00x``)."""
    return f"{value / baseline:.2f}x"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table, columns padded so it also reads as plain text."""
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def summary_table(results: Sequence[Result]) -> str:
    """One row per target: the workload, the target, what shoal did, PASS or FAIL."""
    rows = [
        [r.name, check.target, check.measured, check.verdict] for r in results for check in r.checks
    ]
    return markdown_table(["workload", "target", "measured (same run)", "result"], rows)


def result_section(result: Result, level: str = "###") -> str:
    parts = [
        f"{level} {result.name}: {result.title}",
        "",
        markdown_table(result.header, result.rows),
    ]
    if result.notes:
        parts.append("")
        parts.extend(f"- {note}" for note in result.notes)
    return "\n".join(parts)
