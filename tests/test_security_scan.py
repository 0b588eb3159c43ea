"""The security scan example: bandit through shoal finds exactly what one serial bandit run finds.

The example is imported the way ``shoal run`` imports a job file (``shoal._jobfiles.load``), so
that the process backend's workers can import its work function by name.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import shoal
from shoal import cli
from shoal._jobfiles import load

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "security_scan.py"
# Packages and a module of the standard library with known findings, a few seconds of bandit in
# all; email/_header_value_parser.py has two password-like strings on one line (a duplicate).
SUBSET = ("json", "http", "xml", "email", "urllib", "subprocess.py")
ORDER = {"HIGH": 3, "MEDIUM": 2, "LOW": 1}

Finding = dict[str, Any]


@pytest.fixture(scope="module")
def scan() -> ModuleType:
    return load(EXAMPLE)


@pytest.fixture(scope="module")
def subset(scan: ModuleType) -> list[dict[str, Any]]:
    pieces: list[dict[str, Any]] = scan.pieces(only=SUBSET)
    return pieces


@pytest.fixture(scope="module")
def subset_run(
    scan: ModuleType, subset: list[dict[str, Any]]
) -> tuple[shoal.Run[Any], list[dict[str, Any]]]:
    """The example's own job over the subset, plus the ``http`` folder a second time (as a
    path, the way ``--input`` gives one): the two pieces overlap, so their findings must be
    deduplicated."""
    again = str(scan.stdlib_root() / "http")
    run: shoal.Run[Any] = scan.job.run([*subset, again])
    return run, subset


def serial(scan: ModuleType, root: str, files: Sequence[str]) -> list[Finding]:
    """One bandit manager (bandit's own class, which the example imports), one run over every
    file, no shoal; each finding once per file, line
    and test (the first by column), ranked as the example ranks."""
    manager = scan.BanditManager(scan.BanditConfig(), "file")
    manager.discover_files([os.path.join(root, f) for f in files])
    manager.run_tests()
    assert manager.get_skipped() == []
    issues = sorted(
        manager.get_issue_list(), key=lambda i: (i.fname, i.lineno, i.col_offset, i.test_id)
    )
    return [scan.finding(issue, root) for issue in issues]


def first_per_key(findings: list[Finding]) -> dict[tuple[str, int, str], Finding]:
    kept: dict[tuple[str, int, str], Finding] = {}
    for f in findings:
        kept.setdefault((f["file"], f["line"], f["test_id"]), f)
    return kept


def frozen(f: Finding) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(f.items()))


def test_the_job_is_cpu_bound_on_processes(scan: ModuleType) -> None:
    """The main job runs on the process backend, as CPU-bound work."""
    assert scan.job.backend == "process"
    assert scan.job.cpu_bound is True


def test_parallel_findings_equal_a_serial_bandit_run(
    scan: ModuleType, subset_run: tuple[shoal.Run[Any], list[dict[str, Any]]]
) -> None:
    """Every finding of one serial bandit run over the same files, once, and nothing else."""
    run, pieces = subset_run
    assert run.ok, run.failures
    found: list[Finding] = run.result
    root = pieces[0]["root"]
    files = [f for p in pieces for f in p["files"]]
    assert len(files) == len(set(files)) > 50
    expected = serial(scan, root, files)

    keys = Counter((f["file"], f["line"], f["test_id"]) for f in expected)
    assert max(keys.values()) > 1  # bandit itself reports some places twice
    kept = first_per_key(expected)
    assert len(found) == len(kept) > 150
    assert {frozen(f) for f in found} == {frozen(f) for f in kept.values()}
    assert {f["test_id"] for f in found} >= {"B324", "B404", "B603"}
    assert all(not f["file"].startswith("/") and f["code"] for f in found)


def test_findings_are_ranked_by_severity_then_confidence(
    subset_run: tuple[shoal.Run[Any], list[dict[str, Any]]],
) -> None:
    """High severity first; within a severity, the most confident first."""
    found: list[Finding] = subset_run[0].result
    ranks = [(ORDER[f["severity"]], ORDER[f["confidence"]]) for f in found]
    assert ranks == sorted(ranks, reverse=True)
    assert found[0]["severity"] == "HIGH"
    assert found[-1]["severity"] == "LOW"


def test_overlapping_pieces_are_deduplicated(
    subset_run: tuple[shoal.Run[Any], list[dict[str, Any]]],
) -> None:
    """The http folder scanned twice gives each of its findings once, traced to both pieces."""
    run, pieces = subset_run
    both = {i for i, p in enumerate(pieces) if p["name"] == "http"} | {len(pieces)}
    assert len(both) == 2
    raw = [f for v in run.values for f in v["findings"]]
    http = [f for f in run.result if f["file"].startswith("http/")]
    assert len(http) > 5
    assert sum(f["file"].startswith("http/") for f in raw) == 2 * len(http)
    combined = run.combined
    assert combined is not None
    for position, f in enumerate(run.result):
        if f["file"].startswith("http/"):
            assert {o.index for o in combined.trace(position)} == both


def test_pieces_cover_the_standard_library_by_the_rule(scan: ModuleType) -> None:
    """Every module once, no test suites or installed packages, the largest pieces first."""
    pieces = scan.pieces()
    root = Path(pieces[0]["root"])
    assert root == scan.stdlib_root().resolve()
    files = [f for p in pieces for f in p["files"]]
    expected = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.py*")
        if p.suffix in (".py", ".pyw")
        and not {"test", "tests", "idle_test", "site-packages", "dist-packages"}
        & set(p.relative_to(root).parts)
    )
    assert sorted(files) == expected
    assert "subprocess.py" in files
    assert not any(f.startswith(("test/", "lib2to3/tests/", "idlelib/idle_test/")) for f in files)
    assert all(len({Path(f).parent for f in p["files"]}) == 1 for p in pieces)  # one folder each
    sizes = [sum((root / f).stat().st_size for f in p["files"]) for p in pieces]
    assert sizes == sorted(sizes, reverse=True)
    assert all(
        size <= scan.GROUP_BYTES or len(p["files"]) == 1
        for p, size in zip(pieces, sizes, strict=True)
    )
    assert len(pieces) >= 40  # enough for two workers to stay busy to the end
    assert scan.items() == pieces


def write_tree(root: Path) -> None:
    (root / "good.py").write_text(
        "import subprocess\n\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n"
    )
    (root / "broken.py").write_text("def (:\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("eval('left out')\n")


def test_a_file_bandit_cannot_parse_is_skipped_with_its_reason(
    scan: ModuleType, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A broken file is listed as skipped, with bandit's reason; the rest is scanned; bandit
    logs nothing."""
    write_tree(tmp_path)
    result = scan.scan(str(tmp_path))
    assert result["files"] == 1
    assert result["skipped"] == [
        {"file": "broken.py", "reason": "syntax error while parsing AST from file"}
    ]
    assert [(f["file"], f["line"], f["test_id"]) for f in result["findings"]] == [
        ("good.py", 1, "B404"),
        ("good.py", 5, "B602"),
    ]
    assert capfd.readouterr().err == ""


def test_main_prints_the_ranking_and_writes_the_html_report(
    scan: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python examples/security_scan.py --report PATH`` runs the job and writes the report
    with the scan's own tables."""
    pytest.importorskip("matplotlib", reason="the HTML report's charts need shoal[report]")
    write_tree(tmp_path)
    report = tmp_path / "report.html"
    assert scan.main(["--root", str(tmp_path), "--quiet", "--report", str(report)]) == 0
    out = capsys.readouterr()
    assert "1 files scanned (1 skipped)" in out.out
    assert "2 findings (0 duplicates removed): 1 high, 0 medium, 1 low" in out.out
    assert out.out.index("B602") < out.out.index("B404")
    assert "skipped broken.py: syntax error" in out.err
    page = report.read_text()
    for title in (
        "Findings by severity",
        "Top findings",
        "Findings per test",
        "Files bandit could not scan",
    ):
        assert title in page
    assert "subprocess_popen_with_shell_equals_true" in page


def test_report_tables(
    scan: ModuleType, subset_run: tuple[shoal.Run[Any], list[dict[str, Any]]]
) -> None:
    """The tables agree with the findings: counts by severity and test, the top rows ranked."""
    run = subset_run[0]
    report = run.report
    scan.extend_report(report, run, limit=10)
    tables = {t.title: t for t in report.tables}
    assert list(tables) == ["Findings by severity", "Top findings", "Findings per test"]
    found: list[Finding] = run.result
    severity = tables["Findings by severity"]
    assert [row[:2] for row in severity.rows] == [
        (s, sum(f["severity"] == s for f in found)) for s in ("HIGH", "MEDIUM", "LOW")
    ]
    top = tables["Top findings"]
    assert top.total == len(found)
    assert len(top.rows) == 10
    per_test = tables["Findings per test"]
    counts = Counter(f["test_id"] for f in found)
    assert per_test.total == len(counts)
    most = max(counts.values())
    assert per_test.rows[0][:1] == (min(t for t, n in counts.items() if n == most),)
    assert per_test.rows[0][per_test.columns.index("findings")] == most


def test_shoal_run_with_a_folder_as_input(
    scan: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``shoal run examples/security_scan.py --input FOLDER``: one piece per file of the folder,
    the same findings as a serial bandit run over them."""
    folder = scan.stdlib_root() / "json"
    out = tmp_path / "out.jsonl"
    code = cli.main(
        ["run", str(EXAMPLE), "--input", str(folder), "--no-journal", "--quiet", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    results = [json.loads(line)["value"] for line in out.read_text().splitlines()]
    found = [f for r in results for f in r["findings"]]
    root = str(scan.stdlib_root().resolve())
    files = sorted(p.relative_to(root).as_posix() for p in folder.resolve().glob("*.py"))
    assert sum(r["files"] for r in results) == len(files)
    assert sorted(map(frozen, found)) == sorted(
        map(frozen, first_per_key(serial(scan, root, files)).values())
    )
