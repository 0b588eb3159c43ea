"""Price monitoring: scrape product pages of several shops at once, compare, alert on changes.

Each piece fetches one product page (``shoal.http``: httpx, one shared client per run) and reads
the product's name, EAN (GTIN-13) and price with a real HTML parser (BeautifulSoup on lxml).
Shops mark their pages up differently, so the reader tries, in order:

1. schema.org JSON-LD (``<script type="application/ld+json">``, a ``Product`` with ``offers``);
2. schema.org microdata (``itemprop``): the ``Product`` scope that holds the page's ``<h1>``,
   so the "recently viewed" products beside it are not taken for it;
3. a layout rule from ``LAYOUTS`` for shops with no structured data: a selector that
   recognises the layout and selectors for its fields (the demo's Corner Store has one).

Prices are read as written: "1.299,00", "€1,299.00", "1 299,00 €", "1299.00" (see
:func:`parse_price`). The shop is the page's ``og:site_name`` (else its host), so products are
compared by EAN across shops however their URLs look. The combiner builds the comparison matrix
(product x shop, the cheapest marked ★); pages that fail stay out of it and are listed as
failures. At most 16 pages are fetched at once and 4 per shop (the key is the host); a 429 or
503 pauses its shop for the server's ``Retry-After``; connection errors, timeouts and 5xx
answers are retried (4 attempts).

**Alerts** compare with the previous run's output: the ``--out`` file (JSON Lines, one record
per page, as ``shoal run --out`` writes it) of the run before, named by the environment variable
``PREVIOUS_PRICES`` (``--previous`` for ``python examples/price_monitor.py``). An alert is a
price of the same product (EAN) at the same shop that differs from the previous run's, up or
down, with the change in percent; products that appear or disappear are counted, not alerted.
Give each run's ``--out`` a file of its own: the report is written after ``--out``, so the
previous file must not be the one this run overwrites (the job refuses it). And give each
monitoring round ``--fresh`` (or ``--no-journal``): running the same command again *resumes*
the journal, which reads pages back instead of fetching them (the report warns when it did).

    shoal run examples/price_monitor.py --input pages.txt --out prices-06-01.jsonl --fresh
    PREVIOUS_PRICES=prices-06-01.jsonl shoal run examples/price_monitor.py --input pages.txt \\
        --out prices-06-02.jsonl --report prices.html --fresh

Without ``--input`` the job serves its demo shops (``demo_shops.py``: 3 shops, 40 products,
102 pages, some failing once) on loopback ports; ``PRICE_DEMO_ROUND=2`` serves the next round,
in which some prices changed.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, TypedDict

from bs4 import BeautifulSoup, Tag

import shoal
import shoal.http

CONCURRENCY = 16
PER_SHOP = 4
TIMEOUT = 20.0
USER_AGENT = "shoal-price-example/1"
PREVIOUS_ENV = "PREVIOUS_PRICES"
CENT = Decimal("0.01")
CURRENCIES = {"€": "EUR", "£": "GBP", "$": "USD", "¥": "JPY", "CHF": "CHF"}
PRODUCT_TYPES = ("Product", "ProductModel", "IndividualProduct")

# Shops without structured data: how to recognise the layout, and where its fields are (CSS
# selectors, tried in order; "th:EAN" is the cell beside a table header "EAN").
LAYOUTS: dict[str, dict[str, Any]] = {
    "corner-store": {
        "detect": "div#item table.specs",
        "name": ["h1.title"],
        "price": ["p.price ins", "p.price"],
        "gtin": ["th:EAN"],
    },
}


class Offer(TypedDict):
    """What one piece returns: one product at one shop."""

    url: str
    shop: str
    gtin: str
    name: str
    price: str  # exact, two decimals ("1299.00"): JSON keeps it as written
    currency: str
    source: str  # where it was read: "json-ld", "microdata" or a LAYOUTS name


class PageError(Exception):
    """A product page without a readable product or price (a redesign, a wrong URL). Not
    retried: the same page comes back next time."""


# ---------------------------------------------------------------------------- reading a page


def parse_price(text: str) -> tuple[Decimal, str | None]:
    """A price as written, and its currency when the text names one.

    The last "." or "," followed by one or two digits at the end is the decimal separator; any
    other "." "," or space groups thousands. So "1.299,00 €" and "€1,299.00" are both 1299.00,
    "1,299" and "1.299" are 1299, and "12,5" is 12.50.

    Raises:
        PageError: no number in the text.
    """
    currency = next((code for sign, code in CURRENCIES.items() if sign in text), None)
    if currency is None:
        named = re.search(r"\b[A-Z]{3}\b", text)
        currency = named.group(0) if named else None
    number = re.sub(r"[^\d.,]", "", text.replace("\u00a0", " ").replace("\u202f", " "))
    number = number.strip(".,")
    if not number or not any(c.isdigit() for c in number):
        raise PageError(f"no price in {text.strip()[:40]!r}")
    decimals = re.search(r"[.,](\d{1,2})$", number)
    whole = number[: decimals.start()] if decimals else number
    whole = re.sub(r"[.,]", "", whole)
    value = Decimal(f"{whole or 0}.{decimals.group(1) if decimals else 0}")
    return value.quantize(CENT), currency


def _json_ld_products(soup: BeautifulSoup) -> Iterator[dict[str, Any]]:
    for script in soup.find_all("script", type="application/ld+json"):
        try:
            data = json.loads(script.string or "")
        except json.JSONDecodeError:
            continue  # a broken block elsewhere on the page does not spoil the others
        stack = data if isinstance(data, list) else [data]
        while stack:
            node = stack.pop(0)
            if not isinstance(node, dict):
                continue
            stack.extend(node.get("@graph", []))
            kinds = node.get("@type", [])
            kinds = kinds if isinstance(kinds, list) else [kinds]
            if any(k in PRODUCT_TYPES for k in kinds):
                yield node


def from_json_ld(soup: BeautifulSoup) -> dict[str, Any] | None:
    for product in _json_ld_products(soup):
        offers = product.get("offers")
        offers = offers[0] if isinstance(offers, list) and offers else offers
        if not isinstance(offers, dict):
            continue
        price = offers.get("price", offers.get("lowPrice"))
        if price is None:
            continue
        value, _ = parse_price(str(price))
        gtin = next(
            (str(product[k]) for k in ("gtin13", "gtin", "gtin12", "gtin14") if product.get(k)),
            "",
        )
        return {
            "name": str(product.get("name", "")),
            "gtin": gtin,
            "price": value,
            "currency": offers.get("priceCurrency"),
            "source": "json-ld",
        }
    return None


def _prop(scope: Tag, name: str) -> Tag | None:
    """The first element of ``scope`` with ``itemprop=name`` that belongs to ``scope`` itself,
    not to an item nested in it."""
    for element in scope.find_all(True, attrs={"itemprop": name}):
        owner = element.find_parent(attrs={"itemscope": True})
        if owner is scope:
            return element
    return None


def _value(element: Tag | None) -> str:
    if element is None:
        return ""
    for attr in ("content", "href", "datetime"):
        if element.has_attr(attr):
            return str(element[attr])
    return element.get_text(" ", strip=True)


def from_microdata(soup: BeautifulSoup) -> dict[str, Any] | None:
    types = "|".join(PRODUCT_TYPES)
    scopes = [
        s
        for s in soup.find_all(True, attrs={"itemscope": True, "itemtype": True})
        if re.search(rf"schema\.org/({types})$", str(s["itemtype"]))
    ]
    heading = soup.find("h1")
    main = [s for s in scopes if heading is not None and heading in s.descendants]
    top = [s for s in scopes if s.find_parent(attrs={"itemscope": True}) is None]
    chosen = main[-1] if main else (top[0] if len(top) == 1 else None)
    if chosen is None:
        return None
    offer = _prop(chosen, "offers")
    if offer is None:
        return None
    price = _prop(offer, "price")
    if price is None:
        return None
    value, written = parse_price(_value(price))
    currency = _value(_prop(offer, "priceCurrency")) or written
    gtin = next((_value(_prop(chosen, k)) for k in ("gtin13", "gtin", "gtin12", "gtin14")), "")
    return {
        "name": _value(_prop(chosen, "name")),
        "gtin": gtin if gtin.isdigit() else "",
        "price": value,
        "currency": CURRENCIES.get(currency, currency) if currency else None,
        "source": "microdata",
    }


def _select(soup: BeautifulSoup, selectors: Sequence[str]) -> str:
    for selector in selectors:
        if selector.startswith("th:"):
            label = selector[3:]
            for th in soup.find_all("th"):
                if th.get_text(strip=True) == label:
                    cell = th.find_next_sibling("td")
                    if cell is not None:
                        return cell.get_text(" ", strip=True)
            continue
        element = soup.select_one(selector)
        if element is not None:
            return element.get_text(" ", strip=True)
    return ""


def from_layout(soup: BeautifulSoup) -> dict[str, Any] | None:
    for name, rule in LAYOUTS.items():
        if soup.select_one(rule["detect"]) is None:
            continue
        text = _select(soup, rule["price"])
        if not text:
            raise PageError(f"the page has the {name} layout but no price where it should be")
        value, currency = parse_price(text)
        return {
            "name": _select(soup, rule["name"]),
            "gtin": _select(soup, rule["gtin"]),
            "price": value,
            "currency": currency,
            "source": name,
        }
    return None


def read_page(url: str, html: bytes | str) -> Offer:
    """A product page as an :class:`Offer` (see the module docstring for the order of readers).

    Raises:
        PageError: no reader finds a product with a price, or it has no EAN.
    """
    soup = BeautifulSoup(html, "lxml")
    found = from_json_ld(soup) or from_microdata(soup) or from_layout(soup)
    if found is None:
        raise PageError(
            f"{url}: no product found (no schema.org JSON-LD or microdata, and no LAYOUTS rule "
            "matches); add a rule for this shop to LAYOUTS"
        )
    if not found["gtin"]:
        raise PageError(f"{url}: the product has no EAN, so it cannot be matched across shops")
    site = soup.find("meta", property="og:site_name")
    shop = str(site["content"]).strip() if site is not None else shoal.http.host(url)
    return Offer(
        url=url,
        shop=shop,
        gtin=found["gtin"],
        name=" ".join(found["name"].split()),
        price=f"{found['price']:.2f}",
        currency=found["currency"] or "EUR",  # the shops' home market when a page says nothing
        source=found["source"],
    )


async def scrape(url: str) -> Offer:
    """One piece: GET the page, then read it in a thread (parsing a page takes milliseconds,
    which the event loop spends on the other requests meanwhile)."""
    url = str(url).strip()
    response = await shoal.http.request(
        "GET", url, headers={"User-Agent": USER_AGENT}, timeout=TIMEOUT, follow_redirects=True
    )
    return await asyncio.to_thread(read_page, url, response.content)


# ---------------------------------------------------------------------------- comparing


class Cell(TypedDict):
    price: str
    currency: str
    url: str


class Row(TypedDict):
    gtin: str
    name: str
    prices: dict[str, Cell]  # shop -> its offer
    cheapest: list[str]  # the shops with the lowest price (in the row's most common currency)


class Matrix(TypedDict):
    shops: list[str]
    products: list[Row]  # by name


def matrix(offers: list[Offer]) -> Matrix:
    """The comparison matrix: one row per product (by EAN), one column per shop."""
    rows: dict[str, Row] = {}
    for offer in offers:
        row = rows.setdefault(
            offer["gtin"], Row(gtin=offer["gtin"], name=offer["name"], prices={}, cheapest=[])
        )
        row["prices"][offer["shop"]] = Cell(
            price=offer["price"], currency=offer["currency"], url=offer["url"]
        )
        if len(offer["name"]) < len(row["name"]):
            row["name"] = offer["name"]  # the plainest name (shops add "kaufen", colours...)
    for row in rows.values():
        currency = Counter(c["currency"] for c in row["prices"].values()).most_common(1)[0][0]
        same = {
            s: Decimal(c["price"]) for s, c in row["prices"].items() if c["currency"] == currency
        }
        low = min(same.values())
        row["cheapest"] = sorted(s for s, p in same.items() if p == low)
        row["prices"] = dict(sorted(row["prices"].items()))
    return Matrix(
        shops=sorted({o["shop"] for o in offers}),
        products=sorted(rows.values(), key=lambda r: (r["name"], r["gtin"])),
    )


Prices = dict[tuple[str, str], tuple[Decimal, str, str]]  # (EAN, shop) -> price, currency, name


def prices_of(offers: Sequence[Offer]) -> Prices:
    return {(o["gtin"], o["shop"]): (Decimal(o["price"]), o["currency"], o["name"]) for o in offers}


def load_previous(path: str | os.PathLike[str]) -> Prices:
    """The prices of a previous run, from its ``--out`` file (JSON Lines: ``shoal run --out``'s
    records, whose ``value`` is an offer; a file of bare offers works too). Failed pages are
    skipped."""
    offers: list[Offer] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number} is not JSON ({exc.msg})") from None
            value = record.get("value") if "ok" in record else record
            if "ok" in record and not record["ok"]:
                continue
            if isinstance(value, dict) and {"gtin", "shop", "price"} <= value.keys():
                offers.append(value)  # type: ignore[arg-type]
    return prices_of(offers)


class Alert(TypedDict):
    product: str
    gtin: str
    shop: str
    was: str
    now: str
    change: str  # "up" or "down"
    percent: str  # "+12.5", "-15.0"


def alerts(previous: Prices, current: Prices) -> list[Alert]:
    """Every price that changed since the previous run (same product, same shop, same
    currency), largest change first."""
    found: list[tuple[Decimal, Alert]] = []
    for key, (now, currency, name) in current.items():
        before = previous.get(key)
        if before is None or before[1] != currency or before[0] == now:
            continue
        was = before[0]
        change = ((now - was) / was * 100).quantize(Decimal("0.1"), ROUND_HALF_EVEN)
        alert = Alert(
            product=name,
            gtin=key[0],
            shop=key[1],
            was=f"{was:,.2f} {currency}",
            now=f"{now:,.2f} {currency}",
            change="up" if now > was else "down",
            percent=f"{change:+}",
        )
        found.append((abs(change), alert))
    found.sort(key=lambda pair: (-pair[0], pair[1]["product"], pair[1]["shop"]))
    return [alert for _, alert in found]


def previous_path(run: shoal.Run[Any] | None = None) -> Path | None:
    """The previous run's ``--out`` file (``$PREVIOUS_PRICES``), or ``None`` when not set.

    Raises:
        ValueError: the file is missing, or this run wrote it (it is ``--out`` of this run).
    """
    name = os.environ.get(PREVIOUS_ENV, "").strip()
    if not name:
        return None
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"{PREVIOUS_ENV}={name}: no such file; name the previous run's --out")
    if run is not None and path.stat().st_mtime > run.stats.started:
        raise ValueError(
            f"{PREVIOUS_ENV}={name} was written during this run (is it this run's --out?); give "
            "each run's --out a file of its own and name the previous one"
        )
    return path


def comparison(
    run: shoal.Run[Offer], previous: str | os.PathLike[str] | None
) -> tuple[Matrix, list[Alert], dict[str, int]]:
    """The matrix, the alerts, and counts of listings that appeared or disappeared."""
    current = prices_of(run.values)
    if previous is None:
        return run.result, [], {}
    before = load_previous(previous)
    counts = {
        "listings now": len(current),
        "listings before": len(before),
        "new listings": len(current.keys() - before.keys()),
        "gone (or failed) listings": len(before.keys() - current.keys()),
    }
    return run.result, alerts(before, current), counts


job = shoal.Job(
    scrape,
    key=shoal.http.host,
    limits=shoal.Limits(concurrency=CONCURRENCY, per_key=PER_SHOP),
    retry=shoal.Retry(
        attempts=4,
        base_delay=0.2,
        max_delay=5.0,
        on=(shoal.http.TransientHTTPError, TimeoutError),  # TimeoutError: the job's timeout
        max_throttles=10,
    ),
    timeout=TIMEOUT,
    combine=matrix,
    name="price-monitor",
)


# ---------------------------------------------------------------------------- input and report

_demo: Any = None


def items() -> list[str]:
    """The default input (``shoal run`` without ``--input``): the demo shops' product pages,
    served on loopback ports by this process until it exits (``PRICE_DEMO_ROUND``: which
    round, 1 by default)."""
    global _demo  # noqa: PLW0603 - one demo server per process
    if _demo is None:
        from demo_shops import ShopServer  # beside this file: shoal run puts its folder on the path

        _demo = ShopServer(int(os.environ.get("PRICE_DEMO_ROUND", "1"))).start()
        atexit.register(stop_demo)
    urls: list[str] = _demo.urls()
    return urls


def stop_demo() -> None:
    global _demo  # noqa: PLW0603
    if _demo is not None:
        _demo.stop()
        _demo = None


def matrix_rows(table: Matrix) -> list[dict[str, Any]]:
    """The matrix as table rows: a column per shop, "★" before the cheapest, "—" where a shop
    does not sell the product (or its page failed)."""
    rows = []
    for row in table["products"]:
        line: dict[str, Any] = {"product": row["name"], "EAN": row["gtin"]}
        for shop in table["shops"]:
            cell = row["prices"].get(shop)
            if cell is None:
                line[shop] = "—"
                continue
            text = f"{Decimal(cell['price']):,.2f}"
            line[shop] = f"★ {text}" if shop in row["cheapest"] else text
        same = [Decimal(row["prices"][s]["price"]) for s in row["cheapest"]]
        dearest = max(Decimal(c["price"]) for c in row["prices"].values())
        line["cheapest at"] = ", ".join(row["cheapest"])
        line["saving vs dearest"] = f"{dearest - same[0]:,.2f}"
        rows.append(line)
    return rows


def extend_report(report: Any, run: shoal.Run[Offer], *, limit: int = 200) -> None:
    """The comparison's own tables in the run's report (``shoal run`` calls this): the price
    matrix, the alerts since the previous run (``$PREVIOUS_PRICES``), and where the prices were
    read."""
    previous = previous_path(run)
    add_tables(report, run, *comparison(run, previous), previous=previous, limit=limit)


def add_tables(
    report: Any,
    run: shoal.Run[Offer],
    table: Matrix,
    found: list[Alert],
    counts: dict[str, int],
    *,
    previous: str | os.PathLike[str] | None,
    limit: int = 200,
) -> None:
    report.add_table("Price comparison (★ cheapest)", matrix_rows(table), limit=limit)
    if previous is None:
        note = f"no previous run to compare with: set {PREVIOUS_ENV} to the previous run's --out"
        report.add_table("Price alerts", [{"note": note}])
    else:
        title = f"Price alerts since {Path(previous).name}"
        rows: list[dict[str, Any]] = [dict(a) for a in found] or [{"note": "no price changed"}]
        report.add_table(title, rows, limit=limit)
        report.add_table("Listings", [counts])
    sources = Counter((o["shop"], o["source"]) for o in run.values)
    report.add_table(
        "Read from",
        [{"shop": s, "read from": how, "pages": n} for (s, how), n in sorted(sources.items())],
    )
    if run.stats.resumed:
        note = (
            f"{run.stats.resumed} pages were read back from the journal, not fetched again: "
            "for a new monitoring round pass --fresh"
        )
        report.add_table("Warning", [{"note": note}])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--input", metavar="FILE", help="product page URLs, one per line")
    parser.add_argument("--previous", metavar="PATH", help="the previous run's --out file")
    parser.add_argument("--out", metavar="PATH", help="write this run's prices here (JSONL)")
    parser.add_argument("--report", metavar="PATH", help="write the report here (.html, .md...)")
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
    table, found, counts = comparison(run, args.previous)  # before --out may overwrite it
    print(
        f"{run.stats.succeeded} of {len(urls)} pages read ({run.stats.retries} retries), "
        f"{len(table['products'])} products at {len(table['shops'])} shops, "
        f"in {run.stats.wall_time:.1f}s"
    )
    for alert in found:
        print(
            f"  {alert['change']:<4} {alert['percent']:>6}%  {alert['product']} at "
            f"{alert['shop']}: {alert['was']} -> {alert['now']}"
        )
    for failure in run.failures:
        print(f"  page failed: {failure.item}: {failure.error}", file=sys.stderr)
    if args.out:
        run.export(args.out)
    if args.report:
        report = run.report
        add_tables(report, run, table, found, counts, previous=args.previous)
        print(f"report: {report.save(args.report).resolve()}")
    return 0 if run.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
