"""Job files: Python files loaded by path (``shoal run jobs/scan.py``), importable everywhere.

A job file is not on ``sys.path`` under a name of its own, yet its work function must cross
process boundaries: the process backend (and Dask, Ray) pickle a function *by reference*, as its
module's name and its qualified name, and the worker imports that module again. So a job file is
imported as a submodule of this module, under a name that spells its absolute path::

    /work/jobs/scan.py   ->   shoal._jobfiles./work/jobs/scan

(dots and percent signs in the path are escaped as ``%2E`` and ``%25``). The name is unique (one
per file) and stable (the same file always gets the same name), and any process that can import
shoal can import it: importing this module installs a finder that reads the path back out of the
name. No environment variable and no start method is involved, so workers that were started
before the job file was loaded (a fork server) find it as well as fresh ones.

Loading a job file puts its folder at the front of ``sys.path`` (in every process that loads
it), so that it can import the modules beside it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from ._modnames import JOB_FILES, file_of, module_name

# This module is a package whose submodules are job files (it has no files of its own).
__path__: list[str] = []

__all__ = ["JOB_FILES", "file_of", "load", "module_name"]  # JOB_FILES is this package's name


class _Loader(importlib.machinery.SourceFileLoader):
    """Loads a job file, with its folder first on ``sys.path`` (so it can import its siblings)."""

    def exec_module(self, module: ModuleType) -> None:
        folder = os.path.dirname(self.path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        super().exec_module(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``shoal._jobfiles.<path>`` modules: the path is in the name."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        file = file_of(fullname)
        if file is None or not os.path.isfile(file):
            return None
        return importlib.util.spec_from_file_location(
            fullname, file, loader=_Loader(fullname, file)
        )


def _install() -> None:
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())


def load(path: str | os.PathLike[str]) -> ModuleType:
    """Import the job file at ``path`` (again, if it changed since it was last imported).

    Raises:
        FileNotFoundError: there is no such file.
        SyntaxError, and whatever the file raises while it runs.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(str(path))
    name = module_name(file)
    loaded = sys.modules.get(name)
    if loaded is not None:
        stamp = getattr(loaded, "__shoal_stamp__", None)
        if stamp == _stamp(file):
            return loaded
        del sys.modules[name]  # edited since: run the new version
        importlib.invalidate_caches()
    module = importlib.import_module(name)
    module.__shoal_stamp__ = _stamp(file)  # type: ignore[attr-defined]
    return module


def _stamp(file: Path) -> tuple[int, int]:
    info = file.stat()
    return (info.st_mtime_ns, info.st_size)


_install()
