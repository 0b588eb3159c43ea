"""Splitters: turn a big input into pieces, lazily, each with its provenance.

    shoal.split.lines("notes.txt")          # each line, with file and line number
    shoal.split.jsonl("requests.jsonl")     # each JSON value; a bad line fails on its own
    shoal.split.csv("prices.csv")           # each row as a dict
    shoal.split.files("src", "*.py")        # each file of a tree (group_by_dir=True: per folder)
    shoal.split.chunks(seq, 100)            # slices of a sequence
    shoal.split.batches(iterable, 100)      # lists from any iterable
    shoal.split.text_chunks(text, 2000, overlap=200)   # a long text by tokens
    shoal.split.pages("contract.pdf", per_chunk=50)    # a PDF by pages (the shoal[pdf] extra)

The work receives the plain values; each outcome keeps ``provenance`` (``outcome.provenance``),
and failures say where their input was.
"""

from ._split import (
    CHARS_PER_TOKEN,
    Malformed,
    MalformedInput,
    PageRange,
    Provenance,
    Sourced,
    batches,
    chunks,
    csv,
    files,
    jsonl,
    lines,
    pages,
    text_chunks,
)

__all__ = [
    "CHARS_PER_TOKEN",
    "Malformed",
    "MalformedInput",
    "PageRange",
    "Provenance",
    "Sourced",
    "batches",
    "chunks",
    "csv",
    "files",
    "jsonl",
    "lines",
    "pages",
    "text_chunks",
]
