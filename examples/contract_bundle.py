"""A long contract bundle for the document intelligence example: its text, what is on each page,
and a PDF of it.

The bundle is what a due-diligence team receives: 26 master services agreements, one after the
other, 40 pages each (1,040 pages in all). Every agreement has its own parties, signatories,
dates, fees and contact details, the usual articles (payment terms, confidentiality, liability,
termination, governing law...) each under a numbered heading, schedules of service detail, and a
signature page. The text is fixed (no randomness), so every run gives the same PDF, and
:func:`bundle` also returns the ground truth: on which page each clause heading and each planted
entity is. Pages are short (a heading and a paragraph or two, or two rows of a
schedule) so that a statistical entity recogniser gets through 1,000 pages in seconds here.

    python examples/contract_bundle.py contracts.pdf    # write the PDF (needs reportlab)
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

AGREEMENTS = 26
PAGES_PER_AGREEMENT = 40
WIDTH = 92  # characters per line

# Customers and suppliers: one pair per agreement, names as a registry would spell them.
CUSTOMERS = (
    "Harborview Medical Group LLC", "Alder Creek Foods Inc.", "Bluestone Capital Partners LLP",
    "Cedar Valley Utilities Corporation", "Dunmore Retail Holdings Ltd.",
    "Eastgate Pharmaceuticals Inc.", "Fairmount Insurance Company",
    "Granite Peak Mining Corporation", "Hollis & Reed Architects LLP",
    "Ironwood Manufacturing Inc.", "Juniper Health Systems Inc.", "Keystone Freight Lines Inc.",
    "Lakeshore University Hospital", "Meridian Telecom Ltd.", "Northgate Property Trust",
    "Oakridge Energy Corporation", "Pinecrest Hotels Group Ltd.", "Quarry Hill Brewing Company",
    "Riverside County Credit Union", "Silverline Aviation Inc.", "Tidewater Shipping Corporation",
    "Unity Mutual Assurance Company", "Vantage Biotech Inc.", "Westbrook Media Group Ltd.",
    "Yellowstone Outdoor Supply Inc.", "Zenith Automotive Parts Corporation",
)  # fmt: skip
SUPPLIERS = (
    "Northwind Logistics Inc.", "Acme Cloud Services Ltd.", "Brightpath Consulting LLC",
    "Clearwater Data Systems Inc.", "Deltaforge Software Corporation", "Evergreen Facilities Ltd.",
    "Foxglove Security Inc.", "Greenfield Analytics LLC", "Highmark Payroll Services Inc.",
    "Innova Networks Corporation", "Jetstream Couriers Ltd.",
    "Kingfisher Translation Services Inc.", "Lumen Print Solutions LLC",
    "Mosaic Staffing Corporation", "Nimbus Hosting Ltd.", "Orbital Engineering Inc.",
    "Paragon Legal Support LLC", "Quantum Records Management Inc.", "Redwood Catering Corporation",
    "Summit Cleaning Services Ltd.", "Trident Fleet Maintenance Inc.",
    "Upland Research Associates LLC", "Vertex Payments Corporation", "Wavecrest Marketing Ltd.",
    "Yarrow Medical Couriers Inc.", "Zephyr Energy Brokers LLC",
)  # fmt: skip
PEOPLE = (
    "Margaret O'Connell", "Daniel Whitaker", "Priya Raman", "Thomas Becker", "Elena Petrova",
    "Samuel Okafor", "Laura Jensen", "Michael Chen", "Sofia Alvarez", "David Goldberg",
    "Hannah Fischer", "Robert Nakamura", "Grace Mensah", "William Harper", "Olivia Brennan",
    "James Lindqvist", "Aisha Siddiqui", "Peter Kowalski", "Emily Dubois", "Carlos Mendoza",
    "Rachel Adler", "Henry Osei", "Natalie Moreau", "Victor Ivanov", "Julia Romano",
    "George Papadopoulos", "Claire Donovan", "Ahmed Haddad", "Lucy Fairbanks", "Martin Keller",
    "Nora Lindgren", "Oscar Delgado", "Ingrid Solberg", "Kevin Gallagher", "Mei Tanaka",
    "Patrick Doyle", "Sarah Whitfield", "Tomas Novak", "Ursula Brandt", "Xavier Laurent",
    "Yusuf Demir", "Zoe Carrington", "Benjamin Hale", "Chloe Martens", "Dmitri Sokolov",
    "Fiona McAllister", "Gabriel Santos", "Helen Zhou", "Isaac Morgenstern", "Jasmine Patel",
    "Karl Johansson", "Leah Rosenthal",
)  # fmt: skip
PLACES = (
    ("Boston", "Massachusetts"), ("Chicago", "Illinois"), ("Denver", "Colorado"),
    ("Seattle", "Washington"), ("Atlanta", "Georgia"), ("Austin", "Texas"),
    ("Portland", "Oregon"), ("Phoenix", "Arizona"), ("Nashville", "Tennessee"),
    ("Minneapolis", "Minnesota"), ("Philadelphia", "Pennsylvania"), ("San Diego", "California"),
    ("Miami", "Florida"),
)  # fmt: skip
LAWS = ("New York", "Delaware", "California", "Texas", "Illinois")
SERVICES = (
    "freight forwarding", "cloud hosting", "management consulting", "data warehousing",
    "software maintenance", "facilities management", "security monitoring", "analytics",
    "payroll processing", "network operations", "courier delivery", "translation",
    "print management", "temporary staffing", "web hosting", "engineering support",
    "legal support", "records management", "catering", "office cleaning", "fleet maintenance",
    "market research", "payment processing", "marketing", "medical courier", "energy brokerage",
)  # fmt: skip

# The articles of every agreement: (clause, heading, paragraphs). {fields} come from the
# agreement. The clause names are those the example's rule set reports.
ARTICLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("definitions", "DEFINITIONS", (
        "In this Agreement the following words have these meanings. Deliverables means all "
        "documents, reports and materials supplied by the Supplier under this Agreement. "
        "Business Day means a day other than a Saturday, Sunday or public holiday in {city}.",
        "Services means the {service} services described in Schedule 1, as varied from time to "
        "time under the change control procedure in Schedule 3.",
    )),
    ("services", "SCOPE OF SERVICES", (
        "The Supplier shall provide the Services with reasonable skill and care, in accordance "
        "with good industry practice and the service levels set out in Schedule 2. The Supplier "
        "shall appoint an account manager who shall attend monthly review meetings with the "
        "Customer at its offices in {city}.",
    )),
    ("payment terms", "PAYMENT TERMS", (
        "In consideration of the Services the Customer shall pay the Supplier an annual fee of "
        "{fee}, payable in equal monthly instalments in arrears. The Customer shall pay each "
        "valid invoice within thirty (30) days of the date of receipt.",
        "Invoices shall be sent to {email}. Late payments shall bear interest at two percent "
        "above the base rate from the due date until payment in full.",
    )),
    ("confidentiality", "CONFIDENTIALITY", (
        "Each party shall keep the Confidential Information of the other party secret and shall "
        "not disclose it to any third party without prior written consent, except to its "
        "employees and professional advisers who need to know it for the purposes of this "
        "Agreement. This obligation survives for five (5) years after the end of this Agreement.",
    )),
    ("data protection", "DATA PROTECTION", (
        "The Supplier shall process personal data only on the documented instructions of the "
        "Customer, shall implement appropriate technical and organisational measures against "
        "unauthorised processing, and shall notify the Customer without undue delay after "
        "becoming aware of a personal data breach.",
    )),
    ("intellectual property", "INTELLECTUAL PROPERTY", (
        "All intellectual property rights in the Deliverables shall vest in the Customer on "
        "creation. The Supplier grants the Customer a non-exclusive, royalty-free licence to use "
        "any pre-existing materials of the Supplier incorporated in the Deliverables.",
    )),
    ("indemnification", "INDEMNITY", (
        "The Supplier shall indemnify and hold harmless the Customer against all losses, "
        "damages and costs arising from any claim that the Deliverables infringe the "
        "intellectual property rights of a third party.",
    )),
    ("limitation of liability", "LIMITATION OF LIABILITY", (
        "Nothing in this Agreement limits liability for death or personal injury caused by "
        "negligence or for fraud. In no event shall either party be liable for any indirect or "
        "consequential damages or loss of profits. Each party's aggregate liability under this "
        "Agreement shall not exceed {cap} in any contract year.",
    )),
    ("termination", "TERM AND TERMINATION", (
        "This Agreement commences on the Effective Date and continues for an initial term of "
        "three (3) years. Either party may terminate this Agreement by written notice if the "
        "other party commits a material breach which is not remedied within thirty (30) days.",
        "The Customer may terminate this Agreement for convenience on ninety (90) days written "
        "notice. Upon termination the Supplier shall return all Customer data.",
    )),
    ("force majeure", "FORCE MAJEURE", (
        "Neither party shall be in breach of this Agreement nor liable for delay in performing "
        "its obligations if the delay results from a force majeure event, including acts of "
        "God, flood, fire, epidemic or war, provided that it notifies the other party promptly.",
    )),
    ("assignment", "ASSIGNMENT", (
        "Neither party may assign, transfer or subcontract any of its rights or obligations "
        "under this Agreement without the prior written consent of the other party, which shall "
        "not be unreasonably withheld.",
    )),
    ("dispute resolution", "DISPUTE RESOLUTION", (
        "The parties shall first attempt to resolve any dispute through negotiation between "
        "senior executives. A dispute not resolved within sixty (60) days shall be finally "
        "settled by binding arbitration seated in {law_city}.",
    )),
    ("governing law", "GOVERNING LAW", (
        "This Agreement shall be governed by and construed in accordance with the laws of the "
        "State of {law}, and the courts of {law} shall have exclusive jurisdiction over any "
        "claim arising out of it.",
    )),
    ("notices", "NOTICES", (
        "Notices to the Supplier shall be delivered by hand or by email to {email}, marked for "
        "the attention of {supplier_person}, or by telephone on {phone}, confirmed in writing. "
        "Service documentation is published at {url}.",
    )),
)  # fmt: skip
LAW_CITIES = {
    "New York": "New York City",
    "Delaware": "Wilmington",
    "California": "Los Angeles",
    "Texas": "Houston",
    "Illinois": "Chicago",
}

SCHEDULE_LINES = (
    "Availability of the {service} service in Business Hours: {sla}.",
    "Service credit: {credit} of the monthly fee per point below target.",
    "Monthly performance report: by the fifth Business Day.",
    "Severity one incidents: acknowledged within fifteen minutes.",
    "Change requests: impact on cost, timing and risk stated.",
    "Business continuity plan: tested at least once a year.",
    "Key personnel: replaced only on reasonable notice.",
    "Access to Customer systems: multi-factor authentication.",
)


@dataclass(frozen=True)
class Agreement:
    number: int  # from 1
    customer: str
    supplier: str
    customer_person: str
    supplier_person: str
    city: str
    state: str
    law: str
    service: str
    effective: dt.date
    fee: int  # US dollars a year
    phone: str
    email: str
    url: str

    @property
    def slug(self) -> str:
        return "".join(c for c in self.supplier.split()[0].lower() if c.isalnum())


@dataclass
class Bundle:
    """The bundle's pages (lines of text each) and what is known to be on them.

    Attributes:
        pages: ``pages[i]`` holds the lines of page ``i + 1``.
        headings: ``(clause, page)`` for every clause heading.
        entities: ``(type, value, page)`` for every planted entity mention: ``ORG`` and
            ``PERSON`` by name, ``DATE`` as an ISO date, ``MONEY`` as ``"USD 1,250,000.00"``,
            ``PHONE`` in E.164, ``EMAIL`` and ``URL`` as written.
        agreements: The agreements, in order (agreement ``n`` starts on page
            ``(n - 1) * PAGES_PER_AGREEMENT + 1``).
    """

    pages: list[list[str]] = field(default_factory=list)
    headings: set[tuple[str, int]] = field(default_factory=set)
    entities: set[tuple[str, str, int]] = field(default_factory=set)
    agreements: list[Agreement] = field(default_factory=list)


def money(amount: int) -> str:
    return f"USD {amount:,.2f}"


def agreement(n: int) -> Agreement:
    """Agreement ``n`` (from 1): its parties and particulars, all fixed by ``n``."""
    i = n - 1
    city, state = PLACES[i % len(PLACES)]
    supplier = SUPPLIERS[i]
    slug = "".join(c for c in supplier.split()[0].lower() if c.isalnum())
    return Agreement(
        number=n,
        customer=CUSTOMERS[i],
        supplier=supplier,
        customer_person=PEOPLE[2 * i],
        supplier_person=PEOPLE[2 * i + 1],
        city=city,
        state=state,
        law=LAWS[i % len(LAWS)],
        service=SERVICES[i],
        effective=dt.date(2023, 1, 9) + dt.timedelta(days=23 * i),
        fee=120_000 + 37_500 * i,
        phone=f"+1 (212) 555-01{i:02d}",
        email=f"contracts@{slug}.com",
        url=f"https://www.{slug}.com/service-terms",
    )


def _e164(phone: str) -> str:
    return "+" + "".join(c for c in phone if c.isdigit())


def _long_date(day: dt.date) -> str:
    return f"{day:%B} {day.day}, {day.year}"


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, break_on_hyphens=False)


def _agreement_pages(a: Agreement, first: int, bundle: Bundle) -> None:
    """Append agreement ``a``'s pages (``first`` is its first page number)."""
    fields = {
        "city": a.city,
        "service": a.service,
        "fee": f"${a.fee:,}",
        "cap": f"${a.fee * 2:,}",
        "email": a.email,
        "phone": a.phone,
        "url": a.url,
        "law": a.law,
        "law_city": LAW_CITIES[a.law],
        "supplier_person": a.supplier_person,
    }
    pages: list[list[str]] = []

    def plant(kind: str, value: str) -> None:
        bundle.entities.add((kind, value, first + len(pages) - 1))

    # The cover page: title, parties, date.
    pages.append(
        [
            f"MASTER SERVICES AGREEMENT No. {a.number:03d}",
            "",
            *_wrap(
                f"This Master Services Agreement is made on {_long_date(a.effective)} between "
                f'{a.customer}, of {a.city}, {a.state} (the "Customer"), and {a.supplier} '
                '(the "Supplier").'
            ),
            "",
            *_wrap(
                f"The Customer wishes to obtain {a.service} services and the Supplier has agreed "
                "to provide them on the terms of this Agreement."
            ),
        ]
    )
    for kind, value in (
        ("DATE", a.effective.isoformat()),
        ("ORG", a.customer),
        ("ORG", a.supplier),
        ("GPE", a.city),
        ("GPE", a.state),
    ):
        plant(kind, value)

    # The articles, one page each, the longer ones on two.
    for number, (clause, heading, paragraphs) in enumerate(ARTICLES, 1):
        lines = [f"{number}. {heading}", ""]
        for k, paragraph in enumerate(paragraphs, 1):
            lines.extend(_wrap(f"{number}.{k} " + paragraph.format(**fields)))
            lines.append("")
        pages.append(lines[:-1])
        bundle.headings.add((clause, first + len(pages) - 1))
        if clause == "payment terms":
            plant("MONEY", money(a.fee))
            plant("EMAIL", a.email)
        elif clause == "limitation of liability":
            plant("MONEY", money(a.fee * 2))
        elif clause == "notices":
            plant("EMAIL", a.email)
            plant("PERSON", a.supplier_person)
            plant("PHONE", _e164(a.phone))
            plant("URL", a.url)

    # The schedules fill the pages up to the signature page.
    schedule_pages = PAGES_PER_AGREEMENT - len(pages) - 1
    for k in range(schedule_pages):
        part = k % 3 + 1
        lines = [
            f"SCHEDULE {part} - "
            + ("SERVICE DESCRIPTION", "SERVICE LEVELS", "CHANGE CONTROL")[part - 1]
            + f" (page {k + 1} of {schedule_pages})",
            "",
        ]
        for j in range(2):
            template = SCHEDULE_LINES[(k + j) % len(SCHEDULE_LINES)]
            lines.extend(
                _wrap(
                    template.format(
                        service=a.service,
                        sla=f"{99 + (k % 9) / 10:.1f} percent",
                        credit=f"{1 + k % 4} percent",
                    )
                )
            )
        pages.append(lines)

    # The signature page.
    pages.append(
        [
            "SIGNATURES",
            "",
            *_wrap(
                f"Signed for and on behalf of {a.customer} by {a.customer_person}, Chief "
                "Operating Officer."
            ),
            "",
            *_wrap(
                f"Signed for and on behalf of {a.supplier} by {a.supplier_person}, Managing "
                "Director."
            ),
        ]
    )
    for kind, value in (
        ("ORG", a.customer),
        ("ORG", a.supplier),
        ("PERSON", a.customer_person),
        ("PERSON", a.supplier_person),
    ):
        plant(kind, value)
    assert len(pages) == PAGES_PER_AGREEMENT
    bundle.pages.extend(pages)


