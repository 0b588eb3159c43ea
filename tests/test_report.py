"""The run report: exact figures from fake-clocked runs, journal round trips, every renderer, and
the HTML page in a real headless Chromium (no errors, charts present, data shown as text)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shoal
from shoal import Job, Limits, Retry, Throttled
from shoal.journal import Journal, JournalError
from shoal.report import SCHEMA, Report
from shoal.testing import FakeClock

ROOT = Path(__file__).resolve().parents[1]

XSS_SCRIPT = "<script>window.__pwned=1</script>"
XSS_IMG = '"><img src=x onerror="window.__pwned=1">'


# ---------------------------------------------------------------------- runs with known timings


async def staircase(seconds: float) -> float:
    """Sleeps its item's seconds (virtual time) and returns them."""
    await asyncio.sleep(seconds)
    return seconds


def staircase_run() -> shoal.Run[float]:
    """Ten pieces of 1..10 seconds, all at once: they end at 1, 2, ..., 10."""
    return Job(staircase, limits=Limits(concurrency=10)).run(
        [float(s) for s in range(1, 11)], clock=FakeClock()
    )


class Mixed:
    """Work whose pieces behave as their names say (each attempt reports 10 tokens, cost 0.5):

    - ok: 1 s, succeeds.                               duration 1
    - flaky: 1 s then TimeoutError; after 1 s of backoff, 1 s and succeeds.   duration 3
    - throttled: 0.5 s then Throttled(2.5); then 1 s and succeeds.            duration 4
    - bad: 1 s then ValueError, three times (backoff 1 s, then 2 s).          duration 6
    - missing: 0.5 s then KeyError, which is not retried.                     duration 0.5
    """

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def __call__(self, item: tuple[str, str]) -> str:
        name = item[0]
        self.calls[name] = n = self.calls.get(name, 0) + 1
        shoal.usage(tokens=10, cost=0.5)
        if name == "ok":
            await asyncio.sleep(1)
        elif name == "flaky":
            await asyncio.sleep(1)
            if n == 1:
                raise TimeoutError("slow upstream")
        elif name == "throttled":
            if n == 1:
                await asyncio.sleep(0.5)
                raise Throttled(retry_after=2.5)
            await asyncio.sleep(1)
        elif name == "bad":
            await asyncio.sleep(1)
            raise ValueError(f"bad value on attempt {n}")
        elif name == "missing":
            await asyncio.sleep(0.5)
            raise KeyError("x")
        return name.upper()


MIXED = [("ok", "a"), ("flaky", "a"), ("throttled", "b"), ("bad", "c"), ("missing", "c")]


def mixed_job() -> Job[Any, Any]:
    return Job(
        Mixed(),
        name="mixed",
        key=lambda item: item[1],
        limits=Limits(concurrency=10),
        retry=Retry(attempts=3, base_delay=1.0, jitter=False, on=(ValueError, TimeoutError)),
    )


@pytest.fixture(scope="module")
def mixed() -> shoal.Run[Any]:
    return mixed_job().run(MIXED, clock=FakeClock(wall_start=1000.0))


# ---------------------------------------------------------------------- the figures


def test_latency_percentiles_are_nearest_rank() -> None:
    """Durations 1..10 s: p50 is 5, p90 is 9, p99 is 10 (each an actual piece's duration)."""
    report = staircase_run().report
    lat = report.latency
    assert lat is not None
    assert (lat.count, lat.p50, lat.p90, lat.p99, lat.max, lat.mean) == (10, 5, 9, 10, 10, 5.5)
    assert report.wall_time == 10.0
    assert report.throughput == 1.0
    assert [p.duration for p in report.slowest] == [10.0, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert [p.index for p in report.slowest][:3] == [9, 8, 7]
    assert sum(n for _, _, n in lat.histogram) == 10
    assert lat.histogram[0][0] == 1.0 and lat.histogram[-1][1] == 10.0


def test_timeline_buckets_in_flight_and_completions() -> None:
    """A 10 s run has 100 buckets of 0.1 s; in flight steps down by one each second, and each
    piece settles in the bucket its end falls in (the run's last moment in the last bucket)."""
    t = staircase_run().report.timeline
    assert (t.start, t.bucket, len(t.in_flight), t.peak_in_flight) == (0.0, 0.1, 100, 10)
    assert t.in_flight[0] == t.in_flight[9] == 10.0
    assert t.in_flight[10] == 9.0
    assert t.in_flight[95] == 1.0
    assert [k for k, n in enumerate(t.succeeded) if n] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 99]
    assert sum(t.succeeded) == 10 and sum(t.failed) == 0


