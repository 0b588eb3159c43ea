"""The document intelligence example: a 1,040-page PDF in 50-page chunks on processes, findings
with their pages, the same as one serial pass.

The PDF is written at test time (``tests/_pdf.py``, Helvetica pages) from the contract bundle's
text (``examples/contract_bundle.py``), which also says on which page each clause heading and each
planted entity is. The example is imported the way ``shoal run`` imports a job file, so that
worker processes import its work function by name.
"""

from __future__ import annotations

import collections
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import shoal
from _pdf import write_pdf
from shoal import cli, split
from shoal._jobfiles import load

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE = EXAMPLES / "documents.py"
NAMES = ("ORG", "PERSON", "GPE", "EMAIL", "URL")  # kinds whose value is written on the page
EXACT = ("DATE", "MONEY", "PHONE", "EMAIL", "URL")  # kinds planted entities must all be found

pytest.importorskip("spacy", reason="the example needs the examples dependency group")


@pytest.fixture(scope="module")
def docs() -> ModuleType:
    module = load(EXAMPLE)
    try:
        module.pipeline()
    except RuntimeError as exc:  # no model installed
        pytest.skip(str(exc))
    return module


@pytest.fixture(scope="module")
def bundle() -> Any:
    return load(EXAMPLES / "contract_bundle.py").bundle()


