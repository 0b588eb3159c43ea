"""Resilience: hedged attempts against a heavy latency tail; retry budget + breaker in an outage.

``hedge``: 2,000 pieces, concurrency 50, in real time. Each *attempt* takes the median (40 ms)
times a lognormal factor (sigma 0.1); 1% of attempts, drawn from a seed per (item, attempt),
take 20 times the median instead (a GC pause, a slow replica: the slowness belongs to the
attempt, so a second attempt of the same piece is usually quick). The same job runs with and
without ``hedge=True`` (p95 after 20 samples, at most 5% extra attempts). Targets: hedged wall
<= 0.7x the unhedged wall, with at most 5% extra attempts.

``outage``: a dependency that fails 50% of calls (seeded per call) for 10 s, on a
``shoal.testing.FakeClock``: virtual time, so the 10 s outage and the whole run take well under
a second of real time and the schedule is exact and repeatable. 3,000 pieces, concurrency 20,
each call 0.1 s (200 calls/s), the outage from t=2 s to t=12 s; ``Retry(attempts=6,
base_delay=0.05, max_delay=1)``. Without: just that. With: the same plus ``retry_budget=True``
(20% of first attempts over 10 s, plus 10) and ``breaker=Breaker(cooldown=2.0)`` (open after 5
failures in a row or 50% of the last 20; a probe every 2 s, shorter than the outage, so it
flaps open and shut through it). Target: at least 5x fewer attempts *sent while the dependency
fails* (the load an outage gets from its clients; every piece still needs one attempt, so the
whole run's attempts cannot fall 5x; they are in the table too).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from common import Check, Result, fmt, median

import shoal
from shoal.testing import FakeClock

# ---------------------------------------------------------------------------------- hedge

HEDGE = "hedge"
HEDGE_TITLE = "2,000 pieces, 1% of attempts 20x the median (40 ms), concurrency 50"
HEDGE_REPEAT = 3
N = 2000
CONCURRENCY = 50
MEDIAN = 0.040
TAIL_SHARE = 0.01
TAIL_FACTOR = 20.0
SIGMA = 0.1
MAX_WALL_RATIO = 0.7
MAX_EXTRA = 0.05


def attempt_seconds(seed: int, item: int, n: int) -> float:
    """The n-th attempt of ``item``'s duration: the same in every run with this seed."""
    draw = random.Random(f"{seed}:{item}:{n}")
    if draw.random() < TAIL_SHARE:
        return MEDIAN * TAIL_FACTOR
    return MEDIAN * draw.lognormvariate(0.0, SIGMA)


def tail_work(seed: int) -> Callable[[int], object]:
    calls: dict[int, int] = {}

    async def work(item: int) -> int:
        n = calls.get(item, 0)
        calls[item] = n + 1
        await asyncio.sleep(attempt_seconds(seed, item, n))
        return item

    return work


def one_hedge_run(seed: int, hedge: bool) -> tuple[float, shoal.RunStats]:
    job = shoal.Job(
        tail_work(seed),
        limits=shoal.Limits(concurrency=CONCURRENCY),
        hedge=hedge,
        retry=shoal.Retry(attempts=1),
    )
    start = time.perf_counter()
    run = job.run(range(N))
    wall = time.perf_counter() - start
    assert run.ok and len(run.values) == N
    return wall, run.stats


def run_hedge(repeat: int) -> Result:
    walls: dict[bool, list[float]] = {False: [], True: []}
    attempts: dict[bool, list[int]] = {False: [], True: []}
    won: list[int] = []
    for r in range(repeat):
        seed = 1000 + r  # each repeat its own tail; both configurations see the same one
        for hedge in (False, True):
            wall, stats = one_hedge_run(seed, hedge)
            walls[hedge].append(wall)
            attempts[hedge].append(stats.attempts)
            if hedge:
                won.append(stats.hedges_won)
    ratios = [h / p for h, p in zip(walls[True], walls[False], strict=True)]
    extras = [h / p - 1 for h, p in zip(attempts[True], attempts[False], strict=True)]
    ratio = median(ratios)
    extra = max(extras)
    ideal = N / CONCURRENCY * MEDIAN
    result = Result(
        HEDGE,
        HEDGE_TITLE,
        ["run", "wall s (median)", "vs without", "attempts (median)", "hedges won (median)"],
    )
    result.rows.append(
        [
            "shoal.Job, no hedging",
            fmt(median(walls[False]), 3),
            "1.00x",
            f"{median(attempts[False]):,.0f}",
            "-",
        ]
    )
    result.rows.append(
        [
            "shoal.Job(hedge=True)",
            fmt(median(walls[True]), 3),
            f"{ratio:.2f}x",
            f"{median(attempts[True]):,.0f}",
            f"{median(won):,.0f}",
        ]
    )
    result.checks.append(
        Check(
            f"hedged wall <= {MAX_WALL_RATIO}x unhedged",
            f"{ratio:.2f}x (median of {repeat} paired runs: "
            + ", ".join(f"{x:.2f}" for x in ratios)
            + ")",
            ratio <= MAX_WALL_RATIO,
        )
    )
    result.checks.append(
        Check(
            f"hedging adds <= {MAX_EXTRA:.0%} attempts",
            f"+{extra:.1%} at most",
            extra <= MAX_EXTRA + 1e-12,
        )
    )
    result.notes.append(
        f"Real time. The ideal wall without any tail is {ideal:.2f} s ({N} x "
        f"{MEDIAN * 1000:.0f} ms / {CONCURRENCY}); each repeat draws its own tail (seed 1000 + "
        "repeat) and runs it both ways. Hedges count in attempts."
    )
    return result


