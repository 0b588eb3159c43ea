"""Scan the Python standard library for risky calls, one piece per file, in parallel.

A real job that needs no network and no configuration: the standard library is on every machine
that has Python. Each piece parses one module with ``ast`` and reports the calls that a security
review looks at first (``eval``, ``exec``, ``pickle.loads``, ``os.system``, ``subprocess`` with
``shell=True``, ...). The findings are combined, deduplicated and ranked.

    python examples/scan_stdlib.py [ROOT] [--concurrency N]
"""

from __future__ import annotations

import argparse
import ast
import sys
import sysconfig
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import shoal

# call name -> (severity, why it matters)
RISKY: dict[str, tuple[str, str]] = {
    "eval": ("high", "evaluates a string as code"),
    "exec": ("high", "executes a string as code"),
    "pickle.loads": ("high", "unpickling runs arbitrary code"),
    "pickle.load": ("high", "unpickling runs arbitrary code"),
    "marshal.loads": ("medium", "loads code objects"),
    "os.system": ("high", "runs a shell command"),
    "os.popen": ("high", "runs a shell command"),
    "subprocess.shell": ("high", "subprocess with shell=True"),
    "tempfile.mktemp": ("medium", "race-prone temporary file name"),
    "yaml.load": ("medium", "unsafe YAML loading"),
    "hashlib.md5": ("low", "weak hash"),
    "hashlib.sha1": ("low", "weak hash"),
    "random.random": ("low", "not a cryptographic random source"),
}
SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2}

# CPython 3.11's parser is not safe to enter from two threads at once (it can fail with
# "SystemError: AST constructor recursion depth mismatch"). It holds the GIL while it parses, so
# the lock costs no parallelism; reading the files still overlaps.
_PARSE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Finding:
    path: str
    line: int
    call: str
    severity: str
    why: str


def dotted_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted_name(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def scan_file(path: Path) -> list[Finding]:
    """One piece: parse one module and list its risky calls."""
    source = path.read_bytes()
    with _PARSE_LOCK:
        tree = ast.parse(source, filename=str(path))
    findings: list[Finding] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted_name(node.func)
        if name.startswith("subprocess.") and any(
            kw.arg == "shell" and isinstance(kw.value, ast.Constant) and kw.value.value is True
            for kw in node.keywords
        ):
            name = "subprocess.shell"
        if name in RISKY:
            severity, why = RISKY[name]
            findings.append(Finding(str(path), node.lineno, name, severity, why))
    return findings


def stdlib_files(root: Path) -> Iterator[Path]:
    """The modules of the standard library, without its tests and installed packages."""
    skip = {"test", "tests", "site-packages", "dist-packages", "idlelib", "__pycache__"}
    for path in sorted(root.rglob("*.py")):
        if skip.isdisjoint(path.relative_to(root).parts):
            yield path


def combine(per_file: list[list[Finding]]) -> list[Finding]:
    """Flatten, deduplicate (same file, line and call), rank by severity then place."""
    unique = {(f.path, f.line, f.call): f for findings in per_file for f in findings}
    return sorted(unique.values(), key=lambda f: (SEVERITY_RANK[f.severity], f.path, f.line))


def scan(root: Path, *, concurrency: int = 8, progress: bool = True) -> shoal.Run[list[Finding]]:
    """Scan every module under ``root`` in parallel; ``run.result`` holds the ranked findings."""
    job = shoal.Job(
        scan_file,
        key=lambda path: path.relative_to(root).parts[0],
        limits=shoal.Limits(concurrency=concurrency),
        retry=shoal.Retry(attempts=2, on=OSError),
        combine=combine,
        backend="thread",
        name="scan-stdlib",
    )
    from shoal._progress import PlainProgress

    return job.run(stdlib_files(root), subscribers=PlainProgress(every=1.0) if progress else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=sysconfig.get_paths()["stdlib"])
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        parser.error(f"{root} is not a folder; pass the folder to scan")

    print(f"scanning {root} ...", file=sys.stderr)
    run = scan(root, concurrency=args.concurrency)
    findings: list[Finding] = run.result
    stats = run.stats

    print(
        f"\n{stats.succeeded} files scanned, {stats.failed} failed, in {stats.wall_time:.2f}s "
        f"({stats.throughput:,.0f} files/s, {stats.attempts} attempts)"
    )
    by_severity = Counter(f.severity for f in findings)
    print(
        f"{len(findings)} findings: "
        + ", ".join(f"{by_severity[s]} {s}" for s in ("high", "medium", "low"))
    )
    by_call = Counter(f.call for f in findings)
    print("\nby call:")
    for call, count in by_call.most_common():
        severity, why = RISKY[call]
        print(f"  {count:5d}  {call:<18} {severity:<7} {why}")
    print("\nfirst high-severity findings:")
    for f in [f for f in findings if f.severity == "high"][:10]:
        print(f"  {Path(f.path).relative_to(root)}:{f.line}  {f.call}")
    for failure in run.failures[:10]:
        print(f"  could not scan {failure.item}: {failure.error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