def test_counts_attempts_retries_and_throttles(mixed: shoal.Run[Any]) -> None:
    """Counts by state, attempts (throttles apart), retries by cause, and the throttle's wait."""
    report = mixed.report
    c = report.counts
    assert (c.total, c.succeeded, c.failed, c.resumed, c.pending, c.running) == (5, 3, 2, 0, 0, 0)
    assert report.attempts == 8
    assert report.retries == 3
    assert report.retries_by_cause == {"ValueError": 2, "TimeoutError": 1}
    assert list(report.retries_by_cause) == ["ValueError", "TimeoutError"]  # most first
    assert (report.throttles, report.throttle_wait) == (1, 2.5)
    assert (report.started, report.finished, report.wall_time) == (1000.0, 1006.0, 6.0)
    assert report.name == "mixed"
    assert report.status == "finished"


def test_latency_and_slowest_of_a_mixed_run(mixed: shoal.Run[Any]) -> None:
    """Durations 0.5, 1, 3, 4, 6 s: p50 3, p90 and p99 6; the slowest piece first."""
    report = mixed.report
    lat = report.latency
    assert lat is not None
    assert (lat.p50, lat.p90, lat.p99, lat.max, lat.mean) == (3.0, 6.0, 6.0, 6.0, 2.9)
    assert [(p.index, p.key, p.duration, p.ok) for p in report.slowest] == [
        (3, "c", 6.0, False),
        (2, "b", 4.0, True),
        (1, "a", 3.0, True),
        (0, "a", 1.0, True),
        (4, "c", 0.5, False),
    ]
    assert report.slowest[0].item == "('bad', 'c')"


def test_per_key_table(mixed: shoal.Run[Any]) -> None:
    """Per key: pieces, ok, failed, retries, throttles and the median, busiest key first."""
    rows = [
        (k.key, k.count, k.ok, k.failed, k.retries, k.throttles, k.p50) for k in mixed.report.keys
    ]
    assert rows == [
        ("a", 2, 2, 0, 1, 0, 1.0),
        ("c", 2, 0, 2, 2, 0, 0.5),
        ("b", 1, 1, 0, 0, 1, 4.0),
    ]
    assert mixed.report.other_keys is None


def test_failures_grouped_by_type_with_examples(mixed: shoal.Run[Any]) -> None:
    """Failures group by error type, each with its examples' index, key, message and item."""
    groups = mixed.report.failures
    assert [(g.type, g.count) for g in groups] == [("KeyError", 1), ("ValueError", 1)]
    example = groups[1].examples[0]
    assert (example.index, example.key, example.message, example.item) == (
        3,
        "c",
        "bad value on attempt 3",
        "('bad', 'c')",
    )
    assert groups[0].examples[0].message == "'x'"


def test_usage_totals(mixed: shoal.Run[Any]) -> None:
    """Usage sums every attempt's report (throttled and failed attempts included)."""
    assert mixed.report.usage == {"tokens": 90.0, "cost": 4.5}
    assert list(mixed.report.usage) == ["tokens", "cost"]


def test_usage_is_omitted_when_nothing_was_reported() -> None:
    """A run whose work reports no usage has none in its report, nor in its text."""
    report = staircase_run().report
    assert report.usage is None
    assert "usage" not in report.to_text()
    assert report.to_dict()["usage"] is None


def test_mixed_timeline(mixed: shoal.Run[Any]) -> None:
    """A 6 s run: 60 buckets of 0.1 s; settles at 0.5 (failed), 1, 3, 4 and 6 (failed)."""
    t = mixed.report.timeline
    assert (t.start, t.bucket, len(t.in_flight), t.peak_in_flight) == (1000.0, 0.1, 60, 5)
    assert [k for k, n in enumerate(t.succeeded) if n] == [10, 30, 40]
    assert [k for k, n in enumerate(t.failed) if n] == [5, 59]
    assert (t.in_flight[0], t.in_flight[5], t.in_flight[10], t.in_flight[30]) == (5, 4, 3, 2)
    assert t.in_flight[40] == t.in_flight[59] == 1.0


