"""Translation: a documentation set into 15 languages through any OpenAI-compatible endpoint, with
a translation memory, so that a repeated segment is translated once per language.

Each piece is one document in one language (10 documents x 15 languages: 150 pieces). A piece
splits its Markdown document into *segments* (headings, sentences, list items, table cells; code
blocks, front matter, raw HTML and link definitions are kept as they are), looks each segment up
in the translation memory, sends the ones nobody has translated yet to the model in one request
(a JSON object of numbered segments; at most ``BATCH_SEGMENTS`` segments or
``BATCH_TOKENS`` tokens a request, so a long document takes a few), stores the answers in the
memory, and writes the document, reassembled, to ``OUT/<lang>/<same path>``.

    shoal run examples/translate.py --report translate.html    # the demo: a local stand-in model
    TRANSLATE_BASE_URL=https://api.openai.com/v1 shoal run examples/translate.py --report t.html
    python examples/translate.py --base-url http://localhost:8000/v1 --model qwen2.5-7b-instruct

**The translation memory** (``TRANSLATE_MEMORY``, an SQLite file) maps ``(language, source
segment)`` to its translation and persists between runs: a second run, or a run over a changed
document set, sends only segments it has never seen. Within a run, a segment is asked for once
per language even when several pieces need it at the same moment: the first piece to need it
sends it, the others wait for that request (not for a piece: a waiting piece never waits for one
that is not sending, so there is no deadlock) and take the answer from the memory; if that
request fails, the next piece that needs the segment sends it itself.

**The ``shoal llm`` machinery**: token counts offline (``shoal.llm.TokenCounter``); with
``TRANSLATE_RPM`` / ``TRANSLATE_TPM`` two weighted sliding-window rates (a piece reserves the
requests and the prompt plus ``max_tokens`` it is about to send, and the real usage replaces the
reservation when the answers come back), otherwise adaptive concurrency; 429 and 503 pause
(``Retry-After`` honoured) without using an attempt, 5xx, timeouts and answers that break the
format are retried; usage and cost per piece (``shoal.usage``) in the journal and the report.

Configuration, from the environment (``shoal run``) or the options of ``python
examples/translate.py``:

- ``TRANSLATE_BASE_URL`` (``--base-url``): the API, e.g. ``https://api.openai.com/v1``. Without
  it the job serves a stand-in model on loopback (``demo_translate.py``: a reversible
  pseudo-translation, with a few 500s and 429s), so it runs offline.
- ``TRANSLATE_API_KEY_ENV`` (``--api-key-env``): the *name* of the environment variable holding
  the API key (default ``OPENAI_API_KEY``). The key is read from there only and never written to
  the output, the memory, the journal or the report.
- ``TRANSLATE_MODEL`` (default ``gpt-4o-mini``), ``TRANSLATE_PRICE_IN`` and
  ``TRANSLATE_PRICE_OUT`` (USD per million prompt and completion tokens, default gpt-4o-mini's
  0.15 and 0.60), ``TRANSLATE_RPM``, ``TRANSLATE_TPM``.
- ``TRANSLATE_DOCS`` (default: the sample, ``examples/translate_docs``), ``TRANSLATE_OUT``
  (default ``translated``), ``TRANSLATE_MEMORY`` (default ``translation-memory.sqlite``),
  ``TRANSLATE_LANGUAGES`` (comma-separated codes, default the 15 of ``LANGUAGES``).

What is a segment (see :func:`parse`): a heading's text; a paragraph's sentences (split after
``.``, ``!`` or ``?`` followed by a capital, never inside inline code or a link target, never
after "e.g."/"i.e."); a list item's or block quote's text (split into sentences too); a table
cell. A paragraph's lines are joined, so each translated paragraph is one line. A segment with
no letters outside inline code and URLs (```--fresh```, ``2``) is kept as it is. Inline code,
link targets and URLs must come back unchanged: an answer that changes them, leaves a segment
out or is not the JSON asked for is retried.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import hashlib
import json
import os
import re
import sqlite3
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import httpx

import shoal
import shoal.http
from shoal.llm import TokenCounter

HERE = Path(__file__).resolve().parent
SAMPLE_DOCS = HERE / "translate_docs"

LANGUAGES = {
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt-BR": "Brazilian Portuguese",
    "nl": "Dutch",
    "pl": "Polish",
    "sv": "Swedish",
    "tr": "Turkish",
    "ru": "Russian",
    "uk": "Ukrainian",
    "ja": "Japanese",
    "ko": "Korean",
    "zh-CN": "Simplified Chinese",
    "hi": "Hindi",
}
DEFAULT_MODEL = "gpt-4o-mini"
PRICE_IN, PRICE_OUT = 0.15, 0.60  # USD per million tokens: gpt-4o-mini's list prices
BATCH_SEGMENTS = 40  # segments per request at most
BATCH_TOKENS = 2_000  # source tokens per request at most (a single longer segment goes alone)
EXPANSION = 4  # max_tokens: this many times the source tokens (plus the JSON around them)
TIMEOUT = 120.0  # seconds per attempt
SYSTEM = (
    "You are a professional translator of software documentation. Translate each segment from "
    "English into {name} (language code {code}). A segment is one heading, sentence, list item "
    "or table cell of a Markdown document. Keep the Markdown markup and translate link text, but "
    "copy inline code in backticks, link targets and URLs exactly. Do not translate the names of "
    "products, commands, options or files. Answer with one JSON object that maps every segment "
    "id to its translation, and nothing else."
)


# ---------------------------------------------------------------------------- settings


def _number(name: str, default: float | None) -> float | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"${name}={text!r}: expected a number") from None
    if value < 0:
        raise ValueError(f"${name}={text!r}: expected a number >= 0")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the documents, the output and the memory are, and how to reach the model."""

    docs: Path = SAMPLE_DOCS
    out: Path = Path("translated")
    memory: Path = Path("translation-memory.sqlite")
    languages: tuple[str, ...] = tuple(LANGUAGES)
    model: str = DEFAULT_MODEL
    base_url: str | None = None  # None: the demo model on loopback
    api_key_env: str = "OPENAI_API_KEY"
    price_in: float = PRICE_IN
    price_out: float = PRICE_OUT

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        langs = tuple(c.strip() for c in env.get("TRANSLATE_LANGUAGES", "").split(",") if c.strip())
        return cls(
            docs=Path(env.get("TRANSLATE_DOCS") or SAMPLE_DOCS),
            out=Path(env.get("TRANSLATE_OUT") or "translated"),
            memory=Path(env.get("TRANSLATE_MEMORY") or "translation-memory.sqlite"),
            languages=langs or tuple(LANGUAGES),
            model=env.get("TRANSLATE_MODEL") or DEFAULT_MODEL,
            base_url=(env.get("TRANSLATE_BASE_URL") or "").rstrip("/") or None,
            api_key_env=env.get("TRANSLATE_API_KEY_ENV") or "OPENAI_API_KEY",
            price_in=_number("TRANSLATE_PRICE_IN", PRICE_IN) or 0.0,
            price_out=_number("TRANSLATE_PRICE_OUT", PRICE_OUT) or 0.0,
        )

    def cost(self, prompt: float, completion: float) -> float:
        return (prompt * self.price_in + completion * self.price_out) / 1e6


