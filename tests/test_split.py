"""Splitters: lazy pieces with provenance; bad lines fail alone or stop a strict run up front."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import _workers
import shoal
from shoal import split
from shoal.split import MalformedInput, Provenance, Sourced


async def echo(value: object) -> object:
    await asyncio.sleep(0)
    return value


def test_lines_carry_file_and_line(tmp_path: Path) -> None:
    """Each line comes with its file and line number; blank lines are skipped."""
    path = tmp_path / "notes.txt"
    path.write_text("first\n\n  \nsecond\r\nthird")
    pieces = list(split.lines(path))
    assert [p.value for p in pieces] == ["first", "second", "third"]
    assert [str(p.provenance) for p in pieces] == [f"{path}:1", f"{path}:4", f"{path}:5"]
    assert [p.value for p in split.lines(path, skip_blank=False)][:3] == ["first", "", "  "]


def test_outcomes_keep_provenance_and_work_gets_values(tmp_path: Path) -> None:
    """The work gets plain values; outcomes, failures and exports say where each came from."""
    path = tmp_path / "words.txt"
    path.write_text("alpha\nbeta\ngamma\n")

    async def shout(word: str) -> str:
        if word == "beta":
            raise ValueError("no beta")
        return word.upper()

    run = shoal.Job(shout, retry=shoal.Retry(attempts=1)).run(split.lines(path))
    assert run.values == ["ALPHA", "GAMMA"]
    assert [o.provenance for o in run.outcomes] == [
        Provenance(str(path), line=1),
        Provenance(str(path), line=2),
        Provenance(str(path), line=3),
    ]
    (failure,) = run.failures
    assert failure.provenance == Provenance(str(path), line=2)
    assert f"at {path}:2" in str(failure)
    exported = run.export(tmp_path / "out.jsonl").read_text().splitlines()
    assert f'"provenance": "{path}:3"' in exported[2]


def test_malformed_jsonl_line_fails_alone_naming_file_and_line(tmp_path: Path) -> None:
    """A bad JSON line is a failed piece that says where it is; the other lines run."""
    path = tmp_path / "requests.jsonl"
    path.write_text('{"n": 1}\n{"n": 2,,}\n\n[3]\n')
    seen: list[object] = []

    async def work(value: object) -> object:
        seen.append(value)
        return value

    run = shoal.Job(work, retry=shoal.Retry(attempts=3)).run(split.jsonl(path))
    assert seen == [{"n": 1}, [3]]
    assert [o.ok for o in run.outcomes] == [True, False, True]
    bad = run.outcomes[1]
    assert bad.attempts == 0
    assert bad.error is not None
    assert bad.error.type == "shoal._split.MalformedInput"
    assert bad.error.message.startswith(f"{path}:2: not valid JSON")
    assert bad.provenance == Provenance(str(path), line=2)


def test_strict_jsonl_stops_before_anything_runs(tmp_path: Path) -> None:
    """With strict=True the first bad line raises before any piece starts, saying the fix."""
    path = tmp_path / "requests.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\nnot json\n')
    seen: list[object] = []
    with pytest.raises(MalformedInput, match=rf"{path}:3: not valid JSON") as info:
        shoal.map(seen.append, split.jsonl(path, strict=True))
    assert "strict=False" in str(info.value)
    assert seen == []


def test_csv_rows_and_bad_rows(tmp_path: Path) -> None:
    """CSV rows come as dicts by header; a row with the wrong number of fields fails alone."""
    path = tmp_path / "prices.csv"
    path.write_text('shop,product,price\na,apple,"1,20"\nb,pear\n\nc,plum,3\n')
    pieces = list(split.csv(path))
    assert isinstance(pieces[0], Sourced)
    assert pieces[0].value == {"shop": "a", "product": "apple", "price": "1,20"}
    assert isinstance(pieces[1], split.Malformed)
    assert str(pieces[1].provenance) == f"{path}:3"
    assert "2 fields where the header has 3" in pieces[1].error
    assert isinstance(pieces[2], Sourced)
    assert str(pieces[2].provenance) == f"{path}:5"
    with pytest.raises(MalformedInput, match=rf"{path}:3"):
        list(split.csv(path, strict=True))
    run = shoal.Job(echo, retry=shoal.Retry(attempts=1)).run(split.csv(path))
    assert [o.ok for o in run.outcomes] == [True, False, True]


def test_files_in_stable_order_and_grouped(tmp_path: Path) -> None:
    """files() walks the tree in sorted order, matching a pattern, skipping caches."""
    for name in ("b/x.py", "a/y.py", "a/z.txt", "a/__pycache__/y.cpython.py", "top.py"):
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("")
    found = [p.relative_to(tmp_path).as_posix() for p in split.files(tmp_path, "*.py")]
    assert found == ["top.py", "a/y.py", "b/x.py"]
    groups = [
        [p.relative_to(tmp_path).as_posix() for p in group]
        for group in split.files(tmp_path, "*", group_by_dir=True)
    ]
    assert groups == [["top.py"], ["a/y.py", "a/z.txt"], ["b/x.py"]]
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        split.files(tmp_path / "top.py")


def test_batches_are_lazy() -> None:
    """batches() pulls only what it yields, so an endless generator is fine."""
    pulled = []

    def endless() -> Iterator[int]:
        for i in itertools.count():
            pulled.append(i)
            yield i

    first = list(itertools.islice(split.batches(endless(), 3), 2))
    assert first == [[0, 1, 2], [3, 4, 5]]
    assert len(pulled) == 6
    with pytest.raises(ValueError, match="n=0"):
        list(split.batches([1], 0))


@given(st.lists(st.integers()), st.integers(1, 10))
def test_split_then_combine_is_the_identity(items: list[int], n: int) -> None:
    """Property: flattening batches() or chunks() gives back the input, in order."""
    assert [x for batch in split.batches(items, n) for x in batch] == items
    assert [x for chunk in split.chunks(items, n) for x in chunk] == items
    assert all(len(b) == n for b in list(split.batches(items, n))[:-1])


@given(
    text=st.text(alphabet=st.sampled_from("ab \n."), min_size=0, max_size=400),
    max_tokens=st.integers(1, 30),
)
def test_text_chunks_cover_the_text_within_the_limit(text: str, max_tokens: int) -> None:
    """Property: without overlap the chunks are the text cut in order; each fits the limit."""
    pieces = list(split.text_chunks(text, max_tokens))
    assert "".join(p.value for p in pieces) == text
    spans = [p.provenance.span for p in pieces]
    assert all(span is not None for span in spans)
    for piece in pieces:
        assert -(-len(piece.value) // split.CHARS_PER_TOKEN) <= max_tokens
        assert piece.provenance.estimated


def test_text_chunks_overlap_and_a_real_counter() -> None:
    """With a tokenizer (here: words) chunks respect its counts and overlap as asked."""
    words = [f"w{i}" for i in range(100)]
    text = " ".join(words)

    def count(t: str) -> int:
        return len(t.split())

    pieces = list(split.text_chunks(text, 10, overlap=3, count=count, source="doc"))
    assert all(count(p.value) <= 10 for p in pieces)
    assert not any(p.provenance.estimated for p in pieces)
    assert pieces[0].value.split()[-3:] == pieces[1].value.split()[:3]
    covered = set()
    for piece in pieces:
        covered.update(piece.value.split())
    assert covered == set(words)
    assert str(pieces[1].provenance).startswith("doc chars ")
    with pytest.raises(ValueError, match="overlap"):
        list(split.text_chunks(text, 10, overlap=10))


def test_provenance_goes_into_the_journal(tmp_path: Path) -> None:
    """A journaled run records each piece's provenance, and a resume keeps it."""
    path = tmp_path / "lines.txt"
    path.write_text("one\ntwo\n")
    db = tmp_path / "run.db"
    job = shoal.Job(echo)
    job.run(split.lines(path), journal=db)
    conn = sqlite3.connect(db)
    try:
        stored = conn.execute("SELECT idx, provenance FROM pieces ORDER BY idx").fetchall()
    finally:
        conn.close()
    assert stored == [(0, f"{path}:1"), (1, f"{path}:2")]
    resumed = job.run(split.lines(path), journal=db)
    assert resumed.stats.resumed == 2
    assert [o.provenance for o in resumed.outcomes] == [
        Provenance(str(path), line=1),
        Provenance(str(path), line=2),
    ]


