"""``shoal.llm.run``: many requests to an OpenAI-compatible server, under its limits and a budget.

How a request goes:

1. Every line is read and checked before anything is sent (a bad line stops the run, naming
   file and line). Its prompt is counted offline (``_tokens``); its reply is bounded by
   ``max_tokens`` / ``max_completion_tokens``, or estimated from recent replies.
2. Two weighted sliding-window rates hold the pace: ``rpm`` requests and ``tpm`` tokens per
   minute, each also spread over one-second windows (``rpm / 60`` and ``tpm / 60`` a second), as
   servers enforce them. A request reserves its prompt plus its reply bound in the token rate;
   when the reply's real usage comes back the reservation becomes the real count and the unused
   part is given back at once (``Rate(actual="tokens")``). Without ``rpm`` or ``tpm`` the
   concurrency is adaptive and finds the server's level from its 429s and latency.
3. A 429 or 503 pauses the request and its model (``Retry-After``, ``retry-after-ms`` and
   ``x-ratelimit-*`` honoured) without using an attempt; 5xx, timeouts and connection errors are
   retried with backoff; other 4xx fail at once. A refused request is charged nothing.
4. With ``max_cost``, a request is admitted only while what was spent, plus the most that the
   requests already admitted may still cost, plus its own most, fits the budget; when the next
   one would not fit, nothing more is admitted, the requests in flight finish, and the rest are
   reported "not sent" (a resume with a larger budget sends them).
5. Results are written in input order, one line per request: its ``custom_id``, the response,
   usage and cost, or its error class and message; failures are never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._events import AnyEvent, PieceFailed, PieceSucceeded
from .._exceptions import ShoalError
from .._http import ClientPool, check, scrub, transport_error
from .._job import Job
from .._limits import Limits, Rate
from .._loop import new_event_loop
from .._outcome import Outcome, Run
from .._retry import Retry
from .._usage import usage as report_usage
from ._requests import LLMInputError, endpoint_of, read_requests
from ._tokens import TokenCounter, reply_budget

__all__ = ["Estimate", "LLMRun", "arun", "estimate", "run"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
# The reply reservation of a request with no max_tokens, until replies have been seen; then the
# longest of the last RECENT replies.
DEFAULT_REPLY_TOKENS = 512
RECENT = 50
INSTALL_HINT = "shoal llm needs httpx and bpe-openai: pip install 'shoal[llm]'"


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a set of requests will take, before any is sent (``--dry-run``).

    ``cost_low`` counts the prompts only; ``cost_high`` adds every reply at its bound (``None``
    when some request has no ``max_tokens`` and ``reply_guess`` was used for it).
    """

    requests: int
    prompt_tokens: int
    reply_tokens_max: int
    unbounded_replies: int  # requests without max_tokens (counted at reply_guess tokens)
    estimated: bool  # prompt counts are estimates (see shoal.llm._tokens)
    encodings: tuple[str, ...]
    cost_low: float | None
    cost_high: float | None
    min_seconds: float | None  # the least time the rpm/tpm limits allow

    def __str__(self) -> str:
        lines = [
            f"requests:       {self.requests:,}",
            f"prompt tokens:  {self.prompt_tokens:,}"
            + (" (estimated)" if self.estimated else " (exact)")
            + f"  [{', '.join(self.encodings)}]",
            f"reply tokens:   at most {self.reply_tokens_max:,}"
            + (
                f" ({self.unbounded_replies:,} requests without max_tokens counted at "
                f"{DEFAULT_REPLY_TOKENS} each)"
                if self.unbounded_replies
                else ""
            ),
        ]
        if self.cost_low is not None and self.cost_high is not None:
            lines.append(f"cost:           ${self.cost_low:,.4f} to ${self.cost_high:,.4f}")
        else:
            lines.append("cost:           unknown (give --price-in and --price-out)")
        if self.min_seconds is not None:
            lines.append(f"time:           at least {self.min_seconds:,.0f} s at these limits")
        return "\n".join(lines)