_configured: Settings | None = None


def configure(settings: Settings | None) -> None:
    """Use ``settings`` for the runs that start from now on (``None``: the environment's)."""
    global _configured  # noqa: PLW0603 - one configuration per process, like the environment
    _configured = settings


def settings() -> Settings:
    return _configured if _configured is not None else Settings.from_env()


# ---------------------------------------------------------------------------- segments

# Kept exactly by a translation: inline code, link targets, reference links, HTML tags, URLs.
PROTECTED = re.compile(r"`[^`]*`|\]\([^)]*\)|\]\[[^\]]*\]|<[^>\s][^>]*>|https?://[^\s)>\]]+")
_LETTER = re.compile(r"[^\W\d_]")
# The end of a sentence: . ! or ? (closing quotes, brackets and emphasis may follow), space, and
# a capital, a digit or inline code next (opening quotes, brackets and emphasis may come first).
_CLOSE, _OPEN = "\"'\u201d\u2019)\\]*_", "\"'\u201c\u2018(\\[*_"
_BOUNDARY = re.compile(rf"[.!?][{_CLOSE}]*(\s+)(?=[{_OPEN}]*[A-Z0-9`])")
_ABBREVIATION = re.compile(r"(?:^|[\s(])(?:e\.g|i\.e|vs|cf|Mr|Mrs|Ms|Dr)\.$")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")
_HEADING = re.compile(r"^(\s{0,3}#{1,6}[ \t]+)(.*?)([ \t]+#+)?[ \t]*$")
_ITEM = re.compile(r"^(\s*(?:[-*+]|\d{1,9}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?)(.*)$")
_QUOTE = re.compile(r"^(\s*(?:>[ \t]?)+)(.*)$")
_RULE = re.compile(r"^\s{0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)[ \t]*$")
_LINK_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*\S")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def protected(text: str) -> Counter[str]:
    """What a translation of ``text`` must keep exactly (inline code, link targets, URLs)."""
    return Counter(m.group(0) for m in PROTECTED.finditer(text))


def translatable(text: str) -> bool:
    """Whether ``text`` has words to translate outside inline code, link targets and URLs."""
    return _LETTER.search(PROTECTED.sub(" ", text)) is not None


def sentences(text: str) -> list[str]:
    """A paragraph's sentences (see the module docstring for the rule)."""
    shielded = [(m.start(), m.end()) for m in PROTECTED.finditer(text)]
    out: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if any(a <= match.start() < b for a, b in shielded):
            continue
        head = text[start : match.start(1)]
        if _ABBREVIATION.search(head):
            continue
        out.append(head)
        start = match.end(1)
    out.append(text[start:])
    return [s for s in out if s.strip()]


