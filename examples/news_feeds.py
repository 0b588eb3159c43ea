"""News aggregation: many RSS and Atom feeds fetched at once, merged, deduplicated, newest first.

Each piece fetches one feed over HTTP (``shoal.http``: httpx, one shared client per run) and
parses it with feedparser; the combiner merges every feed's entries, keeps each story once and
sorts them by time. Politeness is shoal's limits: at most 10 requests in flight, at most 2 per
host (the job's key is the URL's host and port, ``shoal.http.host``), and a 429 or 503 pauses
its host for the server's ``Retry-After`` without using up an attempt (at most 5 times per
feed). Connection errors, timeouts and 408/425/500/502/504 are retried (3 attempts, jittered
backoff); other answers and broken feeds fail their piece at once, with the cause in the report.

    shoal run examples/news_feeds.py --input feeds.txt --report news.html   # one URL per line
    shoal run examples/news_feeds.py --report news.html   # the demo: 59 feeds on 7 local hosts
    python examples/news_feeds.py [--input feeds.txt] [--report news.html]

Without ``--input`` the job serves its demo news web (``demo_news.py``: 6 outlets' RSS 2.0 and
Atom feeds, overlapping stories, slow, failing, throttling and malformed feeds) on loopback
ports and aggregates that, so it runs offline; five of its feeds are broken on purpose, so the
run ends with exit code 1 and lists them.

What counts as the same story (see :func:`dedupe_entries`):

- the same link, once normalised: scheme and host lower-cased, the fragment, a trailing slash
  and tracking parameters (``utm_*``, ``fbclid``, ``gclid``, ``mc_cid``, ``mc_eid``) dropped; or
- a near-same title: the word sets of the two titles (case-folded, Unicode-normalised,
  punctuation dropped) overlap by at least ``SIMILAR`` = 0.8 (Jaccard: shared words / all
  words), both titles have at least ``MIN_WORDS`` = 4 words, and the two were published within
  ``WINDOW`` = 2 days of each other (undated entries match on the title alone). "Storm closes
  Eastport harbour" and "Storm Closes Eastport Harbour | Wire" are one story; "Council approves
  budget for schools" and "... for roads" (0.6) are two.

The copy kept is the earliest published (the original; the first in input order on a tie); it
lists every feed that carried the story. Entries without a date sort after all dated ones.

What fails a feed: an HTTP error status; a document that is not an RSS or Atom feed (an HTML
error page served with 200, say); XML that is not well-formed (a truncated download, say).
feedparser's lenient parser would still return some entries of a broken document, but not
knowing which were cut or mangled, the job reports the feed as failed instead. The one
exception is an undefined entity (``&nbsp;`` in RSS, common and harmless): feedparser decodes it
exactly, and the feed's row in the report notes it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import re
import sys
import unicodedata
import xml.sax
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from time import struct_time
from typing import Any, TypedDict
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import feedparser

import shoal
import shoal.http
from shoal import combine

CONCURRENCY = 10  # requests in flight at most, over all hosts
PER_HOST = 2  # requests in flight at most per host
TIMEOUT = 15.0  # seconds per attempt (connect, read and parse)
SIMILAR = 0.8  # titles whose word sets overlap this much are one story
MIN_WORDS = 4  # shorter titles ("Weather", "Live updates") match by link only
WINDOW = timedelta(days=2)  # near-same titles further apart in time are different stories
TRACKING = ("utm_", "fbclid", "gclid", "mc_cid", "mc_eid")  # query parameters that name no page
USER_AGENT = "shoal-news-example/1"


class Entry(TypedDict):
    title: str
    link: str
    published: str | None  # ISO 8601 in UTC ("2024-06-03T11:40:00Z"), None when undated
    summary: str
    feed: str  # the URL of the feed it came from
    source: str  # that feed's title


class Fetched(TypedDict):
    """What one piece returns: one feed, parsed."""

    feed: str  # the URL asked for
    title: str
    format: str  # feedparser's name: "rss20", "atom10", ...
    entries: list[Entry]
    note: str  # what feedparser recovered from, if anything ("" when the feed was clean)


class Story(Entry):
    """An entry of the merged result: the kept copy, and every feed that carried the story."""

    feeds: list[str]


# ---------------------------------------------------------------------------- errors


class FeedError(Exception):
    """A document that cannot be used as a feed; the message says why. Not retried: the same
    document comes back next time."""


class NotAFeed(FeedError):
    """The document is neither RSS nor Atom."""


class MalformedFeed(FeedError):
    """The document is not well-formed XML."""


# ---------------------------------------------------------------------------- one piece


def iso(parsed: struct_time | None) -> str | None:
    """feedparser's UTC time tuple as ISO 8601 text."""
    if parsed is None:
        return None
    return datetime(*parsed[:6], tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _recoverable(exc: BaseException | None) -> bool:
    """The one XML error that feedparser repairs exactly: an undefined (HTML) entity."""
    return isinstance(exc, xml.sax.SAXParseException) and "undefined entity" in exc.getMessage()


def parse(url: str, body: bytes, headers: dict[str, str]) -> Fetched:
    """A feed document as entries, or :class:`FeedError` saying why it cannot be used."""
    parsed = feedparser.parse(body, response_headers=headers)
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    if not parsed.get("version"):
        kind = headers.get("content-type", "no Content-Type")
        start = body[:60].decode("utf-8", "replace").strip()
        raise NotAFeed(f"{url} is not an RSS or Atom feed ({kind}; it starts {start!r})")
    if isinstance(problem, xml.sax.SAXParseException) and not _recoverable(problem):
        raise MalformedFeed(
            f"{url} is not well-formed XML (line {problem.getLineNumber()}, column "
            f"{problem.getColumnNumber()}: {problem.getMessage()}); feedparser recovered "
            f"{len(parsed.entries)} entries of unknown completeness, none kept"
        )
    info = parsed.get("feed", {})
    source = str(info.get("title") or shoal.http.host(url)).strip()
    entries: list[Entry] = []
    for e in parsed.entries:
        title = " ".join(str(e.get("title") or "").split())
        link = str(e.get("link") or e.get("id") or "").strip()
        if not (title or link):
            continue
        entries.append(
            Entry(
                title=title or link,
                link=link,
                published=iso(e.get("published_parsed") or e.get("updated_parsed")),
                summary=" ".join(str(e.get("summary") or "").split())[:300],
                feed=url,
                source=source,
            )
        )
    note = "" if problem is None else f"recovered: {type(problem).__name__}: {problem}"
    return Fetched(
        feed=url, title=source, format=parsed.get("version", ""), entries=entries, note=note
    )


async def fetch(url: str) -> Fetched:
    """One piece: GET the feed (what the status means to shoal is ``shoal.http``'s: throttled,
    transient or permanent), then parse it in a thread, so that the event loop keeps serving the
    other requests meanwhile."""
    url = str(url).strip()
    response = await shoal.http.request(
        "GET", url, headers={"User-Agent": USER_AGENT}, timeout=TIMEOUT, follow_redirects=True
    )
    headers = {k.lower(): v for k, v in response.headers.items()}
    headers["content-location"] = str(response.url)  # relative links resolve against it
    return await asyncio.to_thread(parse, url, response.content, headers)


# ---------------------------------------------------------------------------- merging

_WORD = re.compile(r"\w+")


def words(title: str) -> frozenset[str]:
    """A title's words, case-folded and Unicode-normalised, punctuation dropped."""
    return frozenset(_WORD.findall(unicodedata.normalize("NFKC", title).casefold()))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard: shared words over all words (1.0 for the same words in any order and case)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def canonical_link(link: str) -> str:
    """A link as the same page is named however a feed tracks it (see the module docstring)."""
    parts = urlsplit(link.strip())
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith(TRACKING)
    ]
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, urlencode(query), ""))


