"""``python -m shoal``: the command line (see :mod:`shoal.cli`)."""

from __future__ import annotations

from .cli import entry

if __name__ == "__main__":
    entry()
