"""Social media analytics: VADER sentiment over posts from several platforms, per platform and
per day, with charts in the report.

Each post is a piece (so a journal resumes post by post), keyed by its platform: each platform
is a worker group of its own, at most ``PER_PLATFORM`` posts of one platform in flight at once,
so a flood of posts from one platform never starves the others. Each post is scored by VADER
(``vaderSentiment``, the lexicon and rule model of Hutto and Gilbert, 2014, whose lexicon ships
in the package) in a worker process; the scores are combined into per-platform and per-day
summaries, which the report shows as charts (``report.add_chart``) and tables.

    python examples/sentiment.py [POSTS.jsonl] [--report PATH]
    shoal run examples/sentiment.py --input posts.jsonl --report sentiment.html
    shoal run examples/sentiment.py --report sentiment.html     # the sample corpus

Input: JSON Lines, one post a line, with ``platform``, ``time`` (ISO 8601; days are counted in
UTC) and ``text``; ``id`` and ``author`` are kept when present. Without input, the sample corpus
is used (``examples/social_posts.py``: 3,200 posts on 4 platforms over 2 weeks).

A post is positive when VADER's compound score is at least 0.05, negative at most -0.05, and
neutral in between: the thresholds VADER's authors recommend.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

import shoal

POSITIVE = 0.05  # VADER's recommended thresholds on the compound score
NEGATIVE = -0.05
PER_PLATFORM = 2  # posts of one platform in flight at once
LABELS = ("positive", "neutral", "negative")
COLOURS = {"positive": "#4c9a6a", "neutral": "#9aa5b1", "negative": "#c8553d"}


class Scored(TypedDict):
    """What one post gives."""

    id: str
    platform: str
    day: str  # YYYY-MM-DD, UTC
    author: str
    text: str
    compound: float  # VADER's normalised score, -1 (most negative) to 1
    label: str  # positive, neutral, negative


class Group(TypedDict):
    """Posts of one platform, or of one day."""

    posts: int
    mean: float  # the mean compound score
    positive: int
    neutral: int
    negative: int


class Summary(TypedDict):
    platforms: dict[str, Group]  # by name
    days: dict[str, Group]  # by day, in order
    by_day_and_platform: dict[str, dict[str, Group]]  # day -> platform -> group
    most_negative: list[Scored]  # the 10 lowest scores
    most_positive: list[Scored]  # the 10 highest


@functools.cache
def analyzer() -> SentimentIntensityAnalyzer:
    """One analyser per process (it reads its lexicon once)."""
    return SentimentIntensityAnalyzer()


def label_of(compound: float) -> str:
    if compound >= POSITIVE:
        return "positive"
    if compound <= NEGATIVE:
        return "negative"
    return "neutral"


def day_of(time: str) -> str:
    """The UTC day of an ISO 8601 time (a time without a zone is taken as UTC)."""
    moment = dt.datetime.fromisoformat(time)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.date().isoformat()


def score(post: Mapping[str, Any]) -> Scored:
    """One post: VADER's compound score and its label."""
    text = str(post["text"])
    compound = float(analyzer().polarity_scores(text)["compound"])
    return Scored(
        id=str(post.get("id", "")),
        platform=str(post["platform"]),
        day=day_of(str(post["time"])),
        author=str(post.get("author", "")),
        text=text,
        compound=compound,
        label=label_of(compound),
    )


def platform(post: Mapping[str, Any]) -> str:
    """A post's key: its platform (one worker group each)."""
    return str(post.get("platform", "")) if isinstance(post, Mapping) else ""


def _group(scores: Sequence[Scored]) -> Group:
    return Group(
        posts=len(scores),
        mean=sum(s["compound"] for s in scores) / len(scores),
        positive=sum(s["label"] == "positive" for s in scores),
        neutral=sum(s["label"] == "neutral" for s in scores),
        negative=sum(s["label"] == "negative" for s in scores),
    )


def summarise(scores: Sequence[Scored]) -> Summary:
    """Per platform (by name), per day (in order) and per day and platform; the extremes."""
    by_platform: dict[str, list[Scored]] = {}
    by_day: dict[str, list[Scored]] = {}
    by_both: dict[str, dict[str, list[Scored]]] = {}
    for s in scores:
        by_platform.setdefault(s["platform"], []).append(s)
        by_day.setdefault(s["day"], []).append(s)
        by_both.setdefault(s["day"], {}).setdefault(s["platform"], []).append(s)
    ranked = sorted(scores, key=lambda s: (s["compound"], s["id"]))
    return Summary(
        platforms={p: _group(by_platform[p]) for p in sorted(by_platform)},
        days={d: _group(by_day[d]) for d in sorted(by_day)},
        by_day_and_platform={
            d: {p: _group(by_both[d][p]) for p in sorted(by_both[d])} for d in sorted(by_both)
        },
        most_negative=ranked[:10],
        most_positive=ranked[::-1][:10],
    )


