"""LLM/API fan-out against the OpenAI-compatible test server (real HTTP on loopback).

Three workloads, each with its baselines in the same run and against the same server
(``shoal.llm.testing.OpenAIServer``, in a process of its own; budgets are refilled and counts
reset before every round):

- ``llm-rate``: 500 chat requests; the server allows 100 a second (a bucket of 100 refilled at
  100/s) and answers in 20 ms. shoal is given the rate (``rpm=6000``). Baselines:
  ``asyncio.gather`` + ``Semaphore(100)`` + tenacity (retry on 429 with exponential jittered
  waits), and ``aiometer.amap(max_per_second=100)`` + tenacity. Ideal wall: N / rate = 5 s.
  Target: wall <= 1.0x ideal, at most 1% of requests answered 429.
- ``llm-adaptive``: the same, but shoal is not told the rate (adaptive concurrency, the server's
  Retry-After and x-ratelimit-* headers). Target: wall <= 1.25x ideal, at most 10% answered 429,
  all succeed.
- ``llm-tokens``: 2,000 chat requests (max_tokens 200, replies of 20-80 tokens) under 12,000
  RPM and 600,000 TPM (enforced per second, as real servers do). Baseline: a client built like
  openai-cookbook's ``api_request_parallel_processor`` (buckets that start with a minute's
  budget, a retry queue with 5 attempts, a rate-limit check that matches Azure's "429" code,
  results in completion order; httpx instead of aiohttp, and http:// allowed). Target: shoal
  finishes in <= 0.9x its time with fewer 429s.

"Answered 429" counts the server's 429 responses over the requests of the job.
"""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiometer
import httpx
import tenacity
from common import Check, Result, fmt, median

import shoal.http
import shoal.llm

N_RATE = 500
PER_SECOND = 100
LATENCY = 0.02
IDEAL = N_RATE / PER_SECOND

N_TOKENS = 2000
RPM = 12_000
TPM = 600_000
TOKEN_LATENCY = 0.05

GATHER = "gather + Semaphore(100) + tenacity"
AIOMETER = "aiometer(max_per_second=100) + tenacity"
SHOAL_RATE = "shoal.llm (rpm=6000)"
SHOAL_ADAPTIVE = "shoal.llm (no rate: adaptive)"
COOKBOOK = "cookbook-style parallel processor"
SHOAL_TOKENS = "shoal.llm (rpm, tpm)"


@dataclass(slots=True)
class Round:
    wall: float
    ok: int
    throttled: int  # 429s the server sent
    failed: int


def chat_requests(n: int, max_tokens: int = 50) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"Summarise item number {i} briefly."}],
                "max_tokens": max_tokens,
            },
        }
        for i in range(n)
    ]


def reply_length(body: dict[str, Any]) -> int:
    text = body["messages"][-1]["content"]
    return 20 + sum(text.encode()) % 61  # 20..80, fixed per request


# ---------------------------------------------------------------------------------- baselines


class RateLimited(Exception):
    def __init__(self, wait: float | None) -> None:
        super().__init__("429")
        self.wait = wait


def _wait_from(response: httpx.Response) -> float | None:
    ms = response.headers.get("retry-after-ms")
    if ms is not None:
        return float(ms) / 1000
    after = response.headers.get("retry-after")
    return float(after) if after is not None else None


def tenacity_call(
    client: httpx.AsyncClient, url: str
) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    """One request with tenacity: 429s and 5xx retried with exponential jittered waits (the
    usual hand-rolled pattern; it does not read Retry-After)."""

    @tenacity.retry(
        retry=tenacity.retry_if_exception_type((RateLimited, httpx.HTTPError)),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=5),
        stop=tenacity.stop_after_attempt(20),
        reraise=True,
    )
    async def call(request: dict[str, Any]) -> Any:
        response = await client.post(
            url, json=request["body"], headers={"X-Client-Request-Id": request["custom_id"]}
        )
        if response.status_code == 429:
            raise RateLimited(_wait_from(response))
        response.raise_for_status()
        return response.json()

    return call


async def with_gather(server: ServerProcess, requests: list[dict[str, Any]]) -> int:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as client:
        call = tenacity_call(client, server.url + "/chat/completions")
        semaphore = asyncio.Semaphore(100)

        async def one(request: dict[str, Any]) -> Any:
            async with semaphore:
                return await call(request)

        results = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
    return sum(not isinstance(r, BaseException) for r in results)


