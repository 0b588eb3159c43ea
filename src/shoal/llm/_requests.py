"""Reading request files: OpenAI batch lines or bare request bodies, checked up front."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._exceptions import ShoalError

__all__ = ["ENDPOINTS", "LLMInputError", "endpoint_of", "normalise", "read_requests"]

# URL path -> endpoint kind (what the token counter and the reply parser need).
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/embeddings": "embeddings",
    "/v1/completions": "completions",
}

FORMAT_HINT = (
    'each line must be a JSON object: a batch line {"custom_id": "...", "method": "POST", '
    '"url": "/v1/chat/completions", "body": {...}} or a bare request body {"model": "...", '
    '"messages": [...]} (or "input" for embeddings)'
)


class LLMInputError(ShoalError, ValueError):
    """A request file or request that cannot be sent: the message names the file, the line and
    the fix. The command line exits with status 2 on it."""


def endpoint_of(url: str) -> str | None:
    """``"chat"``, ``"embeddings"`` or ``"completions"`` for a request URL path, or ``None``."""
    path = url.split("?", 1)[0].rstrip("/")
    if not path.startswith("/v1/"):
        path = "/v1" + (path if path.startswith("/") else "/" + path)
    return ENDPOINTS.get(path)


def normalise(value: object, where: str, number: int, model: str | None = None) -> dict[str, Any]:
    """One request as a batch line ``{"custom_id", "method", "url", "body"}``.

    Args:
        value: The parsed line (a batch line or a bare body).
        where: ``file:line`` (or ``requests[i]``) for messages.
        number: 1-based position, for the default ``custom_id`` (``request-<n>``).
        model: A model for bodies that name none.

    Raises:
        LLMInputError: the request is not one of the two forms, or lacks what its endpoint needs.
    """
    if not isinstance(value, Mapping):
        raise LLMInputError(
            f"{where}: expected a JSON object, got {type(value).__name__}; {FORMAT_HINT}"
        )
    if "body" in value:
        body = value["body"]
        url = value.get("url", "/v1/chat/completions")
        method = value.get("method", "POST")
        custom_id = value.get("custom_id", f"request-{number}")
        if not isinstance(body, Mapping):
            raise LLMInputError(f'{where}: "body" must be a JSON object; {FORMAT_HINT}')
        if not isinstance(url, str) or endpoint_of(url) is None:
            raise LLMInputError(
                f"{where}: url {url!r} is not an endpoint shoal llm sends to; use "
                f"{', '.join(ENDPOINTS)}"
            )
        if method != "POST":
            raise LLMInputError(f'{where}: method {method!r}: these endpoints take "POST"')
        if not isinstance(custom_id, str) or not custom_id:
            raise LLMInputError(f'{where}: "custom_id" must be a non-empty string')
    else:
        body = value
        custom_id = f"request-{number}"
        if "messages" in body:
            url = "/v1/chat/completions"
        elif "input" in body:
            url = "/v1/embeddings"
        elif "prompt" in body:
            url = "/v1/completions"
        else:
            raise LLMInputError(
                f'{where}: a bare body needs "messages" (chat), "input" (embeddings) or "prompt" '
                f"(completions); {FORMAT_HINT}"
            )
    body = dict(body)
    if "model" not in body:
        if model is None:
            raise LLMInputError(
                f'{where}: the body names no "model"; add one, or pass a default model '
                "(--model / model=)"
            )
        body["model"] = model
    if not isinstance(body["model"], str) or not body["model"]:
        raise LLMInputError(f'{where}: "model" must be a non-empty string')
    kind = endpoint_of(url)
    if kind == "chat" and not isinstance(body.get("messages"), list):
        raise LLMInputError(f'{where}: a chat request needs "messages", a list of messages')
    if kind == "embeddings" and body.get("input") is None:
        raise LLMInputError(f'{where}: an embeddings request needs "input"')
    if body.get("stream"):
        raise LLMInputError(f'{where}: "stream": true is not supported; remove it')
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def read_requests(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any]], *, model: str | None = None
) -> list[dict[str, Any]]:
    """Every request of a JSON Lines file (or an iterable of dicts), normalised and checked.

    Raises:
        LLMInputError: a missing file, a line that is not JSON or not a request, or a
            ``custom_id`` used twice; the message names the file and line.
    """
    requests: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LLMInputError(
                f"{path}: no such file; pass a JSON Lines file of requests"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise LLMInputError(f"{path}: cannot be read ({exc})") from None
        entries: list[tuple[str, object]] = []
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                entries.append((where, json.loads(line)))
            except ValueError as exc:
                raise LLMInputError(f"{where}: not valid JSON ({exc}); {FORMAT_HINT}") from None
    else:
        entries = [(f"requests[{i}]", value) for i, value in enumerate(source)]
    for number, (where, value) in enumerate(entries, 1):
        request = normalise(value, where, number, model)
        cid = request["custom_id"]
        if cid in seen:
            raise LLMInputError(
                f"{where}: custom_id {cid!r} is used twice (first at {seen[cid]}); every request "
                "needs its own id so its result can be matched to it"
            )
        seen[cid] = where
        requests.append(request)
    return requests