# ---------------------------------------------------------------------------------- outage

OUTAGE = "outage"
OUTAGE_TITLE = "a dependency failing 50% of calls for 10 s (virtual time)"
OUTAGE_REPEAT = 1
PIECES = 3000
OUTAGE_CONCURRENCY = 20
CALL = 0.1
DOWN_FROM, DOWN_UNTIL = 2.0, 12.0
FAIL_SHARE = 0.5
MIN_FEWER = 5.0


class Dependency:
    """A service that fails half its calls (seeded per call) between two times."""

    def __init__(self, clock: FakeClock, seed: int) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self.calls = 0
        self.calls_while_down = 0

    async def call(self, item: int) -> int:
        start = self.clock.now()
        self.calls += 1
        down = DOWN_FROM <= start < DOWN_UNTIL
        self.calls_while_down += down
        failing = down and self.rng.random() < FAIL_SHARE
        await asyncio.sleep(CALL)
        if failing:
            raise ConnectionError("503 from the dependency")
        return item


CONFIGS = {
    "Retry(attempts=6) only": (False, False),
    "+ retry budget only": (True, False),
    "+ breaker only": (False, True),
    "retry budget + breaker": (True, True),
}


def one_outage_run(config: str, seed: int) -> tuple[Dependency, shoal.Run[int], float]:
    budget, breaker = CONFIGS[config]
    clock = FakeClock()
    dependency = Dependency(clock, seed)
    job = shoal.Job(
        dependency.call,
        limits=shoal.Limits(concurrency=OUTAGE_CONCURRENCY),
        retry=shoal.Retry(attempts=6, base_delay=0.05, max_delay=1.0),
        retry_budget=True if budget else None,
        breaker=shoal.Breaker(cooldown=2.0) if breaker else None,
    )
    start = time.perf_counter()
    run = job.run(range(PIECES), clock=clock, rng=random.Random(seed))
    return dependency, run, time.perf_counter() - start


def run_outage(repeat: int) -> Result:
    result = Result(
        OUTAGE,
        OUTAGE_TITLE,
        [
            "run",
            "attempts while failing",
            "vs without",
            "attempts in all",
            "retries",
            "failed pieces",
            "virtual wall s",
            "real s",
        ],
    )
    sent: dict[str, list[int]] = {config: [] for config in CONFIGS}
    for r in range(repeat):
        for config in CONFIGS:
            dependency, run, real = one_outage_run(config, seed=7 + r)
            sent[config].append(dependency.calls_while_down)
            if r == 0:
                s = run.stats
                base = sent["Retry(attempts=6) only"][0]
                result.rows.append(
                    [
                        config,
                        f"{dependency.calls_while_down:,}",
                        f"{base / dependency.calls_while_down:.1f}x fewer"
                        if dependency.calls_while_down != base
                        else "-",
                        f"{s.attempts:,}",
                        f"{s.retries:,}",
                        f"{s.failed:,} ({s.retries_denied:,} retries denied, breaker opened "
                        f"{s.breaker_opened} times)",
                        fmt(s.wall_time, 1),
                        fmt(real, 2),
                    ]
                )
    without, both = sent["Retry(attempts=6) only"], sent["retry budget + breaker"]
    factor = min(w / p for w, p in zip(without, both, strict=True))
    result.checks.append(
        Check(
            f">= {MIN_FEWER:g}x fewer attempts sent while the dependency fails",
            f"{factor:.1f}x fewer ({without[0]:,} vs {both[0]:,})",
            factor >= MIN_FEWER,
        )
    )
    result.notes.append(
        "Virtual time (shoal.testing.FakeClock): the outage is t=2-12 s of a run of about "
        f"{PIECES * CALL / OUTAGE_CONCURRENCY:.0f} s at full speed; the table's real seconds are "
        "what it took to simulate. With the breaker, pieces wait out the open spells (no piece "
        "fails for it); the budget turns the retries it refuses into failed pieces, which "
        "`shoal retry` runs again later."
    )
    return result


WORKLOADS: list[tuple[str, int, Callable[[int], Result]]] = [
    (HEDGE, HEDGE_REPEAT, run_hedge),
    (OUTAGE, OUTAGE_REPEAT, run_outage),
]