# ------------------------------------------------------------------------------------- pages


def test_pages_chunks_a_pdf_and_workers_extract_their_own_pages(tmp_path: Path) -> None:
    from _pdf import write_pdf

    texts = [[f"Page {n} says hello", "(and more)"] for n in range(1, 124)]
    pdf = write_pdf(tmp_path / "long.pdf", texts)
    chunks = list(split.pages(pdf, per_chunk=50))
    assert [(c.value.first, c.value.last) for c in chunks] == [(1, 50), (51, 100), (101, 123)]
    assert [str(c.provenance) for c in chunks] == [
        f"{pdf} pages 1-50",
        f"{pdf} pages 51-100",
        f"{pdf} pages 101-123",
    ]
    assert len(chunks[2].value) == 23

    run = shoal.Job(_workers.first_and_last_lines, backend="process").run(
        split.pages(pdf, per_chunk=50)
    )
    assert run.values == [
        ("Page 1 says hello", "Page 50 says hello"),
        ("Page 51 says hello", "Page 100 says hello"),
        ("Page 101 says hello", "Page 123 says hello"),
    ]
    assert [str(o.provenance) for o in run.outcomes] == [str(c.provenance) for c in chunks]
    assert "(and more)" in chunks[0].value.text()
    assert chunks[0].value.text().count("\f") == 49


