"""The command line: ``shoal run``, ``status``, ``report`` and ``retry`` (parse -> config -> run
-> render).

A job file is a Python file that defines a :class:`shoal.Job` at module level; it may also define
``items()`` (the input when no ``--input`` is given), ``summary(run)`` (text printed after the
run) and ``extend_report(report, run)`` (called before ``--report`` is written, to add the job's
own tables). It is imported under a name that
worker processes can import too (see ``shoal._jobfiles``), so its work functions run on every
backend.

Exit codes: 0 every piece succeeded; 1 some pieces failed (the others are saved); 2 bad usage or
bad input (one paragraph that names the file, the line and the fix; nothing ran, no journal was
changed); 130 interrupted (Ctrl-C: the pieces in flight finish, everything settled is in the
journal, and the message says how to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.util
import json
import math
import os
import re
import shlex
import signal
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TextIO

from . import _jobfiles
from ._exceptions import ShoalError
from ._job import Job, _progress_subscribers
from ._journal import Journal, JournalError, _alive, read_meta, read_status
from ._limits import Rate
from ._outcome import Run
from ._plan import human_duration, plan
from ._split import Malformed, MalformedInput, Provenance, Sourced, json_line
from ._split import csv as split_csv
from ._split import files as split_files
from ._split import jsonl as split_jsonl
from ._split import lines as split_lines
from ._version import __version__
from .backends import check_name

OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130

META_KEY = "cli"  # the journal's meta entry where `shoal run` records how to run the job again
JOURNAL_SUFFIX = ".shoal.db"
INPUT_FORMATS = ("auto", "jsonl", "csv", "lines")
REPORT_FORMATS = {"text": "txt", "txt": "txt", "md": "md", "json": "json", "html": "html"}
REPORT_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".json": "json", ".txt": "txt"}


class CliError(ShoalError):
    """Bad usage or bad input: the message names the file, the line and the fix (exit 2)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


# ---------------------------------------------------------------------- the parser

_MAIN_EXAMPLES = """\
examples:
  shoal run jobs/scan.py --input repos.txt --out results.jsonl --report report.html
  shoal status scan.shoal.db
  shoal report scan.shoal.db --format md
  shoal retry scan.shoal.db

Run `shoal COMMAND --help` for a command's options and examples."""

_RUN_EXAMPLES = """\
examples:
  shoal run jobs/scan.py --input repos.txt
  shoal run jobs/llm.py:summarise --input questions.jsonl --rate 50/s --out answers.jsonl
  shoal run jobs/scan.py --input src/ --concurrency 8 --report report.html
  cat urls.txt | shoal run jobs/fetch.py --input - --per-key 2
  shoal run jobs/scan.py --input repos.txt --dry-run

Running the same command again resumes: the pieces the journal holds are read back, the others
run. --fresh starts over.

job files: JOBFILE defines a shoal.Job at module level (NAME picks one when there are several,
by variable name or job name); it may define items() (the input when --input is not given),
summary(run) (text printed after the run) and extend_report(report, run) (called before
--report is written).

exit codes: 0 all pieces succeeded, 1 some failed (the rest are saved), 2 bad usage or input,
130 interrupted (Ctrl-C lets the pieces in flight finish; a second Ctrl-C cancels them)."""

_STATUS_EXAMPLES = """\
examples:
  shoal status scan_file.shoal.db
  watch -n 2 shoal status scan_file.shoal.db     # while the run is going

Safe while a run is writing the journal: it never blocks the run."""

_REPORT_EXAMPLES = """\
examples:
  shoal report scan_file.shoal.db                       # text, on the terminal
  shoal report scan_file.shoal.db --format md
  shoal report scan_file.shoal.db --out report.html     # the format follows the extension"""

