"""HTTP helpers on httpx (the ``shoal[http]`` extra): responses and errors as shoal's outcomes.

::

    async def fetch(url: str) -> str:
        response = await shoal.http.request("GET", url)  # the run's shared client, checked
        return response.text

    run = shoal.http.job(fetch, limits=shoal.Limits(per_key=4, adaptive=True)).run(urls)

429 and 503 pause the piece and its host (the server's ``Retry-After`` honoured) without using
an attempt; 408, 425, 500, 502, 504 and connection errors are retried; other 4xx fail at once.
See ``shoal._http`` for the details.
"""

from __future__ import annotations

from typing import Any

from ._http import (
    HTTPThrottled,
    PermanentHTTPError,
    TransientHTTPError,
    check,
    classify,
    client,
    host,
    parse_duration,
    ratelimit_hold,
    redact,
    request,
    retry_after,
    safe_url,
    scrub,
    transport_error,
)
from ._job import Job

__all__ = [
    "HTTPThrottled",
    "PermanentHTTPError",
    "TransientHTTPError",
    "check",
    "classify",
    "client",
    "host",
    "job",
    "parse_duration",
    "ratelimit_hold",
    "redact",
    "request",
    "retry_after",
    "safe_url",
    "scrub",
    "transport_error",
]


def job(work: Any, **options: Any) -> Job[Any, Any]:
    """``shoal.Job(work, key=shoal.http.host, **options)``: a job whose pieces are keyed by host
    (per-key limits and throttle pauses apply per host) unless ``key=`` says otherwise."""
    options.setdefault("key", host)
    return Job(work, **options)