@dataclass(frozen=True, slots=True)
class Part:
    """A stretch of a document: ``literals[0] + segments[0] + literals[1] + ... + literals[-1]``
    (a part kept as it is has no segments)."""

    literals: tuple[str, ...]
    segments: tuple[str, ...] = ()

    def render(self, translations: Mapping[str, str]) -> str:
        pieces = [self.literals[0]]
        for segment, literal in zip(self.segments, self.literals[1:], strict=True):
            pieces.extend((translations[segment], literal))
        return "".join(pieces)


def _keep(text: str) -> Part:
    return Part((text,))


def _part(prefix: str, texts: Sequence[str], joiner: str, suffix: str) -> Part:
    """``prefix + joiner.join(texts) + suffix``, where the texts with words are segments."""
    literals = [prefix]
    segments: list[str] = []
    for i, text in enumerate(texts):
        if i:
            literals[-1] += joiner
        if translatable(text):
            segments.append(text)
            literals.append("")
        else:
            literals[-1] += text
    literals[-1] += suffix
    return Part(tuple(literals), tuple(segments))


def _starts_block(line: str) -> bool:
    return bool(
        not line.strip()
        or _FENCE.match(line)
        or _HEADING.match(line)
        or _ITEM.match(line)
        or _QUOTE.match(line)
        or line.lstrip().startswith(("|", "<"))
        or _RULE.match(line)
        or _LINK_DEF.match(line)
    )


def _newline(line: str) -> str:
    return line[len(line.rstrip("\r\n")) :] or "\n"


def parse(text: str) -> list[Part]:
    """A Markdown document as parts; ``"".join(p.render(identity))`` gives it back (with each
    paragraph on one line)."""
    lines = text.splitlines(keepends=True)
    parts: list[Part] = []
    i, n = 0, len(lines)
    if lines and lines[0].rstrip() == "---":  # front matter
        for j in range(1, n):
            if lines[j].rstrip() in ("---", "..."):
                parts.append(_keep("".join(lines[: j + 1])))
                i = j + 1
                break
    after_list = False
    while i < n:
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            parts.append(_keep(line))
            i += 1
            continue
        if fence := _FENCE.match(line):  # fenced code: up to the closing fence, or the end
            mark = fence.group(2)
            j = i + 1
            while j < n and not (
                lines[j].strip().startswith(mark[0] * len(mark))
                and not lines[j].strip().strip(mark[0])
            ):
                j += 1
            parts.append(_keep("".join(lines[i : j + 1])))
            i, after_list = j + 1, False
            continue
        previous_blank = i == 0 or not lines[i - 1].strip()
        if line.startswith(("    ", "\t")) and previous_blank and not after_list:  # indented code
            j = i
            while j < n and (lines[j].startswith(("    ", "\t")) or not lines[j].strip()):
                j += 1
            while j > i and not lines[j - 1].strip():
                j -= 1
            parts.append(_keep("".join(lines[i:j])))
            i = j
            continue
        if stripped.startswith("<"):  # raw HTML or a comment: up to a blank line (or -->)
            j = i
            closing = "-->" if stripped.startswith("<!--") else None
            while j < n and lines[j].strip() and not (closing and closing in lines[j]):
                j += 1
            j = min(j + 1, n) if closing and j < n and closing in lines[j] else j
            parts.append(_keep("".join(lines[i:j])))
            i, after_list = j, False
            continue
        if _RULE.match(line) or _LINK_DEF.match(line):
            parts.append(_keep(line))
            i += 1
            continue
        if heading := _HEADING.match(line):
            prefix, title, closing_hashes = heading.groups()
            parts.append(_part(prefix, [title], "", (closing_hashes or "") + _newline(line)))
            i, after_list = i + 1, False
            continue
        if stripped.startswith("|"):  # a table row
            if _TABLE_RULE.match(line):
                parts.append(_keep(line))
            else:
                indent = line[: len(line) - len(line.lstrip())]
                cells = [c.strip() for c in _CELL_SPLIT.split(stripped.strip("|"))]
                parts.append(_part(indent + "| ", cells, " | ", " |" + _newline(line)))
            i += 1
            continue
        if _QUOTE.match(line):
            i = _quote(lines, i, parts)
            after_list = False
            continue
        item = _ITEM.match(line)
        prefix = item.group(1) if item else line[: len(line) - len(line.lstrip())]
        body = [item.group(2) if item else line.strip()]
        j = i + 1
        if not item and j < n and _SETEXT.match(lines[j]):  # "Title" underlined with === or ---
            parts.append(_part(prefix, [body[0]], "", _newline(line)))
            parts.append(_keep(lines[j]))
            i = j + 1
            continue
        while j < n and not _starts_block(lines[j]):
            body.append(lines[j].strip())
            j += 1
        joined = " ".join(b.strip() for b in body if b.strip())
        parts.append(_part(prefix, sentences(joined), " ", _newline(lines[j - 1])))
        i, after_list = j, bool(item)
    return parts


