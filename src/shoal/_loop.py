"""The event loop shoal makes for its synchronous entry points (``shoal.map``, ``job.run``).

A standard selector loop, with one change: timers fire on time. Linux's ``epoll_wait`` takes
whole milliseconds, so asyncio rounds every wait up to the next millisecond and a 20 ms sleep
ends up to 1 ms late. Over a run of many short waits (backoff, rate limits, the work's own
``asyncio.sleep``) that costs a few percent of the wall time. When a wait has a fraction of a
millisecond, this selector first waits on the epoll descriptor itself with ``select()``, whose
timeout has microsecond resolution, and then collects the events without waiting. Readiness of any
descriptor still wakes it at once.
"""

from __future__ import annotations

import asyncio
import select
import selectors
from typing import Any


class _PreciseEpollSelector(selectors.EpollSelector):
    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0 and (timeout * 1000) % 1:
            try:
                select.select([self.fileno()], [], [], timeout)
            except (OSError, ValueError):  # a descriptor past FD_SETSIZE: keep epoll's rounding
                pass
            else:
                timeout = 0
        return super().select(timeout)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop whose timers fire on time (where the platform allows it)."""
    if hasattr(selectors, "EpollSelector") and hasattr(select, "select"):
        selector: Any = _PreciseEpollSelector()
        return asyncio.SelectorEventLoop(selector)
    return asyncio.new_event_loop()