def test_pages_of_a_file_that_is_not_a_pdf_fails_before_the_run(tmp_path: Path) -> None:
    bad = tmp_path / "notes.pdf"
    bad.write_text("just text\n")
    with pytest.raises(split.MalformedInput, match=r"notes\.pdf is not a readable PDF"):
        list(split.pages(bad))
    with pytest.raises(split.MalformedInput, match="no such file"):
        list(split.pages(tmp_path / "missing.pdf"))
    with pytest.raises(ValueError, match="per_chunk=0"):
        list(split.pages(bad, per_chunk=0))


def test_pages_of_an_encrypted_pdf_needs_its_password(tmp_path: Path) -> None:
    import pypdf

    from _pdf import write_pdf

    plain = write_pdf(tmp_path / "plain.pdf", [["secret page one"], ["two"], ["three"]])
    writer = pypdf.PdfWriter(clone_from=str(plain))
    writer.encrypt(user_password="pw", algorithm="RC4-128")
    locked = tmp_path / "locked.pdf"
    with locked.open("wb") as fh:
        writer.write(fh)
    with pytest.raises(split.MalformedInput, match=r"locked\.pdf: the PDF is encrypted"):
        list(split.pages(locked))
    with pytest.raises(split.MalformedInput, match="does not open"):
        list(split.pages(locked, password="wrong"))
    (chunk,) = split.pages(locked, per_chunk=5, password="pw")
    assert chunk.value.first == 1 and chunk.value.last == 3
    assert "secret page one" in chunk.value.text()
    assert "pw" not in repr(chunk.value)  # the password stays out of logs and reports


def test_page_ranges_are_journaled_without_their_password(tmp_path: Path) -> None:
    from _pdf import write_pdf

    pdf = write_pdf(tmp_path / "doc.pdf", [["one"], ["two"], ["three"]])
    journal = tmp_path / "run.db"
    chunks = list(split.pages(pdf, per_chunk=2, password="not-a-real-secret"))
    first = shoal.Job(len).run(chunks, journal=journal)
    assert first.values == [2, 1]
    again = shoal.Job(len).run(chunks, journal=journal)
    assert again.stats.resumed == 2 and again.values == [2, 1]
    stored = sqlite3.connect(journal).execute("SELECT item FROM pieces ORDER BY idx").fetchall()
    assert len(stored) == 2
    assert all("not-a-real-secret" not in row[0] for row in stored)
    assert "doc.pdf" in stored[0][0]


def test_a_pdf_changed_between_chunks_is_read_again(tmp_path: Path) -> None:
    """Readers are kept for the next chunk of the same file, but not past a change to it."""
    from _pdf import write_pdf

    pdf = write_pdf(tmp_path / "doc.pdf", [["first version"], ["page two"]])
    (chunk,) = split.pages(pdf, per_chunk=5)
    assert "first version" in chunk.value.text()
    assert "first version" in chunk.value.text()  # the kept reader
    write_pdf(pdf, [["second version, longer than before"], ["page two"]])
    assert "second version" in chunk.value.text()


def test_limited_mode_gets_a_splitters_values_and_keeps_provenance(tmp_path: Path) -> None:
    """batch_size over split.jsonl: the work gets lists of values; a line that is not JSON is
    left out of its call and fails alone, naming its place."""
    data = tmp_path / "numbers.jsonl"
    data.write_text("1\n2\nnot json\n4\n5\n")
    calls: list[list[int]] = []

    def doubles(group: list[int]) -> list[int]:
        calls.append(list(group))
        return [2 * x for x in group]

    run = shoal.Job(doubles, batch_size=3).run(split.jsonl(data))
    assert calls == [[1, 2], [4, 5]]
    assert [o.value for o in run.outcomes] == [2, 4, None, 8, 10]
    assert [str(o.provenance) for o in run.outcomes] == [f"{data}:{n}" for n in range(1, 6)]
    (bad,) = run.failures
    assert bad.index == 2 and f"{data}:3: not valid JSON" in bad.error.message

    async def adoubles(group: list[int]) -> list[int]:
        return [2 * x for x in group]

    again = shoal.Job(adoubles, batch_size=3).run(split.jsonl(data))
    assert [o.value for o in again.outcomes] == [2, 4, None, 8, 10]
    assert [str(o.provenance) for o in again.outcomes] == [str(o.provenance) for o in run.outcomes]
