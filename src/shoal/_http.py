"""HTTP helpers (``shoal.http``): what a response or an error means to shoal, on httpx.

The mapping (the issue's, and what well-behaved clients do):

=====================================================  ===========================================
429, 503                                               throttled: :class:`HTTPThrottled` (a
                                                       ``shoal.Throttled``) with the server's wait;
                                                       the piece and its key pause, no attempt used
408, 425, 500, 502, 504, connection errors, timeouts   transient: :class:`TransientHTTPError`,
                                                       retried with backoff
any other 4xx (and other 5xx)                          permanent: :class:`PermanentHTTPError`,
                                                       fails at once (``retryable = False``)
=====================================================  ===========================================

The server's wait is read from ``retry-after-ms`` (OpenAI's, milliseconds), then ``Retry-After``
(seconds, fractions accepted, or an HTTP date), then, when a budget is reported used up
(``x-ratelimit-remaining-requests: 0``), from its ``x-ratelimit-reset-requests``. A successful
reply that says less than a tenth of the budget is left pauses its key until the server has
refilled that tenth (see :func:`ratelimit_hold`), so the next calls wait instead of collecting
429s.

Error messages name the method, the status, the URL without its query or user info, and the
server's own message with anything that looks like a credential removed; request headers (and so
``Authorization``) are never part of them.

httpx is imported only when a client is made or an httpx exception must be recognised, so the
pure parts (header parsing) work without the extra.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import math
import re
import ssl
import time
import urllib.request
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from operator import attrgetter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._exceptions import ShoalError, Throttled
from ._usage import hold

if TYPE_CHECKING:
    import httpx

__all__ = [
    "HTTPThrottled",
    "PermanentHTTPError",
    "TransientHTTPError",
    "check",
    "classify",
    "client",
    "host",
    "parse_duration",
    "ratelimit_hold",
    "request",
    "retry_after",
    "transport_error",
]

THROTTLED = frozenset((429, 503))
TRANSIENT = frozenset((408, 425, 500, 502, 504))

INSTALL_HINT = "shoal.http needs httpx: pip install 'shoal[http]'"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_SECRETS = re.compile(
    r"(Bearer\s+)\S+|\b(sk|rk|pk)-[A-Za-z0-9_\-*.]{6,}|\b(api[_-]?key|token|secret)=[^&\s]+",
    re.IGNORECASE,
)


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return httpx


# ---------------------------------------------------------------------- errors


class _HTTPProblem:
    """What the three error classes share: status, method, a safe URL and the server's words."""

    status: int | None
    method: str
    url: str
    detail: str


class HTTPThrottled(Throttled):
    """The server said "slow down" (429 or 503): a throttle, not a failure.

    Attributes:
        status, method, url, detail: The status, the request's method and URL (without query or
            user info), and the server's message (credentials removed).
        retry_after: The server's wait in seconds, or ``None`` (the backoff decides).
    """

    def __init__(
        self, status: int, method: str, url: str, detail: str, retry_after: float | None
    ) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.detail = detail
        wait = "" if retry_after is None else f", retry after {retry_after:.3g}s"
        super().__init__(retry_after, f"HTTP {status} from {method} {url}{wait}: {detail}".strip())


class TransientHTTPError(ShoalError):
    """A failure worth retrying: 408, 425, 500, 502, 504, a connection error or a timeout.

    ``status`` is ``None`` for connection errors and timeouts (the cause is chained).
    """

    retryable = True

    def __init__(self, status: int | None, method: str, url: str, detail: str) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.detail = detail
        what = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{what} from {method} {url}: {detail}".strip())


