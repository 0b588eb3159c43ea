"""A realistic little news web for the news example: 60+ RSS 2.0 and Atom feeds on 7 hosts.

Six outlets (each a host: its own loopback port) publish nine section feeds each, RSS 2.0 or
Atom 1.0 by outlet. The stories overlap the way real feeds do:

- an outlet's ``top`` feed repeats stories of its other sections, with the same link (some with
  a ``?utm_source=rss`` tracking tail added, as feed tools do);
- wire stories appear at several outlets under their own links, with near-same titles (another
  case, a " | Wire" tail, slightly different punctuation), minutes apart.

Some feeds misbehave, on purpose: a few are slow (0.4-0.8 s), one answers 500 once and then
works, one answers 429 once (``Retry-After``) and then works, one always answers 500, one is
gone (404), one is an HTML error page served with status 200, one is truncated mid-item (not
well-formed XML), and a seventh host rate-limits everything (always 429).

Everything is generated from a seed, so the tests know the truth: :class:`Corpus` lists every
feed, what it should give, and which story each link belongs to.

    python examples/demo_news.py          # serve it and print the feed URLs (Ctrl-C stops)
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from xml.sax.saxutils import escape, quoteattr

from demo_server import DemoServer, Page, Reply


def _list(text: str) -> tuple[str, ...]:
    """Comma-separated words (over several lines) as a tuple."""
    return tuple(w.strip() for w in text.split(",") if w.strip())


NOW = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)  # the demo's "now": fixed, so runs repeat
OUTLETS = (  # (host name, title, format)
    ("harbour-times", "The Harbour Times", "rss"),
    ("daily-ledger", "The Daily Ledger", "atom"),
    ("metro-wire", "Metro Wire", "rss"),
    ("civic-post", "Civic Post", "atom"),
    ("northern-star", "Northern Star", "rss"),
    ("open-signal", "Open Signal", "atom"),
)
SECTIONS = ("world", "business", "tech", "science", "health", "sport", "culture", "local")
THROTTLER = "api-gateway"  # the host that answers 429 to everything

SUBJECTS = _list(
    """
    Harbour authority, City council, Regional court, Central bank, Rail operator,
    University lab, Water utility, Transport minister, Port workers union,
    Fishing cooperative, Energy regulator, Hospital trust, School board, Tech startup,
    City museum, Football club, Weather service, Housing agency, Airline, Chess federation,
    Wildlife trust, Library service, Police commissioner, Brewery
    """
)
ACTIONS = _list(
    """
    approves, delays, unveils, rejects, investigates, expands, cancels, funds, reviews,
    launches, defends, pauses, doubles, redesigns, audits, sells
    """
)
OBJECTS = _list(
    """
    ferry terminal plan, night bus network, solar farm proposal, flood barrier upgrade,
    cycling bridge, data centre lease, stadium roof repair, coastal path extension,
    rooftop garden scheme, tram depot project, vaccine storage hub, harbour crane order,
    archive digitisation drive, market hall renovation, wind turbine contract,
    youth sports programme, heat pump subsidy, fibre broadband rollout, concert season,
    river dredging work, electric ferry fleet, rail timetable overhaul, seawall survey,
    science festival budget
    """
)
QUALIFIERS = _list(
    """
    new, revised, second, final, interim, expanded, draft, joint, emergency, long-term, pilot,
    regional, smaller, costlier, delayed, greener
    """
)
PLACES = _list(
    """
    Eastport, Millbrook, Kingsbay, Oakridge, Westhaven, Ashford Vale, Brackwater, Stonegate,
    Fairholm, Northmere, Redcliff, Linden Cross
    """
)


@dataclass(frozen=True, slots=True)
class Story:
    id: str  # "harbour-times/tech/3", "wire/7"
    title: str
    published: datetime | None  # None: an item without a date (sorted last)
    summary: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One item of one feed: a story under a link and a title."""

    story: str  # Story.id
    title: str
    link: str  # a path on the outlet's host ("/tech/2024/06/03/...")
    published: datetime | None


@dataclass
class Feed:
    host: str  # the site name (the host is its port)
    path: str
    title: str
    format: str  # "rss", "atom", or the kind of trouble: "html", "truncated"
    entries: list[Entry] = field(default_factory=list)
    # "" (none), "slow", "500-once", "429-once", "500", "404", "html", "truncated", "429"
    trouble: str = ""
    delay: float = 0.05

    @property
    def good(self) -> bool:
        """Whether the feed's entries should arrive."""
        return self.trouble in ("", "slow", "500-once", "429-once")


