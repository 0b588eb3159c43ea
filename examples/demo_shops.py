"""Three little web shops for the price example: 40 products, 110 product pages, 3 layouts.

Each shop is a host of its own (a loopback port) and marks its pages up its own way, as real
shops do:

- **Northwind Electronics**: schema.org microdata; the price in German notation ("1.299,00",
  the currency as "€"), and a "recently viewed" strip of other products (with their own
  microdata prices) *before* the main product in the page.
- **Bluefin Outlet**: schema.org JSON-LD in the head (a BreadcrumbList beside the Product);
  the visible price is rounded ("€ 1.249"), the JSON-LD one is exact.
- **Corner Store**: no structured data at all: a title, a price paragraph (``<del>`` old price
  and ``<ins>`` sale price on offers, "€1,299.00") and a specification table with the EAN.

Products are matched across shops by their EAN-13 (GTIN). Prices come from a seed and a
*round* (a monitoring run): round 2 changes some prices, drops a listing and adds one, so the
tests know exactly which alerts are due. About one page in ten fails once (500, a dropped
connection, or 503 with ``Retry-After``) and then works.

    python examples/demo_shops.py [ROUND]     # serve it and print the page URLs (Ctrl-C stops)
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from html import escape

from demo_server import DemoServer, Page, Reply

SHOPS = ("Northwind Electronics", "Bluefin Outlet", "Corner Store")
SITES = {
    "Northwind Electronics": "northwind",
    "Bluefin Outlet": "bluefin",
    "Corner Store": "corner",
}
CENT = Decimal("0.01")

BRANDS = ("Lumen", "Arcfield", "Korra", "Vesta", "Nordic Audio", "Pikko", "Halden", "Osprey")
KINDS = (  # (product kind, base price in euros)
    ("Wireless Headphones", 189),
    ("27-inch Monitor", 329),
    ("Mechanical Keyboard", 119),
    ("Robot Vacuum", 449),
    ("Espresso Machine", 599),
)


@dataclass(frozen=True, slots=True)
class Product:
    gtin: str  # EAN-13
    name: str
    brand: str
    base: Decimal


@dataclass(frozen=True, slots=True)
class Listing:
    """One product page of one shop in one round."""

    shop: str
    product: Product
    price: Decimal
    old_price: Decimal | None  # Corner Store's struck-through price on offers
    path: str
    trouble: str  # "", "500-once", "drop-once", "503-once"


def ean13(body: str) -> str:
    """Twelve digits and their EAN-13 check digit."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def catalogue() -> list[Product]:
    """40 products: every brand in every kind."""
    products = []
    for k, (kind, base) in enumerate(KINDS):
        for b, brand in enumerate(BRANDS):
            model = f"{brand} {'XSPR'[k % 4]}{b + 2}{k}"
            gtin = ean13(f"40{k:02d}{b:02d}{k * 31 + b * 7:06d}")
            products.append(Product(gtin, f"{model} {kind}", brand, Decimal(base + 10 * b)))
    return products


def _price(product: Product, shop: str, rng: random.Random) -> Decimal:
    factor = {"Northwind Electronics": 1.0, "Bluefin Outlet": 0.97, "Corner Store": 1.03}[shop]
    raw = float(product.base) * factor * rng.uniform(0.92, 1.08)
    return (Decimal(round(raw)) - Decimal("0.01")).quantize(CENT)  # shops like .99


# Round 2's changes: (product number, shop, factor) and the listings that come and go.
CHANGES = (
    (0, "Northwind Electronics", "0.85"),
    (3, "Bluefin Outlet", "1.10"),
    (7, "Corner Store", "0.95"),
    (12, "Northwind Electronics", "1.05"),
    (12, "Bluefin Outlet", "0.90"),
    (18, "Corner Store", "1.25"),
    (21, "Northwind Electronics", "0.80"),
    (27, "Bluefin Outlet", "1.02"),
    (30, "Corner Store", "0.70"),
    (35, "Northwind Electronics", "1.15"),
    (39, "Bluefin Outlet", "0.97"),
)
DROPPED = (5, "Northwind Electronics")  # no longer listed in round 2
ADDED = (2, "Bluefin Outlet")  # listed from round 2 on