@dataclass(slots=True)
class LLMRun:
    """What ``shoal.llm.run`` did.

    Attributes:
        results: One record per request, in input order (what ``out`` holds).
        run: The underlying :class:`shoal.Run` (outcomes, stats, ``run.report``).
        succeeded, failed, not_sent: Counts; ``not_sent`` were held back by the budget.
        spent: Cost of this run's attempts plus that of earlier runs in the journal.
        budget, left: ``max_cost`` and what is left of it (``None`` without a budget).
        prompt_tokens, completion_tokens: Totals over the results.
        estimated: Whether prompt counts for the limits were estimates.
    """

    results: list[dict[str, Any]]
    run: Run[Any]
    succeeded: int
    failed: int
    not_sent: int
    spent: float
    budget: float | None
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    out: str | None = None
    spent_before: float = 0.0
    throttles: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def left(self) -> float | None:
        return None if self.budget is None else max(0.0, self.budget - self.spent)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.not_sent == 0

    def summary(self) -> str:
        total = len(self.results)
        lines = [
            f"{self.succeeded:,} of {total:,} requests succeeded, {self.failed:,} failed"
            + (f", {self.not_sent:,} not sent (budget)" if self.not_sent else ""),
            f"tokens: {self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion"
            + (" (limits used estimated prompt counts)" if self.estimated else ""),
            f"throttled (429/503) {self.throttles:,} times; {self.run.stats.wall_time:,.1f} s",
        ]
        if self.budget is not None:
            left = self.left
            assert left is not None
            lines.append(
                f"cost: ${self.spent:,.4f} spent"
                + (f" (${self.spent_before:,.4f} in earlier runs)" if self.spent_before else "")
                + f", ${left:,.4f} left of ${self.budget:,.4f}"
            )
        elif self.spent:
            lines.append(f"cost: ${self.spent:,.4f}")
        if self.out:
            lines.append(f"results: {self.out}")
        lines.extend(self.notes)
        return "\n".join(lines)


class _Pricing:
    def __init__(self, price_in: float | None, price_out: float | None) -> None:
        self.known = price_in is not None or price_out is not None
        self.price_in = (price_in or 0.0) / 1e6
        self.price_out = (price_out or 0.0) / 1e6

    def cost(self, prompt: float, completion: float) -> float:
        return prompt * self.price_in + completion * self.price_out


class _Counting:
    """Token counts of every request, and the reply estimate from recent replies."""

    def __init__(self, encoding: str | None) -> None:
        self._encoding = encoding
        self._counters: dict[str, TokenCounter] = {}
        self.prompts: dict[str, int] = {}
        self.bounds: dict[str, int | None] = {}
        self.estimated = False
        self.recent: deque[int] = deque(maxlen=RECENT)

    def counter(self, model: str) -> TokenCounter:
        counter = self._counters.get(model)
        if counter is None:
            counter = self._counters[model] = TokenCounter(model, encoding=self._encoding)
        return counter

    @property
    def encodings(self) -> tuple[str, ...]:
        return tuple(sorted({c.encoding for c in self._counters.values()}))

    def add(self, request: dict[str, Any]) -> None:
        body = request["body"]
        kind = endpoint_of(request["url"]) or "chat"
        prompt, estimated = self.counter(body["model"]).request(kind, body)
        self.estimated = self.estimated or estimated
        cid = request["custom_id"]
        self.prompts[cid] = prompt
        self.bounds[cid] = 0 if kind == "embeddings" else reply_budget(body)

    def reply_guess(self) -> int:
        return max(self.recent) if len(self.recent) >= 5 else DEFAULT_REPLY_TOKENS

    def reserve(self, request: Mapping[str, Any]) -> float:
        """Tokens a request reserves in the token rate: prompt plus reply bound (or guess)."""
        cid = request["custom_id"]
        bound = self.bounds[cid]
        return float(self.prompts[cid] + (self.reply_guess() if bound is None else bound))

    def most(self, request: Mapping[str, Any]) -> tuple[int, int]:
        cid = request["custom_id"]
        bound = self.bounds[cid]
        return self.prompts[cid], self.reply_guess() if bound is None else bound


def _check_positive(name: str, value: object, *, whole: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}={value!r}: expected a number")
    if not math.isfinite(value) or value <= 0 or (whole and int(value) != value):
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"{name}={value!r}: must be {kind} > 0")


