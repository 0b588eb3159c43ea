"""Run the benchmark suite: shoal beside its baselines, in the same run, with ratios.

Usage (from the project root)::

    .venv/bin/python benchmarks/run.py                       # everything
    .venv/bin/python benchmarks/run.py --only overhead,rate  # some workloads
    .venv/bin/python benchmarks/run.py --repeat 5            # runs per tool (default: per workload)

Prints a Markdown table per workload and a summary of the targets (PASS/FAIL), and rewrites
benchmarks/RESULTS.md with the same, the date and the machine's facts. A missed target is a
finding to report, not an error: the exit status is 0 whenever the suite ran.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import bench_backends
import bench_efficiency
import bench_journal
import bench_llm
import bench_memory
import bench_overhead
import bench_progress
import bench_rate
import bench_resilience
from common import Result, result_section, summary_table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"


class Workload:
    def __init__(self, name: str, default_repeat: int, run: Callable[[int], Result]) -> None:
        self.name = name
        self.default_repeat = default_repeat
        self.run = run


WORKLOADS = {
    w.name: w
    for w in (
        Workload(bench_overhead.NAME, bench_overhead.DEFAULT_REPEAT, bench_overhead.run),
        Workload(bench_efficiency.NAME, bench_efficiency.DEFAULT_REPEAT, bench_efficiency.run),
        Workload(bench_rate.NAME, bench_rate.DEFAULT_REPEAT, bench_rate.run),
        Workload(bench_memory.NAME, bench_memory.DEFAULT_REPEAT, bench_memory.run),
        Workload(bench_journal.NAME, bench_journal.DEFAULT_REPEAT, bench_journal.run),
        Workload(bench_progress.NAME, bench_progress.DEFAULT_REPEAT, bench_progress.run),
        *(Workload(name, repeat, run) for name, repeat, run in bench_backends.WORKLOADS),
        *(Workload(name, repeat, run) for name, repeat, run in bench_resilience.WORKLOADS),
        *(Workload(name, repeat, run) for name, repeat, run in bench_llm.WORKLOADS),
    )
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help=f"run only these workloads (of: {', '.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="runs per tool for every workload (default: "
        + ", ".join(f"{w.name} {w.default_repeat}" for w in WORKLOADS.values())
        + ")",
    )
    args = parser.parse_args(argv)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown:
            parser.error(f"unknown workload(s) {', '.join(unknown)}; use {', '.join(WORKLOADS)}")
        args.only = names
    else:
        args.only = list(WORKLOADS)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def git_commit() -> str:
    """The checked-out commit, marked when src/ differs from it (shoal is installed editable)."""
    git = shutil.which("git")
    if git is None:
        return "unknown"

    def ask(*args: str) -> str:
        proc = subprocess.run(
            [git, *args], cwd=HERE, capture_output=True, text=True, check=True, timeout=10
        )
        return proc.stdout.strip()

    try:
        commit = ask("rev-parse", "--short", "HEAD")
        dirty = ask("status", "--porcelain", "--", "../src")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} + uncommitted changes in src/" if dirty else commit


def machine_facts() -> list[tuple[str, str]]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        ("nproc", str(usable)),
        ("cpu", platform.processor() or platform.machine()),
        ("os", platform.platform()),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("shoal", f"{version('shoal')} (commit {git_commit()})"),
        ("aiometer", version("aiometer")),
        ("aiolimiter", version("aiolimiter")),
        ("mpire", version("mpire")),
        ("dask", version("dask")),
        ("ray", version("ray")),
    ]


def render(results: list[Result], facts: list[tuple[str, str]], command: str) -> str:
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    passed = sum(c.passed for r in results for c in r.checks)
    total = sum(len(r.checks) for r in results)
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {date}. Every ratio compares figures from this same run.",
        "",
        *(f"- {key}: {value}" for key, value in facts),
        "",
        f"## Targets: {passed} of {total} met",
        "",
        summary_table(results),
        "",
        "## Figures",
    ]
    for result in results:
        lines += ["", result_section(result), "", f"_(took {result.seconds:.0f} s)_"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    facts = machine_facts()  # before the run: the code that is about to be measured
    results: list[Result] = []
    for name in args.only:
        workload = WORKLOADS[name]
        repeat = args.repeat if args.repeat is not None else workload.default_repeat
        print(f"running {name} (x{repeat}) ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = workload.run(repeat)
        result.seconds = time.perf_counter() - start
        results.append(result)
        print(result_section(result), end="\n\n", flush=True)

    print("## Targets\n")
    print(summary_table(results))
    if set(args.only) != set(WORKLOADS):
        # A partial run would replace the other workloads' figures with nothing.
        print(f"\npartial run: {RESULTS.name} left as it was (run every workload to record)")
        return 0
    command = " ".join(["python benchmarks/run.py", *argv])
    RESULTS.write_text(render(results, facts, command), encoding="utf-8")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