@dataclass
class Corpus:
    feeds: list[Feed]
    stories: dict[str, Story]


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def corpus(seed: int = 2024) -> Corpus:
    """The whole news web, the same for the same seed."""
    rng = random.Random(seed)
    headlines = iter(_unique_titles(rng))
    stories: dict[str, Story] = {}

    def story(sid: str, hours_back: float | None) -> Story:
        title = next(headlines)
        when = None if hours_back is None else NOW - timedelta(minutes=round(hours_back * 60))
        summary = f"{title}. Officials gave details on {rng.randint(1, 28)} June."
        s = Story(sid, title, when, summary)
        stories[sid] = s
        return s

    wire = [story(f"wire/{n}", rng.uniform(1, 60)) for n in range(10)]
    feeds: list[Feed] = []
    for host, name, fmt in OUTLETS:
        section_entries: dict[str, list[Entry]] = {}
        for section in SECTIONS:
            entries: list[Entry] = []
            for n in range(5):
                hours = rng.uniform(0.2, 72)
                undated = host == "northern-star" and section == "culture" and n == 4
                s = story(f"{host}/{section}/{n}", None if undated else hours)
                date = s.published or NOW
                link = f"/{section}/{date:%Y/%m/%d}/{_slug(s.title)}"
                entries.append(Entry(s.id, s.title, link, s.published))
            section_entries[section] = entries
        # Wire stories: 4 of the 10 at each outlet, in a section of its own choosing, under the
        # outlet's own link and a retouched title, minutes after the wire.
        for s in rng.sample(wire, 4):
            section = rng.choice(SECTIONS)
            title = _retouch(s.title, rng)
            assert s.published is not None
            when = s.published + timedelta(minutes=rng.randint(0, 40))
            link = f"/{section}/{when:%Y/%m/%d}/wire-{_slug(s.title)}"
            section_entries[section].append(Entry(s.id, title, link, when))
        # The top feed: the two newest of each of four sections, same links (some tracked).
        top: list[Entry] = []
        for section in rng.sample(SECTIONS, 4):
            dated = [e for e in section_entries[section] if e.published is not None]
            for e in sorted(dated, key=lambda e: e.published or NOW, reverse=True)[:2]:
                tail = "?utm_source=rss&utm_medium=feed" if rng.random() < 0.5 else ""
                top.append(Entry(e.story, e.title, e.link + tail, e.published))
        section_entries["top"] = top
        for section, entries in section_entries.items():
            rng.shuffle(entries)  # feeds are not always in date order
            feeds.append(Feed(host, f"/{section}/feed.xml", f"{name}: {section}", fmt, entries))

    # Trouble, spread over the outlets (each feed keeps its entries for the truth).
    by_path = {(f.host, f.path): f for f in feeds}
    for host, path, trouble in (
        ("harbour-times", "/world/feed.xml", "slow"),
        ("daily-ledger", "/tech/feed.xml", "slow"),
        ("metro-wire", "/sport/feed.xml", "slow"),
        ("civic-post", "/health/feed.xml", "500-once"),
        ("open-signal", "/business/feed.xml", "429-once"),
    ):
        feed = by_path[host, path]
        feed.trouble = trouble
        feed.delay = {"slow": rng.uniform(0.4, 0.8)}.get(trouble, feed.delay)
    for host, path, trouble in (
        ("northern-star", "/breaking/feed.xml", "500"),
        ("harbour-times", "/archive/feed.xml", "404"),
        ("metro-wire", "/opinion/feed.xml", "html"),
        ("daily-ledger", "/weather/feed.xml", "truncated"),
        (THROTTLER, "/news/feed.xml", "429"),
    ):
        name = {h: n for h, n, _ in OUTLETS}.get(host, "Gateway News")
        fmt = {h: f for h, _, f in OUTLETS}.get(host, "rss")
        entries = [
            Entry(s.id, s.title, f"/x/{_slug(s.title)}", s.published)
            for s in (story(f"{host}{path}/{n}", rng.uniform(1, 48)) for n in range(4))
        ]
        feeds.append(Feed(host, path, f"{name}: {path.split('/')[1]}", fmt, entries, trouble))
    return Corpus(feeds, stories)


def _unique_titles(rng: random.Random) -> list[str]:
    """Headlines of which no two share both their subject and their object (round ``r`` pairs
    subject ``i`` with object ``i + r``), so distinct stories never read alike: two headlines
    share at most a subject or an object, a verb, a qualifier and a place."""
    subjects, objects = list(SUBJECTS), list(OBJECTS)
    rng.shuffle(subjects)
    rng.shuffle(objects)
    titles: list[str] = []
    for round_, qualifier in enumerate(QUALIFIERS):
        for i, subject in enumerate(subjects):
            obj = objects[(i + round_) % len(objects)]
            action, place = rng.choice(ACTIONS), rng.choice(PLACES)
            titles.append(f"{subject} {action} {qualifier} {obj} in {place}")
    rng.shuffle(titles)
    return titles