STRETCH = 1.02  # shoal's rpm/tpm windows are this much longer than the server's


def _minutes(requests: int, tokens: float, rpm: float | None, tpm: float | None) -> float | None:
    spans = []
    if rpm:
        spans.append(requests / rpm * 60)
    if tpm:
        spans.append(tokens / tpm * 60)
    return max(spans) if spans else None


def estimate(
    requests: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    *,
    model: str | None = None,
    price_in: float | None = None,
    price_out: float | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    encoding: str | None = None,
) -> Estimate:
    """Count tokens and cost of every request without sending any (``shoal llm --dry-run``).

    Raises:
        LLMInputError: the requests cannot be read (the message names file and line).
    """
    loaded = read_requests(requests, model=model)
    counting = _Counting(encoding)
    for request in loaded:
        counting.add(request)
    prompt = sum(counting.prompts.values())
    unbounded = sum(1 for b in counting.bounds.values() if b is None)
    reply = sum(DEFAULT_REPLY_TOKENS if b is None else b for b in counting.bounds.values())
    pricing = _Pricing(price_in, price_out)
    return Estimate(
        requests=len(loaded),
        prompt_tokens=prompt,
        reply_tokens_max=reply,
        unbounded_replies=unbounded,
        estimated=counting.estimated,
        encodings=counting.encodings,
        cost_low=pricing.cost(prompt, 0) if pricing.known else None,
        cost_high=pricing.cost(prompt, reply) if pricing.known else None,
        min_seconds=_minutes(len(loaded), prompt + reply, rpm, tpm),
    )


def run(
    requests: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    **options: Any,
) -> LLMRun:
    """Send every request and wait for the end; see :func:`arun` for the options."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(arun(requests, **options))


class _Budget:
    def __init__(self, limit: float, spent_before: float) -> None:
        self.limit = limit
        self.spent = spent_before
        self.reserved: dict[int, float] = {}
        self.changed = asyncio.Event()

    def committed(self) -> float:
        return self.spent + sum(self.reserved.values())

    def settle(self, index: int) -> None:
        if self.reserved.pop(index, None) is not None:
            self.changed.set()


def _journal_settled(path: str | None) -> dict[str, float]:
    """Ids of the pieces an earlier run settled, with the cost each one reported."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error:
        return {}
    try:
        rows = conn.execute(
            "SELECT id, usage FROM pieces WHERE state IN ('done', 'failed')"
        ).fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    settled: dict[str, float] = {}
    for pid, used in rows:
        cost = 0.0
        if used:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                cost = float(json.loads(used).get("cost", 0.0))
        settled[str(pid)] = cost
    return settled