def test_many_keys_are_capped_with_an_other_row() -> None:
    """Past the 20 busiest keys, the rest are summed as one row that says how many keys."""
    items = [(f"k{n:02d}", 1.0) for n in range(25) for _ in range(2 if n < 20 else 1)]

    async def work(item: tuple[str, float]) -> None:
        await asyncio.sleep(item[1])

    run = Job(work, key=lambda item: item[0], limits=Limits(concurrency=50)).run(
        items, clock=FakeClock()
    )
    report = run.report
    assert len(report.keys) == 20
    assert [k.count for k in report.keys] == [2] * 20
    other = report.other_keys
    assert other is not None
    assert (other.key, other.count, other.ok, other.p50) == ("(5 other keys)", 5, 5, 1.0)


def test_an_empty_run_reports_nothing_without_failing() -> None:
    """No items: zero counts, no latency, an empty timeline; every text renderer still works."""
    run = Job(staircase).run([], clock=FakeClock())
    report = run.report
    assert report.counts.total == 0
    assert report.latency is None
    assert report.throughput is None
    assert report.timeline.in_flight == ()
    assert "0: 0 succeeded, 0 failed" in report.to_text()
    assert report.to_markdown().startswith("# shoal report: staircase")
    assert json.loads(report.to_json())["latency"] is None


def test_run_report_is_cached() -> None:
    """``run.report`` is built once: tables added to it stay."""
    run = staircase_run()
    run.report.add_table("extra", [{"a": 1}])
    assert run.report is run.report
    assert [t.title for t in run.report.tables] == ["extra"]


# ---------------------------------------------------------------------- journals


def test_journal_rebuild_matches_the_run(tmp_path: Path) -> None:
    """A report rebuilt from the journal alone equals the in-memory one, figure for figure."""
    path = tmp_path / "run.db"
    run = mixed_job().run(MIXED, clock=FakeClock(wall_start=1000.0), journal=path)
    from_run = run.report.to_dict()
    from_journal = Report.from_journal(path).to_dict()
    assert from_journal.pop("source") == "journal"
    assert from_run.pop("source") == "run"
    # Only the journal knows piece ids: everything else is the same.
    for entry in from_run["slowest"]:
        assert entry["id"]
    assert from_journal == from_run
    assert from_journal["throttles"] == {"count": 1, "wait": 2.5}
    assert from_journal["usage"] == {"tokens": 90.0, "cost": 4.5}


def test_journal_report_of_a_resumed_run(tmp_path: Path) -> None:
    """On resume, settled pieces count as resumed (in counts and failures) but not in the
    timings; the journal's report of the second run says the same as the run's."""
    path = tmp_path / "run.db"
    first = mixed_job().run(MIXED[3:], clock=FakeClock(wall_start=100.0), journal=path)
    assert first.report.counts.failed == 2
    second = mixed_job().run(MIXED, clock=FakeClock(wall_start=1000.0), journal=path)
    report = second.report
    c = report.counts
    assert (c.total, c.succeeded, c.failed, c.resumed) == (5, 3, 2, 2)
    assert report.latency is not None and report.latency.count == 3
    assert report.retries_by_cause == {"TimeoutError": 1}  # the resumed ValueErrors ran before
    assert [g.type for g in report.failures] == ["KeyError", "ValueError"]
    assert report.wall_time == 4.0
    rebuilt = Report.from_journal(path).to_dict()
    mine = report.to_dict()
    rebuilt.pop("source"), mine.pop("source")
    # A journal knows a resumed piece by the index it had in the run that settled it.
    rebuilt_examples = [g.pop("examples") for g in rebuilt["failures"]]
    mine_examples = [g.pop("examples") for g in mine["failures"]]
    assert [[e["index"] for e in g] for g in rebuilt_examples] == [[1], [0]]
    assert [[e["index"] for e in g] for g in mine_examples] == [[4], [3]]
    assert rebuilt == mine
    # The first run, by its id: its two pieces, both failed there.
    earlier = Report.from_journal(path, run=1)
    assert (earlier.counts.total, earlier.counts.failed, earlier.counts.resumed) == (2, 2, 0)