def _retouch(title: str, rng: random.Random) -> str:
    """The same headline as another outlet prints it: near-same, not the same."""
    kind = rng.randrange(3)
    if kind == 0:
        return title.title()
    if kind == 1:
        return f"{title} | Wire"
    return title.replace(" in ", ", in ", 1) + "."


# ---------------------------------------------------------------------------- rendering


def _rss(feed: Feed, base: str) -> bytes:
    items = []
    for e in feed.entries:
        date = f"<pubDate>{format_datetime(e.published)}</pubDate>" if e.published else ""
        items.append(
            f"<item><title>{escape(e.title)}</title><link>{escape(base + e.link)}</link>"
            f'<guid isPermaLink="true">{escape(base + e.link)}</guid>{date}'
            f"<description>{escape(e.title)}: the full story.</description></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{escape(feed.title)}</title><link>{escape(base)}/</link>"
        f"<description>{escape(feed.title)}</description>"
        f"<lastBuildDate>{format_datetime(NOW)}</lastBuildDate>{''.join(items)}"
        "</channel></rss>\n"
    ).encode()


def _atom(feed: Feed, base: str) -> bytes:
    entries = []
    for e in feed.entries:
        when = (e.published or NOW).isoformat().replace("+00:00", "Z")
        dates = f"<updated>{when}</updated>"
        if e.published:
            dates += f"<published>{when}</published>"
        entries.append(
            f"<entry><title>{escape(e.title)}</title>"
            f'<link rel="alternate" href={quoteattr(base + e.link)}/>'
            f"<id>{escape(base + e.link)}</id>{dates}"
            f"<summary>{escape(e.title)}: the full story.</summary></entry>"
        )
    updated = NOW.isoformat().replace("+00:00", "Z")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{escape(feed.title)}</title><id>{escape(base + feed.path)}</id>"
        f"<updated>{updated}</updated><link href={quoteattr(base + '/')}/>"
        f"{''.join(entries)}</feed>\n"
    ).encode()


RSS_TYPE = "application/rss+xml; charset=utf-8"
ATOM_TYPE = "application/atom+xml; charset=utf-8"


def page(feed: Feed, base: str) -> Page:
    """The feed as a page of its host, with its trouble."""
    body = _atom(feed, base) if feed.format == "atom" else _rss(feed, base)
    kind = ATOM_TYPE if feed.format == "atom" else RSS_TYPE
    ok = Reply(body=body, content_type=kind, delay=feed.delay)
    error = Reply(500, b"<html><body>Internal Server Error</body></html>", delay=feed.delay)
    throttled = Reply(429, b"slow down", headers={"Retry-After": "0.2"}, delay=feed.delay)
    trouble = feed.trouble
    if trouble in ("", "slow"):
        return lambda n: ok
    if trouble == "500-once":
        return lambda n: error if n == 1 else ok
    if trouble == "429-once":
        return lambda n: throttled if n == 1 else ok
    if trouble == "500":
        return lambda n: error
    if trouble == "429":
        return lambda n: throttled
    if trouble == "404":
        return lambda n: Reply(404, b"<html><body>Not Found</body></html>")
    if trouble == "html":  # a proxy's error page, served as 200
        html = b"<!doctype html><html><head><title>Service unavailable</title></head><body>"
        html += b"<h1>Our feeds are moving</h1><p>Please check back later.</p></body></html>"
        return lambda n: Reply(body=html, content_type="text/html; charset=utf-8")
    if trouble == "truncated":  # the connection's end cut the document in the second item
        tag = b"<entry>" if feed.format == "atom" else b"<item>"
        cut = body[: body.index(tag, body.index(tag) + 1) + 40]
        return lambda n: Reply(body=cut, content_type=kind, delay=feed.delay)
    raise ValueError(f"unknown trouble {trouble!r}")


class NewsServer(DemoServer):
    """The corpus served: one site per host."""

    def __init__(self, news: Corpus | None = None) -> None:
        self.corpus = news if news is not None else corpus()
        hosts: dict[str, dict[str, Page]] = {f.host: {} for f in self.corpus.feeds}
        super().__init__(hosts)

    def start(self) -> NewsServer:
        super().start()
        for feed in self.corpus.feeds:
            self.sites[feed.host][feed.path] = page(feed, self.base(feed.host))
        return self

    def __enter__(self) -> NewsServer:
        return self.start()

    def base(self, host: str) -> str:
        return self.url(host, "")

    def feed_url(self, feed: Feed) -> str:
        return self.url(feed.host, feed.path)

    def feed_urls(self) -> list[str]:
        return [self.feed_url(f) for f in self.corpus.feeds]


if __name__ == "__main__":
    with NewsServer() as server:
        print("\n".join(server.feed_urls()))
        print(f"serving {len(server.corpus.feeds)} feeds; Ctrl-C stops", file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
