"""A stand-in translation model for the translation example: a reversible pseudo-translation
served by ``shoal.llm.testing.OpenAIServer`` (a real OpenAI-compatible server on loopback).

It answers the example's requests the way a real model following the prompt would: the user
message is ``{"target": "de", "segments": {"1": "...", ...}}`` and the answer is a JSON object
with the same ids. Each segment's "translation" is :func:`pseudo`: the language's tag, then the
text with the letters of every word reversed, while inline code, link targets and URLs are kept
exactly, as a translator must keep them::

    pseudo("Run `tidepool doctor` first.", "de") == "⟪de⟫ nuR `tidepool doctor` tsrif."
    unpseudo("⟪de⟫ nuR `tidepool doctor` tsrif.") == ("de", "Run `tidepool doctor` first.")

So a test can check every translated segment (it must be ``pseudo(source, lang)``), and the
counts of what was answered (``DemoModel.answered``) show what the example asked for.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from shoal.llm import TokenCounter
from shoal.llm.testing import OpenAIServer

# What a pseudo-translation keeps as it is, and the words it reverses.
_TOKEN = re.compile(
    r"(?P<keep>`[^`]*`|\]\([^)]*\)|\]\[[^\]]*\]|<[^>\s][^>]*>|https?://[^\s)>\]]+)"
    r"|(?P<word>[^\W\d_]+)"
)
_TAG = re.compile(r"^⟪(?P<lang>[A-Za-z-]+)⟫ ")


def _reverse_words(text: str) -> str:
    def flip(match: re.Match[str]) -> str:
        word = match.group("word")
        return match.group(0) if word is None else word[::-1]

    return _TOKEN.sub(flip, text)


def pseudo(text: str, lang: str) -> str:
    """The demo's "translation" of ``text`` into ``lang``."""
    return f"⟪{lang}⟫ {_reverse_words(text)}"


def unpseudo(text: str) -> tuple[str, str]:
    """``(lang, source)`` of a pseudo-translation.

    Raises:
        ValueError: ``text`` is not a pseudo-translation.
    """
    match = _TAG.match(text)
    if match is None:
        raise ValueError(f"not a pseudo-translation: {text[:60]!r}")
    return match.group("lang"), _reverse_words(text[match.end() :])


class DemoModel:
    """Answers the example's translation requests; counts every segment it answered.

    Attributes:
        answered: ``(lang, source segment) -> times answered`` (200 answers only).
        requests: Requests answered 200.
    """

    def __init__(self, model: str = "gpt-4o-mini") -> None:
        self.answered: Counter[tuple[str, str]] = Counter()
        self.requests = 0
        self._lock = threading.Lock()
        self._counter = TokenCounter(model)

    @staticmethod
    def _answer(body: Mapping[str, Any]) -> tuple[str, dict[str, str], str]:
        messages = body.get("messages") or []
        asked = json.loads(messages[-1]["content"])
        lang = str(asked["target"])
        segments: dict[str, str] = asked["segments"]
        answer = {key: pseudo(text, lang) for key, text in segments.items()}
        return lang, segments, json.dumps(answer, ensure_ascii=False)

    def reply(self, body: dict[str, Any]) -> str:
        """The server's ``reply=``: called once per 200 answer."""
        lang, segments, text = self._answer(body)
        with self._lock:
            self.requests += 1
            for source in segments.values():
                self.answered[lang, source] += 1
        return text

    def reply_tokens(self, body: dict[str, Any]) -> int:
        """The server's ``reply_tokens=``: the answer's real length in tokens."""
        try:
            return self._counter.text(self._answer(body)[2])
        except (ValueError, KeyError, TypeError, IndexError):
            return 16  # not one of the example's requests: the server answers it anyway


def server(model: DemoModel, **options: Any) -> OpenAIServer:
    """An ``OpenAIServer`` (not started) whose chat replies come from ``model``; ``options`` are
    the server's own (``fail_rate=``, ``rpm=``, ``script=``, ``api_key=`` ...)."""
    return OpenAIServer(reply=model.reply, reply_tokens=model.reply_tokens, **options)
