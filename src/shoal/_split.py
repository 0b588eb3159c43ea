"""Splitters: a big job's input as pieces, lazily, each with where it came from.

Every splitter is a generator: it reads only as far as the run pulls, so a file of any size costs
memory for one window of pieces. Pieces read from files carry a :class:`Provenance` (file and
line, or the part of a text), which follows the piece into its outcome, the journal and the
report, so a failure or a finding always says where its input was.

A line that cannot be read (bad JSON, a CSV row with the wrong number of fields) becomes a piece
that fails on its own, naming the file and the line, while the others go on; with
``strict=True`` the whole file is checked first and the first bad line stops the run before it
starts.
"""

from __future__ import annotations

import csv as csv_module
import fnmatch
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# When no tokenizer is given, text is measured at this many characters per token: the usual rule
# of thumb for English with the common BPE encodings. Chunks made this way say so
# (``Provenance.estimated``).
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a piece's input came from.

    Attributes:
        source: The file (or a name for an in-memory text).
        line: The line number in that file, from 1, when the piece is one line.
        span: ``(start, end)`` character offsets in the text, end excluded, for a text chunk.
        estimated: Whether a chunk's token size was estimated (no tokenizer was given).
        pages: ``(first, last)`` page numbers, from 1, both included, for a chunk of a PDF.
    """

    source: str
    line: int | None = None
    span: tuple[int, int] | None = None
    estimated: bool = False
    pages: tuple[int, int] | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.source}:{self.line}"
        if self.span is not None:
            return f"{self.source} chars {self.span[0]}-{self.span[1]}"
        if self.pages is not None:
            first, last = self.pages
            return (
                f"{self.source} page {first}"
                if first == last
                else (f"{self.source} pages {first}-{last}")
            )
        return self.source


@dataclass(frozen=True, slots=True)
class Sourced(Generic[T]):
    """An item with its provenance: the work gets ``value``; the outcome keeps ``provenance``."""

    value: T
    provenance: Provenance


@dataclass(frozen=True, slots=True)
class Malformed:
    """An input line that could not be read: it becomes a failed piece, naming where it was."""

    error: str
    provenance: Provenance


class MalformedInput(ValueError):
    """Raised for a piece whose input could not be read (and by ``strict=True`` splitters)."""


def unwrap(item: Any) -> tuple[Any, Provenance | None, MalformedInput | None]:
    """What a splitter's piece holds: ``(value, provenance, None)`` for an item that came with
    its provenance (``(item, None, None)`` for a plain one), and ``(malformed, provenance,
    error)`` for an input line that could not be read (it fails with ``error``, unsent)."""
    kind = type(item)
    if kind is Sourced:
        return item.value, item.provenance, None
    if kind is Malformed:
        return item, item.provenance, MalformedInput(f"{item.provenance}: {item.error}")
    return item, None, None


def plain(items: Sequence[Any]) -> bool:
    """Whether none of ``items`` came from a splitter (the common case: nothing to unwrap)."""
    kinds = set(map(type, items))
    return Sourced not in kinds and Malformed not in kinds


def _lines(path: str | os.PathLike[str], encoding: str) -> Iterator[tuple[int, str]]:
    with open(path, encoding=encoding, newline="") as fh:
        for number, line in enumerate(fh, start=1):
            yield number, line.rstrip("\r\n")


def lines(
    path: str | os.PathLike[str], *, encoding: str = "utf-8", skip_blank: bool = True
) -> Iterator[Sourced[str]]:
    """Each line of a text file (without its line end), with file and line number."""
    source = os.fspath(path)
    for number, text in _lines(path, encoding):
        if skip_blank and not text.strip():
            continue
        yield Sourced(text, Provenance(source, line=number))


def jsonl(
    path: str | os.PathLike[str], *, encoding: str = "utf-8", strict: bool = False
) -> Iterator[Sourced[Any] | Malformed]:
    """Each JSON value of a JSON Lines file, with file and line number (blank lines skipped).

    Args:
        strict: Check every line first; the first bad one raises :class:`MalformedInput`
            before anything runs. Otherwise a bad line is a piece that fails on its own.
    """
    source = os.fspath(path)
    if strict:
        for bad in _jsonl(source, encoding):
            if isinstance(bad, Malformed):
                raise MalformedInput(_fix(bad, "JSON Lines"))
    yield from _jsonl(source, encoding)


def _jsonl(source: str, encoding: str) -> Iterator[Sourced[Any] | Malformed]:
    for number, text in _lines(source, encoding):
        if text.strip():
            yield json_line(text, Provenance(source, line=number))


def json_line(text: str, where: Provenance) -> Sourced[Any] | Malformed:
    """One line of JSON Lines: its value, or why it is not JSON (``where`` names the line)."""
    try:
        return Sourced(json.loads(text), where)
    except json.JSONDecodeError as exc:
        return Malformed(f"not valid JSON ({exc.msg} at column {exc.colno})", where)


def csv(
    path: str | os.PathLike[str],
    *,
    encoding: str = "utf-8",
    strict: bool = False,
    delimiter: str = ",",
) -> Iterator[Sourced[dict[str, str]] | Malformed]:
    """Each row of a CSV file with a header row, as a dict, with file and line number.

    A row with more or fewer fields than the header is malformed.

    Args:
        strict: Check every row first; the first bad one raises :class:`MalformedInput`.
    """
    source = os.fspath(path)
    if strict:
        for bad in _csv(source, encoding, delimiter):
            if isinstance(bad, Malformed):
                raise MalformedInput(_fix(bad, "CSV"))
    yield from _csv(source, encoding, delimiter)


def _csv(
    source: str, encoding: str, delimiter: str
) -> Iterator[Sourced[dict[str, str]] | Malformed]:
    with open(source, encoding=encoding, newline="") as fh:
        reader = csv_module.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv_module.Error as exc:
            yield Malformed(f"unreadable header ({exc})", Provenance(source, line=1))
            return
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv_module.Error as exc:
                yield Malformed(f"unreadable CSV ({exc})", Provenance(source, line=line))
                continue
            where = Provenance(source, line=reader.line_num)
            if not row or not any(field.strip() for field in row):
                continue
            if len(row) != len(header):
                yield Malformed(f"{len(row)} fields where the header has {len(header)}", where)
                continue
            yield Sourced(dict(zip(header, row, strict=True)), where)


def _fix(bad: Malformed, kind: str) -> str:
    return (
        f"{bad.provenance}: {bad.error}. Fix that line of the {kind} file, or pass strict=False "
        "to let it fail on its own while the other lines run"
    )


def files(
    root: str | os.PathLike[str],
    pattern: str = "*",
    *,
    group_by_dir: bool = False,
    skip: Iterable[str] = ("__pycache__", ".git"),
) -> Iterator[Path] | Iterator[list[Path]]:
    """The files under ``root`` whose names match ``pattern``, in a stable (sorted) order.

    Args:
        group_by_dir: One piece per folder (a list of its matching files) instead of per file.
        skip: Folder names not to enter.
    """
    base = Path(root)
    if not base.is_dir():
        raise NotADirectoryError(f"{base} is not a folder; pass the folder whose files to use")
    skipped = set(skip)
    if group_by_dir:
        return _grouped(base, pattern, skipped)
    return _walk(base, pattern, skipped)


def _walk(base: Path, pattern: str, skipped: set[str]) -> Iterator[Path]:
    for folder, names, found in os.walk(base):
        names[:] = sorted(n for n in names if n not in skipped)
        for name in sorted(found):
            if fnmatch.fnmatch(name, pattern):
                yield Path(folder) / name


def _grouped(base: Path, pattern: str, skipped: set[str]) -> Iterator[list[Path]]:
    for folder, names, found in os.walk(base):
        names[:] = sorted(n for n in names if n not in skipped)
        group = [Path(folder) / n for n in sorted(found) if fnmatch.fnmatch(n, pattern)]
        if group:
            yield group


def chunks(seq: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``size`` items of a sequence (the last may be shorter)."""
    _check_size("size", size)
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def batches(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Consecutive lists of ``n`` items of any iterable, pulled lazily (the last may be shorter)."""
    _check_size("n", n)
    iterator = iter(items)
    while batch := list(islice(iterator, n)):
        yield batch


def text_chunks(
    text: str,
    max_tokens: int,
    overlap: int = 0,
    *,
    count: Callable[[str], int] | None = None,
    source: str = "text",
) -> Iterator[Sourced[str]]:
    """A long text as chunks of at most ``max_tokens`` tokens, cut at paragraph, line or word
    breaks where it can, each overlapping the previous by about ``overlap`` tokens.

    Args:
        count: ``text -> tokens`` (e.g. a tiktoken encoding's ``len(enc.encode(t))``). Without
            it, a token is estimated as 4 characters, and each chunk's provenance says
            ``estimated=True``.
        source: A name for the text in provenance.
    """
    _check_size("max_tokens", max_tokens)
    if overlap < 0 or overlap >= max_tokens:
        raise ValueError(f"overlap={overlap!r}: must be >= 0 and less than max_tokens")
    estimated = count is None
    measure = count if count is not None else (lambda t: -(-len(t) // CHARS_PER_TOKEN))
    start = 0
    length = len(text)
    while start < length:
        end = _fit(text, start, max_tokens, measure)
        yield Sourced(text[start:end], Provenance(source, span=(start, end), estimated=estimated))
        if end >= length:
            return
        next_start = end
        if overlap:
            next_start = _back(text, start, end, overlap, measure)
        start = max(next_start, start + 1)


@dataclass(frozen=True, slots=True)
class PageRange:
    """Pages ``first`` to ``last`` (from 1, both included) of a PDF: what :func:`pages` hands the
    work. It is small and pickles, so the text is extracted by the worker, in parallel, not by
    the splitter.
    """

    path: str
    first: int
    last: int
    password: str | None = field(default=None, repr=False)

    def page_texts(self) -> list[tuple[int, str]]:
        """``(page number, text)`` for each page of the range (pypdf's text extraction)."""
        reader = _cached_reader(self.path, self.password)
        return [
            (number, reader.pages[number - 1].extract_text() or "")
            for number in range(self.first, self.last + 1)
        ]

    def text(self) -> str:
        """The range's text, pages separated by form feeds (``\\f``)."""
        return "\f".join(text for _, text in self.page_texts())

    def __len__(self) -> int:
        return self.last - self.first + 1


def pages(
    pdf_path: str | os.PathLike[str], per_chunk: int = 50, *, password: str | None = None
) -> Iterator[Sourced[PageRange]]:
    """A PDF as chunks of ``per_chunk`` pages (the last may be shorter), each a
    :class:`PageRange` with provenance ``file pages 51-100``. Needs the ``shoal[pdf]`` extra
    (pypdf).

    Only the page count is read here; each worker extracts its own pages' text
    (``chunk.text()`` or ``chunk.page_texts()``).

    Raises:
        shoal.ShoalError: pypdf is not installed (with the install command).
        MalformedInput: the file is not a readable PDF (named, with the reason), before any
            piece runs.
    """
    _check_size("per_chunk", per_chunk)
    source = os.fspath(pdf_path)
    count = len(_open_pdf(source, password).pages)
    for first in range(1, count + 1, per_chunk):
        last = min(first + per_chunk - 1, count)
        yield Sourced(
            PageRange(source, first, last, password), Provenance(source, pages=(first, last))
        )


_readers = threading.local()  # per thread: pypdf's readers are not made for sharing


def _cached_reader(path: str, password: str | None) -> Any:
    """A reader of ``path``, kept for this thread's next chunk of the same file (a worker runs
    many chunks of one PDF, and parsing its cross-reference table each time costs tens of
    milliseconds for a long document); opened again if the file changed."""
    stat = os.stat(path)
    key = (path, password, stat.st_mtime_ns, stat.st_size)
    cache: dict[tuple[Any, ...], Any] | None = getattr(_readers, "cache", None)
    if cache is None:
        cache = _readers.cache = {}
    reader = cache.get(key)
    if reader is None:
        reader = _open_pdf(path, password)
        if len(cache) >= 2:  # a chunk of another file: forget the oldest
            cache.pop(next(iter(cache)))
        cache[key] = reader
    return reader


def _open_pdf(path: str, password: str | None) -> Any:
    try:
        import pypdf
    except ImportError:
        from ._exceptions import ShoalError

        raise ShoalError(
            "shoal.split.pages() reads PDFs with pypdf, which is not installed: "
            "pip install 'shoal[pdf]'"
        ) from None
    try:
        reader = pypdf.PdfReader(path)
        encrypted = reader.is_encrypted
        opened = encrypted and password is not None and bool(reader.decrypt(password))
        if not encrypted or opened:
            len(reader.pages)  # reads the page tree now, so a broken file fails here
    except FileNotFoundError:
        raise MalformedInput(f"{path}: no such file; check the path") from None
    except Exception as exc:
        raise MalformedInput(
            f"{path} is not a readable PDF ({type(exc).__name__}: {exc}); check the file"
        ) from exc
    if encrypted and password is None:
        raise MalformedInput(
            f"{path}: the PDF is encrypted; pass its password: "
            "shoal.split.pages(path, password=...)"
        )
    if encrypted and not opened:
        raise MalformedInput(f"{path}: the password given does not open this PDF")
    return reader


_BREAKS = ("\n\n", "\n", ". ", " ")


def _fit(text: str, start: int, max_tokens: int, measure: Callable[[str], int]) -> int:
    """The end of the longest chunk from ``start`` that fits, preferring a natural break."""
    lo, hi = start + 1, len(text)
    if measure(text[start:hi]) <= max_tokens:
        return hi
    while lo < hi:  # the furthest end that still fits (token counts grow with the text)
        mid = (lo + hi + 1) // 2
        if measure(text[start:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    best = lo
    floor = start + (best - start) // 2  # do not give up more than half a chunk for a break
    for sep in _BREAKS:
        cut = text.rfind(sep, floor, best)
        if cut > start:
            return cut + len(sep)
    return best


def _back(text: str, start: int, end: int, overlap: int, measure: Callable[[str], int]) -> int:
    """Where the next chunk starts so that it repeats about ``overlap`` tokens."""
    lo, hi = start + 1, end
    while lo < hi:  # the earliest start whose tail to ``end`` fits in the overlap
        mid = (lo + hi) // 2
        if measure(text[mid:end]) <= overlap:
            hi = mid
        else:
            lo = mid + 1
    space = text.find(" ", lo, end)
    return space + 1 if space != -1 else lo


def _check_size(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be a whole number >= 1")
