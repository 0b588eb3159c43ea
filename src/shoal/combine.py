"""Combiners: organize results and combine them into the final one, traceably.

    job = shoal.Job(fetch_feed, combine=combine.concat().then(combine.dedupe("link"))
                                                 .then(combine.sort("published", reverse=True)))
    run = job.run(feeds)
    run.result                 # the combined value
    run.combined.trace(0)      # the outcomes (items, provenance) the first record came from
    run.failures               # failed pieces never enter a combination: they are listed here

``concat``, ``merge``, ``dedupe(key)``, ``sort(by, reverse)``, ``group(by)``, ``top(k, by)``,
``count(by)``, ``fold(fn, initial)``, and ``tree(fn, fan_in)``, a reduction by levels whose
steps run in parallel through shoal (for expensive combiners, such as an LLM summarising
summaries). A key is a field name (dict key or attribute), a callable, or None (the value).
"""

from ._combine import (
    Combined,
    Combiner,
    Record,
    chain,
    concat,
    count,
    dedupe,
    fold,
    group,
    merge,
    sort,
    top,
    tree,
)

__all__ = [
    "Combined",
    "Combiner",
    "Record",
    "chain",
    "concat",
    "count",
    "dedupe",
    "fold",
    "group",
    "merge",
    "sort",
    "top",
    "tree",
]