_RETRY_EXAMPLES = """\
examples:
  shoal retry scan_file.shoal.db
  shoal retry scan_file.shoal.db --retries 5 --out results.jsonl

Runs the job recorded in the journal by `shoal run` (its file, NAME and options) over the same
input again: pieces that succeeded are read back, the failed ones run again. Options given here
override the recorded ones."""


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")

    parser = argparse.ArgumentParser(
        prog="shoal",
        description="Run a big job as many small pieces at once, and never lose a piece.",
        epilog=_MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"shoal {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        parents=[common],
        help="run a job file over its input",
        description="Run the shoal.Job in JOBFILE over every item of the input.",
        epilog=_RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("jobfile", metavar="JOBFILE[:NAME]", help="a Python file defining a Job")
    _add_input_options(run)
    _add_limit_options(run)
    journal = run.add_argument_group("journal")
    journal.add_argument(
        "--journal",
        metavar="PATH",
        help=f"the journal file (default: ./<job name>{JOURNAL_SUFFIX} in this folder)",
    )
    journal.add_argument(
        "--no-journal", action="store_true", help="do not journal the run (no resume)"
    )
    journal.add_argument(
        "--fresh", action="store_true", help="ignore what the journal holds and start over"
    )
    _add_output_options(run)
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (the resource check) and run nothing",
    )

    status = commands.add_parser(
        "status",
        parents=[common],
        help="where a journaled run stands (works while it runs)",
        description="Counts by state, rate, ETA and the last errors of a journal's latest run.",
        epilog=_STATUS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("journal", metavar="JOURNAL")

    report = commands.add_parser(
        "report",
        parents=[common],
        help="the report of a journaled run",
        description="The report of a journal's latest run: text, Markdown, JSON or HTML.",
        epilog=_REPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("journal", metavar="JOURNAL")
    report.add_argument(
        "--format",
        choices=("text", "md", "json", "html"),
        help="the format (default: the --out extension's, else text)",
    )
    report.add_argument("--out", metavar="PATH", help="write it to this file instead")

    retry = commands.add_parser(
        "retry",
        parents=[common],
        help="run a journal's failed pieces again",
        description="Run the failed pieces of a journal again, with the job recorded in it.",
        epilog=_RETRY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    retry.add_argument("journal", metavar="JOURNAL")
    _add_input_options(retry, for_retry=True)
    _add_limit_options(retry)
    _add_output_options(retry)
    # `shoal llm` is defined in shoal.llm (nothing heavy is imported until it runs).
    from .llm._cli import add_parser as add_llm_parser

    add_llm_parser(commands, [common])
    return parser


def _add_input_options(parser: argparse.ArgumentParser, *, for_retry: bool = False) -> None:
    group = parser.add_argument_group("input")
    group.add_argument(
        "--input",
        metavar="PATH|-",
        help=(
            "the input again (default: the one the run used)"
            if for_retry
            else "items from a JSONL (.jsonl, .ndjson), CSV (.csv) or text file (a line each), "
            "a folder (its files), or - for standard input (default: the job file's items())"
        ),
    )
    group.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        default=None,
        help="how to read --input (default: by its extension; standard input: lines)",
    )
    group.add_argument(
        "--strict",
        action="store_true",
        help="a malformed input line stops everything before it starts (default: that line "
        "becomes a failed piece naming file and line)",
    )


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits (override the job's own)")
    group.add_argument(
        "--concurrency", type=_count("--concurrency"), metavar="N", help="attempts in flight"
    )
    group.add_argument(
        "--per-key", type=_count("--per-key"), metavar="N", help="attempts in flight per key"
    )
    group.add_argument(
        "--rate",
        type=_rate,
        action="append",
        metavar="SPEC",
        help='starts per period: "100/s", "600/min", "10/2s", "1/500ms" or a number per '
        "second (repeat it for several rates that must all hold)",
    )
    group.add_argument(
        "--retries",
        type=_retries,
        metavar="N",
        help="re-tries after the first attempt (3: up to 4 attempts)",
    )
    group.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="per attempt")
    group.add_argument(
        "--backend",
        type=_backend,
        metavar="NAME",
        help="auto, async, thread, process, dask or ray",
    )
    group.add_argument(
        "--chaos",
        type=_chaos,
        metavar="SPEC",
        help="test the job's resilience: fail, throttle and stall a seeded share of calls, "
        'e.g. "fail=0.2,throttle=0.1,slow=0.05,seed=1" (also stall=SECONDS, '
        "retry_after=SECONDS); see shoal.testing.chaos",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--out",
        metavar="PATH",
        help="write the results as JSON Lines in input order (- for standard output)",
    )
    group.add_argument(
        "--report", metavar="PATH", help="write the report: .html, .md, .json or .txt"
    )
    group.add_argument(
        "--quiet", action="store_true", help="no progress and no summary (errors still show)"
    )


# Option values are checked as they are parsed: a bad one stops everything with exit code 2.


def _count(option: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number; give {option} a whole number of at least 1"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(
                f"{text!r} is too small: {option} is at least 1 (1 runs one attempt at a time)"
            )
        return value

    return parse


def _retries(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number; give --retries the number of re-tries after the "
            "first attempt (0 tries once)"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is negative; --retries counts re-tries after the first attempt (0 tries "
            "once)"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds > 0; give --timeout seconds, e.g. 30 or 0.5"
        )
    return value


def _rate(text: str) -> str:
    try:
        Rate.parse(float(text) if _is_number(text) else text)
    except (TypeError, ValueError) as exc:
        fix = str(exc).split("; ", 1)[-1]
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate; {fix}") from None
    return text


_CHAOS_KEYS = {"fail", "throttle", "slow", "seed", "stall", "retry_after"}


def _chaos(text: str) -> dict[str, float]:
    """``--chaos fail=0.2,throttle=0.1,slow=0.05,seed=1``, checked as chaos() checks it."""
    from .testing import chaos  # only when asked for

    spec: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in _CHAOS_KEYS:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a chaos setting; give --chaos NAME=VALUE pairs separated by "
                f"commas, with NAME one of {', '.join(sorted(_CHAOS_KEYS))} (e.g. "
                '"fail=0.2,throttle=0.1,slow=0.05,seed=1")'
            )
        try:
            spec[name] = int(value) if name == "seed" else float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r}: {value.strip()!r} is not a number"
                + (" (seed is a whole number)" if name == "seed" else "")
            ) from None
    try:
        chaos(_noop, **spec)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def _noop(item: object) -> object:
    return item


def with_chaos(job: Job[Any, Any], spec: dict[str, float] | None) -> Job[Any, Any]:
    """A copy of ``job`` whose work misbehaves as ``--chaos`` says (the journal is the same)."""
    if not spec:
        return job
    from .testing import chaos

    new = copy.copy(job)
    new.work = chaos(job.work, **spec)  # type: ignore[arg-type]
    return new


