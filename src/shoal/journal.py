"""Journals: resume after a crash, retry what failed, never lose a piece.

``job.run(items, journal="run.db")`` records every piece in an SQLite file; running again with the
same file does only what is left. This module holds the options and the readers::

    shoal.journal.Journal("run.db", commit_every=500, commit_interval=0.5)
    shoal.journal.read_status("run.db")       # counts by state, last errors: safe while running
    shoal.journal.read_meta("run.db")         # what runs stored with Journal(meta=...)
    shoal.journal.JSONCodec(), PickleCodec()  # how results are stored (JSON by default)

Make work idempotent where you can: a piece that was running when the process died runs again
(at least once), so an attempt that charges a card or sends a mail should carry an idempotency key
(the piece's item, or ``Outcome.id``) that the other side de-duplicates on.
"""

from ._codec import Codec, JSONCodec, PickleCodec, content_id
from ._journal import (
    SCHEMA_VERSION,
    Journal,
    JournalError,
    JournalStatus,
    StoredPiece,
    read_meta,
    read_status,
)

__all__ = [
    "SCHEMA_VERSION",
    "Codec",
    "JSONCodec",
    "Journal",
    "JournalError",
    "JournalStatus",
    "PickleCodec",
    "StoredPiece",
    "content_id",
    "read_meta",
    "read_status",
]
