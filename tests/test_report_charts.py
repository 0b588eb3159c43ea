"""Charts a job attaches to its report (``report.add_chart``): checked, kept as data, shown as a
table in text and Markdown, drawn as inline SVG in the HTML page (escaped), and in a browser."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shoal
from shoal.report import Chart, Report
from shoal.testing import FakeClock

XSS = "<script>window.__pwned=1</script>"
DAYS = ["2024-05-01", "2024-05-02", "2024-05-03"]


def _report() -> Report:
    run = shoal.Job(lambda n: n, name="charts", backend="thread").run(range(3), clock=FakeClock())
    return run.report


def _with_charts() -> Report:
    report = _report()
    report.add_chart(
        "Posts per day", DAYS, {"positive": [4, 5, 6], "negative": [1, None, 2]},
        stacked=True, x_label="day", y_label="posts",
    )  # fmt: skip
    report.add_chart(f"Mood {XSS}", ["a", "b"], {f"s {XSS}": [0.5, -0.25]}, kind="line")
    return report


def test_add_chart_keeps_the_data() -> None:
    """The chart is kept as given: labels as text, values as floats, None where missing."""
    report = _with_charts()
    first = report.charts[0]
    assert first == Chart(
        "Posts per day",
        "bar",
        tuple(DAYS),
        (("positive", (4.0, 5.0, 6.0)), ("negative", (1.0, None, 2.0))),
        "day",
        "posts",
        True,
        (None, None),
    )
    assert report.charts[1].kind == "line"


def test_series_colours_are_used_and_checked() -> None:
    """A series given a colour is drawn in it; the others take the palette; a colour that is
    not #rrggbb, or names no series, is refused."""
    pytest.importorskip("matplotlib", reason="the HTML report's charts need shoal[report]")
    report = _report()
    report.add_chart("c", ["a"], {"bad": [1], "good": [2]}, colors={"bad": "#AB1234"})
    assert report.charts[0].colors == ("#AB1234", None)
    assert "#ab1234" in report.to_html().lower()
    for colors in ({"bad": "red"}, {"bad": "#123"}, {"other": "#123456"}, {"bad": "#12345g"}):
        with pytest.raises(ValueError, match="rrggbb"):
            report.add_chart("c", ["a"], {"bad": [1]}, colors=colors)
    assert len(report.charts) == 1


def test_charts_in_json_text_and_markdown() -> None:
    """JSON keeps each chart's data; text and Markdown show it as a table."""
    report = _with_charts()
    data = json.loads(report.to_json())
    assert data["charts"][0] == {
        "title": "Posts per day",
        "kind": "bar",
        "labels": DAYS,
        "series": [
            {"name": "positive", "values": [4.0, 5.0, 6.0]},
            {"name": "negative", "values": [1.0, None, 2.0]},
        ],
        "x_label": "day",
        "y_label": "posts",
        "stacked": True,
    }
    assert data["tables"] == []
    text = report.to_text()
    assert "Posts per day" in text
    assert "day         positive  negative" in text
    markdown = report.to_markdown()
    assert "## Posts per day" in markdown
    assert "| 2024-05-02 | 5 |  |" in markdown


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("", ["a"], {"s": [1]}), {}, "non-empty title"),
        (("t", ["a"], {"s": [1]}), {"kind": "pie"}, "bar, line"),
        (("t", ["a"], {}), {}, "mapping of series name"),
        (("t", ["a", "b"], {"s": [1]}), {}, "1 values for 2 labels"),
        (("t", ["a"], {"s": [math.nan]}), {}, "finite numbers or None"),
        (("t", ["a"], {"s": ["1"]}), {}, "finite numbers or None"),
        (("t", ["a"], {"s": [True]}), {}, "finite numbers or None"),
        (("t", [str(n) for n in range(401)], {"s": [1] * 401}), {}, "at most 400"),
    ],
)
def test_bad_charts_are_refused(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    """Each bad chart is refused with a message that says what to pass; nothing is added."""
    report = _report()
    with pytest.raises(ValueError, match=message):
        report.add_chart(*args, **kwargs)
    assert report.charts == []


def test_html_draws_each_chart_as_inline_svg() -> None:
    """One more SVG per chart, after the report's own three; titles and series names escaped;
    the page stays free of scripts."""
    pytest.importorskip("matplotlib", reason="the HTML report's charts need shoal[report]")
    page = _with_charts().to_html()
    assert page.count("<svg") == 5
    assert 'id="chart-job1"' in page
    assert 'id="chart-job2"' in page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert page.index("chart-failures") < page.index("chart-job1")


# ---------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    pytest.importorskip("matplotlib", reason="the HTML report's charts need shoal[report]")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium binary on PATH: the HTML report's browser checks need one")
    from playwright.sync_api import sync_playwright

    path: Path = tmp_path_factory.mktemp("charts") / "report.html"
    _with_charts().save(path)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )  # fmt: skip
        try:
            page = browser.new_page()
            errors: list[str] = []
            requests: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            yield {"page": page, "errors": errors, "requests": requests, "url": path.as_uri()}
        finally:
            browser.close()


def test_charts_render_in_a_browser(opened: dict[str, Any]) -> None:
    """Both charts are drawn SVGs of a real size, with their labels as text; nothing runs and
    nothing is fetched."""
    page = opened["page"]
    assert opened["errors"] == []
    assert opened["requests"] == [opened["url"]]
    for name in ("job1", "job2"):
        chart = page.locator(f"#chart-{name} svg")
        assert chart.count() == 1
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100
    bars = page.locator("#chart-job1 svg text").all_text_contents()
    assert {"2024-05-01", "positive", "negative", "posts"} <= set(bars)
    lines = page.locator("#chart-job2 svg text").all_text_contents()
    assert any(XSS in text for text in lines), lines
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("script").count() == 0
    assert page.locator("h2", has_text=f"Mood {XSS}").count() == 1