def _when(entry: Entry) -> datetime | None:
    text = entry["published"]
    return None if text is None else datetime.fromisoformat(text)


def _close_in_time(a: Entry, b: Entry) -> bool:
    ta, tb = _when(a), _when(b)
    return ta is None or tb is None or abs(ta - tb) <= WINDOW


def dedupe_entries(records: list[combine.Record]) -> list[combine.Record]:
    """One record per story (see the module docstring), earliest copy first; its sources are
    every piece (feed) that carried the story, its value lists their URLs under ``feeds``.

    Candidates for a near-same title come from an index of words, and only those sharing
    enough words to reach ``SIMILAR`` are compared, so the cost grows with the stories that
    share words, not with the square of all entries.
    """
    order = sorted(
        range(len(records)),
        key=lambda i: (records[i].value["published"] is None, records[i].value["published"] or ""),
    )
    kept: list[tuple[Story, set[int], frozenset[str]]] = []
    by_link: dict[str, int] = {}
    by_word: dict[str, list[int]] = {}
    for i in order:
        entry: Entry = records[i].value
        link = canonical_link(entry["link"])
        tokens = words(entry["title"])
        at = by_link.get(link)
        if at is None and len(tokens) >= MIN_WORDS:
            shared: dict[int, int] = {}
            for word in tokens:
                for k in by_word.get(word, ()):
                    shared[k] = shared.get(k, 0) + 1
            for k, n in sorted(shared.items()):
                other = kept[k][2]
                if n / (len(tokens) + len(other) - n) >= SIMILAR and _close_in_time(
                    entry, kept[k][0]
                ):
                    at = k
                    break
        if at is None:
            at = len(kept)
            kept.append((Story(**entry, feeds=[]), set(), tokens))
            if len(tokens) >= MIN_WORDS:
                for word in tokens:
                    by_word.setdefault(word, []).append(at)
        story, sources, _ = kept[at]
        if entry["feed"] not in story["feeds"]:
            story["feeds"].append(entry["feed"])
        sources.update(records[i].sources)
        by_link.setdefault(link, at)
    return [combine.Record(story, frozenset(sources)) for story, sources, _ in kept]


