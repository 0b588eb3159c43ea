"""The news example: 59 real RSS and Atom feeds over real HTTP on loopback, aggregated by shoal.

The feeds come from ``examples/demo_news.py`` (6 outlets on their own ports, overlapping stories,
slow, failing, throttling and malformed feeds); its corpus knows which story every link is, so
the merged result can be checked story by story. The servers count what the client did.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import shoal
import shoal.http
from shoal import cli
from shoal._jobfiles import load

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "news_feeds.py"


@pytest.fixture(scope="module")
def news() -> ModuleType:
    return load(EXAMPLE)


@pytest.fixture(scope="module")
def demo(news: ModuleType) -> ModuleType:
    return importlib.import_module("demo_news")  # beside the job file, on the path since load


@pytest.fixture(scope="module")
def server(demo: ModuleType) -> Iterator[Any]:
    with demo.NewsServer() as server:
        yield server


@pytest.fixture(scope="module")
def run(news: ModuleType, server: Any) -> shoal.Run[Any]:
    """The example's own job over every feed of the demo web."""
    result: shoal.Run[Any] = news.job.run(server.feed_urls())
    return result


def story_of(news: ModuleType, server: Any) -> dict[str, str]:
    """Every link of every feed (as the example normalises links) -> its story."""
    links: dict[str, str] = {}
    for feed in server.corpus.feeds:
        base = server.base(feed.host)
        for entry in feed.entries:
            links[news.canonical_link(base + entry.link)] = entry.story
    return links


def test_every_good_feeds_entries_arrive_once_per_story(
    news: ModuleType, server: Any, run: shoal.Run[Any]
) -> None:
    """Each entry of each working feed is in the result, as one story that names the feed; each
    story appears once."""
    links = story_of(news, server)
    stories = run.result
    ids = [links[news.canonical_link(s["link"])] for s in stories]
    assert len(ids) == len(set(ids))  # once per story
    by_id = dict(zip(ids, stories, strict=True))
    good = [f for f in server.corpus.feeds if f.good]
    assert len(good) == 54
    expected = {e.story for f in good for e in f.entries}
    assert set(ids) == expected
    for feed in good:
        url = server.feed_url(feed)
        for entry in feed.entries:
            assert url in by_id[entry.story]["feeds"], (feed.path, entry.title)
    entries = sum(len(v["entries"]) for v in run.values)
    assert entries == sum(len(f.entries) for f in good) > len(stories) + 50


def test_overlapping_stories_appear_once(
    news: ModuleType, server: Any, run: shoal.Run[Any]
) -> None:
    """Stories repeated under the same link (some with tracking tails) and wire stories under
    other links with retouched titles are each merged into one, traced to every feed."""
    links = story_of(news, server)
    stories = run.result
    combined = run.combined
    assert combined is not None
    same_link = near_title = 0
    for position, story in enumerate(stories):
        sid = links[news.canonical_link(story["link"])]
        copies = [
            (server.feed_url(f), e)
            for f in server.corpus.feeds
            if f.good
            for e in f.entries
            if e.story == sid
        ]
        assert sorted(story["feeds"]) == sorted({url for url, _ in copies})
        assert {o.item for o in combined.trace(position)} == set(story["feeds"])
        if len(copies) > 1:
            if len({e.title for _, e in copies}) > 1:
                near_title += 1
            if any("utm_source" in e.link for _, e in copies):
                same_link += 1
        # The kept copy is the earliest one.
        dated = [e.published for _, e in copies if e.published is not None]
        if dated:
            assert story["published"] == min(dated).isoformat().replace("+00:00", "Z")
    assert near_title >= 5  # wire stories
    assert same_link >= 8  # top-feed repeats with tracking tails


def test_stories_are_sorted_newest_first_undated_last(run: shoal.Run[Any]) -> None:
    """Dated stories newest first (by the feeds' own times, RSS and Atom alike); the undated
    one at the end."""
    stories = run.result
    times = [s["published"] for s in stories]
    dated = [datetime.fromisoformat(t) for t in times if t is not None]
    assert dated == sorted(dated, reverse=True)
    assert times[-1] is None
    assert times.count(None) == 1
    assert dated[0] <= datetime(2024, 6, 3, 12, tzinfo=UTC)


