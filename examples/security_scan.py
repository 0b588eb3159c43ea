"""Security scan of the Python standard library with bandit, in parallel: shoal's main job.

A real CPU-bound job that needs no network and no configuration: the standard library is on
every machine that has Python. Each piece runs bandit (the established analyser, used as a
library) over a few files of one folder in a worker process; the findings are collected,
deduplicated and ranked by severity, then confidence. The findings are exactly those of one
serial bandit run over the same files (``tests/test_security_scan.py`` checks that).

    python examples/security_scan.py [--report PATH] [--limit N] [--root DIR] [--only NAME ...]
    shoal run examples/security_scan.py --report shoal-report.html

What is scanned: every ``.py`` and ``.pyw`` file (bandit's default ``include``) under the root,
except in folders named ``test``, ``tests`` or ``idle_test`` (CPython's test suites, at any depth:
``test/``, ``unittest/test/``, ``lib2to3/tests/``, ``idlelib/idle_test/``...), ``site-packages``
and ``dist-packages`` (third-party code installed there, not the standard library) and
``__pycache__``.
"""

from __future__ import annotations

import argparse
import linecache
import logging
import os
import sys
import sysconfig
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import shoal
from shoal import combine

with warnings.catch_warnings():
    # bandit 1.9 passes stevedore an argument that stevedore now deprecates (a warning at import,
    # an error under -W error); nothing a user of bandit can change.
    warnings.filterwarnings("ignore", "The verify_requirements argument", DeprecationWarning)
    from bandit.core.config import BanditConfig  # type: ignore[import-untyped]
    from bandit.core.constants import RANKING  # type: ignore[import-untyped]
    from bandit.core.manager import BanditManager  # type: ignore[import-untyped]

SKIP_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)
SUFFIXES = (".py", ".pyw")  # what bandit's default configuration includes
# Pieces: the files of one folder (not its subfolders), in groups of about this many bytes.
#
# Why: bandit's time is roughly proportional to a file's size (about 1.7 s per MB here), and the
# standard library is lopsided: its top folder alone holds 168 modules and 4.7 MB (nearly 40% of
# the whole), while most packages are a few small files. One piece per folder would leave one worker
# busy with the top folder long after the other finished; one piece per file (735) works too, but
# pays shoal's per-piece bookkeeping and a fresh bandit manager 735 times for pieces of a few
# milliseconds. Groups of about 256 KB give ~80 pieces of ~0.1-0.5 s: small enough that two
# workers stay busy to the end (the largest pieces are sent first), large enough that the
# overhead is noise. A file larger than the target is a piece of its own.
GROUP_BYTES = 256 * 1024
CODE_CHARS = 120  # a finding's source line is cut to this many characters


class Piece(TypedDict):
    """One piece of the scan: some files of one folder. Plain data, so it pickles, and a journal
    or an export stores it as JSON."""

    name: str  # "email", "email [2/3]", "(top level) [5/19]": for progress and reports
    root: str  # the scan's root (the standard library)
    files: list[str]  # relative to root, with "/"


class Finding(TypedDict):
    file: str  # relative to the scan's root, with "/"
    line: int
    test_id: str  # "B602"
    test: str  # "subprocess_popen_with_shell_equals_true"
    severity: str  # "HIGH", "MEDIUM", "LOW" (bandit's words)
    confidence: str
    cwe: int | None
    issue: str  # bandit's explanation
    code: str  # the source line, stripped and cut to CODE_CHARS


class Skipped(TypedDict):
    file: str
    reason: str  # bandit's: "syntax error while parsing AST from file", an OS error...


class Scanned(TypedDict):
    """What one piece returns."""

    files: int  # files that bandit scanned
    findings: list[Finding]  # by file, line, column and test id
    skipped: list[Skipped]


def quiet_bandit() -> None:
    """Keep bandit's logging out of the terminal: its warnings and errors are per file, and a
    file bandit could not scan is reported in the piece's ``skipped`` with bandit's reason. A
    level above INFO also stops bandit from drawing a progress bar of its own (it does for more
    than 50 files)."""
    logger = logging.getLogger("bandit")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())


