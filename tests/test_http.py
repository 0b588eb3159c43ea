"""shoal.http: throttle signals from headers, responses and errors as shoal's outcome classes, and
a real run against the OpenAI-compatible test server on loopback."""

from __future__ import annotations

import asyncio
import email.utils

import httpx
import pytest

import shoal
import shoal.http
from shoal import Limits, Retry
from shoal import _http as shoal_http
from shoal.llm.testing import OpenAIServer


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5)],
)
def test_parse_duration_reads_the_forms_servers_send(text: str, seconds: float) -> None:
    """x-ratelimit-reset-* durations ("6m0s", "20ms") and bare seconds are read."""
    assert shoal.http.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "-1"])
def test_parse_duration_rejects_other_text(text: str) -> None:
    """Anything else is not a duration."""
    assert shoal.http.parse_duration(text) is None


def test_retry_after_prefers_milliseconds_then_seconds_then_a_date() -> None:
    """retry-after-ms wins over Retry-After; an HTTP date is measured against now."""
    assert shoal.http.retry_after({"retry-after-ms": "250", "Retry-After": "3"}) == 0.25
    assert shoal.http.retry_after({"Retry-After": "3"}) == 3.0
    assert shoal.http.retry_after({"Retry-After": "1.5"}) == 1.5
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert shoal.http.retry_after({"Retry-After": date}, now=1_000_000.0) == pytest.approx(30.0)
    assert shoal.http.retry_after({"Retry-After": date}, now=2_000_000.0) == 0.0
    assert shoal.http.retry_after({}) is None
    assert shoal.http.retry_after({"Retry-After": "whenever"}) is None


def test_retry_after_falls_back_to_an_exhausted_budgets_reset() -> None:
    """Without Retry-After, a budget reported used up gives the wait: one request's refill, or
    the tokens' reset."""
    requests = {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }
    assert shoal.http.retry_after(requests) == pytest.approx(0.01)
    tokens = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2.5s"}
    assert shoal.http.retry_after(tokens) == 2.5
    assert shoal.http.retry_after({"x-ratelimit-remaining-requests": "5"}) is None


def test_ratelimit_hold_only_when_the_request_budget_is_used_up() -> None:
    """A success with remaining-requests under a tenth of the bucket (at least 1) pauses the key
    until the server has refilled that tenth."""
    used_up = {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "500ms",
    }
    assert shoal.http.ratelimit_hold(used_up) == pytest.approx(0.05)
    assert shoal.http.ratelimit_hold({**used_up, "x-ratelimit-remaining-requests": "3"}) is None
    assert shoal.http.ratelimit_hold({}) is None
    low = {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "950ms",  # 95 to refill: 10 ms each
    }
    assert shoal.http.ratelimit_hold(low) == pytest.approx(0.05)  # 5 more to reach the tenth
    assert shoal.http.ratelimit_hold({**low, "x-ratelimit-remaining-requests": "10"}) is None


def _response(status: int, body: str = "", **headers: str) -> httpx.Response:
    request = httpx.Request(
        "POST", "https://user:pw@api.example.com/v1/x?api_key=sk-secret123456", headers={}
    )
    return httpx.Response(status, text=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "ok"),
        (429, "throttled"),
        (503, "throttled"),
        (408, "transient"),
        (425, "transient"),
        (500, "transient"),
        (502, "transient"),
        (504, "transient"),
        (400, "permanent"),
        (401, "permanent"),
        (404, "permanent"),
        (422, "permanent"),
        (501, "permanent"),
    ],
)
def test_classify_maps_statuses_as_documented(status: int, kind: str) -> None:
    """429/503 throttled; 408/425/500/502/504 transient; other errors permanent."""
    assert shoal.http.classify(_response(status)) == kind


def test_classify_connection_errors_are_transient() -> None:
    """A transport error (connect, read timeout) is transient."""
    assert shoal.http.classify(httpx.ConnectError("refused")) == "transient"
    assert shoal.http.classify(httpx.ReadTimeout("slow")) == "transient"
    assert shoal.http.classify(ValueError("bug")) == "permanent"


def test_check_raises_the_class_with_the_servers_wait() -> None:
    """check() raises HTTPThrottled (a shoal.Throttled) with the wait, TransientHTTPError and
    PermanentHTTPError (never retried)."""
    with pytest.raises(shoal.http.HTTPThrottled) as throttled:
        shoal.http.check(
            _response(429, '{"error": {"message": "slow down"}}', **{"retry-after": "2"})
        )
    assert isinstance(throttled.value, shoal.Throttled)
    assert throttled.value.retry_after == 2.0
    assert "slow down" in str(throttled.value)
    with pytest.raises(shoal.http.TransientHTTPError):
        shoal.http.check(_response(502))
    with pytest.raises(shoal.http.PermanentHTTPError) as permanent:
        shoal.http.check(_response(400, "bad"))
    assert permanent.value.retryable is False
    assert not Retry().retries_on(permanent.value)
    ok = _response(200)
    assert shoal.http.check(ok) is ok