class PermanentHTTPError(ShoalError):
    """A failure that will not change on retry (400, 401, 403, 404, 422 ...): fails at once."""

    retryable = False

    def __init__(self, status: int, method: str, url: str, detail: str) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.detail = detail
        super().__init__(f"HTTP {status} from {method} {url}: {detail}".strip())


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``***``."""

    def hide(match: re.Match[str]) -> str:
        if match.group(1):
            return f"{match.group(1)}***"
        if match.group(3):
            return f"{match.group(3)}=***"
        return "***"

    return _SECRETS.sub(hide, text)


def scrub(exc: BaseException, secret: str | None) -> BaseException:
    """``exc`` with ``secret`` (an API key) replaced by ``***`` in its message and its
    ``detail``, wherever a server may have echoed it; for re-raising."""
    if secret and secret in str(exc):
        exc.args = tuple(str(a).replace(secret, "***") for a in exc.args)
        if isinstance(getattr(exc, "detail", None), str):
            exc.detail = exc.detail.replace(secret, "***")  # type: ignore[attr-defined]
    return exc


def safe_url(url: object) -> str:
    """A URL for messages: scheme, host, port and path; no user info, query or fragment."""
    parts = urlsplit(str(url))
    host_part = parts.hostname or ""
    if parts.port is not None:
        host_part = f"{host_part}:{parts.port}"
    return f"{parts.scheme}://{host_part}{parts.path}" if parts.scheme else parts.path


def _detail(response: httpx.Response) -> str:
    """The server's own message (OpenAI style ``{"error": {"message": ...}}`` or the text)."""
    try:
        text = response.text
    except Exception:  # not read yet (a stream) or not decodable
        return ""
    message = text
    try:
        data = json.loads(text)
    except ValueError:
        pass
    else:
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                message = error["message"]
            elif isinstance(error, str):
                message = error
            elif isinstance(data.get("message"), str):
                message = data["message"]
    message = " ".join(message.split())
    if len(message) > 300:
        message = message[:299] + "…"
    return redact(message)


# ---------------------------------------------------------------------- headers