def _quote(lines: list[str], i: int, parts: list[Part]) -> int:
    """A block quote's lines from ``i``: each paragraph of it a part (code inside kept)."""
    in_code = ""
    while i < len(lines):
        quoted = _QUOTE.match(lines[i])
        if quoted is None:
            break
        marker, content = quoted.groups()
        if fence := _FENCE.match(content):
            mark = fence.group(2)[0] * len(fence.group(2))
            in_code = "" if in_code and content.strip().startswith(in_code) else in_code or mark
            parts.append(_keep(lines[i]))
            i += 1
            continue
        if in_code or not content.strip():
            parts.append(_keep(lines[i]))
            i += 1
            continue
        inner = _HEADING.match(content) or _ITEM.match(content)
        prefix = marker + (inner.group(1) if inner else "")
        body = [inner.group(2) if inner else content]
        j = i + 1
        while j < len(lines) and (more := _QUOTE.match(lines[j])) is not None:
            rest = more.group(2)
            if not rest.strip() or _starts_block(rest) or _FENCE.match(rest):
                break
            body.append(rest)
            j += 1
        joined = " ".join(b.strip() for b in body)
        parts.append(_part(prefix, sentences(joined), " ", _newline(lines[j - 1])))
        i = j
    return i


def segments_of(parts: Iterable[Part]) -> list[str]:
    """Every segment of a document, in order (repeats included)."""
    return [s for p in parts for s in p.segments]


def assemble(parts: Iterable[Part], translations: Mapping[str, str]) -> str:
    return "".join(p.render(translations) for p in parts)


def documents(root: Path) -> list[str]:
    """The Markdown files under ``root``, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.md") if p.is_file())


# ---------------------------------------------------------------------------- the memory


class Memory:
    """The translation memory: an SQLite file of ``(lang, source) -> target``.

    Each piece adds what it got in one transaction, so an interrupted run keeps every segment
    that was answered. Writes come from worker threads (never the event loop), one at a time.
    """

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS segments (lang TEXT NOT NULL, source TEXT NOT NULL, "
        "target TEXT NOT NULL, model TEXT NOT NULL, added TEXT NOT NULL, "
        "PRIMARY KEY (lang, source))"
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30.0)
        conn.execute(self.SCHEMA)
        return conn

    def load(self) -> dict[str, dict[str, str]]:
        """Everything in the file, by language (nothing when there is no file yet)."""
        if not self.path.exists():
            return {}
        out: dict[str, dict[str, str]] = {}
        with self._lock, contextlib.closing(self._connect()) as conn:
            for lang, source, target in conn.execute("SELECT lang, source, target FROM segments"):
                out.setdefault(lang, {})[source] = target
        return out

    def add(self, lang: str, pairs: Mapping[str, str], model: str) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        rows = [(lang, s, t, model, now) for s, t in pairs.items()]
        with self._lock, contextlib.closing(self._connect()) as conn, conn:
            conn.executemany("INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?)", rows)


# ---------------------------------------------------------------------------- requests


class BadTranslation(Exception):
    """The model's answer is not the JSON asked for, leaves segments out, or changed inline
    code, link targets or URLs. Retried: a model may well answer right the next time."""


def batches(segments: Sequence[str], count: TokenCounter) -> list[list[str]]:
    """``segments`` in request-sized groups (``BATCH_SEGMENTS``, ``BATCH_TOKENS``), in order."""
    out: list[list[str]] = []
    size = 0
    for segment in segments:
        tokens = count.text(segment)
        if not out or len(out[-1]) >= BATCH_SEGMENTS or size + tokens > BATCH_TOKENS:
            out.append([])
            size = 0
        out[-1].append(segment)
        size += tokens
    return out


def request_body(
    lang: str, batch: Sequence[str], model: str, count: TokenCounter
) -> dict[str, Any]:
    """The chat completion request that translates ``batch`` into ``lang``."""
    asked = {"target": lang, "segments": {str(i): s for i, s in enumerate(batch, 1)}}
    source = sum(count.text(s) for s in batch)
    return {
        "model": model,
        "temperature": 0,
        "max_tokens": EXPANSION * source + 12 * len(batch) + 32,
        "messages": [
            {"role": "system", "content": SYSTEM.format(name=LANGUAGES.get(lang, lang), code=lang)},
            {"role": "user", "content": json.dumps(asked, ensure_ascii=False)},
        ],
    }


def request_id(lang: str, batch: Sequence[str]) -> str:
    """Stable for the same segments in the same language: a retry sends the same id."""
    digest = hashlib.sha256(json.dumps([lang, list(batch)]).encode()).hexdigest()
    return f"translate-{lang}-{digest[:16]}"


def read_answer(content: str, batch: Sequence[str]) -> dict[str, str]:
    """The translations in a model's answer, checked against the batch asked for.

    Raises:
        BadTranslation: not a JSON object of the ids asked for, an empty translation, or inline
            code, a link target or a URL that did not come back exactly.
    """
    text = content.strip()
    if text.startswith("```"):  # a model that wraps its JSON in a code fence anyway
        text = text.strip("`").removeprefix("json").strip()
    try:
        answer = json.loads(text)
    except ValueError as exc:
        raise BadTranslation(f"the answer is not JSON ({exc}): {content[:80]!r}") from None
    if not isinstance(answer, dict):
        raise BadTranslation(f"the answer is a JSON {type(answer).__name__}, not an object")
    out: dict[str, str] = {}
    for i, source in enumerate(batch, 1):
        target = answer.get(str(i))
        if not isinstance(target, str) or not target.strip():
            raise BadTranslation(f"segment {i} of {len(batch)} is missing from the answer")
        target = " ".join(target.split())  # one line, as the segment was
        if protected(target) != protected(source):
            lost = protected(source) - protected(target)
            raise BadTranslation(
                f"segment {i} changed inline code, a link target or a URL: {sorted(lost)[:3]}"
            )
        out[source] = target
    return out


# ---------------------------------------------------------------------------- one run's state

_demo: Any = None  # the stand-in model's server, once started


def demo_url() -> str:
    """The stand-in model's base URL: served on loopback by this process until it exits."""
    global _demo  # noqa: PLW0603 - one demo server per process
    if _demo is None:
        from demo_translate import DemoModel, server  # beside this file, on the path

        _demo = server(DemoModel(), latency=0.02, fail_rate=0.05, rpm=3000, seed=7).start()
        atexit.register(stop_demo)
    url: str = _demo.url
    return url