quiet_bandit()  # on import, so in every worker process too


# ---------------------------------------------------------------------------- choosing pieces


def stdlib_root() -> Path:
    """The standard library of the Python that runs this."""
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path) -> Iterator[Path]:
    """Every file to scan under ``root``, sorted: see the module docstring for what is left out."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in SKIP_DIRS)
        for name in sorted(files):
            if name.endswith(SUFFIXES):
                yield Path(folder, name)


def pieces(
    root: Path | None = None,
    *,
    only: Sequence[str] = (),
    group_bytes: int = GROUP_BYTES,
) -> list[Piece]:
    """The scan's pieces: each folder's files in groups of about ``group_bytes``, largest first.

    Args:
        root: The folder to scan (default: the standard library).
        only: Names under ``root`` to keep (packages, folders or modules: ``"json"``,
            ``"xml"``, ``"subprocess.py"``); all when empty.
        group_bytes: The target size of a piece's files.

    Largest first, so that the big pieces start early and the small ones fill the gaps at the end
    (the classic "longest processing time first" rule).
    """
    root = (root if root is not None else stdlib_root()).resolve()
    folders: dict[str, list[tuple[str, int]]] = {}
    for path in source_files(root):
        relative = path.relative_to(root)
        if only and relative.parts[0] not in only:
            continue
        folder = relative.parent.as_posix()
        folders.setdefault(folder, []).append((relative.as_posix(), path.stat().st_size))
    result: list[tuple[int, Piece]] = []
    for folder, files in folders.items():
        groups: list[list[tuple[str, int]]] = [[]]
        size = 0
        for name, nbytes in files:
            if groups[-1] and size + nbytes > group_bytes:
                groups.append([])
                size = 0
            groups[-1].append((name, nbytes))
            size += nbytes
        label = "(top level)" if folder == "." else folder
        for n, group in enumerate(groups, 1):
            name = label if len(groups) == 1 else f"{label} [{n}/{len(groups)}]"
            piece = Piece(name=name, root=str(root), files=[f for f, _ in group])
            result.append((sum(b for _, b in group), piece))
    result.sort(key=lambda sized: (-sized[0], sized[1]["name"]))
    return [piece for _, piece in result]


def items() -> list[Piece]:
    """The job's default input (``shoal run`` without ``--input``): the whole standard library."""
    return pieces()


def piece_of(path: str | os.PathLike[str]) -> Piece:
    """A piece for a path given on its own (``shoal run ... --input``: a folder's files, or a
    text file's lines): a file, or a folder's files (not its subfolders), by the same rule as
    :func:`source_files`. Paths inside the standard library are named relative to it."""
    target = Path(path).resolve()
    stdlib = stdlib_root().resolve()
    base = target if target.is_dir() else target.parent
    root = stdlib if base.is_relative_to(stdlib) else base
    candidates = sorted(p for p in target.iterdir() if p.is_file()) if base == target else [target]
    files = [
        p.relative_to(root)
        for p in candidates
        if p.name.endswith(SUFFIXES) and SKIP_DIRS.isdisjoint(p.relative_to(root).parts)
    ]
    return Piece(
        name=target.relative_to(root).as_posix() if target != root else target.name,
        root=str(root),
        files=[f.as_posix() for f in files],
    )


# ---------------------------------------------------------------------------- one piece


def finding(issue: Any, root: str) -> Finding:
    """A bandit issue as plain data, its file relative to ``root``."""
    code = linecache.getline(issue.fname, issue.lineno).strip()
    if len(code) > CODE_CHARS:
        code = code[: CODE_CHARS - 1] + "…"
    return Finding(
        file=Path(os.path.relpath(issue.fname, root)).as_posix(),
        line=issue.lineno,
        test_id=issue.test_id,
        test=issue.test,
        severity=issue.severity,
        confidence=issue.confidence,
        cwe=issue.cwe.id or None,
        issue=issue.text,
        code=code,
    )