def parse_duration(text: str) -> float | None:
    """Seconds in ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"`` or a bare number of seconds;
    ``None`` if it is none of those."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    total = 0.0
    pos = 0
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * scale[match.group(2)]
        pos = match.end()
    return total if pos == len(text) else None


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a response asks for, in seconds, or ``None`` if it names none.

    Reads ``retry-after-ms``, then ``Retry-After`` (seconds or an HTTP date, against ``now``,
    seconds since the epoch, default the current time), then the reset time of a budget reported
    used up (``x-ratelimit-remaining-requests: 0`` and its ``x-ratelimit-reset-requests``, or the
    same for tokens).
    """
    got = _get(headers)
    ms = got("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    after = got("retry-after")
    if after is not None:
        after = after.strip()
        try:
            value = float(after)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(after)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                moment = time.time() if now is None else now
                return max(0.0, when.timestamp() - moment)
        else:
            if math.isfinite(value) and value >= 0:
                return value
    waits = [w for kind in ("requests", "tokens") if (w := _refill(got, kind, 1.0)) is not None]
    return max(waits) if waits else None


def ratelimit_hold(headers: Mapping[str, str]) -> float | None:
    """For a reply that succeeded: how long its key should pause because the server reports its
    request budget nearly used up. ``None``: no pause.

    The ``x-ratelimit-*`` headers describe a bucket: ``limit`` requests, ``remaining`` of them
    left, refilled to the full in ``reset``. Requests already on their way spend what is left, so
    waiting for the last one to go would leave every request then in flight to be answered 429.
    The key pauses once fewer than a tenth of the bucket (at least one request) remain, until the
    server has refilled that tenth: ``(reserve - remaining) / refill rate``.
    """
    got = _get(headers)
    limit = _number(got("x-ratelimit-limit-requests"))
    reserve = max(1.0, math.ceil(0.1 * limit)) if limit is not None else 1.0
    wait = _refill(got, "requests", reserve)
    return wait if wait else None


def _refill(got: Callable[[str], str | None], kind: str, want: float) -> float | None:
    """How long until the server's ``kind`` bucket holds ``want`` units again, when it reports
    fewer (``None``: it does not say, or has enough). Requests come back one by one, in
    ``reset / (limit - remaining)`` each; for tokens, the whole ``reset``."""
    remaining = _number(got(f"x-ratelimit-remaining-{kind}"))
    if remaining is None or remaining >= want:
        return None
    reset = parse_duration(got(f"x-ratelimit-reset-{kind}") or "")
    if reset is None:
        return None
    if kind == "requests":
        limit = _number(got("x-ratelimit-limit-requests"))
        if limit is not None and limit > remaining:
            return (want - remaining) * reset / (limit - remaining)
    return reset


def _get(headers: Mapping[str, str]) -> Callable[[str], str | None]:
    """A case-insensitive header lookup (httpx's Headers already are; dicts may not be)."""
    if hasattr(headers, "get_list"):  # httpx.Headers
        return headers.get
    lowered = {str(k).lower(): v for k, v in headers.items()}
    return lowered.get


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------- responses


def classify(response_or_error: object) -> str:
    """``"ok"``, ``"throttled"``, ``"transient"`` or ``"permanent"`` for an httpx response (by
    status), an httpx error (transport errors are transient) or any exception shoal raised."""
    if isinstance(response_or_error, HTTPThrottled | Throttled):
        return "throttled"
    if isinstance(response_or_error, TransientHTTPError):
        return "transient"
    if isinstance(response_or_error, PermanentHTTPError):
        return "permanent"
    status = getattr(response_or_error, "status_code", None)
    if isinstance(status, int):
        if status < 400:
            return "ok"
        if status in THROTTLED:
            return "throttled"
        if status in TRANSIENT:
            return "transient"
        return "permanent"
    if isinstance(response_or_error, BaseException):
        hx = _import_httpx()
        if isinstance(response_or_error, hx.TransportError | TimeoutError | OSError):
            return "transient"
        return "permanent"
    raise TypeError(f"classify({response_or_error!r}): expected an httpx response or an error")


def check(response: httpx.Response, *, pause: bool = True) -> httpx.Response:
    """Return ``response`` if it succeeded; raise what its status means to shoal otherwise.

    A success that reports the request budget used up asks its key to pause (see
    :func:`ratelimit_hold`), unless ``pause=False`` (for work that paces itself with a rate).

    Raises:
        HTTPThrottled: 429 or 503, with the server's wait when it gave one.
        TransientHTTPError: 408, 425, 500, 502, 504.
        PermanentHTTPError: any other status >= 400.
    """
    status = response.status_code
    headers = response.headers
    if status < 400:
        if pause:
            wait = ratelimit_hold(headers)
            if wait is not None:
                hold(wait)
        return response
    method = response.request.method if _has_request(response) else "?"
    url = safe_url(response.request.url) if _has_request(response) else "?"
    detail = _detail(response)
    if status in THROTTLED:
        raise HTTPThrottled(status, method, url, detail, retry_after(headers))
    if status in TRANSIENT:
        raise TransientHTTPError(status, method, url, detail)
    raise PermanentHTTPError(status, method, url, detail)


def _has_request(response: httpx.Response) -> bool:
    try:
        response.request  # noqa: B018 - httpx raises when the response has no request
    except RuntimeError:
        return False
    return True


def transport_error(exc: BaseException, method: str = "?", url: object = "?") -> BaseException:
    """An httpx transport error (connect, read, timeout, protocol) as a
    :class:`TransientHTTPError` whose cause is the original; other exceptions as they are."""
    hx = _import_httpx()
    if isinstance(exc, hx.TransportError):
        request = getattr(exc, "_request", None)
        if request is not None:
            method, url = request.method, request.url
        error = TransientHTTPError(None, method, safe_url(url), f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error
    return exc


def host(item: object) -> str:
    """A per-host key: ``"host:port"`` of a URL string, an ``httpx.URL`` or ``httpx.Request``,
    a mapping with a ``"url"``, or anything with a ``url`` attribute."""
    url: object = item
    if isinstance(item, Mapping):
        url = item.get("url", "")
    elif not isinstance(item, str) and hasattr(item, "url"):
        url = item.url
    parts = urlsplit(str(url))
    name = parts.hostname or ""
    return f"{name}:{parts.port}" if parts.port is not None else name


# ---------------------------------------------------------------------- the shared client


class ClientPool:
    """Several small httpx clients taking requests in turn, for many requests at once.

    httpcore's pool looks at every connection it holds whenever a request starts or ends, and
    at every connection again for each idle one, so one pool of n connections costs O(n^2) per
    request: with 64 connections that was most of a rate-limited LLM run's CPU here. Pools of at
    most ``per_client`` connections keep the cost flat.
    """

    def __init__(self, connections: int, *, per_client: int = 8, **options: Any) -> None:
        hx = _import_httpx()
        count = max(1, math.ceil(connections / per_client))
        each = math.ceil(connections / count)
        limits = hx.Limits(max_connections=each, max_keepalive_connections=each)
        if "verify" not in options:  # one TLS context for all (each costs tens of ms to make)
            options["verify"] = hx.create_ssl_context()  # httpx's own default, made once
        self.clients: list[httpx.AsyncClient] = [
            hx.AsyncClient(limits=limits, **options) for _ in range(count)
        ]
        self._turn = 0

    def next(self) -> httpx.AsyncClient:
        """The client for the next request (in turn)."""
        clients = self.clients
        turn = self._turn
        self._turn = (turn + 1) % len(clients)
        return clients[turn]

    async def aclose(self) -> None:
        for made in self.clients:
            await made.aclose()


# Connections one shard of the shared client's transport holds at most (see _Shards).
PER_SHARD = 8


def _shards(hx: Any, options: dict[str, Any]) -> Any:
    """A :class:`_Shards` transport for ``AsyncClient(**options)``, taking from ``options`` what
    configures connections; ``None`` where the options need httpx's own transport (a transport
    or mounts of the user's, a proxy, or proxies in the environment, which httpx reads only for
    its own transport)."""
    if any(k in options for k in ("transport", "mounts", "proxy")):
        return None
    trust_env = options.get("trust_env", True)
    if trust_env and urllib.request.getproxies():
        return None
    limits = options.pop("limits", None) or hx.Limits(
        max_connections=1000, max_keepalive_connections=200
    )
    verify = options.pop("verify", True)
    cert = options.pop("cert", None)
    if not isinstance(verify, ssl.SSLContext):  # one TLS context for all (each costs ms to make)
        verify = hx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
    each = hx.Limits(
        max_connections=PER_SHARD,
        max_keepalive_connections=PER_SHARD,
        keepalive_expiry=limits.keepalive_expiry,
    )
    settings = {
        "verify": verify,
        "trust_env": trust_env,
        "http1": options.pop("http1", True),
        "http2": options.pop("http2", False),
        "limits": each,
    }
    return _Shards(
        hx,
        lambda: hx.AsyncHTTPTransport(**settings),
        max_connections=limits.max_connections,
        max_idle=limits.max_keepalive_connections,
    )


class _Shard:
    __slots__ = ("busy", "key", "transport")

    def __init__(self, key: tuple[bytes, bytes, int | None], transport: Any) -> None:
        self.key = key
        self.transport = transport
        self.busy = 0  # requests whose response is not closed yet


class _Shards:
    """The shared client's transport: several small connection pools instead of one big one.

    httpcore's pool looks at every connection it holds whenever a request starts or ends, so one
    pool of n connections costs O(n^2) per request: 2,000 requests to a loopback server at 64 at
    once took 0.22-0.26x the time of one pool through pools of 8 (benchmark ``http-pool``; at 8
    at once about the same). Here each origin (scheme, host, port) has pools of at most
    :data:`PER_SHARD` connections: a request goes to the least busy pool of its origin, and a new
    pool is opened when that one is full. Pools with no request in flight beyond ``max_idle``
    connections' worth are closed as the next request starts, least recently used first (so a
    crawl of many hosts does not keep a socket open to each), and at most ``max_connections``
    requests are in flight in all (more wait, up to the request's pool timeout).
    """

    def __init__(
        self,
        hx: Any,
        make: Callable[[], Any],
        *,
        max_connections: int | None,
        max_idle: int | None,
    ) -> None:
        self._hx = hx
        self._released = _released_type(hx)
        self._make = make
        self._by_origin: dict[tuple[bytes, bytes, int | None], list[_Shard]] = {}
        self._idle: dict[_Shard, None] = {}  # pools with nothing in flight, oldest first
        self._max_idle_pools = max(1, math.ceil((max_idle or 0) / PER_SHARD))
        self._max_connections = max_connections
        self._room = None if max_connections is None else asyncio.Semaphore(max_connections)

    @property
    def pools(self) -> int:
        """How many pools are open (for tests and diagnostics)."""
        return sum(len(shards) for shards in self._by_origin.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        hx = self._hx
        room = self._room
        if room is not None:
            wait = (request.extensions.get("timeout") or {}).get("pool")
            try:
                await asyncio.wait_for(room.acquire(), wait)
            except TimeoutError:
                raise hx.PoolTimeout(
                    f"all {self._max_connections} of the client's connections stayed busy for "
                    f"{wait:g}s (its pool timeout)",
                    request=request,
                ) from None
        try:
            shard = self._pick(request.url)
        except BaseException:
            if room is not None:
                room.release()
            raise
        shard.busy += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            shard.busy -= 1
            if room is not None:
                room.release()
            if not shard.busy:
                self._idle[shard] = None

        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            release()
            raise
        await self._close_idle()
        counted: httpx.Response = hx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=self._released(response.stream, release),
            extensions=response.extensions,
        )
        return counted

    def _pick(self, url: httpx.URL) -> _Shard:
        """The least busy pool of the URL's origin; a new one if that one is full."""
        key = (url.raw_scheme, url.raw_host, url.port)
        shards = self._by_origin.setdefault(key, [])
        shard = min(shards, key=attrgetter("busy")) if shards else None
        if shard is None or shard.busy >= PER_SHARD:
            shard = _Shard(key, self._make())
            shards.append(shard)
        else:
            self._idle.pop(shard, None)
        return shard

    async def _close_idle(self) -> None:
        idle = self._idle
        while len(idle) > self._max_idle_pools:
            shard = next(iter(idle))
            del idle[shard]
            self._by_origin[shard.key].remove(shard)
            if not self._by_origin[shard.key]:
                del self._by_origin[shard.key]
            await shard.transport.aclose()

    async def aclose(self) -> None:
        shards = [s for group in self._by_origin.values() for s in group]
        self._by_origin.clear()
        self._idle.clear()
        for shard in shards:
            await shard.transport.aclose()

    async def __aenter__(self) -> _Shards:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@functools.cache
def _released_type(hx: Any) -> Any:
    """The type of a response body that tells its pool when the response is closed (made on
    first use: httpx wants an ``httpx.AsyncByteStream``, and httpx is imported only when used)."""

    class Released(hx.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, stream: Any, release: Callable[[], None]) -> None:
            self._stream = stream
            self._release = release

        def __aiter__(self) -> AsyncIterator[bytes]:
            return self._stream.__aiter__()  # type: ignore[no-any-return]

        async def aclose(self) -> None:
            try:
                await self._stream.aclose()
            finally:
                self._release()

    return Released


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


async def _holder(made: httpx.AsyncClient) -> AsyncGenerator[httpx.AsyncClient, None]:
    # Kept open for the loop's life: asyncio.Runner (shoal.map, job.run, asyncio.run) closes the
    # loop's async generators when it ends, and this one then closes the client's connections.
    try:
        yield made
    finally:
        await made.aclose()


async def client(**options: Any) -> httpx.AsyncClient:
    """The run's shared ``httpx.AsyncClient``: one per event loop (every ``job.run`` and
    ``shoal.map`` has a loop of its own); made at the first call with ``options`` (later calls'
    options are ignored) and closed when the loop ends. Its connections are kept in small pools
    per origin (see :class:`_Shards`: in one big pool each request costs CPU that grows with the
    square of its connections), within ``limits`` (default: 1,000 connections, 200 kept idle);
    with a ``transport``, ``mounts``, a ``proxy`` or proxies set in the environment it is httpx's
    own single pool.

    Raises:
        ImportError: httpx is not installed (the message has the install command).
    """
    loop = asyncio.get_running_loop()
    entry = _clients.get(loop)
    if entry is None:
        hx = _import_httpx()
        options.setdefault("timeout", hx.Timeout(60.0, connect=10.0))
        options.setdefault("limits", hx.Limits(max_connections=1000, max_keepalive_connections=200))
        transport = _shards(hx, options)
        if transport is not None:
            options["transport"] = transport
        made: httpx.AsyncClient = hx.AsyncClient(**options)
        keeper = _holder(made)
        await anext(keeper)
        entry = _clients[loop] = (made, keeper)
    shared: httpx.AsyncClient = entry[0]
    return shared


async def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send a request with the run's shared client and :func:`check` the response.

    Raises:
        HTTPThrottled, TransientHTTPError, PermanentHTTPError: see :func:`check`; connection
            errors and timeouts become ``TransientHTTPError``.
    """
    shared = await client()
    hx = _import_httpx()
    try:
        response = await shared.request(method, url, **kwargs)
    except hx.TransportError as exc:
        raise transport_error(exc, method, url) from exc
    return check(response)