def test_journal_report_while_the_run_is_writing(tmp_path: Path) -> None:
    """Read while a run is going (read-only, one snapshot): it says running, with what settled."""
    path = tmp_path / "live.db"
    seen: list[Report] = []

    async def work(item: str) -> str:
        if item != "probe":
            return item
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            report = await asyncio.to_thread(Report.from_journal, path)
            if report.counts.succeeded == 3 and report.counts.running == 1:
                seen.append(report)
                break
            await asyncio.sleep(0.02)
        return item

    Job(work).run(
        ["a", "b", "c", "probe"], journal=Journal(path, commit_every=1, commit_interval=0.01)
    )
    assert seen, "the live journal never showed three settled pieces and one running"
    live = seen[0]
    assert live.status == "running"
    assert (live.counts.total, live.counts.succeeded, live.counts.running) == (4, 3, 1)
    assert Report.from_journal(path).status == "finished"


def test_from_journal_refuses_what_is_not_a_journal(tmp_path: Path) -> None:
    """A missing file, a file that is not a journal, and an unknown run id: clear errors."""
    with pytest.raises(JournalError, match="does not exist"):
        Report.from_journal(tmp_path / "nope.db")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(JournalError, match="not a shoal journal"):
        Report.from_journal(text)
    path = tmp_path / "run.db"
    Job(staircase).run([1.0], clock=FakeClock(), journal=path)
    with pytest.raises(JournalError, match=r"no run 7 \(its runs: 1\)"):
        Report.from_journal(path, run=7)


# ---------------------------------------------------------------------- renderers


def test_text_has_the_figures_in_aligned_columns(mixed: shoal.Run[Any]) -> None:
    """``str(report)``: the summary figures and aligned tables, nothing but plain text."""
    text = str(mixed.report)
    assert text == mixed.report.to_text()
    assert "p50 3.000 s, p90 6.000 s, p99 6.000 s, max 6.000 s" in text
    assert "5: 3 succeeded, 2 failed" in text
    assert "8 (3 retries)" in text
    assert "1 (2.500 s waited)" in text
    assert "tokens 90, cost 4.5" in text
    assert "\x1b" not in text
    lines = text.splitlines()
    head = lines.index("Per key") + 1
    assert lines[head].split() == ["key", "pieces", "ok", "failed", "retries", "throttles", "p50"]
    assert lines[head + 2].split() == ["a", "2", "2", "0", "1", "0", "1.000", "s"]
    # Right-aligned numbers: every row of the table has the same width.
    assert len({len(line) for line in lines[head : head + 5]}) == 1


def test_text_shows_control_characters_as_escapes() -> None:
    """An ANSI escape or a newline in the data cannot drive the terminal or break a table."""

    async def work(item: str) -> None:
        raise ValueError("\x1b[2J cleared\nsecond line")

    report = Job(work, retry=Retry(attempts=1)).run(["x"], clock=FakeClock()).report
    text = report.to_text()
    assert "\x1b" not in text
    assert "\\x1b[2J cleared second line" in text


def test_markdown_escapes_cells(mixed: shoal.Run[Any]) -> None:
    """Markdown: the figures, and data that would be markup (pipes, HTML) shown as text."""

    async def work(item: str) -> None:
        raise ValueError(f"a | b {XSS_SCRIPT} *bold*")

    md = Job(work, retry=Retry(attempts=1)).run(["x"], clock=FakeClock()).report.to_markdown()
    assert "a \\| b &lt;script&gt;window.\\_\\_pwned=1&lt;/script&gt; \\*bold\\*" in md
    assert "<script>" not in md
    mixed_md = mixed.report.to_markdown()
    assert "| ValueError | 2 |" in mixed_md
    assert "| a | 2 | 2 | 0 | 1 | 0 | 1.000 s |" in mixed_md


def _documented_fields() -> dict[str, str]:
    doc = (ROOT / "docs" / "report-schema.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| `([^`]+)` \| ([^|]+?) \|", doc, flags=re.MULTILINE))


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "list": (list,),
}