def stop_demo() -> None:
    global _demo  # noqa: PLW0603
    if _demo is not None:
        _demo.stop()
        _demo = None


class Translated(TypedDict):
    """What one piece gives: one document in one language."""

    doc: str
    lang: str
    output: str  # the file written
    segments: int  # translatable segments in the document (repeats included)
    sent: int  # distinct segments this piece had translated
    from_memory: int  # segments found in the memory from earlier runs
    repeats: int  # segments another piece of this run (or this document) had translated
    source_tokens_saved: int  # tokens of the segments not sent (in, and their translations out)
    target_tokens_saved: int


class Translator:
    """One run's state: settings, the memory, the requests in flight, the parsed documents."""

    def __init__(self, config: Settings) -> None:
        self.settings = config
        self.store = Memory(config.memory)
        self.memory = self.store.load()
        self.added: dict[str, set[str]] = {}  # segments translated during this run, by language
        self.in_flight: dict[tuple[str, str], asyncio.Event] = {}
        self.count = TokenCounter(config.model)
        self._parsed: dict[str, list[Part]] = {}
        self._base_url = config.base_url

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            self._base_url = demo_url()
        return self._base_url

    def parts(self, doc: str) -> list[Part]:
        parsed = self._parsed.get(doc)
        if parsed is None:
            root = self.settings.docs.resolve()
            path = (root / doc).resolve()
            if not path.is_relative_to(root):
                raise BadItem(f"doc {doc!r} is outside TRANSLATE_DOCS ({root})")
            parsed = self._parsed[doc] = parse(path.read_text(encoding="utf-8"))
        return parsed

    def to_send(self, doc: str, lang: str) -> list[str]:
        """The document's segments that nobody has translated or is translating now."""
        known = self.memory.get(lang, {})
        wanted = dict.fromkeys(segments_of(self.parts(doc)))
        return [s for s in wanted if s not in known and (lang, s) not in self.in_flight]

    def reservation(self, item: object) -> tuple[int, int]:
        """The requests and tokens (prompt plus ``max_tokens``) the piece would send now; one
        request and no tokens for an item the piece itself will fail on, with the cause."""
        try:
            doc, lang = checked(item)
            groups = batches(self.to_send(doc, lang), self.count)
        except (BadItem, OSError, ValueError):
            return 1, 0
        tokens = 0
        for batch in groups:
            body = request_body(lang, batch, self.settings.model, self.count)
            tokens += self.count.request("chat", body)[0] + body["max_tokens"]
        return len(groups), tokens

    async def send(self, lang: str, batch: list[str]) -> dict[str, str]:
        """One request: the batch's translations (usage and cost reported to shoal)."""
        config = self.settings
        body = request_body(lang, batch, config.model, self.count)
        headers = {"X-Client-Request-Id": request_id(lang, batch)}
        key = os.environ.get(config.api_key_env) if config.base_url else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.base_url + "/chat/completions"
        client = await shoal.http.client()
        try:
            response = await client.post(url, json=body, headers=headers, timeout=TIMEOUT)
        except httpx.TransportError as exc:
            shoal.usage(tokens=0, requests=1)
            raise shoal.http.scrub(shoal.http.transport_error(exc, "POST", url), key) from exc
        if response.status_code >= 400:
            shoal.usage(tokens=0, requests=1)  # a refused request uses no tokens
        try:
            shoal.http.check(response)
        except shoal.ShoalError as exc:
            raise shoal.http.scrub(exc, key) from None
        data = response.json()
        used = data.get("usage") or {}
        prompt = int(used.get("prompt_tokens") or 0)
        completion = int(used.get("completion_tokens") or 0)
        shoal.usage(
            tokens=prompt + completion,
            input_tokens=prompt,
            output_tokens=completion,
            cost=config.cost(prompt, completion),
            requests=1,
        )
        choice = (data.get("choices") or [{}])[0]
        if choice.get("finish_reason") == "length":
            raise BadTranslation(f"the answer was cut at max_tokens={body['max_tokens']}")
        content = (choice.get("message") or {}).get("content")
        if not isinstance(content, str):
            raise BadTranslation("the answer has no message content")
        return read_answer(content, batch)

    async def translate(self, doc: str, lang: str) -> Translated:
        """One piece (see the module docstring)."""
        shoal.usage(tokens=0, requests=0)  # corrects the reservation when nothing is sent
        known = self.memory.setdefault(lang, {})
        added = self.added.setdefault(lang, set())
        parts = self.parts(doc)
        occurrences = segments_of(parts)
        earlier = {s for s in occurrences if s in known and s not in added}
        sent: set[str] = set()
        while missing := [s for s in dict.fromkeys(occurrences) if s not in known]:
            mine = [s for s in missing if (lang, s) not in self.in_flight]
            theirs = {self.in_flight[lang, s] for s in missing if (lang, s) in self.in_flight}
            if mine:
                done = asyncio.Event()
                for s in mine:
                    self.in_flight[lang, s] = done
                try:
                    for batch in batches(mine, self.count):
                        got = await self.send(lang, batch)
                        await asyncio.to_thread(self.store.add, lang, got, self.settings.model)
                        known.update(got)
                        added.update(got)
                        sent.update(got)
                finally:  # answered or not: whoever waits looks at the memory again
                    for s in mine:
                        if self.in_flight.get((lang, s)) is done:
                            del self.in_flight[lang, s]
                    done.set()
            for event in theirs:
                await event.wait()
        target = self.settings.out / lang / doc
        await asyncio.to_thread(_write, target, assemble(parts, known))
        hits = list(occurrences)
        for s in sent:
            hits.remove(s)  # a segment sent is no hit; its repeats in the document are
        return Translated(
            doc=doc,
            lang=lang,
            output=str(target),
            segments=len(occurrences),
            sent=len(sent),
            from_memory=sum(1 for s in hits if s in earlier),
            repeats=sum(1 for s in hits if s not in earlier),
            source_tokens_saved=sum(self.count.text(s) for s in hits),
            target_tokens_saved=sum(self.count.text(known[s]) for s in hits),
        )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