def _entries_of(records: list[combine.Record]) -> list[combine.Record]:
    """Each feed's entries, one record per entry (which remembers its feed's piece)."""
    return [combine.Record(e, r.sources) for r in records for e in r.value["entries"]]


def newest_first(story: Story) -> tuple[bool, str]:
    """Dated stories newest first, then the undated ones (with ``reverse=True``)."""
    return (story["published"] is not None, story["published"] or "")


headlines = (
    combine.Combiner(_entries_of, name="entries")
    .then(combine.Combiner(dedupe_entries, name="dedupe(link or near-same title)"))
    .then(combine.sort(newest_first, reverse=True))
)

job = shoal.Job(
    fetch,
    key=shoal.http.host,
    limits=shoal.Limits(concurrency=CONCURRENCY, per_key=PER_HOST),
    retry=shoal.Retry(
        attempts=3,
        base_delay=0.25,
        max_delay=5.0,
        on=(shoal.http.TransientHTTPError, TimeoutError),  # TimeoutError: the job's timeout
        max_throttles=5,
    ),
    timeout=TIMEOUT,
    combine=headlines,
    name="news-feeds",
)


# ---------------------------------------------------------------------------- input and report

_demo: Any = None  # the demo server, once items() started it


def items() -> list[str]:
    """The default input (``shoal run`` without ``--input``): the demo news web's feeds, served
    on loopback ports by this process until it exits."""
    global _demo  # noqa: PLW0603 - one demo server per process
    if _demo is None:
        from demo_news import NewsServer  # beside this file: shoal run puts its folder on the path

        _demo = NewsServer().start()
        atexit.register(stop_demo)
    urls: list[str] = _demo.feed_urls()
    return urls