def _backend(text: str) -> str:
    try:
        return check_name(text)
    except (ValueError, ImportError, ShoalError) as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("backend=", "", 1)) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, or a bad option (argparse printed why)
        return exc.code if isinstance(exc.code, int) else USAGE
    commands: dict[str, Callable[[argparse.Namespace, list[str]], int]] = {
        "run": _cmd_run,
        "status": _cmd_status,
        "report": _cmd_report,
        "retry": _cmd_retry,
        "llm": _cmd_llm,
    }
    try:
        return commands[args.command](args, args_list)
    except CliError as exc:
        _error(str(exc), exc.cause if args.debug else None)
        return USAGE
    except KeyboardInterrupt:
        if getattr(args, "running", False):  # a Ctrl-C after the run's own handling of one
            print("\nshoal: interrupted", file=sys.stderr)
        else:
            print("\nshoal: interrupted before anything ran; nothing changed", file=sys.stderr)
        return INTERRUPTED
    except (JournalError, MalformedInput) as exc:
        _error(str(exc), exc if args.debug else None)
        return USAGE
    except Exception as exc:  # a bug of ours or of the job's: one paragraph, the trace on --debug
        _error(
            f"{type(exc).__name__}: {exc}"
            + ("" if args.debug else " (--debug shows the traceback)"),
            exc if args.debug else None,
        )
        return USAGE


def entry() -> NoReturn:
    """The ``shoal`` program: :func:`main`, then exit with its code.

    After an interrupted run has said where things stand, a further Ctrl-C is ignored: the
    process is on its way out with code 130, and a Ctrl-C at that moment would otherwise end it
    by the signal instead (code -2 to the shell, as if nothing had been handled).
    """
    code = main()
    if code == INTERRUPTED:
        with contextlib.suppress(ValueError):  # not on the main thread
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


def _cmd_llm(args: argparse.Namespace, argv: list[str]) -> int:
    from .llm._cli import run as run_llm

    return run_llm(args)


def _error(message: str, show: BaseException | None) -> None:
    if show is not None:
        traceback.print_exception(show, file=sys.stderr)
    print(f"shoal: error: {message}", file=sys.stderr)


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- job files


def _split_spec(spec: str) -> tuple[str, str | None]:
    """``JOBFILE[:NAME]`` as the file and the name (a path with a colon of its own stays whole)."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, name = spec.rsplit(":", 1)
    if not name or any(sep in name for sep in ("/", "\\")):
        return spec, None
    return path, name


def load_job(path: str, name: str | None) -> tuple[ModuleType, Job[Any, Any], str]:
    """Import the job file at ``path`` and pick its job; returns the module, the job and the
    variable it is bound to.

    Raises:
        CliError: no such file, a file that does not import, no job, or no job called ``name``.
    """
    file = Path(path)
    if not file.exists():
        raise CliError(
            f"job file {path} does not exist; pass the path of a Python file that defines a "
            "shoal.Job at module level (e.g. `job = shoal.Job(work)`)"
        )
    if file.is_dir() or file.suffix != ".py":
        raise CliError(
            f"job file {path} is not a Python file (.py); pass the path of a Python file that "
            "defines a shoal.Job at module level"
        )
    try:
        module = _jobfiles.load(file)
    except SyntaxError as exc:
        where = f"{path}, line {exc.lineno}" if exc.lineno else path
        code = f" ({exc.text.strip()!r})" if exc.text and exc.text.strip() else ""
        raise CliError(
            f"job file {where}: {exc.msg}{code}; fix the file (`python -m py_compile {path}` "
            "shows the error too)",
            exc,
        ) from None
    except Exception as exc:
        raise CliError(
            f"job file {path} raised {type(exc).__name__}{_at_line(exc, file)} while it was "
            f"loaded: {exc}; fix the file (--debug shows the traceback)",
            exc,
        ) from None
    jobs: dict[str, Job[Any, Any]] = {}
    for var, value in vars(module).items():
        if isinstance(value, Job) and not var.startswith("_") and value not in jobs.values():
            jobs[var] = value
    if not jobs:
        raise CliError(
            f"job file {path} defines no shoal.Job at module level; add one, e.g. "
            "`job = shoal.Job(work)` (a Job made inside a function or under "
            '`if __name__ == "__main__":` is not seen)'
        )
    listed = ", ".join(
        var if job.name == var else f"{var} (named {job.name!r})" for var, job in jobs.items()
    )
    if name is None:
        if len(jobs) > 1:
            first = next(iter(jobs))
            raise CliError(
                f"job file {path} defines {len(jobs)} jobs: {listed}; pick one with "
                f"JOBFILE:NAME, e.g. `shoal run {path}:{first}`"
            )
        var, job = next(iter(jobs.items()))
        return module, job, var
    if name in jobs:
        return module, jobs[name], name
    for var, job in jobs.items():
        if job.name == name:
            return module, job, var
    raise CliError(
        f"job file {path} has no job named {name!r}; it defines: {listed}. Pick one of them "
        f"after the colon, e.g. `shoal run {path}:{next(iter(jobs))}`"
    )


def _at_line(exc: BaseException, file: Path) -> str:
    """`` at line N``: the deepest line of ``file`` in the exception's traceback (or "")."""
    target = os.path.abspath(file)
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.abspath(frame.filename) == target:
            line = frame.lineno
    return f" at line {line}" if line else ""