def test_error_messages_carry_no_credentials() -> None:
    """Messages drop the URL's user info and query, and hide keys a server echoes."""
    body = '{"error": {"message": "Incorrect API key provided: sk-proj-abcdef123456. Bearer xyz"}}'
    with pytest.raises(shoal.http.PermanentHTTPError) as info:
        shoal.http.check(_response(401, body))
    text = str(info.value)
    assert "https://api.example.com/v1/x" in text
    for secret in ("pw", "sk-secret", "sk-proj-abcdef123456", "xyz", "api_key="):
        assert secret not in text.replace("api.example", "")


def test_host_keys() -> None:
    """host() gives host[:port] of strings, httpx objects and mappings with a url."""
    assert shoal.http.host("https://a.example.com/x?y=1") == "a.example.com"
    assert shoal.http.host("http://127.0.0.1:8080/") == "127.0.0.1:8080"
    assert shoal.http.host({"url": "http://b.example/"}) == "b.example"
    assert shoal.http.host(httpx.Request("GET", "https://c.example/")) == "c.example"


def test_a_job_over_real_http_honours_throttles_and_fails_permanent_errors_at_once() -> None:
    """Against the test server: a scripted 429 pauses without using an attempt, a 500 is retried,
    a 400 fails after one attempt, the shared client is one per run, and nothing succeeded twice."""
    script = {"t": [429], "f": [500], "p": [400, 400, 400]}
    clients: list[object] = []
    with OpenAIServer(script=script, retry_after=0.05) as server:

        async def call(rid: str) -> str:
            clients.append(await shoal.http.client())
            response = await shoal.http.request(
                "POST",
                server.url + "/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": rid}]},
                headers={"X-Client-Request-Id": rid},
            )
            return str(response.json()["choices"][0]["message"]["content"])

        job = shoal.http.job(
            call, limits=Limits(concurrency=4), retry=Retry(attempts=3, base_delay=0.01)
        )
        run = job.run(["t", "f", "p", "ok"])
        assert [o.ok for o in run.outcomes] == [True, True, False, True]
        assert run.outcomes[0].value == "echo: t"
        assert (run.outcomes[0].attempts, run.outcomes[0].throttles) == (1, 1)
        assert run.outcomes[1].attempts == 2
        assert run.outcomes[2].attempts == 1
        assert run.outcomes[2].error is not None
        assert run.outcomes[2].error.type == "shoal._http.PermanentHTTPError"
        assert len({id(c) for c in clients}) == 1
        assert max(server.successes.values()) == 1
        assert server.received["p"] == 1


def test_the_shared_client_is_closed_when_the_runs_loop_ends() -> None:
    """The run's client closes with its event loop (no unclosed-connection warnings)."""
    seen: list[httpx.AsyncClient] = []

    async def main() -> None:
        seen.append(await shoal.http.client())
        assert await shoal.http.client() is seen[0]

    asyncio.run(main())
    assert seen[0].is_closed


def test_shoal_http_job_keys_by_host() -> None:
    """shoal.http.job keys pieces by host unless told otherwise."""
    job = shoal.http.job(lambda url: url)
    assert job.key is not None
    assert job.key("http://x.example:81/a") == "x.example:81"


def test_client_pool_spreads_requests_over_small_pools() -> None:
    """Many connections are split over clients of at most per_client each, taken in turn."""
    import asyncio

    from shoal._http import ClientPool

    async def main() -> None:
        pool = ClientPool(20, per_client=8, timeout=5.0)
        try:
            assert len(pool.clients) == 3
            picked = [pool.next() for _ in range(7)]
            assert picked == [*pool.clients, *pool.clients, pool.clients[0]]
            limits = {c._transport._pool._max_connections for c in pool.clients}  # type: ignore[attr-defined]
            assert limits == {7}
            ssl_contexts = {id(c._transport._pool._ssl_context) for c in pool.clients}  # type: ignore[attr-defined]
            assert len(ssl_contexts) == 1  # one TLS context, made once
        finally:
            await pool.aclose()

    asyncio.run(main())


# ---------------------------------------------------------------------- the shared client's pools


