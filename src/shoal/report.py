"""The run report: ``run.report`` or ``shoal.Report.from_journal("run.db")``, and its parts.

``print(run.report)`` shows it as terminal text; ``report.to_markdown()``, ``report.to_json()``
(schema ``shoal.report/1``, documented in docs/report-schema.md), ``report.to_html()`` (one page
with charts, needs ``pip install 'shoal[report]'``) and ``report.save(path)`` render it.
"""

from ._report import (
    SCHEMA,
    Chart,
    Counts,
    FailureExample,
    FailureGroup,
    KeyStats,
    Latency,
    Report,
    SlowPiece,
    Table,
    Timeline,
)

__all__ = [
    "SCHEMA",
    "Chart",
    "Counts",
    "FailureExample",
    "FailureGroup",
    "KeyStats",
    "Latency",
    "Report",
    "SlowPiece",
    "Table",
    "Timeline",
]
