"""An OpenAI-compatible server for tests and benchmarks: real HTTP on loopback, standard library.

``OpenAIServer`` answers ``POST /v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings`` the way OpenAI's API does, from a thread of its own, so tests of code that
fans out LLM calls run offline, over a real socket, with the rate limits of a real server::

    with OpenAIServer(rpm=600, tpm=20_000, latency=0.05) as server:
        shoal.llm.run("requests.jsonl", base_url=server.url, out="results.jsonl")
        assert max(server.successes.values()) == 1   # nothing answered twice

What it does like a real server:

- **Budgets** for requests and tokens per minute, each a token bucket refilled continuously and
  holding ``window`` seconds' worth (1 s by default: real servers enforce a per-minute limit over
  much shorter windows, so a minute's budget cannot be spent in one burst). A request takes one
  request and its prompt plus ``max_tokens`` (or the reply's length when unbounded) from the
  buckets when it arrives; what the reply did not use goes back when it is answered.
- **429** when a bucket is short, with ``retry-after`` (whole seconds, rounded up),
  ``retry-after-ms`` and a body whose ``code`` is ``"rate_limit_exceeded"``; every answer carries
  ``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` (the time until
  the bucket is full again, as ``"1.5s"`` or ``"20ms"``) for requests and tokens.
- **Failures** on demand: a share of 500s (``fail_rate``) or stalls (``stall_rate``), drawn from a
  seeded random source, or a script per request (``script={"req-7": [500, 429, "stall"]}``: the
  first three times ``req-7`` arrives it gets these, then normal answers).
- **401** without the right ``Authorization: Bearer`` when ``api_key`` is set (the key is never
  echoed).
- ``POST /_testing/reset`` refills the budgets and forgets the counts, ``GET /_testing/stats``
  returns them (for a server run in another process).
- **Counts** what it received by the ``X-Client-Request-Id`` header (what ``shoal.llm`` sends as
  the request's ``custom_id``): ``received``, ``successes`` (200s), ``statuses``, and a ``log`` of
  ``(time, id, status)``; ``max(server.successes.values()) == 1`` says nothing was answered twice.

Replies echo the last message (``"echo: ..."``), so a test can check each result belongs to its
request; ``reply=`` gives a chat reply of your own instead (``body -> text``: a deterministic
"translation", say), called once per 200 answer; ``reply_tokens`` sets how many completion tokens
a reply reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._tokens import TokenCounter, reply_budget

__all__ = ["OpenAIServer"]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_MAX_BODY = 16 * 1024 * 1024


class _Bucket:
    """A token bucket: ``capacity`` units, refilled at ``rate`` units per second."""

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.level = capacity
        self.last = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
        self.last = now

    def wait(self, units: float) -> float:
        """Seconds until ``units`` are there (after ``refill``)."""
        if units <= self.level:
            return 0.0
        return (min(units, self.capacity) - self.level) / self.rate

    def reset(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)


def _duration(seconds: float) -> str:
    if seconds < 1.0:
        return f"{max(seconds, 0.0) * 1000:.0f}ms"
    return f"{seconds:.3g}s"


class OpenAIServer:
    """An OpenAI-compatible HTTP server on ``127.0.0.1`` (a free port), run in a thread.

    Args:
        rpm: Requests per minute (``None``: unlimited).
        tpm: Tokens per minute (``None``: unlimited).
        window: Seconds of budget a bucket holds (the burst): ``rpm=6000, window=1`` allows 100
            requests at once and 100 a second after that.
        latency: Seconds before each answer.
        latency_per_token: More seconds per completion token.
        reply_tokens: Completion tokens per reply: a number, or ``body -> number``; a reply
            never takes more than the request's ``max_tokens``.
        reply: ``body -> text``: the content of each chat completion (and the text of each
            completion) answered 200, instead of the echo; called only for 200 answers, so it
            can count what was answered. An exception in it is answered 500.
        fail_rate: Share of admitted requests answered 500.
        stall_rate: Share of admitted requests that hang for ``stall_seconds`` (then answer).
        stall_seconds: How long a stall lasts.
        script: ``{request id: [status or "stall", ...]}`` answers for the first arrivals of
            these requests (before budgets are checked; a scripted 429 carries ``retry_after``).
        retry_after: Seconds a scripted 429 asks for.
        api_key: When set, requests must carry ``Authorization: Bearer <api_key>``.
        headers: Send the ``x-ratelimit-*`` headers.
        seed: Seeds the random draws of failures and stalls.
        counter: Counts prompt tokens (default: the same counting as ``shoal.llm``).
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        window: float = 1.0,
        latency: float = 0.0,
        latency_per_token: float = 0.0,
        reply_tokens: int | Callable[[dict[str, Any]], int] = 16,
        reply: Callable[[dict[str, Any]], str] | None = None,
        fail_rate: float = 0.0,
        stall_rate: float = 0.0,
        stall_seconds: float = 30.0,
        script: Mapping[str, Sequence[int | str]] | None = None,
        retry_after: float = 0.05,
        api_key: str | None = None,
        headers: bool = True,
        seed: int = 0,
        counter: TokenCounter | None = None,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.window = window
        self.latency = latency
        self.latency_per_token = latency_per_token
        self.reply_tokens = reply_tokens
        self.reply = reply
        self.fail_rate = fail_rate
        self.stall_rate = stall_rate
        self.stall_seconds = stall_seconds
        self._script = {k: list(v) for k, v in (script or {}).items()}
        self.retry_after = retry_after
        self._api_key = api_key
        self.headers = headers
        self._rng = random.Random(seed)
        self._counter = counter
        self._counters: dict[str, TokenCounter] = {}
        self._lock = threading.RLock()
        self.received: Counter[str] = Counter()
        self.successes: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.log: list[tuple[float, str, int]] = []
        self.tokens_used = 0  # prompt + completion tokens of the 200s
        self.in_flight = 0
        self.peak_in_flight = 0
        self._requests: _Bucket | None = None
        self._tokens: _Bucket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._seq = 0
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        """Start serving (returns when the port is open)."""
        if self._thread is not None:
            raise RuntimeError("OpenAIServer.start(): already started")
        self.reset_budgets()
        self._thread = threading.Thread(target=self._serve, name="openai-test-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"OpenAIServer could not start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        """Stop serving; open connections are closed."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop ended already
            loop.call_soon_threadsafe(self._shutdown)
        thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_budgets(self) -> None:
        """Full buckets again (between benchmark rounds)."""
        now = time.monotonic()
        with self._lock:
            self._requests = (
                None
                if self.rpm is None
                else _Bucket(self.rpm / 60 * self.window, self.rpm / 60, now)
            )
            self._tokens = (
                None
                if self.tpm is None
                else _Bucket(self.tpm / 60 * self.window, self.tpm / 60, now)
            )

    def reset_counts(self) -> None:
        """Forget what was received (between benchmark rounds)."""
        with self._lock:
            self.received.clear()
            self.successes.clear()
            self.statuses.clear()
            self.log.clear()
            self.tokens_used = 0
            self.peak_in_flight = 0

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=1024)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _shutdown(self) -> None:
        assert self._loop is not None
        loop = self._loop
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()

        async def wait_and_stop() -> None:
            if self._handlers:
                await asyncio.gather(*self._handlers, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()
            loop.stop()

        loop.create_task(wait_and_stop())

    # ------------------------------------------------------------------ HTTP

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    await self._send(writer, 400, _error_body("malformed request line"), {})
                    return
                method, path, _ = parts
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length > _MAX_BODY:
                    await self._send(writer, 413, _error_body("request too large"), {})
                    return
                body = await reader.readexactly(length) if length else b""
                try:
                    status, payload, extra = await self._handle(method, path, headers, body)
                except Exception as exc:  # a bug here: answer it rather than drop the socket
                    status, payload, extra = 500, _error_body(repr(exc), "server_error"), {}
                await self._send(writer, status, payload, extra)
                if headers.get("connection", "").lower() == "close":
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter, status: int, payload: dict[str, Any], extra: dict[str, str]
    ) -> None:
        data = json.dumps(payload).encode()
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "content-type: application/json",
            f"content-length: {len(data)}",
            *(f"{k}: {v}" for k, v in extra.items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
        await writer.drain()

    # ------------------------------------------------------------------ the API

    def _count(self, model: str) -> TokenCounter:
        if self._counter is not None:
            return self._counter
        counter = self._counters.get(model)
        if counter is None:
            counter = self._counters[model] = TokenCounter(model)
        return counter

    def _limit_headers(self) -> dict[str, str]:
        if not self.headers:
            return {}
        out: dict[str, str] = {}
        for kind, bucket in (("requests", self._requests), ("tokens", self._tokens)):
            if bucket is None:
                continue
            out[f"x-ratelimit-limit-{kind}"] = f"{bucket.capacity:.0f}"
            out[f"x-ratelimit-remaining-{kind}"] = f"{math.floor(bucket.level)}"
            out[f"x-ratelimit-reset-{kind}"] = _duration(bucket.reset())
        return out

    async def _handle(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        path = path.split("?", 1)[0].rstrip("/")
        if path == "/_testing/reset":  # for a server in another process (benchmarks)
            self.reset_budgets()
            self.reset_counts()
            return 200, {"reset": True}, {}
        if path == "/_testing/stats":
            with self._lock:
                return (
                    200,
                    {
                        "statuses": {str(k): v for k, v in self.statuses.items()},
                        "max_successes": max(self.successes.values(), default=0),
                        "received": sum(self.received.values()),
                    },
                    {},
                )
        endpoint = {
            "/v1/chat/completions": "chat",
            "/v1/completions": "completions",
            "/v1/embeddings": "embeddings",
        }.get(path)
        if endpoint is None:
            return 404, _error_body(f"no such endpoint: {path}", "invalid_request_error"), {}
        if method != "POST":
            return 405, _error_body(f"{method} is not allowed here", "invalid_request_error"), {}
        if self._api_key is not None and headers.get("authorization") != f"Bearer {self._api_key}":
            return 401, _error_body("Incorrect API key provided.", "invalid_api_key"), {}
        rid = headers.get("x-client-request-id", "")
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, _error_body("the body is not valid JSON", "invalid_request_error"), {}
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return 400, _error_body("'model' is required", "invalid_request_error"), {}
        if endpoint == "chat" and not isinstance(body.get("messages"), list):
            return 400, _error_body("'messages' is required", "invalid_request_error"), {}
        if endpoint == "embeddings" and body.get("input") is None:
            return 400, _error_body("'input' is required", "invalid_request_error"), {}

        now = time.monotonic()
        with self._lock:
            self._seq += 1
            self.received[rid] += 1
        scripted = self._script.get(rid)
        step = scripted.pop(0) if scripted else None
        if step == 429:
            return self._record(
                rid, 429, _rate_error("requests"), self._throttle_headers(self.retry_after)
            )
        if isinstance(step, int) and step != 200:
            return self._record(rid, step, _error_body(f"scripted {step}", "server_error"), {})

        prompt, _ = self._count(body["model"]).request(endpoint, body)
        if endpoint == "embeddings":
            completion = 0
            reserved = prompt
        else:
            wanted = self.reply_tokens(body) if callable(self.reply_tokens) else self.reply_tokens
            bound = reply_budget(body)
            completion = wanted if bound is None else min(wanted, bound)
            reserved = prompt + (completion if bound is None else bound)
        with self._lock:
            wait = 0.0
            short = ""
            for kind, bucket, units in (
                ("requests", self._requests, 1.0),
                ("tokens", self._tokens, float(reserved)),
            ):
                if bucket is None:
                    continue
                bucket.refill(now)
                if units > bucket.capacity:
                    return self._record(
                        rid,
                        429,
                        _rate_error(kind, f"request too large: {units:.0f} {kind} per window"),
                        self._limit_headers(),
                    )
                w = bucket.wait(units)
                if w > wait:
                    wait, short = w, kind
            if wait > 0.0:
                return self._record(rid, 429, _rate_error(short), self._throttle_headers(wait))
            if self._requests is not None:
                self._requests.level -= 1
            if self._tokens is not None:
                self._tokens.level -= reserved
            extra = self._limit_headers()
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            draw_fail = self._rng.random() < self.fail_rate if self.fail_rate else False
            draw_stall = self._rng.random() < self.stall_rate if self.stall_rate else False
        try:
            if step == "stall" or draw_stall:
                await asyncio.sleep(self.stall_seconds)
            if draw_fail:
                self._give_back(reserved)
                return self._record(
                    rid, 500, _error_body("The server had an error", "server_error"), extra
                )
            delay = self.latency + self.latency_per_token * completion
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            with self._lock:
                self.in_flight -= 1
        self._give_back(reserved - prompt - completion)
        try:
            payload = self._reply(endpoint, body, prompt, completion)
        except Exception as exc:  # a reply= that raised: answered like a server bug
            return self._record(rid, 500, _error_body(repr(exc), "server_error"), extra)
        with self._lock:
            self.tokens_used += prompt + completion
        return self._record(rid, 200, payload, extra)

    def _give_back(self, units: float) -> None:
        if self._tokens is not None and units > 0:
            with self._lock:
                self._tokens.refill(time.monotonic())
                self._tokens.level = min(self._tokens.capacity, self._tokens.level + units)

    def _throttle_headers(self, wait: float) -> dict[str, str]:
        extra = self._limit_headers()
        extra["retry-after"] = str(max(1, math.ceil(wait)))
        extra["retry-after-ms"] = f"{max(wait * 1000, 1.0):.0f}"
        return extra

    def _record(
        self, rid: str, status: int, payload: dict[str, Any], extra: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.statuses[status] += 1
            if status == 200:
                self.successes[rid] += 1
            self.log.append((time.monotonic(), rid, status))
        return status, payload, extra

    def _reply(
        self, endpoint: str, body: dict[str, Any], prompt: int, completion: int
    ) -> dict[str, Any]:
        model = body["model"]
        created = int(time.time())
        if endpoint == "embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            return {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": _vector(str(text))}
                    for i, text in enumerate(inputs)
                ],
                "model": model,
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }
        bound = reply_budget(body)
        finish = "length" if bound is not None and completion >= bound else "stop"
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if endpoint == "completions":
            return {
                "id": f"cmpl-{self._seq}",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "text": "echo" if self.reply is None else self.reply(body),
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
        if self.reply is not None:
            answer = self.reply(body)
        else:
            messages = body.get("messages") or [{}]
            last = messages[-1] if isinstance(messages[-1], dict) else {}
            content = last.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            answer = f"echo: {text[:200]}"
        return {
            "id": f"chatcmpl-{self._seq}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
        }


def _vector(text: str) -> list[float]:
    seed = sum(text.encode()) % 997
    return [round(((seed * (i + 3)) % 101) / 100.0, 2) for i in range(8)]


def _error_body(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


def _rate_error(kind: str, detail: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": detail or f"Rate limit reached for {kind}. Please try again later.",
            "type": kind,
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