_translators: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Translator] = (
    weakref.WeakKeyDictionary()
)


def translator() -> Translator:
    """The current run's state (every ``job.run`` has an event loop of its own), made with the
    settings of the moment; outside a run (``shoal run --dry-run``), a fresh one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return Translator(settings())
    made = _translators.get(loop)
    if made is None:
        made = _translators[loop] = Translator(settings())
    return made


# ---------------------------------------------------------------------------- the job


class BadItem(ValueError):
    """An item that is not ``{"doc": PATH, "lang": CODE}`` (with a path inside the documents'
    folder and a language code such as ``de`` or ``pt-BR``). Not retried."""

    retryable = False


_LANG_CODE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")


def checked(item: object) -> tuple[str, str]:
    """``(doc, lang)`` of an item.

    Raises:
        BadItem: see the class; the message says what a piece needs.
    """
    doc = item.get("doc") if isinstance(item, Mapping) else None
    lang = item.get("lang") if isinstance(item, Mapping) else None
    if not isinstance(doc, str) or not isinstance(lang, str):
        raise BadItem(
            f"{item!r}: a piece is one document in one language, "
            '{"doc": "guides/restore.md", "lang": "de"} (a JSON Lines --input of such objects, '
            "or none: every document of TRANSLATE_DOCS in every language)"
        )
    if not _LANG_CODE.match(lang):
        raise BadItem(f"lang {lang!r}: expected a language code such as de, ja or pt-BR")
    if Path(doc).is_absolute() or ".." in Path(doc).parts:
        raise BadItem(f"doc {doc!r}: expected a path relative to TRANSLATE_DOCS, inside it")
    return doc, lang


async def translate(item: Mapping[str, str]) -> Translated:
    """One piece: ``{"doc": "guides/restore.md", "lang": "de"}``."""
    doc, lang = checked(item)
    return await translator().translate(doc, lang)


def _requests(item: Mapping[str, str]) -> float:
    return float(translator().reservation(item)[0])


def _tokens(item: Mapping[str, str]) -> float:
    return float(translator().reservation(item)[1])


def _model(item: Mapping[str, str]) -> str:
    return translator().settings.model  # one key: the model's limits are the server's


def make_job(
    *, rpm: float | None = None, tpm: float | None = None, concurrency: int | None = None
) -> shoal.Job[Mapping[str, str], Translated]:
    """The translation job: with ``rpm``/``tpm`` two weighted rates (requests and tokens the
    piece is about to send, corrected by what it sent), otherwise adaptive concurrency."""
    rates = []
    if rpm:
        rates.append(
            shoal.Rate(rpm, per=60.0, burst=max(1.0, rpm / 60), weight=_requests, actual="requests")
        )
    if tpm:
        rates.append(
            shoal.Rate(tpm, per=60.0, burst=max(1.0, tpm / 60), weight=_tokens, actual="tokens")
        )
    return shoal.Job(
        translate,
        key=_model,
        limits=shoal.Limits(
            concurrency=concurrency or (32 if rates else 64), rate=rates or None, adaptive=not rates
        ),
        retry=shoal.Retry(
            attempts=5,
            base_delay=0.25,
            max_delay=20.0,
            on=(shoal.http.TransientHTTPError, TimeoutError, BadTranslation),
            max_throttles=20,
        ),
        timeout=TIMEOUT,
        name="translate-docs",
    )


job = make_job(rpm=_number("TRANSLATE_RPM", None), tpm=_number("TRANSLATE_TPM", None))


def items() -> list[dict[str, str]]:
    """The default input: every document of ``TRANSLATE_DOCS`` in every language, document by
    document (so the pieces running together are mostly of different languages)."""
    config = settings()
    if not config.docs.is_dir():
        raise FileNotFoundError(f"TRANSLATE_DOCS={config.docs}: no such folder of Markdown files")
    return [
        {"doc": doc, "lang": lang} for doc in documents(config.docs) for lang in config.languages
    ]


# ---------------------------------------------------------------------------- the report


COLUMNS = (
    *("docs", "failed", "segments", "sent", "TM hits", "hit rate", "from earlier runs"),
    *("requests", "tokens", "cost", "saved (est.)"),
)


def language_rows(run: shoal.Run[Translated]) -> list[dict[str, Any]]:
    """A row per language: documents (done and failed), segments, what was sent, memory hits,
    tokens, cost and the estimated saving (USD).

    ``requests`` counts every request sent, those answered 429 or 500 included."""
    config = settings()
    rows: dict[str, dict[str, Any]] = {}
    for outcome in run.outcomes:
        try:
            lang = checked(outcome.item)[1]
        except BadItem:
            lang = "?"
        row = rows.setdefault(lang, dict.fromkeys(COLUMNS, 0))
        row["language"] = f"{LANGUAGES.get(lang, lang)} ({lang})"
        used = outcome.usage or {}
        row["requests"] += int(used.get("requests", 0))
        row["tokens"] += int(used.get("tokens", 0))
        row["cost"] += float(used.get("cost", 0.0))
        if not outcome.ok:
            row["failed"] += 1
            continue
        value: Translated = outcome.value  # type: ignore[assignment]
        row["docs"] += 1
        row["segments"] += value["segments"]
        row["sent"] += value["sent"]
        row["TM hits"] += value["segments"] - value["sent"]
        row["from earlier runs"] += value["from_memory"]
        row["saved (est.)"] += config.cost(
            value["source_tokens_saved"], value["target_tokens_saved"]
        )
    out = []
    for row in rows.values():
        row["hit rate"] = f"{row['TM hits'] / row['segments']:.0%}" if row["segments"] else "-"
        row["cost"] = round(row["cost"], 5)
        row["saved (est.)"] = round(row["saved (est.)"], 5)
        out.append({"language": row.pop("language"), **row})
    return out


def savings(run: shoal.Run[Translated]) -> dict[str, Any]:
    """The whole run: segments, distinct segments, sent, memory hits, tokens, cost, savings."""
    rows = language_rows(run)
    segments = sum(r["segments"] for r in rows)
    hits = sum(r["TM hits"] for r in rows)
    distinct = 0
    with contextlib.suppress(OSError):
        config = settings()
        by_lang: dict[str, set[str]] = {}
        for o in run.outcomes:
            if o.ok:
                parsed = parse((config.docs / o.item["doc"]).read_text(encoding="utf-8"))
                by_lang.setdefault(o.item["lang"], set()).update(segments_of(parsed))
        distinct = sum(len(s) for s in by_lang.values())
    values: list[Translated] = run.values
    saved_in = sum(v["source_tokens_saved"] for v in values)
    saved_out = sum(v["target_tokens_saved"] for v in values)
    return {
        "documents": sum(r["docs"] for r in rows),
        "segments": segments,
        "distinct per language": distinct,
        "sent": sum(r["sent"] for r in rows),
        "TM hits": hits,
        "hit rate": f"{hits / segments:.0%}" if segments else "-",
        "from earlier runs": sum(r["from earlier runs"] for r in rows),
        "requests": sum(r["requests"] for r in rows),
        "tokens": sum(r["tokens"] for r in rows),
        "cost": round(sum(r["cost"] for r in rows), 6),
        "tokens saved (est.)": saved_in + saved_out,
        "cost saved (est.)": round(sum(r["saved (est.)"] for r in rows), 6),
    }


def extend_report(report: Any, run: shoal.Run[Translated]) -> None:
    """The translation's own tables (``shoal run`` calls this): a row per language, the memory's
    savings over the whole run, a chart of segments sent and found per language, the settings
    (model, endpoint, prices in USD per million tokens) and the documents that failed, if any.

    "TM hits" are segments not sent: found in the memory from earlier runs, translated by
    another piece of this run, or repeated within the document. "saved" prices a hit as its
    source (in) and its stored translation (out), without the prompt around it: an estimate."""
    rows = language_rows(run)
    shown = ["language", "docs", "segments", "sent", "TM hits", "hit rate", "requests", "tokens"]
    shown += ["cost", "saved (est.)"]
    if any(r["failed"] for r in rows):
        shown.insert(2, "failed")
    report.add_table("Translation per language", rows, columns=shown, limit=100)
    report.add_table(
        "Translation memory savings",
        [{"measure": k, "value": v} for k, v in savings(run).items()],
    )
    report.add_chart(
        "Segments per language: sent to the model, and found in the translation memory",
        [r["language"].split(" (")[-1].rstrip(")") for r in rows],
        {"sent": [r["sent"] for r in rows], "TM hits": [r["TM hits"] for r in rows]},
        stacked=True,
        y_label="segments",
        colors={"sent": "#c8553d", "TM hits": "#4c9a6a"},
    )
    config = settings()
    endpoint = config.base_url or "demo: the stand-in model on loopback (demo_translate.py)"
    report.add_table(
        "Translation settings",
        [
            {
                "model": config.model,
                "endpoint": shoal.http.safe_url(endpoint) if config.base_url else endpoint,
                "price in": config.price_in,
                "price out": config.price_out,
                "memory": str(config.memory),
                "output": str(config.out),
            }
        ],
    )
    failed = [
        {
            "doc": str(o.item.get("doc")) if isinstance(o.item, Mapping) else repr(o.item),
            "lang": str(o.item.get("lang")) if isinstance(o.item, Mapping) else "",
            "cause": str(o.error),
        }
        for o in run.outcomes
        if not o.ok
    ]
    if failed:
        report.add_table("Failed documents", failed, limit=100)


# ---------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    defaults = Settings.from_env()
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=Path, default=defaults.docs, help="folder of Markdown docs")
    parser.add_argument("--out", type=Path, default=defaults.out, help="output folder")
    parser.add_argument("--memory", type=Path, default=defaults.memory, help="the memory file")
    parser.add_argument("--languages", default=",".join(defaults.languages), metavar="CODES")
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--base-url", default=defaults.base_url, help="default: the demo model")
    parser.add_argument("--api-key-env", default=defaults.api_key_env, metavar="NAME")
    parser.add_argument("--price-in", type=float, default=defaults.price_in, metavar="USD")
    parser.add_argument("--price-out", type=float, default=defaults.price_out, metavar="USD")
    parser.add_argument("--rpm", type=float, default=_number("TRANSLATE_RPM", None))
    parser.add_argument("--tpm", type=float, default=_number("TRANSLATE_TPM", None))
    parser.add_argument("--journal", metavar="PATH", help="resume from / record in this journal")
    parser.add_argument("--report", metavar="PATH", help="write the report here (.html, .md...)")
    parser.add_argument("--quiet", action="store_true", help="no progress view")
    args = parser.parse_args(argv)
    configure(
        Settings(
            docs=args.docs,
            out=args.out,
            memory=args.memory,
            languages=tuple(c.strip() for c in args.languages.split(",") if c.strip()),
            model=args.model,
            base_url=(args.base_url or "").rstrip("/") or None,
            api_key_env=args.api_key_env,
            price_in=args.price_in,
            price_out=args.price_out,
        )
    )
    try:
        chosen = make_job(rpm=args.rpm, tpm=args.tpm) if args.rpm or args.tpm else job
        run = chosen.run(items(), journal=args.journal, progress=not args.quiet)
        total = savings(run)
        print(
            f"{total['documents']} of {len(run.outcomes)} documents translated: "
            f"{total['segments']:,} segments, {total['sent']:,} sent in {total['requests']:,} "
            f"requests, {total['TM hits']:,} from the translation memory ({total['hit rate']}); "
            f"{total['tokens']:,} tokens, ${total['cost']:.4f}; {run.stats.wall_time:.1f}s"
        )
        print(f"output: {args.out.resolve()}/<language>/  memory: {args.memory.resolve()}")
        for failure in run.failures:
            print(f"  failed: {failure.item}: {failure.error}", file=sys.stderr)
        if args.report:
            report = run.report
            extend_report(report, run)
            print(f"report: {report.save(args.report).resolve()}")
    finally:
        configure(None)
        stop_demo()
    return 0 if run.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