# ---------------------------------------------------------------------- overrides


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The limit options given on the command line, as JSON data (recorded in the journal)."""
    found: dict[str, Any] = {}
    for name in ("concurrency", "per_key", "rate", "retries", "timeout", "backend"):
        value = getattr(args, name, None)
        if value is not None:
            found[name] = value
    return found


def apply_overrides(job: Job[Any, Any], overrides: dict[str, Any], where: str) -> Job[Any, Any]:
    """A copy of ``job`` with the command line's limits, retries, timeout and backend.

    Raises:
        CliError: a value the job cannot take (``--per-key`` for a job without a key function).
    """
    if not overrides:
        return job
    try:
        limits = job.limits
        changes: dict[str, Any] = {
            k: overrides[k] for k in ("concurrency", "per_key") if k in overrides
        }
        if "rate" in overrides:
            rates = [float(r) if _is_number(r) else r for r in overrides["rate"]]
            changes["rate"] = rates
        if changes:
            limits = limits.replace(**changes)
        if limits.per_key is not None and job.key is None:
            raise CliError(
                f"--per-key {limits.per_key}: the job in {where} has no key function, so every "
                "item has the same key; give the Job a key= (e.g. `key=lambda url: "
                "urlsplit(url).hostname`), or use --concurrency for a global limit"
            )
        retry = job.retry
        if "retries" in overrides:
            retry = dataclasses.replace(retry, attempts=int(overrides["retries"]) + 1)
    except (TypeError, ValueError) as exc:
        raise CliError(f"{exc}; fix the option, or the job in {where}", exc) from None
    new = copy.copy(job)  # the same job, so the same fingerprint: a resume may change the pace
    new.limits = limits
    new.retry = retry
    if "timeout" in overrides:
        new.timeout = float(overrides["timeout"])
    if "backend" in overrides:
        new.backend = str(overrides["backend"])
    return new


# ---------------------------------------------------------------------- input


class Input:
    """The items of a run, read again from the start each time it is iterated."""

    def __init__(self, make: Callable[[], Iterator[Any]], label: str) -> None:
        self._make = make
        self.label = label

    def __iter__(self) -> Iterator[Any]:
        return self._make()


class SizedInput(Input):
    """An :class:`Input` whose number of items is known (the plan and the ETA use it)."""

    def __init__(self, make: Callable[[], Iterator[Any]], label: str, count: int) -> None:
        super().__init__(make, label)
        self.count = count

    def __len__(self) -> int:
        return self.count


def _format_of(path: Path, given: str | None) -> str:
    if given and given != "auto":
        return given
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "lines"


_FORMAT_NAMES = {"jsonl": "JSON Lines", "csv": "CSV", "lines": "text"}


def open_input(
    spec: str | None,
    fmt: str | None,
    *,
    strict: bool,
    module: ModuleType,
    jobfile: str,
    stdin: TextIO | None = None,
) -> Input | Iterable[Any]:
    """The items: from ``spec`` (a file, a folder, ``-``), else the job file's ``items()``.

    Files are read once here, to count them and to find any line that cannot be read (an error
    under ``strict``), and again lazily by the run.

    Raises:
        CliError: a missing file, no input at all, or (``strict``) a malformed line.
    """
    if spec is None:
        make = getattr(module, "items", None)
        if not callable(make):
            raise CliError(
                "no input: pass --input PATH (a JSONL, CSV or text file, a folder, or - for "
                f"standard input), or define items() in {jobfile} to give the default input"
            )
        try:
            items = make()
        except Exception as exc:
            raise CliError(
                f"items() in {jobfile} raised {type(exc).__name__}{_at_line(exc, Path(jobfile))}: "
                f"{exc}; fix it, or pass --input",
                exc,
            ) from None
        if not isinstance(items, Iterable):
            raise CliError(
                f"items() in {jobfile} returned a {type(items).__name__}, not an iterable of "
                "items; return a list or yield them"
            )
        return items
    if spec == "-":
        return _stdin_input(stdin or sys.stdin, fmt, strict=strict)
    path = Path(spec)
    if not path.exists():
        raise CliError(
            f"input {spec} does not exist; pass an existing file (JSONL, CSV or text), a folder "
            "(its files become the items), or - for standard input"
        )
    if path.is_dir():

        def walk() -> Iterator[Any]:
            for file in split_files(path):
                assert isinstance(file, Path)
                yield Sourced(file, Provenance(str(file)))

        return SizedInput(walk, f"{spec} (its files)", sum(1 for _ in split_files(path)))
    kind = _format_of(path, fmt)
    reader: Callable[[], Iterator[Any]]
    if kind == "jsonl":
        reader = lambda: split_jsonl(path)  # noqa: E731 - read again by each iteration
    elif kind == "csv":
        reader = lambda: split_csv(path)  # noqa: E731
    else:
        reader = lambda: split_lines(path)  # noqa: E731
    count = 0
    malformed: list[Malformed] = []
    try:
        for piece in reader():
            count += 1
            if isinstance(piece, Malformed):
                malformed.append(piece)
                if strict:
                    break
    except UnicodeDecodeError as exc:
        raise CliError(
            f"{_bad_utf8(path)}: not UTF-8 text ({exc.reason}); convert the file to UTF-8 (e.g. "
            f"`iconv -f latin1 -t utf-8 {spec}`)",
            exc,
        ) from None
    except OSError as exc:
        raise CliError(f"input {spec} cannot be read ({exc}); fix its permissions", exc) from None
    if malformed and strict:
        raise CliError(_malformed_message(malformed[0], _FORMAT_NAMES[kind]))
    label = f"{spec} ({_FORMAT_NAMES[kind]}, {count:,} items"
    if malformed:
        label += f"; {len(malformed)} malformed, first at {malformed[0].provenance}"
    return SizedInput(reader, label + ")", count)


def _malformed_message(bad: Malformed, kind: str) -> str:
    return (
        f"{bad.provenance}: {bad.error}. Fix that line of the {kind} input, or leave out --strict "
        "to let it fail as a piece of its own while the other lines run"
    )


def _bad_utf8(path: Path) -> str:
    """``path:line`` of the first line that is not UTF-8."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return f"{path}:{number}"
    return str(path)