def listings(round_: int = 1, seed: int = 7) -> list[Listing]:
    """Every product page of every shop in a round (1, 2, ...; rounds after 2 are round 2)."""
    rng = random.Random(seed)
    products = catalogue()
    result = []
    for shop in SHOPS:
        for n, product in enumerate(products):
            price = _price(product, shop, rng)
            trouble = (
                rng.choice(("500-once", "drop-once", "503-once")) if rng.random() < 0.1 else ""
            )
            # Bluefin does not sell every fourth product, Corner Store every fifth (from 1).
            carried = not (
                (shop == "Bluefin Outlet" and n % 4 == 2) or (shop == "Corner Store" and n % 5 == 1)
            )
            if round_ >= 2:
                for number, where, factor in CHANGES:
                    if (number, where) == (n, shop):
                        price = (price * Decimal(factor)).quantize(CENT)
                if (n, shop) == DROPPED:
                    carried = False
                if (n, shop) == ADDED:
                    carried = True
            if not carried:
                continue
            old = None
            if shop == "Corner Store" and n % 3 == 0:
                old = (price * Decimal("1.12")).quantize(Decimal(1)) - CENT
            path = f"/p/{product.gtin}" if shop != "Bluefin Outlet" else f"/item/{n:03d}.html"
            result.append(Listing(shop, product, price, old, path, trouble))
    return result


# ---------------------------------------------------------------------------- pages


def german(amount: Decimal) -> str:
    """1299.00 -> "1.299,00"."""
    return f"{amount:,.2f}".replace(",", " ").replace(".", ",").replace(" ", ".")


def _northwind(listing: Listing, others: list[Listing]) -> str:
    p = listing.product
    strip = "".join(
        f'<li itemscope itemtype="https://schema.org/Product"><a href="{o.path}" itemprop="url">'
        f'<span itemprop="name">{escape(o.product.name)}</span></a>'
        '<span itemprop="offers" itemscope itemtype="https://schema.org/Offer">'
        f'<span itemprop="price">{german(o.price)}</span>'
        '<meta itemprop="priceCurrency" content="EUR"></span></li>'
        for o in others
    )
    return f"""<!doctype html>
<html lang="de"><head><meta charset="utf-8">
<title>{escape(p.name)} kaufen | Northwind Electronics</title>
<meta property="og:site_name" content="Northwind Electronics">
<meta property="og:type" content="product"></head>
<body><header class="top"><a href="/">Northwind</a> <input type="search"></header>
<aside class="recent"><h3>Zuletzt angesehen</h3><ul>{strip}</ul></aside>
<main><article class="product" itemscope itemtype="https://schema.org/Product">
<h1 itemprop="name">{escape(p.name)}</h1>
<meta itemprop="gtin13" content="{p.gtin}">
<span itemprop="brand" itemscope itemtype="https://schema.org/Brand">
<span itemprop="name">{escape(p.brand)}</span></span>
<div class="buybox" itemprop="offers" itemscope itemtype="https://schema.org/Offer">
<span class="amount" itemprop="price">{german(listing.price)}</span>&nbsp;<span
 itemprop="priceCurrency" content="EUR">€</span>
<link itemprop="availability" href="https://schema.org/InStock">
<small>inkl. MwSt., zzgl. Versand</small></div>
</article></main><footer>© Northwind</footer></body></html>
"""