@pytest.fixture(scope="module")
def pdf(bundle: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdf(tmp_path_factory.mktemp("pdf") / "bundle.pdf", bundle.pages)


@pytest.fixture(scope="module")
def run(docs: ModuleType, pdf: Path) -> shoal.Run[Any]:
    """The example's own job over the whole PDF."""
    result: shoal.Run[Any] = docs.job.run(split.pages(pdf, per_chunk=50))
    return result


@pytest.fixture(scope="module")
def page_texts(docs: ModuleType, pdf: Path) -> dict[int, str]:
    pages = split.PageRange(str(pdf), 1, 1040).page_texts()
    return {number: docs.page_text(text)[0] for number, text in pages}


def entity_pages(found: dict[str, Any]) -> dict[tuple[str, str], list[int]]:
    return {(e["type"], e["value"]): e["pages"] for e in found["entities"]}


def test_the_pdf_runs_as_21_chunks_of_50_pages_on_processes(
    docs: ModuleType, run: shoal.Run[Any], bundle: Any
) -> None:
    """1,040 pages, 21 chunks (the last of 40 pages), each with its pages as provenance, all on
    the process backend."""
    assert len(bundle.pages) == 1040
    assert docs.job.backend == "process"
    assert run.ok, run.failures
    assert len(run.outcomes) == 21
    spans = [o.provenance.pages for o in run.outcomes if o.provenance is not None]
    assert spans == [(k * 50 + 1, min(k * 50 + 50, 1040)) for k in range(21)]
    assert [(o.value["first"], o.value["last"]) for o in run.outcomes] == spans
    assert run.result["pages"] == 1040


def test_clause_headings_are_found_on_their_pages(run: shoal.Run[Any], bundle: Any) -> None:
    """Every clause of the rule set is found exactly on the pages whose heading names it (26
    agreements: 26 pages each), and mentioned at least there."""
    found = {c["clause"]: c for c in run.result["clauses"]}
    expected = collections.defaultdict(list)
    for clause, page in bundle.headings:
        expected[clause].append(page)
    rules = [rule.name for rule in load(EXAMPLE).CLAUSES]
    assert list(found) == rules
    for name in rules:
        assert found[name]["heading_pages"] == sorted(expected[name]), name
        assert len(found[name]["heading_pages"]) == 26
        assert set(found[name]["mention_pages"]) >= set(expected[name]) - {
            p for c, p in bundle.headings if c == "notices"
        }


def test_planted_entities_carry_their_pages(
    docs: ModuleType, run: shoal.Run[Any], bundle: Any
) -> None:
    """Dates, amounts, phone numbers, e-mail and web addresses planted on a page are all found
    there; names (the statistical model's part) nearly all; and every kind appears."""
    pages = entity_pages(run.result)
    missed: dict[str, int] = collections.Counter()
    total: dict[str, int] = collections.Counter()
    for kind, value, page in bundle.entities:
        key = (kind, docs.basename(value) if kind == "ORG" else value)
        total[kind] += 1
        if page not in pages.get(key, []):
            assert kind not in EXACT, (kind, value, page)
            missed[kind] += 1
    assert set(total) == {"ORG", "PERSON", "GPE", "DATE", "MONEY", "PHONE", "EMAIL", "URL"}
    for kind in ("ORG", "PERSON", "GPE"):
        assert missed[kind] <= 0.1 * total[kind], (kind, missed[kind], total[kind])
    assert pages[("MONEY", "USD 120,000.00")] == [4]  # agreement 1's fee, on its payment page
    assert pages[("DATE", "2023-01-09")] == [1]
    assert pages[("PHONE", "+12125550100")] == [15]


def test_every_page_of_a_name_shows_it(run: shoal.Run[Any], page_texts: dict[int, str]) -> None:
    """Provenance is right: each page listed for a name, address or number has it in its text."""
    checked = 0
    for e in run.result["entities"]:
        if e["type"] in NAMES:
            for page in e["pages"]:
                assert e["value"] in page_texts[page], (e, page)
                checked += 1
    assert checked > 400


def test_merged_chunks_equal_one_serial_pass(
    docs: ModuleType, run: shoal.Run[Any], pdf: Path
) -> None:
    """The merged findings of 21 chunks are those of one pass over all 1,040 pages in this
    process, with no shoal."""
    serial = docs.merge([docs.analyse(split.PageRange(str(pdf), 1, 1040))])
    assert run.result == serial


def test_report_tables(docs: ModuleType, run: shoal.Run[Any], tmp_path: Path) -> None:
    """The report gets entities by type, a table per kind with pages, the clauses and one row
    per chunk; the HTML page is written."""
    pytest.importorskip("matplotlib", reason="the HTML report's charts need shoal[report]")
    report = run.report
    docs.extend_report(report, run)
    tables = {t.title: t for t in report.tables}
    assert "Entities by type" in tables
    assert "Organisations (ORG) with their pages" in tables
    clauses = tables["Clauses found, with their pages"]
    assert clauses.total == 12
    governing = next(r for r in clauses.rows if r[0] == "governing law")
    assert governing[1] == 26 and governing[2].startswith("14, 54, 94")
    assert tables["Per chunk"].total == 21
    path = report.save(tmp_path / "documents.html")
    page = path.read_text()
    assert "Clauses found, with their pages" in page and "Northwind Logistics" in page


def test_main_and_shoal_run_write_the_report(
    docs: ModuleType,
    bundle: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python examples/documents.py PDF --report`` and ``shoal run examples/documents.py``
    (the PDF from $DOCUMENTS_PDF) both run the job and write the report."""
    pytest.importorskip("matplotlib", reason="the HTML report's charts need shoal[report]")
    small = write_pdf(tmp_path / "two.pdf", bundle.pages[:80])
    report = tmp_path / "main.html"
    code = docs.main([str(small), "--per-chunk", "40", "--quiet", "--report", str(report)])
    assert code == 0
    out = capsys.readouterr().out
    assert "80 pages in 2 chunks (0 failed)" in out
    assert "governing law            14, 54" in out
    assert "Entities by type" in report.read_text()

    monkeypatch.setenv("DOCUMENTS_PDF", str(small))
    cli_report = tmp_path / "cli.html"
    code = cli.main(["run", str(EXAMPLE), "--no-journal", "--quiet", "--report", str(cli_report)])
    assert code == 0, capsys.readouterr().err
    assert "Clauses found, with their pages" in cli_report.read_text()