def _stdin_input(stream: TextIO, fmt: str | None, *, strict: bool) -> Input:
    kind = "jsonl" if fmt == "jsonl" else "csv" if fmt == "csv" else "lines"
    if kind == "csv":
        raise CliError(
            "--input - --input-format csv: CSV is read from files only; save it to a file and "
            "pass its path, or send JSON Lines (--input-format jsonl) or lines"
        )
    raw = getattr(stream, "buffer", None)

    def read() -> Iterator[Any]:
        source: Iterable[Any] = raw if raw is not None else stream
        for number, line in enumerate(source, start=1):
            where = Provenance("<stdin>", line=number)
            if isinstance(line, bytes):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield Malformed(f"not UTF-8 text ({exc.reason})", where)
                    continue
            else:
                text = line
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            yield Sourced(text, where) if kind == "lines" else json_line(text, where)

    label = "standard input (" + ("JSON Lines" if kind == "jsonl" else "lines") + ")"
    if not strict:
        return Input(read, label)
    pieces = list(read())  # standard input can be read only once: hold it to check it all
    for piece in pieces:
        if isinstance(piece, Malformed):
            raise CliError(_malformed_message(piece, "JSON Lines" if kind == "jsonl" else "text"))
    return SizedInput(lambda: iter(pieces), label, len(pieces))


# ---------------------------------------------------------------------- outputs


def _check_out(path: str | None) -> None:
    if path is None or path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise CliError(f"--out {path} is a folder; pass a file path such as {path}/results.jsonl")
    if not target.parent.exists():
        raise CliError(
            f"--out {path}: the folder {target.parent} does not exist; create it or pass "
            "another path"
        )


def _check_report(path: str | None) -> None:
    if path is None:
        return
    target = Path(path)
    fmt = REPORT_SUFFIXES.get(target.suffix.lower())
    if fmt is None:
        raise CliError(
            f"--report {path}: the extension says which format to write; use .html, .md, "
            ".json or .txt"
        )
    if target.is_dir() or not target.parent.exists():
        raise CliError(
            f"--report {path}: the folder {target.parent} does not exist (or the path is a "
            "folder); pass a file path in an existing folder"
        )
    if fmt == "html" and importlib.util.find_spec("matplotlib") is None:
        raise CliError(
            f"--report {path}: the HTML report draws its charts with matplotlib, which is not "
            "installed: pip install 'shoal[report]' (or write .md, .json or .txt)"
        )


