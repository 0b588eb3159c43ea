"""Imported in the fork server only: load the parent's main script there, once.

Workers started by a fork server run the parent's ``__main__`` again as ``__mp_main__`` (as with
``spawn``), unless the fork server loaded it already, in which case they inherit it. CPython
means to do that when ``"__main__"`` is preloaded, but in the versions shoal supports the path
never reaches the fork server (it looks for a ``main_path`` that the preparation data calls
``init_main_from_path``), so every worker ran the main script, and imported everything it
imports, at its start: a quarter of a second per worker for a script that imports an HTTP client.
The parent passes the path (and its import path) in the environment variables named in
``_process_worker`` while it starts the fork server, which imports this
module after shoal itself (never import it elsewhere: it would run the main script).
"""

from __future__ import annotations

import contextlib
import os

from ._process_worker import FORKSERVER_MAIN, FORKSERVER_PATH


def _load() -> None:
    path = os.environ.pop(FORKSERVER_MAIN, None)
    paths = os.environ.pop(FORKSERVER_PATH, None)
    if not path:
        return
    import json
    import sys
    from multiprocessing import process, spawn

    if paths:  # the parent's import path (the fork server is started without it)
        sys.path[:] = json.loads(paths)

    current = process.current_process()
    current._inheriting = True  # type: ignore[attr-defined]  # as spawn.prepare() does
    try:
        # A script that fails here fails in each worker as before, with its own message.
        with contextlib.suppress(Exception):
            spawn.import_main_path(path)
    finally:
        del current._inheriting  # type: ignore[attr-defined]


_load()
