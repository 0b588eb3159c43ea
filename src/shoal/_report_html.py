"""The report as one self-contained HTML page: inline CSS, matplotlib charts as inline SVG.

The page holds no script and fetches nothing: its Content-Security-Policy forbids both, so even a
mistake in escaping could not run code. Every text from the data goes through ``html.escape``;
chart labels are drawn by matplotlib's SVG writer, which escapes them too (and a guard refuses a
chart with active content). matplotlib is imported only here, when a page is made.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._exceptions import ShoalError
from ._report import SCHEMA, _clean, _number, _secs, _summary, _truncate, _views, _when
from ._version import __version__

if TYPE_CHECKING:
    from ._report import Chart, Report


def render_html(report: Report) -> str:
    """The page (raises ``ShoalError`` with the install command when matplotlib is missing)."""
    return _page(report, _charts(report))


def _charts(report: Report) -> dict[str, str]:
    """The three charts as inline SVG: timeline, latency histogram, failures by cause."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise ShoalError(
            "the HTML report draws its charts with matplotlib, which is not installed: "
            "pip install 'shoal[report]' (or save the report as .md, .json or .txt)"
        ) from exc

    t = report.timeline
    with matplotlib.rc_context(
        {
            "svg.fonttype": "none",  # text stays text (escaped by matplotlib's XML writer)
            "svg.hashsalt": "shoal-report",  # the same report gives the same file
            "text.parse_math": False,  # "$" in an error type is a dollar, not math
            "text.usetex": False,
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        # The concurrency and completions timeline.
        fig = Figure(figsize=(9, 3.2))
        ax = fig.add_subplot()
        if t.in_flight:
            xs = [(k + 0.5) * t.bucket for k in range(len(t.in_flight))]
            ax.bar(xs, t.succeeded, width=t.bucket * 0.9, color="#4c9a6a", label="succeeded")
            ax.bar(
                xs, t.failed, width=t.bucket * 0.9, bottom=t.succeeded, color="#c8553d",
                label="failed",
            )  # fmt: skip
            ax.set_ylabel("settled per bucket")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            twin = ax.twinx()
            twin.step(xs, t.in_flight, where="mid", color="#2f5d8a", label="in flight")
            twin.set_ylabel("in flight (average)")
            twin.set_ylim(bottom=0)
            handles = ax.get_legend_handles_labels()
            more = twin.get_legend_handles_labels()
            ax.legend(
                handles[0] + more[0], handles[1] + more[1], fontsize=8, frameon=False, ncols=3,
                loc="upper center", bbox_to_anchor=(0.5, -0.22),
            )  # fmt: skip
            ax.set_xlabel(f"seconds since start ({_secs(t.bucket)} buckets)")
        else:
            _empty(ax, "no pieces ran in this run")
        ax.set_title("Pieces in flight and settled")
        timeline_svg = _svg(fig)

        # The latency histogram.
        fig = Figure(figsize=(9, 3.2))
        ax = fig.add_subplot()
        lat = report.latency
        if lat is not None and lat.histogram:
            counts = [n for _, _, n in lat.histogram]
            if len(lat.histogram) == 1:  # every piece took the same time: one bar, centred
                value = lat.histogram[0][0]
                span = max(abs(value) * 0.1, 0.001)
                ax.bar([value], counts, width=span * 0.5, color="#2f5d8a", label="pieces")
                ax.set_xlim(value - span * 2, value + span * 2)
            else:
                ax.bar(
                    [lo for lo, _, _ in lat.histogram], counts,
                    width=[hi - lo for lo, hi, _ in lat.histogram], align="edge",
                    color="#2f5d8a", label="pieces",
                )  # fmt: skip
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            for label, value, colour in (
                ("p50", lat.p50, "#4c9a6a"),
                ("p90", lat.p90, "#d1a33b"),
                ("p99", lat.p99, "#c8553d"),
            ):
                ax.axvline(value, color=colour, linestyle="--", label=f"{label} {_secs(value)}")
            ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            ax.set_xlabel("piece duration (s)")
            ax.set_ylabel("pieces")
        else:
            _empty(ax, "no latencies: no pieces ran in this run")
        ax.set_title("Latency")
        latency_svg = _svg(fig)

        # Failures (and retries) by cause.
        causes = [g.type for g in report.failures]
        causes += [c for c in report.retries_by_cause if c not in causes]
        fig = Figure(figsize=(9, max(2.2, 0.9 + 0.32 * len(causes[:15]))))
        ax = fig.add_subplot()
        if causes:
            shown = causes[:15][::-1]
            failed = {g.type: g.count for g in report.failures}
            ys = list(range(len(shown)))
            ax.barh(
                [y + 0.2 for y in ys], [failed.get(c, 0) for c in shown], height=0.4,
                color="#c8553d", label="failed pieces",
            )  # fmt: skip
            ax.barh(
                [y - 0.2 for y in ys], [report.retries_by_cause.get(c, 0) for c in shown],
                height=0.4, color="#d1a33b", label="retried attempts",
            )  # fmt: skip
            # Labels come from the data: no math parsing, no surprises.
            ax.set_yticks(ys, [_chart_label(c) for c in shown], parse_math=False)
            ax.set_ylim(-0.8, len(shown) - 0.2)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            ax.set_xlabel("count")
        else:
            _empty(ax, "no failures and no retries")
        ax.set_title("Failures and retries by cause")
        failures_svg = _svg(fig)
        # The job's own charts (report.add_chart).
        own = {f"job{n}": _job_chart(chart) for n, chart in enumerate(report.charts, 1)}
    return {"timeline": timeline_svg, "latency": latency_svg, "failures": failures_svg, **own}


def _job_chart(chart: Chart) -> str:
    """A chart of the job's: bars (side by side or stacked) or lines, one colour per series."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    ax = fig.add_subplot()
    xs = list(range(len(chart.labels)))
    colours = ["#2f5d8a", "#c8553d", "#4c9a6a", "#d1a33b", "#7b5ea7", "#5b6570", "#3fa7b5"]
    width = 0.8 if chart.stacked else 0.8 / max(len(chart.series), 1)
    bottom = [0.0] * len(xs)
    for n, (name, values) in enumerate(chart.series):
        colour = (chart.colors[n] if n < len(chart.colors) else None) or colours[n % len(colours)]
        label = _chart_label(name)
        if chart.kind == "line":
            ys = [float("nan") if v is None else v for v in values]
            ax.plot(xs, ys, marker="o", markersize=3, color=colour, label=label)
            continue
        heights = [0.0 if v is None else v for v in values]
        if chart.stacked:
            ax.bar(xs, heights, width=width, bottom=bottom, color=colour, label=label)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        else:
            offset = (n - (len(chart.series) - 1) / 2) * width
            ax.bar([x + offset for x in xs], heights, width=width, color=colour, label=label)
    if not xs:
        _empty(ax, "no data")
    else:
        step = max(1, len(xs) // 30)  # at most about 30 tick labels
        ticks = xs[::step]
        ax.set_xticks(ticks, [_chart_label(chart.labels[x]) for x in ticks], parse_math=False)
        if len(ticks) > 8 or max(len(chart.labels[x]) for x in ticks) > 10:
            for tick in ax.get_xticklabels():
                tick.set_rotation(45)
                tick.set_horizontalalignment("right")
        ax.axhline(0, color="#999", linewidth=0.6)
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xlabel(_chart_label(chart.x_label))
    ax.set_ylabel(_chart_label(chart.y_label))
    ax.set_title(_chart_label(chart.title))
    return _svg(fig)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def _chart_label(text: str) -> str:
    return _truncate(_clean(text), 48)


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    svg = text[text.index("<svg") :]
    # matplotlib's SVG writer escapes every text it draws; this guard keeps it that way should
    # a future version not (the page's CSP would still block scripts).
    if _ACTIVE_SVG.search(svg):
        raise ShoalError("a report chart came out with active content; please report this")
    return svg


_ACTIVE_SVG = re.compile(
    r"<\s*(?:script|foreignObject|iframe|img|a)\b|<[^>]*\son\w+\s*=", re.IGNORECASE
)


_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 70rem; padding: 0 1rem; color: #1d232a; background: #fff; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.sub { color: #5b6570; margin-top: 0; }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dl.summary dt { color: #5b6570; } dl.summary dd { margin: 0; }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0; }
.card { border: 1px solid #d8dee4; border-radius: 6px; padding: .5rem .9rem; min-width: 7rem; }
.card b { display: block; font-size: 1.3rem; } .card span { color: #5b6570; font-size: .85rem; }
.card.bad b { color: #b3261e; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border-bottom: 1px solid #e4e8ec; padding: .25rem .6rem; text-align: left;
         vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td { max-width: 32rem; overflow-wrap: anywhere; white-space: pre-wrap; }
.note { color: #5b6570; font-size: .85rem; }
figure.chart { margin: 1rem 0; } figure.chart svg { max-width: 100%; height: auto; }
footer { margin-top: 3rem; color: #5b6570; font-size: .8rem; }
"""


def _page(report: Report, charts: Mapping[str, str]) -> str:
    e = _esc
    c = report.counts
    lat = report.latency
    cards = [
        ("pieces", f"{c.total:,}", False),
        ("succeeded", f"{c.succeeded:,}", False),
        ("failed", f"{c.failed:,}", c.failed > 0),
        ("wall time", _secs(report.wall_time), False),
        (
            "throughput",
            "-" if report.throughput is None else f"{report.throughput:,.2f}/s",
            False,
        ),
        ("p50", "-" if lat is None else _secs(lat.p50), False),
        ("p99", "-" if lat is None else _secs(lat.p99), False),
        ("retries", f"{report.retries:,}", False),
    ]
    if report.usage:
        cards.extend((k, _number(v), False) for k, v in list(report.usage.items())[:3])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # No scripts, no fetches: the page is data and pictures only.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>shoal report: {e(report.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>shoal report: {e(report.name) or '(unnamed job)'}</h1>",
        f'<p class="sub">{e(report.status)} · {e(_when(report.started))} · shoal '
        f"{e(report.shoal_version)} · from the {e(report.source)}</p>",
        '<div class="cards">',
        *(
            f'<div class="card{" bad" if bad else ""}"><b>{e(value)}</b><span>{e(label)}'
            "</span></div>"
            for label, value, bad in cards
        ),
        "</div>",
        '<dl class="summary">',
        *(f"<dt>{e(label)}</dt><dd>{e(value)}</dd>" for label, value in _summary(report)),
        "</dl>",
        "<h2>Timeline</h2>",
        _figure("timeline", "Pieces in flight and settled over time", charts["timeline"]),
        "<h2>Latency</h2>",
        _figure("latency", "Histogram of piece durations", charts["latency"]),
        "<h2>Failures and retries</h2>",
        _figure("failures", "Failed pieces and retried attempts by cause", charts["failures"]),
    ]
    for n, chart in enumerate(report.charts, 1):
        parts.append(f"<h2>{e(chart.title)}</h2>")
        parts.append(_figure(f"job{n}", chart.title, charts[f"job{n}"]))
    for view in _views(report, charts=False):
        parts.append(f"<h2>{e(view.title)}</h2>")
        if view.note:
            parts.append(f'<p class="note">{e(view.note)}</p>')
        parts.append("<table><thead><tr>")
        parts.extend(
            f"<th{' class=n' if num else ''}>{e(h)}</th>"
            for h, num in zip(view.headers, view.numeric, strict=True)
        )
        parts.append("</tr></thead><tbody>")
        parts.extend(
            "<tr>"
            + "".join(
                f"<td{' class=n' if num else ''}>{e(cell)}</td>"
                for cell, num in zip(row, view.numeric, strict=True)
            )
            + "</tr>"
            for row in view.rows
        )
        parts.append("</tbody></table>")
    parts.append(
        f"<footer>Report schema {e(SCHEMA)}. Made by shoal {e(__version__)}.</footer></body></html>"
    )
    return "\n".join(parts) + "\n"


def _figure(name: str, caption: str, svg: str) -> str:
    # Each chart's SVG ids get a prefix of their own: three matplotlib figures on one page
    # would otherwise share ids such as "figure_1".
    svg = re.sub(r'\bid="', f'id="{name}-', svg)
    svg = re.sub(r"url\(#", f"url(#{name}-", svg)
    svg = re.sub(r'href="#', f'href="#{name}-', svg)
    return (
        f'<figure class="chart" id="chart-{name}" role="img" aria-label="{_esc(caption)}">'
        f"{svg}<figcaption class=note>{_esc(caption)}</figcaption></figure>"
    )


def _esc(text: str) -> str:
    return html.escape(text, quote=True)
