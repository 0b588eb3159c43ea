"""The module names job files are loaded under (``shoal run jobs/scan.py``), and back.

Kept apart from :mod:`shoal._jobfiles`, whose import installs an import hook: outcomes and the
journal only need to read these names.
"""

from __future__ import annotations

import os

JOB_FILES = "shoal._jobfiles."  # the package job files are loaded into (see shoal._jobfiles)


def module_name(path: str | os.PathLike[str]) -> str:
    """The module name of the job file at ``path`` (made absolute; ``.py`` left out)."""
    absolute = os.path.abspath(os.fspath(path))
    stem = absolute[:-3] if absolute.endswith(".py") else absolute
    return JOB_FILES + stem.replace("%", "%25").replace(".", "%2E")


def file_of(name: str) -> str | None:
    """The job file that module ``name`` stands for, or ``None`` if it is not a job file's."""
    if not name.startswith(JOB_FILES):
        return None
    return name[len(JOB_FILES) :].replace("%2E", ".").replace("%25", "%") + ".py"


def job_file_stem(name: str) -> str | None:
    """``scan`` for the module of ``jobs/scan.py``; ``None`` if ``name`` is not a job file's."""
    file = file_of(name)
    return None if file is None else os.path.basename(file)[:-3]