def run_bandit(root: str, files: Sequence[str]) -> Scanned:
    """Bandit over ``files`` (relative to ``root``) with its default configuration and every
    test, as ``bandit FILE...`` would; the findings and skipped files in a stable order."""
    manager = BanditManager(BanditConfig(), "file")
    manager.discover_files([os.path.join(root, f) for f in files])
    manager.run_tests()
    issues = sorted(
        manager.get_issue_list(), key=lambda i: (i.fname, i.lineno, i.col_offset, i.test_id)
    )
    findings = [finding(i, root) for i in issues]
    skipped = sorted(
        (
            Skipped(file=Path(os.path.relpath(name, root)).as_posix(), reason=str(reason))
            for name, reason in manager.get_skipped()
        ),
        key=lambda s: s["file"],
    )
    for path in {i.fname for i in issues}:  # keep no source files in a worker's memory
        linecache.cache.pop(path, None)
    return Scanned(files=len(manager.files_list), findings=findings, skipped=skipped)


def scan(piece: Piece | str | os.PathLike[str]) -> Scanned:
    """One piece: bandit over its files. A path (a file or a folder) is a piece too."""
    if not isinstance(piece, dict):
        piece = piece_of(piece)
    return run_bandit(piece["root"], piece["files"])


# ---------------------------------------------------------------------------- combining


def _findings_of(records: list[combine.Record]) -> list[combine.Record]:
    """Each piece's findings, one record per finding (which remembers its piece)."""
    return [
        combine.Record(f, record.sources) for record in records for f in record.value["findings"]
    ]


def dedupe_key(f: Finding) -> tuple[str, int, str]:
    """One finding per file, line and bandit test: bandit reports, say, two password-like strings
    on one line twice; and pieces given by hand may overlap."""
    return (f["file"], f["line"], f["test_id"])


def rank(f: Finding) -> tuple[int, int, str, int, str]:
    """Most severe first, then most confident, then by place (a total, repeatable order)."""
    return (
        -RANKING.index(f["severity"]),
        -RANKING.index(f["confidence"]),
        f["file"],
        f["line"],
        f["test_id"],
    )


findings = (
    combine.Combiner(_findings_of, name="findings")
    .then(combine.dedupe(dedupe_key))
    .then(combine.sort(rank))
)


def package(piece: Piece | str | os.PathLike[str]) -> str:
    """A piece's top package ("email", "xml", "(top level)"): the report's per-key rows."""
    if isinstance(piece, dict):
        return piece["name"].split(" [")[0].split("/")[0]
    return ""


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


job = shoal.Job(
    scan,
    backend="process",
    cpu_bound=True,
    combine=findings,
    key=package,
    # Two pieces per worker: the one it runs and the next, sent ahead so that it never waits for
    # the coordinator. More would only queue inside the backend (and count towards the pieces'
    # durations in the report, which start when a piece is handed over).
    limits=shoal.Limits(concurrency=2 * usable_cpus()),
    retry=shoal.Retry(attempts=2),  # bandit is deterministic: a retry only helps a lost worker
    name="security-scan",
)


# ---------------------------------------------------------------------------- reporting


def skipped_files(run: shoal.Run[Scanned]) -> list[Skipped]:
    return sorted((s for v in run.values for s in v["skipped"]), key=lambda s: s["file"])


def by_severity(ranked: Sequence[Finding]) -> list[dict[str, Any]]:
    """A row per severity: how many findings, at each confidence."""
    tally = Counter((f["severity"], f["confidence"]) for f in ranked)
    levels = [level for level in reversed(RANKING) if level != "UNDEFINED"]
    rows: list[dict[str, Any]] = []
    for severity in levels:
        row: dict[str, Any] = {
            "severity": severity,
            "findings": sum(tally[severity, c] for c in levels),
        }
        row.update({f"{c.lower()} confidence": tally[severity, c] for c in levels})
        rows.append(row)
    return rows


