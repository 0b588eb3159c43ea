"""Journal: the cost of recording every piece in SQLite, and the speed of a resume.

1. 20,000 no-op async tasks with the journal on, beside the same run with it off.
2. Resuming a finished 20,000-piece run (every piece read back, none run), beside a fresh run of
   the same journaled job. The resume's timing ends with its Run returned, ``run.values`` ready;
   the outcomes of pieces read back are made when ``run.outcomes`` is first asked for, and the
   time that takes is reported beside it.

Each figure is taken inside one ``asyncio.run`` (``job.arun``), in a temporary folder that is
removed afterwards.

Targets: journal on at most 3x the µs per task of journal off; resume under 0.2x the fresh run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import Check, Result, best, fmt, median, round_robin, time_in_loop

import shoal

NAME = "journal"
TITLE = "20,000 no-op async tasks: journal off, on, and a resume of the finished run"
DEFAULT_REPEAT = 7

N = 20_000
CONCURRENCY = 100
MAX_ON_VS_OFF = 3.0
MAX_RESUME_VS_FRESH = 0.2

OFF = "shoal, journal off"
ON = "shoal, journal on (fresh file)"
RESUME = "shoal, resume of the finished run"


async def noop(item: int) -> int:
    return item


JOB = shoal.Job(noop, limits=shoal.Limits(concurrency=CONCURRENCY), name="bench-journal")


class Files:
    """Fresh journal paths in one temporary folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0
        self.finished: Path | None = None
        self.outcomes_seconds: list[float] = []  # making a resumed run's outcomes afterwards

    def fresh(self) -> Path:
        self.count += 1
        return self.root / f"run{self.count}.db"


def measure(tool: str, files: Files, n: int = N) -> float:
    if tool == OFF:
        seconds, value = time_in_loop(lambda: JOB.arun(range(n)))
    elif tool == ON:
        path = files.fresh()
        seconds, value = time_in_loop(lambda: JOB.arun(range(n), journal=path))
        files.finished = path
    else:
        assert files.finished is not None, "a fresh run comes first"
        path = files.finished
        seconds, value = time_in_loop(lambda: JOB.arun(range(n), journal=path))
        assert isinstance(value, shoal.Run)
        assert value.stats.resumed == n, f"resumed {value.stats.resumed} of {n}"
        start = time.perf_counter()
        outcomes = value.outcomes
        if n == N:
            files.outcomes_seconds.append(time.perf_counter() - start)
        assert [o.value for o in outcomes] == list(range(n))
    assert isinstance(value, shoal.Run)
    assert value.values == list(range(n)), f"{tool}: wrong results"
    return seconds


def run(repeat: int) -> Result:
    tools = [OFF, ON, RESUME]  # the order matters: each resume reads the run just before it
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as folder:
        files = Files(Path(folder))
        for tool in tools:  # warm-up
            measure(tool, files, 1_000)
        files.finished = None
        samples = round_robin(tools, repeat, lambda tool: measure(tool, files))
    per_task = {tool: [s / N * 1e6 for s in runs] for tool, runs in samples.items()}
    fastest = {tool: best(v) for tool, v in per_task.items()}

    result = Result(
        NAME,
        TITLE,
        ["run", "µs/piece (best)", "µs/piece (median)", "wall s (best)", "vs journal off"],
    )
    for tool in tools:
        result.rows.append(
            [
                tool,
                fmt(fastest[tool]),
                fmt(median(per_task[tool])),
                fmt(fastest[tool] * N / 1e6, 3),
                f"{fastest[tool] / fastest[OFF]:.2f}x",
            ]
        )
    on_vs_off = fastest[ON] / fastest[OFF]
    resume_vs_fresh = fastest[RESUME] / fastest[ON]
    result.checks.append(
        Check(
            f"journal on: µs/task <= {MAX_ON_VS_OFF}x journal off",
            f"{fmt(fastest[ON])} vs {fmt(fastest[OFF])} µs = {on_vs_off:.2f}x",
            on_vs_off <= MAX_ON_VS_OFF,
        )
    )
    result.checks.append(
        Check(
            f"resume of a finished run < {MAX_RESUME_VS_FRESH}x a fresh run's wall",
            f"{fastest[RESUME] * N / 1e6:.3f} vs {fastest[ON] * N / 1e6:.3f} s = "
            f"{resume_vs_fresh:.2f}x",
            resume_vs_fresh < MAX_RESUME_VS_FRESH,
        )
    )
    result.notes.append(
        f"best and median of {repeat} interleaved rounds (off, on, resume); the journal commits "
        "every 2,000 settled pieces or 0.5 s; a resume preloads the settled pieces in one scan "
        "and returns with run.values ready. Making the resumed run's 20,000 outcomes afterwards "
        f"(run.outcomes, first asked): {fmt(best(files.outcomes_seconds) * 1e3, 1)} ms best, "
        f"{fmt(median(files.outcomes_seconds) * 1e3, 1)} ms median."
    )
    return result
