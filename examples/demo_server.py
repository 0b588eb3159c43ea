"""Local web servers for the examples' demo data: several sites on 127.0.0.1, one port each.

The news and price examples fetch real HTTP from these (the tests do too): each site is a
standard-library ``ThreadingHTTPServer`` on its own loopback port, so each is a different host
to a client (``127.0.0.1:PORT``) and per-host limits apply to it as to a real server. A page is
a function of how many times it was asked for, so a page can fail once and then work, or be
slow, or answer 429. The servers also measure what the client did: requests in flight at once
(overall and per site) and how often each page was requested.

    with DemoServer({"news": {"/feed.xml": lambda n: Reply(body=b"<rss>...</rss>")}}) as server:
        server.url("news", "/feed.xml")   # http://127.0.0.1:PORT/feed.xml
        server.max_in_flight, server.max_in_flight_per_site["news"], server.requests
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["DemoServer", "Page", "Reply"]


@dataclass(frozen=True, slots=True)
class Reply:
    """What a page answers to one request."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a slow server)
    drop: bool = False  # close the connection without an answer (a dropped connection)


# A page: the number of this request to it (1 for the first) -> the reply.
Page = Callable[[int], Reply]
NOT_FOUND = Reply(404, b"<html><body><h1>404 Not Found</h1></body></html>")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never keeps the process alive
    site: str
    demo: DemoServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "shoal-demo/1"

    def do_GET(self) -> None:
        demo, site = self.server.demo, self.server.site
        path = self.path.split("?", 1)[0]
        count = demo.enter(site, path)
        try:
            page = demo.sites[site].get(path)
            reply = NOT_FOUND if page is None else page(count)
            if reply.delay:
                time.sleep(reply.delay)
        finally:
            # Leave before the first byte goes out: once the client has its answer it may send
            # its next request at once, and that one must not be counted beside this one.
            demo.leave(site)
        if reply.drop:
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests and the demo read the counters instead."""


class DemoServer:
    """One loopback HTTP server per site, started together, measured together.

    Args:
        sites: Site name -> {path -> page}.

    Attributes:
        max_in_flight: The most requests being answered at once, over every site.
        max_in_flight_per_site: The same per site.
        requests: How often each (site, path) was requested.
    """

    def __init__(self, sites: Mapping[str, Mapping[str, Page]]) -> None:
        self.sites = {name: dict(pages) for name, pages in sites.items()}
        self._lock = threading.Lock()
        self._servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_per_site: Counter[str] = Counter()
        self.max_in_flight_per_site: Counter[str] = Counter()
        self.requests: Counter[tuple[str, str]] = Counter()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> DemoServer:
        for name in self.sites:
            server = _Server(("127.0.0.1", 0), _Handler)
            server.site, server.demo = name, self
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"demo-server-{name}",
                daemon=True,
            )
            thread.start()
            self._servers[name] = server
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    def host(self, site: str) -> str:
        """``127.0.0.1:PORT``: the site's host as a client sees it."""
        host, port = self._servers[site].server_address[:2]
        return f"{host!s}:{port}"

    def url(self, site: str, path: str) -> str:
        return f"http://{self.host(site)}{path}"

    def site_of(self, host: str) -> str:
        """The site served at ``127.0.0.1:PORT``."""
        for name in self._servers:
            if self.host(name) == host:
                return name
        raise KeyError(host)

    # ------------------------------------------------------------------ metering

    def enter(self, site: str, path: str) -> int:
        """A request to ``path`` begins: count it; the how-manieth request to it this is."""
        with self._lock:
            self.requests[site, path] += 1
            self.in_flight += 1
            self.in_flight_per_site[site] += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.max_in_flight_per_site[site] = max(
                self.max_in_flight_per_site[site], self.in_flight_per_site[site]
            )
            return self.requests[site, path]

    def leave(self, site: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self.in_flight_per_site[site] -= 1

    def reset(self) -> None:
        """Forget what was measured (pages count their requests from 1 again)."""
        with self._lock:
            self.max_in_flight = self.in_flight
            self.max_in_flight_per_site = Counter(self.in_flight_per_site)
            self.requests.clear()
