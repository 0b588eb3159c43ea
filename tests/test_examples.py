"""The examples run end to end and agree with a serial run of the same analysis."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_tree(root: Path) -> None:
    (root / "pkg").mkdir()
    (root / "pkg" / "a.py").write_text("import os\nos.system('ls')\neval('1')\n")
    (root / "pkg" / "b.py").write_text(
        "import subprocess, hashlib\nsubprocess.run('x', shell=True)\nhashlib.md5(b'')\n"
    )
    (root / "c.py").write_text("def f():\n    return exec('pass')\n")
    (root / "test").mkdir()
    (root / "test" / "t.py").write_text("eval('ignored')\n")
    (root / "broken.py").write_text("def (:\n")


def test_scan_stdlib_matches_a_serial_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The parallel scan finds what a serial loop finds, ranked, and names the broken file."""
    scan = load("scan_stdlib")
    make_tree(tmp_path)
    serial = []
    for path in scan.stdlib_files(tmp_path):
        try:
            serial.append(scan.scan_file(path))
        except SyntaxError:
            continue
    expected = scan.combine(serial)
    assert sorted((Path(f.path).name, f.line, f.call) for f in expected) == [
        ("a.py", 2, "os.system"),
        ("a.py", 3, "eval"),
        ("b.py", 2, "subprocess.shell"),
        ("b.py", 3, "hashlib.md5"),
        ("c.py", 2, "exec"),
    ]
    assert expected[-1].call == "hashlib.md5"  # ranked: high severity first

    run = scan.scan(tmp_path, concurrency=3, progress=False)
    assert run.result == expected
    assert [Path(f.item).name for f in run.failures] == ["broken.py"]

    assert scan.main([str(tmp_path), "--concurrency", "3"]) == 0
    out = capsys.readouterr()
    assert "3 files scanned, 1 failed" in out.out
    assert "5 findings: 4 high, 0 medium, 1 low" in out.out
    assert "broken.py" in out.err
    assert "SyntaxError" in out.err


def test_scan_stdlib_real_standard_library_subset() -> None:
    """A real folder of the standard library scans without failures."""
    import json as json_module

    scan = load("scan_stdlib")
    root = Path(json_module.__file__).parent
    assert scan.main([str(root)]) == 0
