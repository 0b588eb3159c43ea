"""Progress views for a run.

``progress=True`` picks one (live on a terminal, plain lines elsewhere); pass one of your own to
choose where it draws, e.g. ``progress=LiveProgress(console=Console(stderr=True))`` or
``progress=PlainProgress(every=10, stream=log_file)``.
"""

from ._progress import LiveProgress, PlainProgress

__all__ = ["LiveProgress", "PlainProgress"]
