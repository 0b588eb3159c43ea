"""The price example: 102 product pages of 3 shops (3 layouts) over real HTTP on loopback, read
with BeautifulSoup, run twice with prices changed between the runs.

The shops come from ``examples/demo_shops.py``, which knows every price of both rounds, so the
matrix and the alerts can be checked exactly. About one page in ten fails once.
"""

from __future__ import annotations

import importlib
import json
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import shoal
import shoal.http
from shoal import cli
from shoal._jobfiles import load

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "price_monitor.py"


@pytest.fixture(scope="module")
def prices() -> ModuleType:
    return load(EXAMPLE)


@pytest.fixture(scope="module")
def demo(prices: ModuleType) -> ModuleType:
    return importlib.import_module("demo_shops")  # beside the job file, on the path since load


class Round:
    def __init__(self, server: Any, run: shoal.Run[Any]) -> None:
        self.server, self.run = server, run


@pytest.fixture(scope="module")
def rounds(
    prices: ModuleType, demo: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Round, Round, Path]:
    """Round 1, its output written as ``shoal run --out`` writes it, then round 2."""
    done = []
    for number in (1, 2):
        with demo.ShopServer(number) as server:
            done.append(Round(server, prices.job.run(server.urls())))
    out = tmp_path_factory.mktemp("prices") / "round1.jsonl"
    done[0].run.export(out)
    return done[0], done[1], out


def test_every_page_is_read_right(demo: ModuleType, rounds: tuple[Round, Round, Path]) -> None:
    """Each page of each shop gives its product's EAN, its shop and its exact price, whichever
    layout the shop uses."""
    for r in rounds[:2]:
        assert r.run.ok, r.run.failures
        assert len(r.run.values) == len(r.server.listings) >= 100
        got = {(v["gtin"], v["shop"]): Decimal(v["price"]) for v in r.run.values}
        assert got == r.server.prices()
        assert {v["source"] for v in r.run.values} == {"json-ld", "microdata", "corner-store"}
        names = {x.product.gtin: x.product.name for x in r.server.listings}
        assert all(v["name"] == names[v["gtin"]] for v in r.run.values)


def test_the_matrix(demo: ModuleType, rounds: tuple[Round, Round, Path]) -> None:
    """One row per product, one column per shop, every cell the shop's price, and the cheapest
    shops named."""
    server, run = rounds[1].server, rounds[1].run
    matrix = run.result
    truth = server.prices()
    assert matrix["shops"] == sorted(demo.SHOPS)
    assert len(matrix["products"]) == 40
    for row in matrix["products"]:
        expected = {shop: p for (gtin, shop), p in truth.items() if gtin == row["gtin"]}
        assert {s: Decimal(c["price"]) for s, c in row["prices"].items()} == expected
        low = min(expected.values())
        assert row["cheapest"] == sorted(s for s, p in expected.items() if p == low)
    sparse = [r for r in matrix["products"] if len(r["prices"]) < 3]
    assert 10 <= len(sparse) < 40  # not every shop sells everything


def test_alerts_list_exactly_the_changed_prices(
    prices: ModuleType, demo: ModuleType, rounds: tuple[Round, Round, Path]
) -> None:
    """Alerts from the previous run's --out: every changed price, up or down with its percent,
    and nothing else (not the listing that appeared, nor the one that went)."""
    first, second, out = rounds
    before, after = first.server.prices(), second.server.prices()
    expected = {}
    for key in before.keys() & after.keys():
        if before[key] != after[key]:
            percent = ((after[key] - before[key]) / before[key] * 100).quantize(
                Decimal("0.1"), ROUND_HALF_EVEN
            )
            expected[key] = ("up" if after[key] > before[key] else "down", f"{percent:+}")
    assert len(expected) == len(demo.CHANGES) == 11
    assert {v for v, _ in expected.values()} == {"up", "down"}
    previous = prices.load_previous(out)
    alerts = prices.alerts(previous, prices.prices_of(second.run.values))
    got = {(a["gtin"], a["shop"]): (a["change"], a["percent"]) for a in alerts}
    assert got == expected
    assert {f"{d}{p}" for d, p in got.values()} >= {"down-15.0", "up+25.0", "down-30.0"}
    assert [abs(Decimal(a["percent"])) for a in alerts] == sorted(
        (abs(Decimal(a["percent"])) for a in alerts), reverse=True
    )
    _, _, counts = prices.comparison(second.run, out)
    assert counts["new listings"] == 1
    assert counts["gone (or failed) listings"] == 1


def test_flaky_pages_were_retried(demo: ModuleType, rounds: tuple[Round, Round, Path]) -> None:
    """Pages that failed once (500, a dropped connection) were retried and read; 503s paused
    their shop instead of using an attempt; the limits held at the servers."""
    for r in rounds[:2]:
        troubled = {(demo.SITES[x.shop], x.path) for x in r.server.listings if x.trouble}
        retried = throttled = 0
        # The input was server.urls(): one page per listing, in order.
        for listing, outcome in zip(r.server.listings, r.run.outcomes, strict=True):
            if listing.trouble in ("500-once", "drop-once"):
                assert outcome.attempts == 2, listing
                retried += 1
            elif listing.trouble == "503-once":
                assert (outcome.attempts, outcome.throttles) == (1, 1)
                throttled += 1
            else:
                assert outcome.attempts == 1
        assert retried >= 3
        assert throttled >= 3
        assert r.run.stats.retries == retried
        assert r.run.stats.throttles == throttled
        assert sum(r.server.requests.values()) == len(r.server.listings) + len(troubled)
        for page, n in r.server.requests.items():
            assert n == (2 if page in troubled else 1), page
        assert r.server.max_in_flight <= 16
        assert max(r.server.max_in_flight_per_site.values()) <= 4


