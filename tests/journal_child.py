"""A child process for the journal's crash tests: runs a journaled job and logs each attempt.

    python journal_child.py JOURNAL N LOG [--commit-every K] [--export PATH]

Every attempt appends ``start I`` and, when its work is done, ``end I`` to LOG (one write each,
O_APPEND, so a kill never leaves half a line). The work sleeps a little (different per item) and
returns ``{"i": I, "square": I * I}``; items divisible by 7 fail once before succeeding.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import shoal
from shoal.journal import Journal


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("journal")
    parser.add_argument("n", type=int)
    parser.add_argument("log")
    parser.add_argument("--commit-every", type=int, default=20)
    parser.add_argument("--commit-interval", type=float, default=0.05)
    parser.add_argument("--export")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    failed_once: set[int] = set()

    async def work(i: int) -> dict[str, int]:
        os.write(log, f"start {i}\n".encode())
        await asyncio.sleep(0.001 * (i % 5))
        if i % 7 == 0 and i not in failed_once:
            failed_once.add(i)
            raise ConnectionError(f"transient failure of {i}")
        os.write(log, f"end {i}\n".encode())
        return {"i": i, "square": i * i}

    job = shoal.Job(
        work,
        limits=shoal.Limits(concurrency=args.concurrency),
        retry=shoal.Retry(attempts=3, base_delay=0.001),
        name="crash-test",
    )
    journal = Journal(
        args.journal, commit_every=args.commit_every, commit_interval=args.commit_interval
    )
    print("ready", flush=True)
    run = job.run(range(args.n), journal=journal)
    if args.export:
        run.export(args.export)
    print(f"done {run.stats.succeeded} {run.stats.failed} {run.stats.resumed}", flush=True)
    return 0 if run.ok else 1


if __name__ == "__main__":
    sys.exit(main())
