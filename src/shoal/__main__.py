"""``python -m shoal``: the command line (see :mod:`shoal.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