def _check_type(path: str, value: Any, documented: str) -> None:
    kinds = documented.replace("{name} ", "").split(" or ")
    ok = False
    for kind in kinds:
        if kind == "null":
            ok = ok or value is None
        elif kind.startswith("list"):
            ok = ok or isinstance(value, list)
        elif documented.startswith("{name}"):
            ok = ok or (
                isinstance(value, dict) and all(isinstance(v, _TYPES[kind]) for v in value.values())
            )
        else:
            ok = ok or (isinstance(value, _TYPES[kind]) and not isinstance(value, bool))
            if kind == "boolean":
                ok = ok or isinstance(value, bool)
    assert ok, f"{path} = {value!r} is not {documented}"


def _walk(data: Any, prefix: str, fields: dict[str, str], seen: set[str]) -> None:
    for name, value in data.items():
        path = f"{prefix}{name}"
        documented_as = fields.get(path) or fields.get(f"{path}[]")
        assert documented_as is not None, f"{path} is not in docs/report-schema.md"
        listed = f"{path}[]" in fields
        seen.add(f"{path}[]" if listed else path)
        _check_type(path, value, documented_as)
        if isinstance(value, dict) and not documented_as.startswith("{name}"):
            _walk(value, f"{path}.", fields, seen)
        elif listed:
            for entry in value:
                _walk(entry, f"{path}[].", fields, seen)


def test_json_follows_the_documented_schema(mixed: shoal.Run[Any], tmp_path: Path) -> None:
    """Every field the JSON has is documented with its type, and every documented field shows
    up (in a report that has a bit of everything)."""
    report = Report.from_journal(_mixed_journal(tmp_path))
    report.add_table("findings", [{"file": "a.py", "line": 3}])
    report.add_chart("per day", ["mon", "tue"], {"posts": [3, None]})
    data = json.loads(report.to_json())
    assert data["schema"] == SCHEMA == "shoal.report/1"
    fields = _documented_fields()
    seen: set[str] = set()
    _walk(data, "", fields, seen)
    assert set(fields) - seen == set(), "documented but missing from the JSON"


def _mixed_journal(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.db"
    mixed_job().run(MIXED, clock=FakeClock(wall_start=1000.0), journal=path)
    return path


def test_add_table_in_every_format(mixed: shoal.Run[Any]) -> None:
    """A job's own table shows in every format, cut to its limit, values escaped."""
    report = Report.from_run(mixed)
    rows = [{"rule": f"B{n}", "hits": n, "where": XSS_IMG if n == 0 else "ok"} for n in range(5)]
    report.add_table("Top findings", rows, limit=3)
    report.add_table("Picked", rows, columns=["hits", "missing"])
    table = report.tables[0]
    assert (table.columns, table.total, len(table.rows)) == (("rule", "hits", "where"), 5, 3)
    assert report.tables[1].rows[0] == (0, None)
    text = report.to_text()
    assert "Top findings" in text and "first 3 of 5 rows" in text
    assert "B2" in text and "B3" not in text
    assert "## Top findings" in report.to_markdown()
    assert report.to_dict()["tables"][0]["rows"][1] == ["B1", 1, "ok"]
    assert "&quot;&gt;&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in _html(report)


def test_add_table_checks_its_arguments(mixed: shoal.Run[Any]) -> None:
    """Bad tables are refused with messages that say what to pass."""
    report = Report.from_run(mixed)
    with pytest.raises(ValueError, match="non-empty title"):
        report.add_table(" ", [])
    with pytest.raises(ValueError, match="limit"):
        report.add_table("t", [], limit=0)
    with pytest.raises(TypeError, match="row 1 is a list"):
        report.add_table("t", [{"a": 1}, [1]])  # type: ignore[list-item]


def test_save_picks_the_format_from_the_extension(mixed: shoal.Run[Any], tmp_path: Path) -> None:
    """``save`` writes .txt, .md, .json and .html; another extension is a clear ValueError."""
    report = mixed.report
    assert report.save(tmp_path / "r.txt").read_text(encoding="utf-8") == report.to_text()
    assert report.save(tmp_path / "r.md").read_text(encoding="utf-8") == report.to_markdown()
    saved = json.loads((report.save(tmp_path / "r.json")).read_text(encoding="utf-8"))
    assert saved["counts"]["failed"] == 2
    assert "<svg" in report.save(tmp_path / "r.htm").read_text(encoding="utf-8")
    assert report.save(tmp_path / "r.out", format="json").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=r"use a \.html, \.md, \.json or \.txt path"):
        report.save(tmp_path / "r.pdf")