def test_failing_and_malformed_feeds_are_failures_with_causes(
    server: Any, run: shoal.Run[Any]
) -> None:
    """Broken feeds fail with their causes; network hiccups are retried, throttles wait."""
    failed = {str(f.item): f for f in run.failures}
    trouble = {server.feed_url(f): f.trouble for f in server.corpus.feeds if not f.good}
    assert set(failed) == set(trouble)
    causes = {
        trouble[url]: (f.error.type, f.error.message, f.attempts) for url, f in failed.items()
    }
    assert causes["500"][0] == "shoal._http.TransientHTTPError"
    assert "HTTP 500" in causes["500"][1]
    assert causes["500"][2] == 3  # retried twice
    assert causes["404"][0] == "shoal._http.PermanentHTTPError"
    assert causes["404"][2] == 1  # not retried
    assert causes["html"][0] == "news_feeds.NotAFeed"
    assert "text/html" in causes["html"][1]
    assert causes["truncated"][0] == "news_feeds.MalformedFeed"
    assert "not well-formed XML" in causes["truncated"][1]
    assert causes["429"][0] == "shoal._http.HTTPThrottled"
    assert "HTTP 429" in causes["429"][1]

    by_trouble = {
        f.trouble: run.outcomes[i] for i, f in enumerate(server.corpus.feeds) if f.trouble
    }
    assert by_trouble["429"].throttles == 6  # Retry(max_throttles=5), then it fails
    assert by_trouble["500-once"].ok
    assert by_trouble["500-once"].attempts == 2
    assert by_trouble["429-once"].ok
    assert by_trouble["429-once"].throttles == 1
    assert by_trouble["429-once"].attempts == 1  # a throttle uses up no attempt
    assert run.stats.failed == 5


def test_limits_held_at_the_server(server: Any, run: shoal.Run[Any]) -> None:
    """Never more than 10 requests in flight, never more than 2 per host (as the servers
    counted them), and both limits were reached, so they were what held the pace."""
    assert run.stats.total == 59
    assert 8 <= server.max_in_flight <= 10
    assert max(server.max_in_flight_per_site.values()) == 2
    counts = {
        feed.trouble: server.requests[feed.host, feed.path]
        for feed in server.corpus.feeds
        if feed.trouble
    }
    assert counts["500"] == 3
    assert counts["404"] == 1
    assert counts["429"] == 6
    assert counts["500-once"] == counts["429-once"] == 2


def test_report_tables(news: ModuleType, server: Any, run: shoal.Run[Any]) -> None:
    """Latest headlines (newest first) and a row per feed, the failed ones first with causes."""
    report = run.report
    news.extend_report(report, run, limit=10)
    tables = {t.title: t for t in report.tables}
    assert list(tables) == ["Latest headlines", "Per feed"]
    headlines = tables["Latest headlines"]
    assert headlines.total == len(run.result)
    assert headlines.rows[0][headlines.columns.index("title")] == run.result[0]["title"]
    per_feed = tables["Per feed"]
    assert per_feed.total == 59
    status = [row[per_feed.columns.index("status")] for row in per_feed.rows]
    assert status == ["failed"] * 5 + ["ok"] * 54
    causes = [row[per_feed.columns.index("cause")] for row in per_feed.rows[:5]]
    assert any("more than Retry(max_throttles=5)" in c for c in causes)
    kept = sum(row[per_feed.columns.index("kept")] for row in per_feed.rows)
    assert kept == len(run.result)


