"""The social media analytics example: VADER over 3,200 posts from 4 platforms, one worker group
per platform, per-platform and per-day summaries equal to a serial VADER pass, and charts.

The example is imported the way ``shoal run`` imports a job file, so that worker processes
import its work function by name.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import shoal
from shoal import cli
from shoal._jobfiles import load

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE = EXAMPLES / "sentiment.py"

vader = pytest.importorskip(
    "vaderSentiment.vaderSentiment", reason="the example needs the examples dependency group"
)


@pytest.fixture(scope="module")
def sentiment() -> ModuleType:
    return load(EXAMPLE)


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, Any]]:
    posts: list[dict[str, Any]] = load(EXAMPLES / "social_posts.py").posts()
    return posts


@pytest.fixture(scope="module")
def run(sentiment: ModuleType, corpus: list[dict[str, Any]]) -> shoal.Run[Any]:
    result: shoal.Run[Any] = sentiment.job.run(corpus)
    return result


def serial(corpus: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """One SentimentIntensityAnalyzer over every post, in this process, with no shoal: the mean
    compound score and the label counts per platform."""
    analyzer = vader.SentimentIntensityAnalyzer()
    scores: dict[str, list[float]] = collections.defaultdict(list)
    for post in corpus:
        scores[post["platform"]].append(analyzer.polarity_scores(post["text"])["compound"])
    return {
        platform: {
            "posts": len(values),
            "mean": sum(values) / len(values),
            "positive": sum(v >= 0.05 for v in values),
            "negative": sum(v <= -0.05 for v in values),
        }
        for platform, values in scores.items()
    }


def test_one_worker_group_per_platform(sentiment: ModuleType, run: shoal.Run[Any]) -> None:
    """Every post is a piece keyed by its platform, on processes, at most two per platform at
    once; the report's per-key table has the four platforms."""
    assert run.ok, run.failures
    assert sentiment.job.backend == "process"
    assert sentiment.job.limits.per_key == 2
    assert len(run.outcomes) == 3200
    assert {o.key for o in run.outcomes} == {"x", "reddit", "mastodon", "youtube"}
    assert all(o.key == o.value["platform"] for o in run.outcomes)
    keys = {k.key: k for k in run.report.keys}
    assert set(keys) == {"x", "reddit", "mastodon", "youtube"}
    assert keys["x"].count == 1200


def test_per_platform_averages_equal_a_serial_vader_pass(
    run: shoal.Run[Any], corpus: list[dict[str, Any]]
) -> None:
    """Mean scores and label counts per platform are those of one serial VADER pass."""
    expected = serial(corpus)
    platforms = run.result["platforms"]
    assert list(platforms) == sorted(expected)
    for name, group in platforms.items():
        want = expected[name]
        assert group["posts"] == want["posts"]
        assert group["mean"] == pytest.approx(want["mean"], abs=1e-12)
        assert group["positive"] == want["positive"]
        assert group["negative"] == want["negative"]
        assert group["posts"] == group["positive"] + group["neutral"] + group["negative"]
    # The generator's mixes: youtube and mastodon lean positive, reddit and x negative.
    means = {name: group["mean"] for name, group in platforms.items()}
    assert means["youtube"] > means["mastodon"] > 0 > means["x"] > means["reddit"]


def test_labels_match_the_corpus_mix(run: shoal.Run[Any], corpus: list[dict[str, Any]]) -> None:
    """Every post gets the sentiment it was written with (the corpus's known mix)."""
    intended = collections.Counter((p["platform"], p["intended"]) for p in corpus)
    for name, group in run.result["platforms"].items():
        for label in ("positive", "neutral", "negative"):
            assert group[label] == intended[name, label], (name, label)


def test_per_day_counts(run: shoal.Run[Any], corpus: list[dict[str, Any]]) -> None:
    """14 days in order, each with its number of posts (UTC days); the outage day is the most
    negative, on every platform."""
    days = run.result["days"]
    expected = collections.Counter(p["time"][:10] for p in corpus)  # the corpus is in UTC
    assert list(days) == sorted(expected)
    assert len(days) == 14
    assert {day: g["posts"] for day, g in days.items()} == expected
    worst = min(days, key=lambda d: days[d]["mean"])
    assert worst == "2024-05-14"
    per_platform = run.result["by_day_and_platform"][worst]
    assert all(g["mean"] < -0.2 for g in per_platform.values())
    assert sum(g["posts"] for g in per_platform.values()) == expected[worst]


def test_day_of_counts_in_utc(sentiment: ModuleType) -> None:
    """A post's day is its UTC day, whatever zone its time is written in."""
    assert sentiment.day_of("2024-05-06T23:30:00-02:00") == "2024-05-07"
    assert sentiment.day_of("2024-05-06T23:30:00") == "2024-05-06"


def test_report_has_the_charts(sentiment: ModuleType, run: shoal.Run[Any], tmp_path: Path) -> None:
    """Four charts (per platform and per day) and the tables; the HTML page draws the charts."""
    pytest.importorskip("matplotlib", reason="the HTML report's charts need shoal[report]")
    report = run.report
    sentiment.extend_report(report, run)
    charts = {c.title: c for c in report.charts}
    assert list(charts) == [
        "Mean sentiment per platform",
        "Posts per platform by sentiment",
        "Mean sentiment per day",
        "Posts per day by sentiment",
    ]
    per_day = charts["Posts per day by sentiment"]
    assert len(per_day.labels) == 14 and per_day.stacked
    totals = [sum(v[i] or 0 for _, v in per_day.series) for i in range(14)]
    assert totals == [run.result["days"][d]["posts"] for d in per_day.labels]
    assert charts["Mean sentiment per day"].kind == "line"
    assert [t.title for t in report.tables] == [
        "Per platform",
        "Per day",
        "Most negative posts",
        "Most positive posts",
    ]
    page = report.save(tmp_path / "sentiment.html").read_text()
    for n in range(1, 5):
        assert f'id="chart-job{n}"' in page
    assert page.count("<svg") == 7


def test_main_and_shoal_run(
    sentiment: ModuleType,
    corpus: list[dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python examples/sentiment.py POSTS --report`` and ``shoal run ... --input POSTS.jsonl``
    read JSON Lines, print the per-platform table and write the report with its charts."""
    pytest.importorskip("matplotlib", reason="the HTML report's charts need shoal[report]")
    posts = tmp_path / "posts.jsonl"
    few = [p for p in corpus if p["platform"] in ("reddit", "mastodon")][:300]
    posts.write_text("".join(json.dumps(p) + "\n" for p in few))
    report = tmp_path / "main.html"
    assert sentiment.main([str(posts), "--quiet", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "300 posts scored (0 failed)" in out
    assert "mastodon" in out and "reddit" in out and "youtube" not in out
    assert 'id="chart-job4"' in report.read_text()

    cli_report = tmp_path / "cli.html"
    code = cli.main(
        ["run", str(EXAMPLE), "--input", str(posts), "--no-journal", "--quiet",
         "--report", str(cli_report)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "Mean sentiment per day" in cli_report.read_text()