async def with_aiometer(server: ServerProcess, requests: list[dict[str, Any]]) -> int:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as client:
        call = tenacity_call(client, server.url + "/chat/completions")
        results = await aiometer.run_all(
            [functools.partial(call, r) for r in requests],
            max_per_second=PER_SECOND,
            max_at_once=100,
        )
    return len(results)


async def with_cookbook(server: ServerProcess, requests: list[dict[str, Any]]) -> tuple[int, int]:
    """Built like openai-cookbook's api_request_parallel_processor: capacity buckets that start
    full (a minute's worth), a token estimate of prompt + max_tokens, a retry queue, 5 attempts,
    a pause only after errors its check recognises as rate limits, completion order."""
    max_rpm, max_tpm = RPM, TPM
    available_requests, available_tokens = float(max_rpm), float(max_tpm)
    last_update = time.monotonic()
    retry_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    pending = iter(requests)
    in_progress = 0
    done_ok = 0
    failed = 0
    last_rate_limit_error = 0.0
    tasks: set[asyncio.Task[None]] = set()
    counter = shoal.llm.TokenCounter("gpt-4o-mini")

    def consumed(request: dict[str, Any]) -> int:
        body = request["body"]
        prompt, _ = counter.request("chat", body)
        return prompt + int(body.get("max_tokens", 15)) * int(body.get("n", 1))

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=2000)) as client:
        url = server.url + "/chat/completions"

        async def call(request: dict[str, Any]) -> None:
            nonlocal in_progress, done_ok, failed, last_rate_limit_error
            error = None
            try:
                response = await client.post(
                    url,
                    json=request["body"],
                    headers={"X-Client-Request-Id": request["custom_id"]},  # server's counts
                )
                data = response.json()
                if "error" in data:
                    error = data
                    # The cookbook's check, as users report it: Azure's "429" code only.
                    if data["error"].get("code") == "429":
                        last_rate_limit_error = time.monotonic()
            except Exception as exc:
                error = {"error": str(exc)}
            if error:
                if request["attempts_left"]:
                    retry_queue.put_nowait(request)
                else:
                    failed += 1
                    in_progress -= 1
            else:
                done_ok += 1
                in_progress -= 1

        next_request: dict[str, Any] | None = None
        exhausted = False
        while True:
            if next_request is None:
                if not retry_queue.empty():
                    next_request = retry_queue.get_nowait()
                elif not exhausted:
                    raw = next(pending, None)
                    if raw is None:
                        exhausted = True
                    else:
                        next_request = {**raw, "attempts_left": 5, "tokens": consumed(raw)}
                        in_progress += 1
            now = time.monotonic()
            elapsed = now - last_update
            available_requests = min(available_requests + max_rpm * elapsed / 60, max_rpm)
            available_tokens = min(available_tokens + max_tpm * elapsed / 60, max_tpm)
            last_update = now
            if (
                next_request is not None
                and available_requests >= 1
                and (available_tokens >= next_request["tokens"])
            ):
                available_requests -= 1
                available_tokens -= next_request["tokens"]
                next_request["attempts_left"] -= 1
                task = asyncio.create_task(call(next_request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_request = None
            if in_progress == 0 and exhausted and next_request is None and retry_queue.empty():
                break
            await asyncio.sleep(0.001)
            since_rate_limit = time.monotonic() - last_rate_limit_error
            if since_rate_limit < 15:
                await asyncio.sleep(15 - since_rate_limit)
        if tasks:
            await asyncio.gather(*tasks)
    return done_ok, failed


# ---------------------------------------------------------------------------------- the server

_SERVE = """
import json, sys, time
sys.path.insert(0, {here!r})
from shoal.llm.testing import OpenAIServer
options = json.loads(sys.argv[1])
if options.pop("vary_replies", False):
    from bench_llm import reply_length
    options["reply_tokens"] = reply_length
server = OpenAIServer(**options).start()
print(server.port, flush=True)
sys.stdin.read()  # until the benchmark closes our standard input
server.stop()
"""


class ServerProcess:
    """The test server in a process of its own, so that it does not share the benchmark's GIL
    (on 2 cores, a server in a thread slows every client down alike and blurs the figures)."""

    def __init__(self, **options: Any) -> None:
        here = str(Path(__file__).resolve().parent)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE.format(here=here), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.statuses: dict[int, int] = {}

    def reset(self) -> None:
        httpx.post(self.url.removesuffix("/v1") + "/_testing/reset", timeout=10).raise_for_status()

    def fetch(self) -> None:
        data = httpx.get(self.url.removesuffix("/v1") + "/_testing/stats", timeout=10).json()
        self.statuses = {int(k): v for k, v in data["statuses"].items()}
        assert data["max_successes"] <= 1, "a request was answered 200 twice"

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# ---------------------------------------------------------------------------------- measuring


def _round(
    server: ServerProcess, make: Callable[[], Awaitable[tuple[int, int] | int]], n: int
) -> Round:
    time.sleep(1.1)  # the last round's stragglers are over
    server.reset()

    async def main() -> tuple[float, tuple[int, int] | int]:
        start = time.perf_counter()
        value = await make()
        return time.perf_counter() - start, value

    wall, value = asyncio.run(main())
    ok, failed = value if isinstance(value, tuple) else (value, n - value)
    server.fetch()
    return Round(wall, ok, server.statuses.get(429, 0), failed)


def _shoal(
    requests: list[dict[str, Any]], **options: Any
) -> Callable[[], Awaitable[tuple[int, int]]]:
    async def make() -> tuple[int, int]:
        result = await shoal.llm.arun(requests, **options)
        return result.succeeded, result.failed + result.not_sent

    return make


def _table(
    title: str, name: str, rounds: dict[str, list[Round]], ideal: float | None, n: int
) -> Result:
    header = ["tool", "wall s (median)", "wall s (best)", "429s (median)", "succeeded"]
    if ideal is not None:
        header.insert(3, "vs ideal")
    result = Result(name, title, header)
    for tool, samples in rounds.items():
        walls = [r.wall for r in samples]
        throttled = median([r.throttled for r in samples])
        row = [
            tool,
            fmt(median(walls), 2),
            fmt(min(walls), 2),
            f"{throttled:.0f} ({throttled / n:.1%})",
            f"{min(r.ok for r in samples)}/{n}",
        ]
        if ideal is not None:
            row.insert(3, f"{median(walls) / ideal:.2f}x")
        result.rows.append(row)
    return result


def run_rate(repeat: int, adaptive: bool = False) -> Result:
    requests = chat_requests(N_RATE)
    with ServerProcess(rpm=PER_SECOND * 60, window=1.0, latency=LATENCY) as server:
        shoal_tool = SHOAL_ADAPTIVE if adaptive else SHOAL_RATE
        options: dict[str, Any] = {"base_url": server.url}
        if not adaptive:
            options["rpm"] = PER_SECOND * 60
        tools: dict[str, Callable[[], Awaitable[Any]]] = {
            GATHER: lambda: with_gather(server, requests),
            AIOMETER: lambda: with_aiometer(server, requests),
            shoal_tool: _shoal(requests, **options),
        }
        rounds: dict[str, list[Round]] = {t: [] for t in tools}
        for _ in range(repeat):  # interleaved, so drift hits every tool alike
            for tool, make in tools.items():
                rounds[tool].append(_round(server, make, N_RATE))
    name = "llm-adaptive" if adaptive else "llm-rate"
    title = (
        f"{N_RATE} requests, server allows {PER_SECOND}/s (burst {PER_SECOND}), "
        f"{'no rate given (adaptive)' if adaptive else 'rate given to shoal'}; ideal {IDEAL:g} s"
    )
    result = _table(title, name, rounds, IDEAL, N_RATE)
    mine = rounds[shoal_tool]
    wall = median([r.wall for r in mine]) / IDEAL
    share = median([r.throttled for r in mine]) / N_RATE
    everything = all(r.ok == N_RATE for r in mine)
    limit_wall, limit_share = (1.25, 0.10) if adaptive else (1.0, 0.01)
    result.checks.append(
        Check(
            f"wall <= {limit_wall}x ideal, <= {limit_share:.0%} answered 429"
            + (", all succeed" if adaptive else ""),
            f"{wall:.2f}x ideal, {share:.1%} 429"
            + (f", {min(r.ok for r in mine)}/{N_RATE} ok" if adaptive else ""),
            wall <= limit_wall and share <= limit_share and (everything or not adaptive),
        )
    )
    return result


def run_adaptive(repeat: int) -> Result:
    return run_rate(repeat, adaptive=True)


def run_tokens(repeat: int) -> Result:
    requests = chat_requests(N_TOKENS, max_tokens=200)
    with ServerProcess(
        rpm=RPM, tpm=TPM, window=1.0, latency=TOKEN_LATENCY, vary_replies=True
    ) as server:
        tools: dict[str, Callable[[], Awaitable[Any]]] = {
            COOKBOOK: lambda: with_cookbook(server, requests),
            SHOAL_TOKENS: _shoal(requests, base_url=server.url, rpm=RPM, tpm=TPM),
        }
        rounds: dict[str, list[Round]] = {t: [] for t in tools}
        for _ in range(repeat):
            for tool, make in tools.items():
                rounds[tool].append(_round(server, make, N_TOKENS))
    result = _table(
        f"{N_TOKENS} chat requests under {RPM:,} RPM and {TPM:,} TPM (max_tokens 200, replies "
        "20-80 tokens)",
        "llm-tokens",
        rounds,
        None,
        N_TOKENS,
    )
    mine, theirs = rounds[SHOAL_TOKENS], rounds[COOKBOOK]
    ratio = median([r.wall for r in mine]) / median([r.wall for r in theirs])
    fewer = median([r.throttled for r in mine]) < median([r.throttled for r in theirs])
    result.checks.append(
        Check(
            "wall <= 0.9x the cookbook-style client's, fewer 429s",
            f"{ratio:.2f}x, 429s {median([r.throttled for r in mine]):.0f} vs "
            f"{median([r.throttled for r in theirs]):.0f}; failed "
            f"{median([r.failed for r in mine]):.0f} vs {median([r.failed for r in theirs]):.0f}",
            ratio <= 0.9 and fewer,
        )
    )
    result.notes.append(
        "The cookbook-style client's rate-limit check never matches this server's 429s "
        '("code": "rate_limit_exceeded"), so it re-sends them at once and fails requests '
        "that run out of attempts; shoal pauses on them without using attempts."
    )
    return result


# ---------------------------------------------------------------------------------- http-pool

N_POOL = 2000
ONE_POOL = "httpx.AsyncClient, one pool (limits 1000/200)"
SHOAL_POOLS = "shoal.http.client() (pools of 8 per origin)"


def _requests_at_once(url: str, concurrency: int, shared: bool) -> float:
    """Seconds for N_POOL small chat requests, ``concurrency`` at a time, through one client."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

    async def main() -> float:
        if shared:
            client = await shoal.http.client()
        else:
            limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
            client = httpx.AsyncClient(limits=limits, timeout=60.0)
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                response = await client.post(url, json=body)
                response.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(N_POOL)))
        wall = time.perf_counter() - start
        if not shared:
            await client.aclose()
        return wall

    return asyncio.run(main())


def run_http_pool(repeat: int) -> Result:
    result = Result(
        "http-pool",
        f"{N_POOL:,} requests to the test server, 8 and 64 at once, through one client",
        ["client", "at once", "wall s (best)", "wall s (median)", "vs one pool (best)"],
    )
    with ServerProcess() as server:
        url = server.url + "/chat/completions"
        for concurrency in (8, 64):
            walls: dict[str, list[float]] = {ONE_POOL: [], SHOAL_POOLS: []}
            for _ in range(repeat):
                for tool, samples in walls.items():
                    samples.append(_requests_at_once(url, concurrency, tool == SHOAL_POOLS))
            base = min(walls[ONE_POOL])
            for tool, samples in walls.items():
                result.rows.append(
                    [
                        tool,
                        str(concurrency),
                        fmt(min(samples), 2),
                        fmt(median(samples), 2),
                        f"{min(samples) / base:.2f}x",
                    ]
                )
    result.notes.append(
        f"best and median of {repeat} interleaved runs; the server runs in a process of its own. "
        "No target: httpcore's pool does work for every connection it holds on each request, "
        "which the second row of each pair avoids by keeping small pools per origin."
    )
    return result


WORKLOADS: list[tuple[str, int, Callable[[int], Result]]] = [
    ("llm-rate", 2, run_rate),
    ("llm-adaptive", 2, run_adaptive),
    ("llm-tokens", 1, run_tokens),
    ("http-pool", 2, run_http_pool),
]