def test_story_rules(news: ModuleType) -> None:
    """The documented rules: tracking tails and case do not make another link; near-same titles
    (>= 0.8 of their words shared, within 2 days) are one story; others are not."""
    assert news.canonical_link("HTTP://News.Example/a/b/?utm_source=rss&id=3#top") == (
        "http://news.example/a/b?id=3"
    )
    same = news.words("Storm closes Eastport harbour")
    assert news.similarity(same, news.words("Storm Closes Eastport Harbour | Wire")) >= 0.8
    a = news.words("Council approves budget for schools")
    b = news.words("Council approves budget for roads")
    assert news.similarity(a, b) == pytest.approx(4 / 6)
    assert news.similarity(a, b) < news.SIMILAR

    def record(title: str, when: str | None, link: str, feed: str, index: int) -> Any:
        entry = {"title": title, "link": link, "published": when, "summary": ""}
        return shoal.combine.Record({**entry, "feed": feed, "source": feed}, frozenset({index}))

    records = [
        record("Storm closes Eastport harbour today", "2024-06-03T10:00:00Z", "http://a/1", "A", 0),
        record("Storm Closes Eastport Harbour Today", "2024-06-03T09:00:00Z", "http://b/9", "B", 1),
        record("Storm closes Eastport harbour today", "2024-05-20T09:00:00Z", "http://c/2", "C", 2),
        record("Weather", "2024-06-03T10:00:00Z", "http://a/w", "A", 0),
        record("Weather", "2024-06-03T10:00:00Z", "http://b/w", "B", 1),
    ]
    kept = news.dedupe_entries(records)
    assert [(r.value["link"], r.value["feeds"], set(r.sources)) for r in kept] == [
        ("http://c/2", ["C"], {2}),  # two weeks earlier: another story
        ("http://b/9", ["B", "A"], {0, 1}),  # the earliest copy is kept
        ("http://a/w", ["A"], {0}),  # too short to match by title
        ("http://b/w", ["B"], {1}),
    ]


def test_demo_stories_are_distinct_by_the_rule(news: ModuleType, demo: ModuleType) -> None:
    """The demo's distinct stories never look alike to the example (so the test is fair), and
    every retouched wire title does."""
    corpus = demo.corpus()
    titles = {s.id: news.words(s.title) for s in corpus.stories.values()}
    ids = sorted(titles)
    worst = max(
        news.similarity(titles[a], titles[b]) for i, a in enumerate(ids) for b in ids[i + 1 :]
    )
    assert worst < news.SIMILAR
    for feed in corpus.feeds:
        for entry in feed.entries:
            assert news.similarity(news.words(entry.title), titles[entry.story]) >= news.SIMILAR


def test_shoal_run_writes_the_report(
    demo: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``shoal run examples/news_feeds.py --input feeds.txt --report ... --out ...``: exit code 1
    (five feeds are broken), every feed in the output, and an HTML report with the tables."""
    pytest.importorskip("matplotlib", reason="the HTML report's charts need shoal[report]")
    with demo.NewsServer() as server:
        feeds = tmp_path / "feeds.txt"
        feeds.write_text("\n".join(server.feed_urls()) + "\n")
        out, report = tmp_path / "out.jsonl", tmp_path / "news.html"
        code = cli.main(
            [
                "run",
                str(EXAMPLE),
                "--input",
                str(feeds),
                "--journal",
                str(tmp_path / "news.db"),
                "--out",
                str(out),
                "--report",
                str(report),
            ]
        )
        assert server.max_in_flight <= 10
        assert max(server.max_in_flight_per_site.values()) <= 2
    err = capsys.readouterr().err
    assert code == 1, err
    assert "54 done, 5 failed" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 59
    assert sum(r["ok"] for r in records) == 54
    assert str(records[0]["provenance"]).endswith("feeds.txt:1")
    page = report.read_text()
    for text in ("Latest headlines", "Per feed", "news_feeds.MalformedFeed", "not well-formed"):
        assert text in page


def test_items_serve_the_demo(news: ModuleType) -> None:
    """Without --input the job serves its demo web on loopback and lists its 59 feeds."""
    try:
        urls = news.items()
        assert len(urls) == 59
        assert len({shoal.http.host(u) for u in urls}) == 7
        assert all(u.startswith("http://127.0.0.1:") for u in urls)
    finally:
        news.stop_demo()
