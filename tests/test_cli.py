"""The command line: in-process (``main([...])``) and as real subprocesses (``python -m shoal``).

Every job file here is written into the test's own folder; the runs are small and fast.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal
from shoal.cli import main
from shoal.journal import JournalError, read_meta, read_status

# A job whose items are numbers (or {"n": ...} rows); it fails on the numbers listed in the
# file FAIL (if that file exists) and appends every number it finishes to ran.log.
JOB = """
import asyncio, os
from pathlib import Path

import shoal

HERE = Path(__file__).parent
DELAY = float(os.environ.get("JOB_DELAY", "0"))


def number(item):
    if isinstance(item, dict):
        return int(item["n"])
    return int(item)


async def work(item):
    n = number(item)
    await asyncio.sleep(DELAY)
    fail = HERE / "FAIL"
    if fail.exists() and str(n) in fail.read_text().split():
        raise ValueError(f"item {n} failed on purpose")
    with open(HERE / "ran.log", "a") as fh:
        fh.write(f"{n}\\n")
    return n * n


job = shoal.Job(work, name="squares", retry=shoal.Retry(attempts=1))


def items():
    return list(range(int(os.environ.get("JOB_ITEMS", "10"))))
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.py").write_text(JOB)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def ran(folder: Path) -> list[int]:
    log = folder / "ran.log"
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shoal_cmd(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes started by a test; every one is gone when the test ends."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)


def start(
    children: list[subprocess.Popen[str]], *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "shoal", *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children.append(child)
    return child


def wait_for_done(journal: Path, at_least: int, child: subprocess.Popen[str]) -> int:
    """Wait until the journal shows ``at_least`` pieces done (the child still running)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()
        try:
            done = read_status(journal).counts.get("done", 0)
        except JournalError:  # not created yet
            done = 0
        if done >= at_least:
            return done
        time.sleep(0.02)
    raise AssertionError(f"the journal never showed {at_least} done pieces")


# ---------------------------------------------------------------------- run, in-process


def test_run_succeeds_with_out_and_report(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every piece succeeds: exit 0, results in input order with provenance, a report file."""
    write(folder / "in.jsonl", "".join(f'{{"n": {n}}}\n' for n in range(6)))
    code = main(
        ["run", "job.py", "--input", "in.jsonl", "--out", "out.jsonl", "--report", "r.json"]
    )
    assert code == 0
    out = records(folder / "out.jsonl")
    assert [r["index"] for r in out] == list(range(6))
    assert [r["value"] for r in out] == [n * n for n in range(6)]
    assert [r["provenance"] for r in out] == [f"in.jsonl:{n + 1}" for n in range(6)]
    assert all(r["ok"] for r in out)
    report = json.loads((folder / "r.json").read_text())
    assert report["counts"]["succeeded"] == 6
    assert (folder / "squares.shoal.db").exists()  # the default journal, named after the job
    err = capsys.readouterr().err
    assert "6 done, 0 failed" in err


def test_failures_exit_1_and_retry_runs_only_the_failed(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Some pieces fail: exit 1; `shoal retry` runs those again (only those) and exits 0."""
    (folder / "FAIL").write_text("3 7")
    assert main(["run", "job.py", "--out", "out.jsonl"]) == 1
    failed = [r for r in records(folder / "out.jsonl") if not r["ok"]]
    assert [r["index"] for r in failed] == [3, 7]
    assert failed[0]["error"] == {"type": "ValueError", "message": "item 3 failed on purpose"}
    err = capsys.readouterr().err
    assert "shoal retry squares.shoal.db" in err
    assert sorted(ran(folder)) == [0, 1, 2, 4, 5, 6, 8, 9]

    (folder / "FAIL").unlink()
    (folder / "ran.log").unlink()
    assert main(["retry", "squares.shoal.db", "--out", "again.jsonl", "--quiet"]) == 0
    assert sorted(ran(folder)) == [3, 7]  # only the failed pieces ran again
    again = records(folder / "again.jsonl")
    assert [r["value"] for r in again] == [n * n for n in range(10)]
    assert read_status("squares.shoal.db").counts == {"done": 10}


def test_malformed_line_fails_alone_naming_file_and_line(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --strict a malformed input line is one failed piece that says where it was."""
    write(folder / "in.jsonl", '{"n": 1}\n{"n": 2\n{"n": 3}\n')
    assert main(["run", "job.py", "--input", "in.jsonl", "--out", "out.jsonl"]) == 1
    out = records(folder / "out.jsonl")
    assert [r["ok"] for r in out] == [True, False, True]
    assert out[1]["provenance"] == "in.jsonl:2"
    assert "in.jsonl:2" in str(out[1]["error"])
    assert "#1 in.jsonl:2: MalformedInput: not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "files", "expected"),
    [
        (["run", "nope.py"], {}, ["job file nope.py does not exist", "shoal.Job"]),
        (
            ["run", "broken.py"],
            {"broken.py": "import shoal\n\ndef work(x:\n    return x\n"},
            ["broken.py, line 3", "fix the file"],
        ),
        (
            ["run", "raises.py"],
            {"raises.py": "import shoal\n\nVALUE = 1 / 0\n"},
            ["raises.py raised ZeroDivisionError at line 3", "fix the file"],
        ),
        (
            ["run", "empty.py"],
            {"empty.py": "import shoal\n"},
            ["empty.py defines no shoal.Job", "job = shoal.Job(work)"],
        ),
        (
            ["run", "two.py"],
            {"two.py": "import shoal\na = shoal.Job(str)\nb = shoal.Job(repr, name='bee')\n"},
            ["defines 2 jobs: a (named 'str'), b (named 'bee')", "shoal run two.py:a"],
        ),
        (
            ["run", "two.py:c"],
            {"two.py": "import shoal\na = shoal.Job(str)\nb = shoal.Job(repr, name='bee')\n"},
            ["has no job named 'c'", "shoal run two.py:a"],
        ),
        (["run", "job.py", "--rate", "10/parsec"], {}, ["'10/parsec' is not a rate", '"100/s"']),
        (["run", "job.py", "--concurrency", "0"], {}, ["--concurrency is at least 1"]),
        (["run", "job.py", "--timeout", "-1"], {}, ["give --timeout seconds"]),
        (["run", "job.py", "--backend", "warp"], {}, ["is not a backend", "'process'"]),
        (["run", "job.py", "--per-key", "2"], {}, ["no key function", "key="]),
        (["run", "job.py", "--input", "missing.jsonl"], {}, ["input missing.jsonl does not"]),
        (
            ["run", "job.py", "--input", "bad.jsonl", "--strict"],
            {"bad.jsonl": '{"n": 1}\n{"n": 2}\n{oops}\n'},
            ["bad.jsonl:3: not valid JSON", "leave out --strict"],
        ),
        (
            ["run", "job.py", "--input", "latin1.txt"],
            {"latin1.txt": None},
            ["latin1.txt:2: not UTF-8 text", "convert the file to UTF-8"],
        ),
        (["run", "job.py", "--report", "r.pdf"], {}, ["--report r.pdf", ".html, .md"]),
        (["status", "nothing.db"], {}, ["journal nothing.db does not exist"]),
        (["retry", "nothing.db"], {}, ["journal nothing.db does not exist"]),
    ],
)
def test_bad_input_is_one_paragraph_and_exit_2(
    folder: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    files: dict[str, str | None],
    expected: list[str],
) -> None:
    """Bad usage or input: exit 2, a message that names the file (and line) and the fix, no
    traceback, and the journal a good run left is not touched."""
    assert main(["run", "job.py", "--quiet"]) == 0
    journal = folder / "squares.shoal.db"
    before = digest(journal)
    for name, text in files.items():
        if text is None:
            (folder / name).write_bytes(b"fine\ncaf\xe9\n")
        else:
            (folder / name).write_text(text)
    assert main(args) == 2
    err = capsys.readouterr().err
    for fragment in expected:
        assert fragment in err
    assert "Traceback" not in err
    assert err.count("error:") == 1
    assert digest(journal) == before


def test_debug_shows_the_traceback(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--debug adds the traceback to the one-paragraph error."""
    write(folder / "raises.py", "import shoal\n\nVALUE = 1 / 0\n")
    assert main(["run", "raises.py", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "ZeroDivisionError" in err


def test_a_journal_of_another_job_is_refused_and_fresh_starts_over(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another job's journal: exit 2 naming --fresh, the file untouched; --fresh reuses it."""
    write(
        folder / "other.py",
        """
        import shoal

        def other(x):
            return x

        job = shoal.Job(other, name="squares")
        """,
    )
    assert main(["run", "job.py", "--quiet"]) == 0
    before = digest(folder / "squares.shoal.db")
    assert main(["run", "other.py", "--input", "other.py"]) == 2
    err = capsys.readouterr().err
    assert "holds a run of another job" in err
    assert "--fresh" in err
    assert digest(folder / "squares.shoal.db") == before
    assert main(["run", "other.py", "--input", "other.py", "--fresh", "--quiet"]) == 0


def test_dry_run_prints_the_plan_and_runs_nothing(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run prints the input, the journal and the resource check; nothing runs."""
    write(folder / "in.csv", "n,name\n1,a\n2,b\n3\n")
    code = main(["run", "job.py", "--input", "in.csv", "--dry-run", "--concurrency", "3"])
    assert code == 0
    out = capsys.readouterr().out
    assert "in.csv (CSV, 3 items; 1 malformed, first at in.csv:4)" in out
    assert "squares.shoal.db (new)" in out
    assert "Limits(concurrency=3)" in out
    assert "workers:" in out
    assert "items:        3" in out
    assert not (folder / "squares.shoal.db").exists()
    assert ran(folder) == []


def test_input_kinds_csv_text_folder_and_job_names(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CSV rows arrive as dicts, text as lines, a folder as its files (paths); NAME picks a job
    by variable name or by job name; the journal records how to run it again."""
    write(
        folder / "kinds.py",
        """
        from pathlib import Path

        import shoal

        def describe(item):
            if isinstance(item, Path):
                return ["path", item.name]
            return [type(item).__name__, item]

        rows = shoal.Job(describe, name="describe")
        other = shoal.Job(str, name="other")
        """,
    )
    write(folder / "in.csv", "n,name\n1,a\n2,b\n")
    write(folder / "in.txt", "first\n\nsecond\n")
    (folder / "tree" / "sub").mkdir(parents=True)
    (folder / "tree" / "a.txt").write_text("a")
    (folder / "tree" / "sub" / "b.txt").write_text("b")
    for spec, source, expected in [
        (
            "kinds.py:rows",
            "in.csv",
            [["dict", {"n": "1", "name": "a"}], ["dict", {"n": "2", "name": "b"}]],
        ),
        ("kinds.py:describe", "in.txt", [["str", "first"], ["str", "second"]]),
        ("kinds.py:rows", "tree", [["path", "a.txt"], ["path", "b.txt"]]),
    ]:
        args = ["run", spec, "--input", source, "--out", "o.jsonl", "--no-journal", "--quiet"]
        assert main(args) == 0, capsys.readouterr().err
        assert [r["value"] for r in records(folder / "o.jsonl")] == expected
    assert main(["run", "kinds.py:rows", "--input", "in.txt", "--rate", "100/s", "--quiet"]) == 0
    meta = read_meta(folder / "describe.shoal.db")["cli"]
    assert meta["jobfile"] == str(folder / "kinds.py")
    assert meta["name"] == "rows"
    assert meta["overrides"] == {"rate": ["100/s"]}
    assert meta["total"] == 2


def test_retry_after_standard_input_uses_the_stored_items(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Standard input cannot be read twice: `shoal retry` runs the failed pieces from the items
    the journal stored."""
    (folder / "FAIL").write_text("2")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"1\n2\n3\n")))
    assert main(["run", "job.py", "--input", "-", "--quiet"]) == 1
    (folder / "FAIL").unlink()
    (folder / "ran.log").unlink()
    assert main(["retry", "squares.shoal.db", "--quiet", "--out", "o.jsonl"]) == 0
    assert ran(folder) == [2]
    assert [r["value"] for r in records(folder / "o.jsonl")] == [1, 4, 9]


def test_items_that_raise_mid_run_stop_it_with_exit_2(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """items() that raises while the run pulls it: exit 2 naming the job file and line; what
    settled is kept, and the same command resumes once it is fixed."""
    write(
        folder / "gen.py",
        """
        import os
        import shoal

        def work(n):
            return n

        job = shoal.Job(work, name="gen")

        def items():
            for n in range(5):
                if n == 3 and not os.path.exists("fixed"):
                    raise RuntimeError("the source went away")
                yield n
        """,
    )
    assert main(["run", "gen.py", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "RuntimeError at line 13 in gen.py: the source went away" in err
    assert "Traceback" not in err
    (folder / "fixed").touch()
    assert main(["run", "gen.py", "--quiet", "--out", "o.jsonl"]) == 0
    assert [r["value"] for r in records(folder / "o.jsonl")] == [0, 1, 2, 3, 4]


def test_library_on_interrupt_drains_and_resumes(tmp_path: Path) -> None:
    """Job.run(on_interrupt=...): the first Ctrl-C lets the pieces in flight finish, then
    KeyboardInterrupt; the journal then resumes with every piece run exactly once."""
    import asyncio

    ran_items: list[int] = []
    presses: list[int] = []

    async def work(n: int) -> int:
        if n == 5:
            os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.01)
        ran_items.append(n)
        return n

    job = shoal.Job(work, limits=shoal.Limits(concurrency=3))
    with pytest.raises(KeyboardInterrupt):
        job.run(range(40), journal=tmp_path / "j.db", on_interrupt=presses.append)
    assert presses == [1]
    first = list(ran_items)
    assert 5 in first
    assert len(first) < 40
    assert read_status(tmp_path / "j.db").counts == {"done": len(first)}
    run = job.run(range(40), journal=tmp_path / "j.db")
    assert run.ok
    assert [o.value for o in run.outcomes] == list(range(40))
    assert sorted(ran_items) == list(range(40))  # nothing ran twice, nothing was lost


# ---------------------------------------------------------------------- status and report


def test_status_while_a_run_is_writing(
    folder: Path, capsys: pytest.CaptureFixture[str], children: list[subprocess.Popen[str]]
) -> None:
    """`shoal status` reads a journal that a live run is writing: counts, rate, ETA."""
    env = {"JOB_DELAY": "0.05", "JOB_ITEMS": "200"}
    child = start(children, "run", "job.py", "--concurrency", "4", cwd=folder, env=env)
    wait_for_done(folder / "squares.shoal.db", 8, child)
    assert main(["status", "squares.shoal.db"]) == 0
    out = capsys.readouterr().out
    assert f"running (process {child.pid})" in out
    assert "of 200 items" in out
    assert "ETA:" in out
    assert "left)" in out
    child.send_signal(signal.SIGINT)
    child.communicate(timeout=30)


def test_report_formats(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`shoal report` renders a journal as text, Markdown, JSON, and HTML into a file."""
    (folder / "FAIL").write_text("2")
    assert main(["run", "job.py", "--quiet"]) == 1
    capsys.readouterr()
    assert main(["report", "squares.shoal.db"]) == 0
    assert "squares" in capsys.readouterr().out
    assert main(["report", "squares.shoal.db", "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("#")
    assert main(["report", "squares.shoal.db", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["succeeded"] == 9
    assert data["counts"]["failed"] == 1
    pytest.importorskip("matplotlib")
    assert main(["report", "squares.shoal.db", "--out", "r.html"]) == 0
    assert (folder / "r.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert main(["report", "squares.shoal.db", "--out", "r.pdf"]) == 2


def test_extend_report_adds_the_jobs_table(folder: Path) -> None:
    """A job file's extend_report(report, run) runs before --report is written."""
    write(
        folder / "ext.py",
        """
        import shoal

        def double(x):
            return int(x) * 2

        job = shoal.Job(double, name="double")

        def items():
            return ["1", "2", "3"]

        def extend_report(report, run):
            rows = [{"value": v} for v in sorted(run.values, reverse=True)]
            report.add_table("Largest values", rows)
        """,
    )
    assert main(["run", "ext.py", "--report", "r.md", "--quiet", "--no-journal"]) == 0
    text = (folder / "r.md").read_text()
    assert "| value |\n| ---: |\n| 6 |\n| 4 |\n| 2 |" in text.split("## Largest values")[1]


# ---------------------------------------------------------------------- help


@pytest.mark.parametrize("command", ["run", "status", "report", "retry"])
def test_help_on_every_command_has_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`shoal --help` and `shoal COMMAND --help` exit 0 and show examples."""
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"shoal {command}" in out
    assert main(["--help"]) == 0
    assert f"shoal {command} " in capsys.readouterr().out
    assert main([]) == 2  # no command: usage, exit 2


# ---------------------------------------------------------------------- real subprocesses


def test_subprocess_exit_codes_and_stdin(folder: Path) -> None:
    """As a real process: 0, 1 and 2, and JSON Lines read from standard input."""
    ok = shoal_cmd("run", "job.py", "--quiet", cwd=folder)
    assert ok.returncode == 0, ok.stderr
    (folder / "FAIL").write_text("1")
    failed = shoal_cmd("run", "job.py", "--fresh", "--quiet", cwd=folder)
    assert failed.returncode == 1
    bad = shoal_cmd("run", "job.py", "--rate", "10/parsec", cwd=folder)
    assert bad.returncode == 2
    assert "10/parsec" in bad.stderr
    assert "Traceback" not in bad.stderr
    piped = shoal_cmd(
        "run",
        "job.py",
        "--input",
        "-",
        "--input-format",
        "jsonl",
        "--out",
        "-",
        "--no-journal",
        "--quiet",
        cwd=folder,
        stdin='{"n": 4}\n{"n": 5}\n',
    )
    assert piped.returncode == 0, piped.stderr
    out = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [(r["value"], r["provenance"]) for r in out] == [(16, "<stdin>:1"), (25, "<stdin>:2")]


@pytest.mark.parametrize("presses", [1, 2])
def test_sigint_then_resume_loses_and_duplicates_nothing(
    folder: Path, children: list[subprocess.Popen[str]], presses: int
) -> None:
    """Ctrl-C (SIGINT to a real child) mid-run: exit 130 with the resume command; running the
    same command again completes with exactly one result per input. After one Ctrl-C the
    pieces in flight finished, so nothing ran twice."""
    env = {"JOB_DELAY": "0.05", "JOB_ITEMS": "120"}
    args = ("run", "job.py", "--concurrency", "4", "--out", "out.jsonl")
    child = start(children, *args, cwd=folder, env=env)
    wait_for_done(folder / "squares.shoal.db", 4, child)
    child.send_signal(signal.SIGINT)
    if presses == 2:
        time.sleep(0.02)
        child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert "resume (from this folder): shoal run job.py --concurrency 4 --out out.jsonl" in err
    assert "Traceback" not in err
    assert not (folder / "out.jsonl").exists()
    shown = shoal_cmd("status", "squares.shoal.db", cwd=folder).stdout
    assert "interrupted" in shown
    assert f"resume:   shoal run {folder / 'job.py'} --concurrency 4 --journal" in shown
    status = read_status(folder / "squares.shoal.db")
    assert status.run_status == "interrupted"
    first = ran(folder)
    assert len(first) < 120
    if presses == 1:
        assert status.counts.get("done", 0) == len(first)  # everything that ran is journaled

    again = shoal_cmd(*args, cwd=folder, env=env)
    assert again.returncode == 0, again.stderr
    out = records(folder / "out.jsonl")
    assert [r["index"] for r in out] == list(range(120))
    assert [r["value"] for r in out] == [n * n for n in range(120)]
    everything = ran(folder)
    assert sorted(set(everything)) == list(range(120))  # nothing lost
    if presses == 1:
        assert len(everything) == 120  # nothing ran twice


PROCESS_JOB = """
import os

import shoal
from helper import square


def work(n):
    return [square(int(n)), os.getpid()]


job = shoal.Job(
    work, name="squares_in_processes", backend={backend}, limits=shoal.Limits(concurrency=2)
)


def items():
    return range(8)
"""


@pytest.mark.parametrize(
    "backend", ['"process"', 'shoal.backends.ProcessBackend(start_method="spawn")']
)
def test_process_backend_imports_the_job_file_in_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """A job file's work function (which imports a module beside it) runs in worker processes,
    whether they fork from a fork server started before the file was loaded, or spawn."""
    shoal.map(abs, [-1, -2], backend="process")  # the fork server is up before the job loads
    folder = tmp_path / "jobs"
    folder.mkdir()
    write(folder / "helper.py", "def square(n):\n    return n * n\n")
    write(folder / "pjob.py", PROCESS_JOB.format(backend=backend))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "jobs/pjob.py", "--out", "o.jsonl", "--quiet", "--no-journal"]) == 0
    values = [r["value"] for r in records(tmp_path / "o.jsonl")]
    assert [v[0] for v in values] == [n * n for n in range(8)]  # type: ignore[index]
    assert os.getpid() not in {v[1] for v in values}  # type: ignore[index]


def test_process_backend_from_a_subprocess(tmp_path: Path) -> None:
    """`shoal run --backend process` as a real process, on a job file with a sibling import."""
    write(tmp_path / "helper.py", "def square(n):\n    return n * n\n")
    write(tmp_path / "pjob.py", PROCESS_JOB.format(backend='"thread"'))
    done = shoal_cmd("run", "pjob.py", "--backend", "process", "--out", "o.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    values = [r["value"] for r in records(tmp_path / "o.jsonl")]
    assert [v[0] for v in values] == [n * n for n in range(8)]  # type: ignore[index]


def test_the_job_files_summary_is_printed_after_the_run(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """summary(run) is printed on standard output; one that raises is reported and skipped."""
    (folder / "job.py").write_text(
        JOB + "\n\ndef summary(run):\n    return f'sum of squares: {sum(run.values)}'\n"
    )
    assert main(["run", "job.py", "--no-journal"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "sum of squares: 285"
    assert "10 done" in err
    assert main(["run", "job.py", "--no-journal", "--quiet"]) == 0
    assert capsys.readouterr().out == ""  # --quiet: nothing but errors

    (folder / "job.py").write_text(JOB + "\n\ndef summary(run):\n    return 1 / 0\n")
    assert main(["run", "job.py", "--no-journal"]) == 0  # the run succeeded all the same
    out, err = capsys.readouterr()
    assert out == ""
    assert "summary() in job.py raised ZeroDivisionError" in err
    assert "the run is saved" in err