def stop_demo() -> None:
    global _demo  # noqa: PLW0603
    if _demo is not None:
        _demo.stop()
        _demo = None


def _time(text: str | None) -> str:
    return "undated" if text is None else text.replace("T", " ").replace("Z", " UTC")


def headline_rows(stories: Sequence[Story]) -> list[dict[str, Any]]:
    return [
        {
            "published": _time(s["published"]),
            "title": s["title"],
            "source": s["source"],
            "also in": len(s["feeds"]) - 1,
            "link": s["link"],
        }
        for s in stories
    ]


def _short(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"


def cause(outcome: shoal.Outcome[Any]) -> str:
    """Why a piece failed, with the notes shoal added ("throttled 6 times, ...") when the
    exception is at hand (it is, in the process that ran the job)."""
    error = outcome.error
    assert error is not None
    notes = getattr(error.exception, "__notes__", ())
    return " ".join([str(error), *notes])


def feed_rows(run: shoal.Run[Fetched]) -> list[dict[str, Any]]:
    """A row per feed: failed feeds first (with their causes), then the rest in input order."""
    stories: list[Story] = run.result
    first: dict[str, int] = {}
    for s in stories:
        first[s["feed"]] = first.get(s["feed"], 0) + 1
    rows = []
    for o in run.outcomes:
        url = str(o.item)
        if o.ok:
            value: Fetched = o.value  # type: ignore[assignment]
            row = {
                "feed": value["title"],
                "url": url,
                "format": value["format"],
                "entries": len(value["entries"]),
                "kept": first.get(url, 0),
                "status": "ok",
                "attempts": o.attempts,
                "throttled": o.throttles,
                "cause": value["note"],
            }
        else:
            row = {
                "feed": _short(url),  # no title: the feed was never read
                "url": url,
                "format": "",
                "entries": 0,
                "kept": 0,
                "status": "failed",
                "attempts": o.attempts,
                "throttled": o.throttles,
                "cause": cause(o),
            }
        rows.append(row)
    rows.sort(key=lambda r: r["status"] == "ok")  # stable: input order within each group
    return rows


def extend_report(report: Any, run: shoal.Run[Fetched], *, limit: int = 50) -> None:
    """The aggregation's own tables in the run's report (``shoal run`` calls this): the newest
    stories (``kept``: the stories whose kept copy is the feed's own), and one row per feed."""
    report.add_table("Latest headlines", headline_rows(run.result), limit=limit)
    report.add_table("Per feed", feed_rows(run), limit=500)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--input", metavar="FILE", help="feed URLs, one per line (default: demo)")
    parser.add_argument("--report", metavar="PATH", help="write the report here (.html, .md...)")
    parser.add_argument("--limit", type=int, default=15, metavar="N", help="headlines to print")
    parser.add_argument("--quiet", action="store_true", help="no progress view")
    args = parser.parse_args(argv)
    if args.input:
        with open(args.input, encoding="utf-8") as fh:
            urls = [line.strip() for line in fh if line.strip()]
    else:
        urls = items()
    try:
        run = job.run(urls, progress=not args.quiet)
    finally:
        stop_demo()
    stories: list[Story] = run.result
    entries = sum(len(v["entries"]) for v in run.values)
    print(
        f"{run.stats.succeeded} of {len(urls)} feeds, {entries} entries, {len(stories)} stories "
        f"after deduplication, in {run.stats.wall_time:.1f}s"
    )
    for s in stories[: args.limit]:
        print(f"  {_time(s['published']):<22} {s['title']}  ({s['source']})")
    for failure in run.failures:
        print(f"  feed failed: {failure.item}: {failure.error}", file=sys.stderr)
    if args.report:
        report = run.report
        extend_report(report, run)
        print(f"report: {report.save(args.report).resolve()}")
    return 0 if run.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