def test_report_tables(prices: ModuleType, rounds: tuple[Round, Round, Path]) -> None:
    """The matrix with the cheapest marked ★, the alerts, the listing counts, the readers."""
    _, second, out = rounds
    report = second.run.report
    prices.add_tables(report, second.run, *prices.comparison(second.run, out), previous=out)
    tables = {t.title: t for t in report.tables}
    assert list(tables) == [
        "Price comparison (★ cheapest)",
        "Price alerts since round1.jsonl",
        "Listings",
        "Read from",
    ]
    matrix = tables["Price comparison (★ cheapest)"]
    assert matrix.total == 40
    row = dict(zip(matrix.columns, matrix.rows[0], strict=True))
    first = second.run.result["products"][0]
    for shop in first["cheapest"]:
        assert row[shop].startswith("★ ")
    assert sum(str(v).startswith("★") for v in row.values()) == len(first["cheapest"])
    assert tables["Price alerts since round1.jsonl"].total == 11


def test_reading_prices_and_pages(prices: ModuleType) -> None:
    """Prices as shops write them; a page with no product fails with a cause that says what to
    do; one with a broken JSON-LD block is still read from its microdata."""
    parse = prices.parse_price
    assert parse("1.299,00 €") == (Decimal("1299.00"), "EUR")
    assert parse("€1,299.00") == (Decimal("1299.00"), "EUR")
    assert parse("1 299,50 EUR") == (Decimal("1299.50"), "EUR")
    assert parse("1,299") == (Decimal("1299.00"), None)
    assert parse("12,5") == (Decimal("12.50"), None)
    assert parse("£ 49") == (Decimal("49.00"), "GBP")
    with pytest.raises(prices.PageError, match="no price"):
        parse("call us")
    with pytest.raises(prices.PageError, match="add a rule for this shop to LAYOUTS"):
        prices.read_page("http://shop/x", "<html><h1>Sold out</h1></html>")
    page = (
        '<html><head><script type="application/ld+json">{broken</script></head><body>'
        '<div itemscope itemtype="https://schema.org/Product"><h1 itemprop="name">Kettle</h1>'
        '<meta itemprop="gtin13" content="4006381333931"><div itemprop="offers" itemscope '
        'itemtype="https://schema.org/Offer"><meta itemprop="price" content="24.90">'
        '<meta itemprop="priceCurrency" content="EUR"></div></div></body></html>'
    )
    offer = prices.read_page("http://shop.example/kettle", page)
    assert offer == {
        "url": "http://shop.example/kettle",
        "shop": "shop.example",
        "gtin": "4006381333931",
        "name": "Kettle",
        "price": "24.90",
        "currency": "EUR",
        "source": "microdata",
    }


def test_shoal_run_twice_with_previous_prices(
    demo: ModuleType,
    rounds: tuple[Round, Round, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``PREVIOUS_PRICES=round1.jsonl shoal run examples/price_monitor.py --input pages.txt
    --out round2.jsonl --report prices.html``: every page read, the report has the matrix and
    the alerts; naming this run's own --out as the previous run is refused."""
    pytest.importorskip("matplotlib", reason="the HTML report's charts need shoal[report]")
    _, _, previous = rounds
    monkeypatch.setenv("PREVIOUS_PRICES", str(previous))
    with demo.ShopServer(2) as server:
        pages = tmp_path / "pages.txt"
        pages.write_text("\n".join(server.urls()) + "\n")
        out, report = tmp_path / "round2.jsonl", tmp_path / "prices.html"
        argv = ["run", str(EXAMPLE), "--input", str(pages), "--no-journal", "--quiet"]
        code = cli.main([*argv, "--out", str(out), "--report", str(report)])
        assert code == 0, capsys.readouterr().err
        page = report.read_text()
        assert "Price comparison (★ cheapest)" in page
        assert "Price alerts since round1.jsonl" in page
        assert "-30.0" in page
        assert "+25.0" in page
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(records) == len(server.listings)
        assert all(r["ok"] for r in records)

        monkeypatch.setenv("PREVIOUS_PRICES", str(out))  # the file this run will overwrite
        code = cli.main([*argv, "--out", str(out), "--report", str(report)])
    assert code == 2
    assert "was written during this run" in capsys.readouterr().err


def test_items_serve_the_demo(prices: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --input the job serves its demo shops on loopback (the round from
    PRICE_DEMO_ROUND)."""
    monkeypatch.setenv("PRICE_DEMO_ROUND", "2")
    try:
        urls = prices.items()
        assert len(urls) == 102
        assert len({shoal.http.host(u) for u in urls}) == 3
    finally:
        prices.stop_demo()
