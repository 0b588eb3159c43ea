"""Combiners: organize the collected results and combine them into the final one, traceably.

A combiner works on *records*: a value together with the pieces it came from (their indexes in
the run). Each successful piece starts as one record; ``concat`` splits a list into one record
per element, ``dedupe`` keeps the first of each key but remembers every piece that had it,
``group`` and ``count`` gather records under keys, ``fold`` and ``tree`` reduce them to one. So
every combined record can be traced back (``Combined.trace``) to its pieces, and through them to
their items and provenance. Failed pieces never enter a combination; the run lists them beside
the result (``run.failures``).

Combiners compose left to right: ``concat().then(dedupe("link")).then(sort("published"))``.
"""

from __future__ import annotations

import functools
from collections import Counter as _Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._outcome import Outcome

Key = str | Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Record:
    """A value in a combination, with the indexes of the pieces it came from."""

    value: Any
    sources: frozenset[int]


@dataclass(frozen=True, slots=True)
class Combined:
    """The result of a combiner: the final value, and the records that make it up.

    Attributes:
        value: What ``run.result`` returns.
        records: The records of the final step (one for a reducing step).
        outcomes: The run's outcomes, for tracing.
    """

    value: Any
    records: tuple[Record, ...]
    outcomes: tuple[Outcome[Any], ...]

    def trace(self, position: int = 0) -> list[Outcome[Any]]:
        """The outcomes (with their items and provenance) that the ``position``-th record of the
        final step came from, in input order."""
        record = self.records[position]
        return [self.outcomes[i] for i in sorted(record.sources)]


def _getter(key: Key) -> Callable[[Any], Any]:
    if key is None:
        return lambda value: value
    if isinstance(key, str):
        name = key

        def get(value: Any) -> Any:
            if isinstance(value, dict):
                return value[name]
            return getattr(value, name)

        return get
    if callable(key):
        return key
    raise TypeError(f"key {key!r}: expected a field name, a callable value -> key, or None")


class Combiner:
    """One step of a combination: records in, records out; compose with :meth:`then`.

    Args:
        step: ``records -> records``.
        finish: ``records -> final value`` (by default: the records' values, a list).
        name: How the step is shown.
    """

    def __init__(
        self,
        step: Callable[[list[Record]], list[Record]],
        finish: Callable[[list[Record]], Any] | None = None,
        name: str = "combine",
    ) -> None:
        self._steps: tuple[Callable[[list[Record]], list[Record]], ...] = (step,)
        self._finish = finish if finish is not None else _values
        self.name = name

    def then(self, other: Combiner) -> Combiner:
        """This step, then ``other``'s steps; the result is shaped by ``other``."""
        if not isinstance(other, Combiner):
            raise TypeError(f"then({other!r}): expected a shoal.combine combiner")
        joined = Combiner(self._steps[0], other._finish, f"{self.name} | {other.name}")
        joined._steps = self._steps + other._steps
        return joined

    def apply(self, outcomes: Sequence[Outcome[Any]]) -> Combined:
        """Combine the successful outcomes (in input order) of a run."""
        records = [Record(o.value, frozenset((o.index,))) for o in outcomes if o.ok]
        for step in self._steps:
            records = step(records)
        return Combined(self._finish(records), tuple(records), tuple(outcomes))

    def __call__(self, values: Iterable[Any]) -> Any:
        """Combine plain values (no outcomes to trace): ``combiner(values)``."""
        records = [Record(v, frozenset((i,))) for i, v in enumerate(values)]
        for step in self._steps:
            records = step(records)
        return self._finish(records)

    def __repr__(self) -> str:
        return f"<combine {self.name}>"


def _values(records: list[Record]) -> list[Any]:
    return [r.value for r in records]


def _single(records: list[Record]) -> Any:
    return records[0].value if records else None


def _union(records: Iterable[Record]) -> frozenset[int]:
    sources: frozenset[int] = frozenset()
    for record in records:
        sources |= record.sources
    return sources


def concat() -> Combiner:
    """Each record's value is a list (or any iterable): one record per element."""

    def step(records: list[Record]) -> list[Record]:
        out: list[Record] = []
        for record in records:
            if record.value is None:
                continue
            if isinstance(record.value, str | bytes | dict):
                raise TypeError(
                    f"concat(): a piece returned a {type(record.value).__name__}, not a list; "
                    "return lists, or use merge() for dicts"
                )
            out.extend(Record(element, record.sources) for element in record.value)
        return out

    return Combiner(step, name="concat")


def merge() -> Combiner:
    """Dicts merged into one (later pieces win on the same key)."""

    def step(records: list[Record]) -> list[Record]:
        merged: dict[Any, Any] = {}
        for record in records:
            if not isinstance(record.value, dict):
                raise TypeError(
                    f"merge(): a piece returned a {type(record.value).__name__}, not a dict"
                )
            merged.update(record.value)
        return [Record(merged, _union(records))]

    return Combiner(step, _single, name="merge")