async def arun(
    requests: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    *,
    out: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    api_key_env: str = DEFAULT_KEY_ENV,
    model: str | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    concurrency: int | None = None,
    adaptive: bool | None = None,
    max_cost: float | None = None,
    price_in: float | None = None,
    price_out: float | None = None,
    journal: str | os.PathLike[str] | None = None,
    timeout: float = 600.0,
    retries: int = 5,
    encoding: str | None = None,
    progress: Any = None,
    subscribers: Any = None,
) -> LLMRun:
    """Send every request to an OpenAI-compatible server; results in input order.

    Args:
        requests: A JSON Lines file (OpenAI batch lines or bare bodies) or an iterable of them.
        out: Write the results here as JSON Lines (one per request, input order).
        base_url: The API's base URL (default ``$OPENAI_BASE_URL``, else OpenAI's).
        api_key_env: The environment variable that holds the API key (never written anywhere).
        model: The model for bodies that name none.
        rpm, tpm: The server's requests and tokens per minute.
        concurrency: Requests in flight at most (default 64 with rates; adaptive up to 256
            without).
        adaptive: Adaptive concurrency (default: on when neither ``rpm`` nor ``tpm`` is given).
        max_cost: Stop admitting requests before this would be exceeded (needs the prices).
        price_in, price_out: USD per million prompt and completion tokens.
        journal: An SQLite journal: a second run with the same file resumes.
        timeout: Seconds one request may take (it is then retried).
        retries: Re-tries after the first attempt, for failures (throttles use none).
        encoding: Force a token encoding (``"o200k_base"``, ``"cl100k_base"``, ``"estimate"``).
        progress, subscribers: As for ``shoal.Job.run``.

    Raises:
        LLMInputError: bad requests or options (the message says which and how to fix them).
        ImportError: httpx is not installed (with the install command).
    """
    for name, value in (("rpm", rpm), ("tpm", tpm), ("max_cost", max_cost), ("timeout", timeout)):
        _check_positive(name, value)
    _check_positive("concurrency", concurrency, whole=True)
    for name, value in (("price_in", price_in), ("price_out", price_out)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise LLMInputError(f"{name}={value!r}: a price is USD per million tokens, >= 0")
    pricing = _Pricing(price_in, price_out)
    if max_cost is not None and not pricing.known:
        raise LLMInputError(
            "max_cost needs the prices to count cost: give price_in and price_out (USD per "
            "million prompt and completion tokens; --price-in/--price-out on the command line)"
        )
    try:
        import httpx
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc

    loaded = read_requests(requests, model=model)
    base = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise LLMInputError(f"base_url {base!r}: expected an http:// or https:// URL")
    api_key = os.environ.get(api_key_env) or None
    if api_key is None and base == DEFAULT_BASE_URL:
        raise LLMInputError(
            f"no API key: set the environment variable {api_key_env} (the key is read from there "
            "only, and never written to a log, journal or report)"
        )
    counting = _Counting(encoding)
    for request in loaded:
        counting.add(request)

    journal_path = None if journal is None else os.fspath(journal)
    settled_before = _journal_settled(journal_path)
    budget = None
    if max_cost is not None:
        spent_before = sum(settled_before.values())
        budget = _Budget(max_cost, spent_before)

    rates: list[Rate] = []
    # The server counts requests when they arrive, shoal when they start: network jitter can
    # bring a window's requests closer together there than here, and a server whose window is
    # exactly full answers the last one 429. Shoal's windows are STRETCH longer than the
    # server's, the same count in each: a margin in time, not a smaller budget.
    if rpm is not None:
        rates.append(Rate(rpm, per=60.0 * STRETCH, burst=max(1.0, rpm / 60.0)))
    if tpm is not None:
        rates.append(
            Rate(
                tpm,
                per=60.0 * STRETCH,
                burst=max(1.0, tpm / 60.0),
                weight=counting.reserve,
                actual="tokens",
            )
        )
    if adaptive is None:
        adaptive = not rates
    if concurrency is None:
        concurrency = 64 if rates else Limits.ADAPTIVE_CEILING
    limits = Limits(concurrency=concurrency, rate=rates or None, adaptive=adaptive)

    headers = {"User-Agent": "shoal-llm"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    clients = ClientPool(
        concurrency, headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0))
    )

    async def send(request: dict[str, Any]) -> dict[str, Any]:
        """One request: its response body; usage and cost reported to shoal."""
        path = request["url"]
        if base.endswith("/v1") and path.startswith("/v1/"):
            path = path[3:]
        url = base + path
        try:
            response = await clients.next().post(
                url, json=request["body"], headers={"X-Client-Request-Id": request["custom_id"]}
            )
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.ConnectError):
                report_usage(tokens=0)  # never reached the server: nothing was counted
            raise scrub(transport_error(exc, "POST", url), api_key) from exc
        if response.status_code >= 400:
            report_usage(tokens=0)  # a refused request costs nothing and uses no tokens
        try:
            check(response, pause=not rates)  # with rates given, shoal paces itself
        except ShoalError as exc:
            raise scrub(exc, api_key) from None
        data = response.json()
        used = data.get("usage") if isinstance(data, dict) else None
        prompt = completion = 0
        if isinstance(used, dict):
            prompt = int(used.get("prompt_tokens") or 0)
            completion = int(used.get("completion_tokens") or 0)
        else:
            prompt = counting.prompts[request["custom_id"]]
        counting.recent.append(completion)
        if pricing.known:
            cost = pricing.cost(prompt, completion)
            if budget is not None:
                budget.spent += cost
                budget.changed.set()
            report_usage(
                tokens=prompt + completion, input_tokens=prompt, output_tokens=completion, cost=cost
            )
        else:
            report_usage(tokens=prompt + completion, input_tokens=prompt, output_tokens=completion)
        return data if isinstance(data, dict) else {"data": data}

    not_sent: list[int] = []

    async def admitted() -> AsyncIterator[dict[str, Any]]:
        """The requests, each only once the budget has room for the most it may cost."""
        for index, request in enumerate(loaded):
            if budget is not None and request["custom_id"] not in settled_before:
                prompt_most, reply_most = counting.most(request)
                most = pricing.cost(prompt_most, reply_most)
                while budget.committed() + most > budget.limit + 1e-12:
                    if not budget.reserved:
                        not_sent.extend(range(index, len(loaded)))
                        return
                    budget.changed.clear()
                    await budget.changed.wait()
                budget.reserved[index] = most
            yield request

    def on_event(event: AnyEvent) -> None:
        if budget is not None and isinstance(event, PieceSucceeded | PieceFailed):
            budget.settle(event.index)

    subs: list[Any] = [on_event] if budget is not None else []
    if subscribers is not None:
        subs.extend([subscribers] if callable(subscribers) else list(subscribers))
    job: Job[dict[str, Any], dict[str, Any]] = Job(
        send,
        key=lambda request: request["body"]["model"],
        limits=limits,
        retry=Retry(attempts=retries + 1, base_delay=0.5, max_delay=30.0),
        timeout=timeout,
        id=lambda request: request["custom_id"],
        name="shoal llm",
    )
    try:
        result = await job.arun(
            admitted(), journal=journal_path, subscribers=subs, progress=progress
        )
    finally:
        await clients.aclose()
    return _collect(loaded, result, not_sent, counting, budget, pricing, out, settled_before)