def test_html_without_matplotlib_says_how_to_install_it(
    mixed: shoal.Run[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without matplotlib, the HTML report fails with the install command (others still work)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(shoal.ShoalError, match=r"pip install 'shoal\[report\]'"):
        mixed.report.to_html()
    assert mixed.report.to_markdown()


def _html(report: Report) -> str:
    return report.to_html()


def test_html_is_self_contained(mixed: shoal.Run[Any]) -> None:
    """The page has inline styles and SVG charts, a CSP that forbids scripts and fetches, and
    no external reference at all."""
    page = _html(mixed.report)
    assert "default-src 'none'" in page
    assert page.count("<svg") == 3
    assert "<script" not in page
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", page)
    assert "http://www.w3.org/2000/svg" in page  # the SVG namespace, not a fetch


# ---------------------------------------------------------------------- in a real browser


def _hostile_report() -> Report:
    """A run whose items, keys, messages, error types and tables carry markup."""
    nasty_error = type(f"Boom{XSS_SCRIPT}", (Exception,), {})

    async def work(item: str) -> str:
        await asyncio.sleep(1)
        if item.startswith("fail"):
            raise nasty_error(f"{XSS_IMG} {XSS_SCRIPT}")
        shoal.usage(tokens=5)
        return item

    items = [f"ok {XSS_SCRIPT}", f"ok {XSS_IMG}", f"fail {XSS_SCRIPT}", f"fail {XSS_IMG}"]
    run = Job(work, name=f"job {XSS_SCRIPT}", key=lambda item: item, retry=Retry(attempts=1)).run(
        items, clock=FakeClock()
    )
    report = run.report
    report.add_table(f"Findings {XSS_IMG}", [{"what": XSS_SCRIPT, "where": XSS_IMG}])
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium binary on PATH: the HTML report's browser checks need one")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def opened(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The hostile report's page, opened from a file, with what the browser said and fetched."""
    path = tmp_path_factory.mktemp("html") / "report.html"
    _hostile_report().save(path)
    raw = path.read_text(encoding="utf-8").lower()
    assert "<script" not in raw and "<img" not in raw  # escaped everywhere, charts included
    page = browser.new_page()
    messages: list[tuple[str, str]] = []
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: messages.append((m.type, m.text)))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    try:
        yield {"page": page, "messages": messages, "errors": errors, "requests": requests,
               "url": path.as_uri()}  # fmt: skip
    finally:
        page.close()


def test_html_renders_without_errors_or_fetches(opened: dict[str, Any]) -> None:
    """The page loads with no console errors, no page errors and no request but itself."""
    assert [m for m in opened["messages"] if m[0] in ("error", "warning")] == []
    assert opened["errors"] == []
    assert opened["requests"] == [opened["url"]]


def test_html_charts_are_present(opened: dict[str, Any]) -> None:
    """The timeline, the latency histogram and the failures chart are drawn SVGs."""
    page = opened["page"]
    for name in ("timeline", "latency", "failures"):
        chart = page.locator(f"#chart-{name} svg")
        assert chart.count() == 1
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100
        assert page.locator(f"#chart-{name} svg path").count() > 5
    labels = page.locator("#chart-failures svg text").all_text_contents()
    # The error type (cut to fit), drawn as text.
    assert any("Boom<script>window.__pwned" in label for label in labels), labels


def test_html_shows_markup_in_the_data_as_text(opened: dict[str, Any]) -> None:
    """Items, messages, keys, error types and table cells with markup show as literal text and
    run nothing: no script or img element exists and ``window.__pwned`` stays undefined."""
    page = opened["page"]
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("script").count() == 0
    assert page.locator("img").count() == 0
    body = page.inner_text("body")
    assert XSS_SCRIPT in body
    assert XSS_IMG in body
    assert f"job {XSS_SCRIPT}" in page.title()
    assert page.locator("h1").inner_text() == f"shoal report: job {XSS_SCRIPT}"