def dedupe(key: Key = None) -> Combiner:
    """The first record of each key (the whole value by default); it keeps as sources every
    piece that had the same key."""
    get = _getter(key)

    def step(records: list[Record]) -> list[Record]:
        first: dict[Hashable, int] = {}
        out: list[Record] = []
        for record in records:
            k = get(record.value)
            at = first.get(k)
            if at is None:
                first[k] = len(out)
                out.append(record)
            else:
                kept = out[at]
                out[at] = Record(kept.value, kept.sources | record.sources)
        return out

    return Combiner(step, name=f"dedupe({key!r})")


def sort(by: Key = None, *, reverse: bool = False) -> Combiner:
    """Records sorted by a field or key (stable: equal keys keep input order)."""
    get = _getter(by)

    def step(records: list[Record]) -> list[Record]:
        return sorted(records, key=lambda r: get(r.value), reverse=reverse)

    return Combiner(step, name=f"sort({by!r}{', reverse' if reverse else ''})")


def group(by: Key) -> Combiner:
    """Records gathered under their key: the result is ``{key: [values]}``, in first-seen order."""
    get = _getter(by)

    def step(records: list[Record]) -> list[Record]:
        groups: dict[Hashable, list[Record]] = {}
        for record in records:
            groups.setdefault(get(record.value), []).append(record)
        return [
            Record((k, [r.value for r in members]), _union(members))
            for k, members in groups.items()
        ]

    def finish(records: list[Record]) -> dict[Any, list[Any]]:
        return dict(r.value for r in records)

    return Combiner(step, finish, name=f"group({by!r})")


def top(k: int, by: Key = None) -> Combiner:
    """The ``k`` records with the largest keys, largest first."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top(k={k!r}): k must be a whole number >= 1")
    get = _getter(by)

    def step(records: list[Record]) -> list[Record]:
        return sorted(records, key=lambda r: get(r.value), reverse=True)[:k]

    return Combiner(step, name=f"top({k}, {by!r})")


def count(by: Key = None) -> Combiner:
    """How many records have each key: the result is a ``collections.Counter``, most common
    first."""
    get = _getter(by)

    def step(records: list[Record]) -> list[Record]:
        tally: _Counter[Hashable] = _Counter()
        members: dict[Hashable, list[Record]] = {}
        for record in records:
            k = get(record.value)
            tally[k] += 1
            members.setdefault(k, []).append(record)
        return [Record((k, n), _union(members[k])) for k, n in tally.most_common()]

    def finish(records: list[Record]) -> _Counter[Any]:
        return _Counter(dict(r.value for r in records))

    return Combiner(step, finish, name=f"count({by!r})")


def fold(fn: Callable[[Any, Any], Any], initial: Any) -> Combiner:
    """``fn(accumulator, value)`` over the records in order, from ``initial``."""
    if not callable(fn):
        raise TypeError(f"fold({fn!r}): expected a callable (accumulator, value) -> accumulator")

    def step(records: list[Record]) -> list[Record]:
        value = functools.reduce(fn, (r.value for r in records), initial)
        return [Record(value, _union(records))]

    return Combiner(step, _single, name="fold")


def tree(
    fn: Callable[[list[Any]], Any],
    fan_in: int = 8,
    *,
    concurrency: int = 8,
    retries: int = 3,
) -> Combiner:
    """Reduce by levels: ``fn(list of up to fan_in values) -> value``, the groups of each level
    run in parallel through shoal (with retries), until one value is left.

    For combiners that are themselves expensive, such as an LLM summarising summaries. ``fn``
    may be a plain function or an ``async def``.
    """
    if isinstance(fan_in, bool) or not isinstance(fan_in, int) or fan_in < 2:
        raise ValueError(f"tree(fan_in={fan_in!r}): must be a whole number >= 2")
    if not callable(fn):
        raise TypeError(f"tree({fn!r}): expected a callable list of values -> value")

    def step(records: list[Record]) -> list[Record]:
        from ._job import map as shoal_map  # the combiner runs its steps through shoal itself

        level = records
        while len(level) > 1:
            groups = [level[i : i + fan_in] for i in range(0, len(level), fan_in)]
            values = shoal_map(
                fn,
                [[r.value for r in g] for g in groups],
                concurrency=concurrency,
                retries=retries,
            )
            level = [Record(v, _union(g)) for v, g in zip(values, groups, strict=True)]
        return level

    return Combiner(step, _single, name=f"tree(fan_in={fan_in})")


def chain(*combiners: Combiner) -> Combiner:
    """``a.then(b).then(c)``, written ``chain(a, b, c)``."""
    if not combiners:
        raise ValueError("chain() needs at least one combiner")
    return functools.reduce(lambda a, b: a.then(b), combiners[1:], combiners[0])