def _collect(
    loaded: list[dict[str, Any]],
    result: Run[Any],
    not_sent: list[int],
    counting: _Counting,
    budget: _Budget | None,
    pricing: _Pricing,
    out: str | os.PathLike[str] | None,
    settled_before: dict[str, float],
) -> LLMRun:
    by_index: dict[int, Outcome[Any]] = {o.index: o for o in result.outcomes}
    records: list[dict[str, Any]] = []
    succeeded = failed = 0
    prompt_total = completion_total = 0
    spent = 0.0
    for index, request in enumerate(loaded):
        outcome = by_index.get(index)
        record: dict[str, Any] = {"custom_id": request["custom_id"], "index": index}
        if outcome is None:
            record.update(
                status="not_sent",
                response=None,
                error={
                    "type": "BudgetExceeded",
                    "message": "not sent: the cost budget (max_cost) had no room for it; "
                    "run again with the same journal and a larger budget to send it",
                },
                usage=None,
                cost=None,
                attempts=0,
            )
            records.append(record)
            continue
        used = outcome.usage or {}
        prompt = int(used.get("input_tokens", 0))
        completion = int(used.get("output_tokens", 0))
        cost = float(used.get("cost", 0.0))
        prompt_total += prompt
        completion_total += completion
        spent += cost
        usage_record = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if outcome.ok:
            succeeded += 1
            record.update(
                status="ok",
                response={"status_code": 200, "body": outcome.value},
                error=None,
            )
        else:
            failed += 1
            error = outcome.error
            assert error is not None
            record.update(
                status="failed",
                response=None,
                error={"type": error.type, "message": error.message},
            )
        record.update(
            usage=usage_record,
            cost=round(cost, 10) if pricing.known else None,
            attempts=outcome.attempts,
        )
        records.append(record)
    if out is not None:
        target = Path(out)
        partial = target.with_name(target.name + ".partial")
        with partial.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        partial.replace(target)
    spent_before = sum(
        cost for cid, cost in settled_before.items() if cid in {r["custom_id"] for r in loaded}
    )
    return LLMRun(
        results=records,
        run=result,
        succeeded=succeeded,
        failed=failed,
        not_sent=len(not_sent),
        spent=spent,
        budget=None if budget is None else budget.limit,
        prompt_tokens=prompt_total,
        completion_tokens=completion_total,
        estimated=counting.estimated,
        out=None if out is None else os.fspath(out),
        spent_before=spent_before,
        throttles=result.stats.throttles,
    )