def _bluefin(listing: Listing) -> str:
    p = listing.product
    crumbs = {
        "@context": "https://schema.org",
        "@type": "BreadcrumbList",
        "itemListElement": [
            {"@type": "ListItem", "position": 1, "name": "Home", "item": "/"},
            {"@type": "ListItem", "position": 2, "name": p.brand, "item": f"/brand/{p.brand}"},
        ],
    }
    product = {
        "@context": "https://schema.org/",
        "@type": "Product",
        "name": p.name,
        "sku": listing.path.rsplit("/", 1)[1].removesuffix(".html"),
        "gtin13": p.gtin,
        "brand": {"@type": "Brand", "name": p.brand},
        "offers": {
            "@type": "Offer",
            "url": listing.path,
            "priceCurrency": "EUR",
            "price": f"{listing.price:.2f}",
            "availability": "https://schema.org/InStock",
        },
    }
    shown = german(listing.price.quantize(Decimal(1))).removesuffix(",00")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(p.name)} &#8211; Bluefin Outlet</title>
<meta property="og:site_name" content="Bluefin Outlet">
<script type="application/ld+json">{json.dumps(crumbs)}</script>
<script type="application/ld+json">{json.dumps(product)}</script>
</head><body><div class="wrap"><div class="pdp">
<div class="pdp-gallery"><img src="/img/{p.gtin}.webp" alt=""></div>
<div class="pdp-info"><h2 class="pdp-title">{escape(p.name)}</h2>
<div class="pdp-price">€ {shown}</div><button>Add to basket</button></div>
</div></div></body></html>
"""


def _corner(listing: Listing) -> str:
    p = listing.product
    now = f"€{listing.price:,.2f}"
    price = (
        f'<p class="price"><del>€{listing.old_price:,.2f}</del> <ins>{now}</ins></p>'
        if listing.old_price is not None
        else f'<p class="price">{now}</p>'
    )
    return f"""<html><head><title>{escape(p.name)}</title>
<meta property="og:site_name" content="Corner Store"></head>
<body><div id="item"><h1 class="title">{escape(p.name)}</h1>{price}
<table class="specs"><tr><th>Brand</th><td>{escape(p.brand)}</td></tr>
<tr><th>EAN</th><td>{p.gtin}</td></tr><tr><th>Warranty</th><td>2 years</td></tr></table>
</div></body></html>
"""


def page(listing: Listing, html: str, delay: float) -> Page:
    ok = Reply(body=html.encode(), delay=delay)
    trouble = listing.trouble
    if not trouble:
        return lambda n: ok
    first = {
        "500-once": Reply(500, b"<h1>Internal Server Error</h1>", delay=delay),
        "drop-once": Reply(drop=True, delay=delay),
        "503-once": Reply(503, b"<h1>Busy</h1>", headers={"Retry-After": "0.1"}, delay=delay),
    }[trouble]
    return lambda n: first if n == 1 else ok


class ShopServer(DemoServer):
    """A round of the three shops, served: one site per shop."""

    def __init__(self, round_: int = 1, seed: int = 7) -> None:
        self.round = round_
        self.listings = listings(round_, seed)
        rng = random.Random(seed + round_)
        sites: dict[str, dict[str, Page]] = {site: {} for site in SITES.values()}
        northwind = [x for x in self.listings if x.shop == "Northwind Electronics"]
        for listing in self.listings:
            if listing.shop == "Northwind Electronics":
                html = _northwind(listing, rng.sample([x for x in northwind if x != listing], 3))
            elif listing.shop == "Bluefin Outlet":
                html = _bluefin(listing)
            else:
                html = _corner(listing)
            sites[SITES[listing.shop]][listing.path] = page(listing, html, rng.uniform(0.005, 0.03))
        super().__init__(sites)

    def __enter__(self) -> ShopServer:
        self.start()
        return self

    def listing_url(self, listing: Listing) -> str:
        return self.url(SITES[listing.shop], listing.path)

    def urls(self) -> list[str]:
        return [self.listing_url(x) for x in self.listings]

    def prices(self) -> dict[tuple[str, str], Decimal]:
        """The truth: (EAN, shop) -> price."""
        return {(x.product.gtin, x.shop): x.price for x in self.listings}


if __name__ == "__main__":
    with ShopServer(int(sys.argv[1]) if len(sys.argv) > 1 else 1) as server:
        print("\n".join(server.urls()))
        print(f"serving {len(server.listings)} product pages; Ctrl-C stops", file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