job = shoal.Job(
    score,
    backend="process",
    cpu_bound=True,
    key=platform,
    combine=summarise,
    limits=shoal.Limits(concurrency=8, per_key=PER_PLATFORM),
    retry=shoal.Retry(attempts=2),
    name="sentiment",
)


# ---------------------------------------------------------------------------- input


def read_posts(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The posts of a JSON Lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def items() -> list[dict[str, Any]]:
    """The default input of ``shoal run``: the sample corpus."""
    import social_posts  # beside this file (a job file's folder is on sys.path)

    return [dict(post) for post in social_posts.posts()]


# ---------------------------------------------------------------------------- reporting


def platform_rows(summary: Summary) -> list[dict[str, Any]]:
    return [
        {"platform": name, "posts": g["posts"], "mean compound": round(g["mean"], 4),
         **{label: g[label] for label in LABELS},  # type: ignore[literal-required]
         "positive share": round(g["positive"] / g["posts"], 3)}
        for name, g in summary["platforms"].items()
    ]  # fmt: skip


def day_rows(summary: Summary) -> list[dict[str, Any]]:
    return [
        {"day": day, "posts": g["posts"], "mean compound": round(g["mean"], 4),
         **{label: g[label] for label in LABELS}}  # type: ignore[literal-required]
        for day, g in summary["days"].items()
    ]  # fmt: skip


def post_rows(posts: Sequence[Scored]) -> list[dict[str, Any]]:
    return [
        {"compound": p["compound"], "platform": p["platform"], "day": p["day"],
         "author": p["author"], "text": p["text"]}
        for p in posts
    ]  # fmt: skip


def extend_report(report: Any, run: shoal.Run[Scored]) -> None:
    """Charts and tables of the summary in the run's report (``shoal run`` calls this)."""
    summary: Summary = run.result
    platforms = list(summary["platforms"])
    days = list(summary["days"])
    report.add_chart(
        "Mean sentiment per platform",
        platforms,
        {"mean compound": [summary["platforms"][p]["mean"] for p in platforms]},
        x_label="platform",
        y_label="VADER compound (-1 to 1)",
    )
    report.add_chart(
        "Posts per platform by sentiment",
        platforms,
        {label: [summary["platforms"][p][label] for p in platforms] for label in LABELS},  # type: ignore[literal-required]
        stacked=True,
        x_label="platform",
        y_label="posts",
        colors=COLOURS,
    )
    report.add_chart(
        "Mean sentiment per day",
        days,
        {
            p: [
                g["mean"] if (g := summary["by_day_and_platform"][d].get(p)) else None for d in days
            ]
            for p in platforms
        },
        kind="line",
        x_label="day (UTC)",
        y_label="VADER compound",
    )
    report.add_chart(
        "Posts per day by sentiment",
        days,
        {label: [summary["days"][d][label] for d in days] for label in LABELS},  # type: ignore[literal-required]
        stacked=True,
        x_label="day (UTC)",
        y_label="posts",
        colors=COLOURS,
    )
    report.add_table("Per platform", platform_rows(summary))
    report.add_table("Per day", day_rows(summary))
    report.add_table("Most negative posts", post_rows(summary["most_negative"]))
    report.add_table("Most positive posts", post_rows(summary["most_positive"]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("posts", nargs="?", type=Path, help="JSON Lines (default: the sample)")
    parser.add_argument("--report", metavar="PATH", help="write the HTML report here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.posts is not None and not args.posts.is_file():
        parser.error(f"{args.posts}: no such file; pass a JSON Lines file of posts")
    posts = read_posts(args.posts) if args.posts is not None else items()
    print(f"scoring {len(posts):,} posts ...", file=sys.stderr)
    run = job.run(posts, progress=not args.quiet)
    for failure in run.failures:
        print(f"  post failed: {failure}", file=sys.stderr)
    summary: Summary = run.result
    print(f"\n{run.stats.succeeded:,} posts scored ({run.stats.failed} failed), "
          f"{run.stats.wall_time:.1f}s")  # fmt: skip
    print(f"{'platform':<10} {'posts':>6} {'mean':>7} {'pos':>5} {'neu':>5} {'neg':>5}")
    for name, g in summary["platforms"].items():
        print(
            f"{name:<10} {g['posts']:>6} {g['mean']:>7.3f} {g['positive']:>5} "
            f"{g['neutral']:>5} {g['negative']:>5}"
        )
    worst = min(summary["days"].items(), key=lambda kv: kv[1]["mean"])
    print(f"most negative day: {worst[0]} (mean {worst[1]['mean']:.3f}, {worst[1]['posts']} posts)")
    if args.report:
        report = run.report
        extend_report(report, run)
        print(f"\nreport: {report.save(args.report).resolve()}")
    return 0 if run.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