def per_test(ranked: Sequence[Finding]) -> list[dict[str, Any]]:
    """A row per bandit test: how many findings, and its worst severity."""
    rows: dict[str, dict[str, Any]] = {}
    for f in ranked:  # ranked: the first finding of a test is its most severe
        row = rows.setdefault(
            f["test_id"],
            {
                "test": f["test_id"],
                "name": f["test"],
                "findings": 0,
                "worst severity": f["severity"],
                "cwe": f["cwe"],
                "first": f"{f['file']}:{f['line']}",
            },
        )
        row["findings"] += 1
    return sorted(rows.values(), key=lambda r: (-r["findings"], r["test"]))


def top_rows(ranked: Sequence[Finding]) -> list[dict[str, Any]]:
    return [
        {
            "severity": f["severity"],
            "confidence": f["confidence"],
            "test": f"{f['test_id']} {f['test']}",
            "where": f"{f['file']}:{f['line']}",
            "issue": f["issue"],
            "code": f["code"],
        }
        for f in ranked
    ]


def extend_report(report: Any, run: shoal.Run[Scanned], *, limit: int = 50) -> None:
    """The scan's own tables in the run's report (``shoal run`` calls this)."""
    ranked: list[Finding] = run.result
    report.add_table("Findings by severity", by_severity(ranked))
    report.add_table("Top findings", top_rows(ranked), limit=limit)
    report.add_table("Findings per test", per_test(ranked), limit=limit)
    skipped = skipped_files(run)
    if skipped:
        report.add_table("Files bandit could not scan", list(skipped), limit=limit)


def summary(run: shoal.Run[Scanned], *, limit: int = 10) -> str:
    """What the scan found, in a few lines, with the top ``limit`` findings (``shoal run`` prints
    this after the run)."""
    ranked: list[Finding] = run.result
    stats = run.stats
    raw = sum(len(v["findings"]) for v in run.values)
    scanned = sum(v["files"] for v in run.values)
    counts = Counter(f["severity"] for f in ranked)
    lines = [
        f"{scanned} files scanned ({len(skipped_files(run))} skipped) in {stats.succeeded} "
        f"pieces ({stats.failed} failed), {stats.wall_time:.1f}s",
        f"{len(ranked)} findings ({raw - len(ranked)} duplicates removed): "
        + ", ".join(f"{counts[s]} {s.lower()}" for s in ("HIGH", "MEDIUM", "LOW")),
    ]
    if ranked and limit > 0:
        lines.append(f"top {min(limit, len(ranked))}:")
        lines.extend(
            f"  {f['severity']:<6} {f['confidence']:<6} {f['test_id']} "
            f"{f['file']}:{f['line']}  {f['issue']}"
            for f in ranked[:limit]
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--report", metavar="PATH", help="write the HTML report here")
    parser.add_argument(
        "--limit", type=int, default=20, metavar="N", help="findings to list (default 20)"
    )
    parser.add_argument("--root", type=Path, help="the folder to scan (default: the stdlib)")
    parser.add_argument(
        "--only", nargs="+", default=(), metavar="NAME", help="packages or modules to keep"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    root: Path = args.root if args.root is not None else stdlib_root()
    if not root.is_dir():
        parser.error(f"{root} is not a folder; pass the folder to scan with --root")

    chosen = pieces(root, only=args.only)
    nfiles = sum(len(p["files"]) for p in chosen)
    print(f"scanning {nfiles} files under {root} in {len(chosen)} pieces ...", file=sys.stderr)
    run = job.run(chosen, progress=not args.quiet)
    print("\n" + summary(run, limit=args.limit))
    skipped = skipped_files(run)
    for s in skipped:
        print(f"  skipped {s['file']}: {s['reason']}", file=sys.stderr)
    for failure in run.failures:
        print(f"  piece failed: {failure}", file=sys.stderr)

    if args.report:
        report = run.report
        extend_report(report, run, limit=max(args.limit, 50))
        print(f"\nreport: {report.save(args.report).resolve()}")
    return 0 if run.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