def _write_out(run: Run[Any], path: str) -> None:
    if path == "-":
        from ._outcome import _record

        for outcome in run.outcomes:
            sys.stdout.write(json.dumps(_record(outcome), ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    fmt = "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "jsonl"
    run.export(path, format=fmt)


def _write_report(run: Run[Any], path: str, module: ModuleType, jobfile: str) -> None:
    report = run.report
    extend = getattr(module, "extend_report", None)
    if callable(extend):
        try:
            extend(report, run)
        except Exception as exc:
            raise CliError(
                f"extend_report() in {jobfile} raised {type(exc).__name__}"
                f"{_at_line(exc, Path(jobfile))}: {exc}; the run itself is saved (the journal, "
                "--out): fix extend_report, then run the same command again to write the report "
                "(what is in the journal does not run again)",
                exc,
            ) from None
    report.save(path)


# ---------------------------------------------------------------------- run and retry


def _journal_path(args: argparse.Namespace, job: Job[Any, Any]) -> str | None:
    if args.no_journal:
        if args.journal:
            raise CliError("--journal and --no-journal contradict each other; pass one of them")
        return None
    if args.journal:
        return str(args.journal)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", job.name).strip("._") or "job"
    return f"{safe}{JOURNAL_SUFFIX}"


def _cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    jobfile, name = _split_spec(args.jobfile)
    _check_out(args.out)
    _check_report(args.report)
    module, job, var = load_job(jobfile, name)
    overrides = _overrides(args)
    job = with_chaos(apply_overrides(job, overrides, jobfile), args.chaos)
    journal = _journal_path(args, job)
    items = open_input(
        args.input, args.input_format, strict=args.strict, module=module, jobfile=jobfile
    )
    if args.dry_run:
        _print_dry_run(job, var, jobfile, items, journal, fresh=args.fresh)
        return OK
    meta = {
        "jobfile": os.path.abspath(jobfile),
        "name": name,
        "overrides": overrides,
        "input": args.input,  # as given (provenance names it so), read from "cwd"
        "cwd": os.getcwd(),
        "input_format": args.input_format,
        "total": len(items) if isinstance(items, Sized) else None,
    }
    resume_command = shlex.join(["shoal", "run", *[a for a in argv[1:] if a != "--fresh"]])
    if args.input == "-":
        resume_command = f"(the same input) | {resume_command}"
    return _execute(
        args,
        job,
        module,
        jobfile,
        items,
        journal=journal,
        meta=meta,
        resume=not args.fresh,
        resume_command=resume_command,
        retry=False,
    )


def _cmd_retry(args: argparse.Namespace, argv: list[str]) -> int:
    path = args.journal
    if not Path(path).is_file():
        raise CliError(f"journal {path} does not exist; pass the journal file a run wrote")
    recorded = read_meta(path).get(META_KEY)
    if not isinstance(recorded, dict) or not recorded.get("jobfile"):
        raise CliError(
            f"journal {path} was not written by `shoal run`, so it does not say which job file "
            "to run; retry it from Python with job.retry_failed(journal)"
        )
    jobfile = str(recorded["jobfile"])
    name = recorded.get("name")
    if not Path(jobfile).is_file():
        raise CliError(
            f"the job file the journal {path} was written by, {jobfile}, no longer exists; put "
            "it back, or run it from its new place with `shoal run NEWPATH --journal "
            f"{path}`"
        )
    _check_out(args.out)
    _check_report(args.report)
    module, job, _ = load_job(jobfile, name if isinstance(name, str) else None)
    overrides = dict(recorded.get("overrides") or {})
    overrides.update(_overrides(args))
    job = with_chaos(apply_overrides(job, overrides, jobfile), args.chaos)
    status = read_status(path)
    spec = args.input
    fmt = args.input_format
    if spec is None:
        spec = recorded.get("input")
        fmt = fmt or recorded.get("input_format")
        cwd = recorded.get("cwd")
        if spec not in (None, "-") and isinstance(cwd, str) and cwd != os.getcwd():
            # Read it from where the run read it; the same path keeps the pieces' provenance
            # (and so the ids of malformed lines) when it is run from the same folder.
            spec = os.path.join(cwd, str(spec))
    items: Input | Iterable[Any] | None
    if spec == "-" and args.input is None:
        items = None  # standard input cannot be read again: the items stored in the journal
    elif spec is not None and args.input is None and not Path(str(spec)).exists():
        raise CliError(
            f"the input of the run, {spec}, no longer exists; pass it again with --input PATH"
        )
    else:
        items = open_input(
            None if spec is None else str(spec),
            fmt,
            strict=args.strict,
            module=module,
            jobfile=jobfile,
        )
    meta = dict(recorded)
    meta["overrides"] = overrides
    failed = status.counts.get("failed", 0)
    _say(args, f"shoal: retrying {failed:,} failed pieces of {path}")
    resume_command = shlex.join(["shoal", "retry", *argv[1:]])
    return _execute(
        args,
        job,
        module,
        jobfile,
        items,
        journal=path,
        meta=meta,
        resume=True,
        resume_command=resume_command,
        retry=True,
    )


def _execute(
    args: argparse.Namespace,
    job: Job[Any, Any],
    module: ModuleType,
    jobfile: str,
    items: Input | Iterable[Any] | None,
    *,
    journal: str | None,
    meta: dict[str, Any],
    resume: bool,
    resume_command: str,
    retry: bool,
) -> int:
    options = None if journal is None else Journal(journal, meta={META_KEY: meta})
    progress = () if args.quiet else _progress_subscribers(True)

    def on_interrupt(presses: int) -> None:
        if presses == 1:
            print(
                "\nshoal: stopping: no new pieces start; the ones in flight finish "
                "(Ctrl-C again cancels them)",
                file=sys.stderr,
                flush=True,
            )
        elif presses == 2:
            print("\nshoal: cancelling the pieces in flight", file=sys.stderr, flush=True)

    args.running = True
    try:
        if retry:
            assert options is not None
            run: Run[Any] = job.retry_failed(
                options, items=items, subscribers=progress, on_interrupt=on_interrupt
            )
        else:
            assert items is not None
            run = job.run(
                items,
                journal=options,
                resume=resume,
                subscribers=progress,
                on_interrupt=on_interrupt,
            )
    except KeyboardInterrupt:
        _print_interrupted(journal, resume_command)
        return INTERRUPTED
    except JournalError as exc:
        raise CliError(_journal_hint(str(exc)), exc) from None
    except MalformedInput as exc:
        raise CliError(str(exc), exc) from None
    except Exception as exc:  # the run itself stopped: the items raised, a subscriber failed...
        notes = " ".join(getattr(exc, "__notes__", ()))
        kept = f"what settled is kept in {journal}" if journal else "nothing was journaled"
        raise CliError(
            f"the run stopped: {type(exc).__name__}{_at_line(exc, Path(jobfile))} in {jobfile}"
            f": {exc}{' ' + notes if notes else ''}; {kept}. Fix the cause and run the same "
            "command again (--debug shows the traceback)",
            exc,
        ) from None
    if args.out:
        _write_out(run, args.out)
    if args.report:
        _write_report(run, args.report, module, jobfile)
    if not args.quiet:
        _print_summary(run, journal, args)
        if args.out != "-":  # standard output is the results' then
            _print_job_summary(run, module, jobfile)
    return OK if run.ok else FAILED


def _print_job_summary(run: Run[Any], module: ModuleType, jobfile: str) -> None:
    """What the job file's ``summary(run)`` says of the result, on standard output. A summary
    that raises is reported and skipped: the run itself is done and saved."""
    summarize = getattr(module, "summary", None)
    if not callable(summarize):
        return
    try:
        text = summarize(run)
    except Exception as exc:
        print(
            f"shoal: summary() in {jobfile} raised {type(exc).__name__}"
            f"{_at_line(exc, Path(jobfile))}: {exc} (the run is saved; nothing else is affected)",
            file=sys.stderr,
        )
        return
    if text:
        print(str(text).rstrip("\n"), flush=True)


def _journal_hint(message: str) -> str:
    return message.replace(
        "pass resume=False to start over in",
        "pass --fresh to start over in",
    )


def _print_summary(run: Run[Any], journal: str | None, args: argparse.Namespace) -> None:
    s = run.stats
    out = sys.stderr
    read_back = f" ({s.resumed:,} read back from the journal)" if s.resumed else ""
    print(
        f"shoal: {s.total:,} pieces: {s.succeeded:,} done, {s.failed:,} failed{read_back} "
        f"in {human_duration(s.wall_time, ms_digits=0)}",
        file=out,
    )
    failures = run.failures
    for failure in failures[:5]:
        outcome = run.outcomes[failure.index]
        where = f" {outcome.provenance}" if outcome.provenance is not None else ""
        message = _error_line(failure.error.type, failure.error.message, outcome.provenance)
        print(f"  #{failure.index}{where}: {_truncate(message, 160)}", file=out)
    if len(failures) > 5:
        print(f"  ... and {len(failures) - 5:,} more", file=out)
    if args.out and args.out != "-":
        print(f"results: {args.out}", file=out)
    if args.report:
        print(f"report:  {args.report}", file=out)
    if journal is not None:
        print(f"journal: {journal}", file=out)
        if failures:
            print(f"run the failed pieces again: shoal retry {shlex.quote(journal)}", file=out)
    out.flush()


def _print_interrupted(journal: str | None, resume_command: str) -> None:
    out = sys.stderr
    if journal is None:
        print(
            "shoal: interrupted. Nothing was journaled (--no-journal): running again starts "
            f"over: {resume_command}",
            file=out,
        )
        return
    try:
        status = read_status(journal)
    except JournalError:
        print(f"shoal: interrupted. Resume with: {resume_command}", file=out)
        return
    counts = status.counts
    left = counts.get("pending", 0) + counts.get("running", 0)
    print(
        f"shoal: interrupted; the journal {journal} holds {counts.get('done', 0):,} done and "
        f"{counts.get('failed', 0):,} failed pieces"
        + (f" ({left:,} started but not finished will run again)" if left else "")
        + ".",
        file=out,
    )
    print(f"resume (from this folder): {resume_command}", file=out)
    out.flush()


def _print_dry_run(
    job: Job[Any, Any],
    var: str,
    jobfile: str,
    items: Input | Iterable[Any],
    journal: str | None,
    *,
    fresh: bool,
) -> None:
    count = len(items) if isinstance(items, Sized) else None
    label = items.label if isinstance(items, Input) else "items() of the job file"
    print(f"job:          {job.name} ({var} in {jobfile})")
    timeout = "none" if job.timeout is None else f"{job.timeout:g} s"
    print(
        f"policy:       {job.limits!r}, up to {job.retry.attempts} attempts per piece, "
        f"timeout {timeout}"
    )
    print(f"input:        {label}")
    print("journal:      " + _journal_state(job, journal, fresh=fresh))
    print(plan(job, count))
    print("dry run: nothing was run")


def _journal_state(job: Job[Any, Any], journal: str | None, *, fresh: bool) -> str:
    if journal is None:
        return "none (--no-journal): nothing is kept for a resume"
    if not Path(journal).exists():
        return f"{journal} (new)"
    try:
        status = read_status(journal)
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=30.0)
        try:
            row = conn.execute(
                "SELECT fingerprint FROM runs ORDER BY run_id DESC LIMIT 1"
            ).fetchone()
        finally:
            conn.close()
    except (JournalError, sqlite3.Error) as exc:
        return f"{journal}: cannot be used ({exc})"
    done, failed = status.counts.get("done", 0), status.counts.get("failed", 0)
    if fresh:
        return f"{journal} (--fresh: its {done + failed:,} settled pieces are deleted first)"
    if row is not None and row[0] != job.fingerprint():
        return (
            f"{journal} holds a run of another job ({status.job!r}): the run would refuse it; "
            "pass --fresh to start over in it, or --journal to use another file"
        )
    return f"{journal} (resumes: {done:,} done and {failed:,} failed pieces are read back)"


# ---------------------------------------------------------------------- status and report


def _cmd_status(args: argparse.Namespace, argv: list[str]) -> int:
    path = args.journal
    status = read_status(path)
    meta = read_meta(path).get(META_KEY)
    total = meta.get("total") if isinstance(meta, dict) else None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        run_id, started, finished, pid = conn.execute(
            "SELECT run_id, started, finished, pid FROM runs ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        this_run = conn.execute(
            "SELECT count(*) FROM pieces WHERE run_id = ? AND state IN ('done', 'failed')",
            (run_id,),
        ).fetchone()[0]
        recent = conn.execute(
            "SELECT count(*) FROM pieces WHERE run_id = ? AND state IN ('done', 'failed') "
            "AND finished >= ?",
            (run_id, time.time() - 60),
        ).fetchone()[0]
        errors = conn.execute(
            "SELECT idx, provenance, error_type, error_message FROM pieces WHERE state = 'failed' "
            "ORDER BY finished DESC LIMIT 5"
        ).fetchall()
    finally:
        conn.close()
    counts = status.counts
    state = status.run_status
    if state == "running" and not _alive(pid):
        state = f"stopped without closing the journal (process {pid} is gone)"
    elif state == "running":
        state = f"running (process {pid})"
    now = time.time()
    elapsed = (finished or now) - started
    print(f"journal:  {path}")
    print(f"job:      {status.job}")
    print(f"run:      #{run_id}, {state}, started {_ago(now - started)}")
    shown = ", ".join(
        f"{counts.get(k, 0):,} {k}"
        for k in ("done", "failed", "running", "pending")
        if counts.get(k, 0) or k in ("done", "failed")
    )
    of = f" of {total:,} items" if isinstance(total, int) else ""
    print(f"pieces:   {shown}{of}")
    rate = None
    if status.run_status == "running" and recent and elapsed > 0:
        rate = recent / min(60.0, elapsed)
    elif this_run and elapsed > 0:
        rate = this_run / elapsed
    print("rate:     " + ("unknown (nothing settled yet)" if rate is None else f"{rate:,.1f}/s"))
    settled = counts.get("done", 0) + counts.get("failed", 0)
    if isinstance(total, int):
        left = max(0, total - settled)
        if left == 0:
            print("ETA:      done")
        elif status.run_status == "running" and rate:
            print(f"ETA:      {human_duration(left / rate, ms_digits=0)} ({left:,} left)")
        else:
            print(f"ETA:      not running ({left:,} left; `shoal run` again to resume)")
    if status.run_status != "running" and isinstance(meta, dict):
        left_over = counts.get("pending", 0) + counts.get("running", 0)
        if status.run_status in ("interrupted", "aborted") or left_over:
            print(f"resume:   {_resume_from_meta(meta, path)}")
    if errors:
        print("last errors:")
        for idx, provenance, etype, message in errors:
            where = f" {provenance}" if provenance else ""
            print(f"  #{idx}{where}: {_truncate(_error_line(etype, message, provenance), 160)}")
    return OK


def _resume_from_meta(meta: dict[str, Any], journal: str) -> str:
    """The `shoal run` command that resumes the run a journal's meta describes."""
    spec = str(meta.get("jobfile", "JOBFILE"))
    if meta.get("name"):
        spec += f":{meta['name']}"
    command = ["shoal", "run", spec]
    source = meta.get("input")
    if isinstance(source, str):
        cwd = meta.get("cwd")
        if source != "-" and isinstance(cwd, str):
            source = os.path.join(cwd, source)
        command += ["--input", source]
        if meta.get("input_format"):
            command += ["--input-format", str(meta["input_format"])]
    for name, value in (meta.get("overrides") or {}).items():
        flag = "--" + name.replace("_", "-")
        for one in value if isinstance(value, list) else [value]:
            command += [flag, str(one)]
    command += ["--journal", os.path.abspath(journal)]
    text = shlex.join(command)
    return f"(the same input) | {text}" if source == "-" else text


def _cmd_report(args: argparse.Namespace, argv: list[str]) -> int:
    from ._report import Report

    fmt = args.format
    if args.out is not None:
        suffix_fmt = REPORT_SUFFIXES.get(Path(args.out).suffix.lower())
        if fmt is None and suffix_fmt is None:
            raise CliError(
                f"--out {args.out}: the extension says which format to write; use .html, .md, "
                ".json or .txt, or pass --format"
            )
        _check_out(args.out)
    wants_html = fmt == "html" or (
        fmt is None and args.out is not None and args.out.lower().endswith((".html", ".htm"))
    )
    if wants_html and importlib.util.find_spec("matplotlib") is None:
        raise CliError(
            "the HTML report draws its charts with matplotlib, which is not installed: "
            "pip install 'shoal[report]' (or use --format md, json or text)"
        )
    if not Path(args.journal).is_file():
        raise CliError(f"journal {args.journal} does not exist; pass the journal file a run wrote")
    report = Report.from_journal(args.journal)
    if args.out is not None:
        report.save(args.out, format=None if fmt is None else REPORT_FORMATS[fmt])
        print(f"report: {args.out}", file=sys.stderr)
        return OK
    renderers = {
        None: report.to_text,
        "text": report.to_text,
        "md": report.to_markdown,
        "json": report.to_json,
        "html": report.to_html,
    }
    sys.stdout.write(renderers[fmt]().rstrip("\n") + "\n")
    return OK


# ---------------------------------------------------------------------- small helpers


def _ago(seconds: float) -> str:
    return f"{human_duration(max(0.0, seconds), ms_digits=0)} ago"


def _error_line(etype: str | None, message: str | None, provenance: object) -> str:
    """``Type: first line of the message``, without the provenance the message repeats."""
    text = (message or "").splitlines()[0] if message else ""
    if provenance is not None and text.startswith(f"{provenance}: "):
        text = text[len(f"{provenance}: ") :]
    name = (etype or "Exception").rsplit(".", 1)[-1] if etype else "Exception"
    return f"{name}: {text}" if text else name


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":  # pragma: no cover - `python -m shoal` goes through __main__.py
    entry()