class Origin:
    """A keep-alive HTTP/1.1 server on a loopback port, in the test's event loop: answers every
    request with ``ok``, after ``delay`` seconds for paths under /slow; counts connections."""

    def __init__(self, delay: float = 0.5) -> None:
        self.delay = delay
        self.opened = 0
        self.open = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Origin:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self.opened += 1
        self.open += 1
        try:
            while line := await reader.readline():
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    pass
                if line.split(b" ")[1].startswith(b"/slow"):
                    await asyncio.sleep(self.delay)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                if not header:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            self._handlers.discard(handler)
            writer.close()


def _shards(made: httpx.AsyncClient) -> shoal_http._Shards:
    transport = made._transport  # type: ignore[attr-defined]
    assert isinstance(transport, shoal_http._Shards)
    return transport


def test_the_shared_client_spreads_each_origins_connections_over_small_pools() -> None:
    """64 requests at once to one origin: pools of 8 connections (8 of them), every request
    answered, nothing left in flight."""

    async def main() -> None:
        async with Origin(delay=0.3) as origin:  # all 64 start before the first is answered
            made = await shoal.http.client()

            async def get(i: int) -> int:
                response = await shoal.http.request("GET", f"{origin.url}/slow/{i}")
                return len(response.content)

            assert await asyncio.gather(*(get(i) for i in range(64))) == [2] * 64
            shards = _shards(made)
            assert shards.pools == 64 // shoal_http.PER_SHARD
            assert origin.opened == 64
            assert all(s.busy == 0 for group in shards._by_origin.values() for s in group)
            # Again at 4 at once: the least busy pool takes each, no new connections.
            sem = asyncio.Semaphore(4)

            async def politely(i: int) -> int:
                async with sem:
                    return await get(i)

            await asyncio.gather(*(politely(i) for i in range(16)))
            assert origin.opened == 64

    asyncio.run(main())


def test_pools_left_idle_past_the_keepalive_budget_are_closed() -> None:
    """A crawl of many origins keeps idle connections to only the most recent few (here
    max_keepalive_connections=16: two pools' worth, and the latest); the others are closed."""

    async def main() -> None:
        origins = [Origin() for _ in range(5)]
        for origin in origins:
            await origin.__aenter__()
        try:
            made = await shoal.http.client(limits=httpx.Limits(max_keepalive_connections=16))
            for origin in origins:
                assert (await made.get(origin.url)).text == "ok"
            # Closed as the next request starts: two idle pools stay, and the last one's.
            assert _shards(made).pools == 3
            for _ in range(500):  # let the servers see the closed connections
                if [o.open for o in origins] == [0, 0, 1, 1, 1]:
                    break
                await asyncio.sleep(0.01)
            assert [o.open for o in origins] == [0, 0, 1, 1, 1]
            assert [o.opened for o in origins] == [1] * 5
        finally:
            for origin in origins:
                await origin.__aexit__()

    asyncio.run(main())


def test_a_streamed_response_holds_its_connection_until_it_is_closed() -> None:
    async def main() -> None:
        async with Origin() as origin:
            made = await shoal.http.client()
            async with made.stream("GET", origin.url) as response:
                (shard,) = next(iter(_shards(made)._by_origin.values()))
                assert shard.busy == 1
                assert await response.aread() == b"ok"
            assert shard.busy == 0

    asyncio.run(main())


def test_requests_beyond_max_connections_wait_up_to_the_pool_timeout() -> None:
    """max_connections holds across the pools: a third request waits, and past the pool timeout
    it fails with httpx's PoolTimeout (a transient error to shoal.http)."""

    async def main() -> None:
        async with Origin(delay=0.5) as origin:
            made = await shoal.http.client(
                limits=httpx.Limits(max_connections=2), timeout=httpx.Timeout(5.0, pool=0.05)
            )
            results = await asyncio.gather(
                *(made.get(f"{origin.url}/slow") for _ in range(3)), return_exceptions=True
            )
            timeouts = [r for r in results if isinstance(r, httpx.PoolTimeout)]
            assert len(timeouts) == 1
            assert "all 2 of the client's connections stayed busy" in str(timeouts[0])
            assert shoal.http.classify(timeouts[0]) == "transient"
            assert origin.opened == 2

    asyncio.run(main())


def test_proxies_from_the_environment_keep_httpxs_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx reads HTTP_PROXY and friends only for its own transport: with one set, the shared
    client keeps it (one pool, as before), so the proxy is used."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")

    async def main() -> None:
        made = await shoal.http.client()
        assert not isinstance(made._transport, shoal_http._Shards)  # type: ignore[attr-defined]

    asyncio.run(main())