def bundle(agreements: int = AGREEMENTS) -> Bundle:
    """The bundle of ``agreements`` agreements (26 by default: 1,040 pages)."""
    if not 1 <= agreements <= AGREEMENTS:
        raise ValueError(f"agreements={agreements}: between 1 and {AGREEMENTS}")
    result = Bundle()
    for n in range(1, agreements + 1):
        a = agreement(n)
        result.agreements.append(a)
        _agreement_pages(a, len(result.pages) + 1, result)
    return result


def write_pdf(path: str | os.PathLike[str], pages: list[list[str]]) -> Path:
    """A PDF of ``pages`` (each a list of lines) in 10-point Helvetica, drawn by reportlab."""
    from reportlab.lib.pagesizes import LETTER
    from reportlab.pdfgen.canvas import Canvas

    target = Path(path)
    canvas = Canvas(str(target), pagesize=LETTER, pageCompression=1, invariant=True)
    canvas.setTitle("Master services agreements (sample bundle)")
    _, height = LETTER
    for lines in pages:
        text = canvas.beginText(72, height - 72)
        text.setFont("Helvetica", 10, leading=14)
        for line in lines:
            text.textLine(line)
        canvas.drawText(text)
        canvas.showPage()
    canvas.save()
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python examples/contract_bundle.py OUT.pdf", file=sys.stderr)
        return 2
    made = bundle()
    path = write_pdf(args[0], made.pages)
    print(f"{path}: {len(made.pages):,} pages, {len(made.agreements)} agreements")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
