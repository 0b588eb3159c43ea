"""Codecs: how results (and items) are stored in a journal, and how piece ids are derived.

The default, :class:`JSONCodec`, stores JSON: safe to read back (nothing in a journal can run code
when it is loaded) and readable by any tool. Tuples, sets, bytes, paths, dates and decimals, which
plain JSON would silently turn into something else, are stored with a small tag so they come back
as the same type. :class:`PickleCodec` stores anything picklable, and is never a default:
unpickling a journal runs whatever code its writer put in it.

A piece's id, when the job gives no ``id=`` function, is a hash of its item's canonical JSON form,
so the same item maps to the same piece on every run and on every machine.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import json.encoder
import json.scanner
import math
import pathlib
import pickle
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ._split import PageRange

_TAG = "$shoal"
# The C scanner json.loads uses underneath, without its Python layers.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]  # typeshed types the argument oddly
)


@runtime_checkable
class Codec(Protocol):
    """Turns values into text or bytes for storage, and back."""

    name: str

    def encode(self, value: Any) -> str | bytes:
        """Raises ``TypeError`` or ``ValueError`` for a value it cannot store."""
        ...

    def decode(self, data: str | bytes) -> Any: ...


def _tagged(kind: str, value: Any) -> dict[str, Any]:
    return {_TAG: kind, "v": value}


def to_jsonable(value: Any, *, canonical: bool = False) -> Any:
    """``value`` as plain JSON data, tagging the types plain JSON would lose.

    Raises:
        TypeError: a value of a type with no faithful JSON form (named in the message).
    """
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is float:
        if not math.isfinite(value):  # NaN and the infinities are not JSON
            return _tagged("float", repr(value))
        return value
    if kind is list:
        return [to_jsonable(v, canonical=canonical) for v in value]
    if kind is dict:
        if all(type(k) is str for k in value) and _TAG not in value:
            items = sorted(value.items()) if canonical else value.items()
            return {k: to_jsonable(v, canonical=canonical) for k, v in items}
        pairs = [
            [to_jsonable(k, canonical=canonical), to_jsonable(v, canonical=canonical)]
            for k, v in value.items()
        ]
        if canonical:
            pairs.sort(key=lambda p: json.dumps(p, sort_keys=True))
        return _tagged("dict", pairs)
    if kind is tuple:
        return _tagged("tuple", [to_jsonable(v, canonical=canonical) for v in value])
    if kind is set or kind is frozenset:
        members = [to_jsonable(v, canonical=canonical) for v in value]
        if canonical:
            members.sort(key=lambda m: json.dumps(m, sort_keys=True))
        return _tagged(kind.__name__, members)
    if kind is bytes:
        return _tagged("bytes", base64.b64encode(value).decode("ascii"))
    if isinstance(value, pathlib.PurePath):
        return _tagged("path", str(value))
    if kind is dt.datetime:
        return _tagged("datetime", value.isoformat())
    if kind is dt.date:
        return _tagged("date", value.isoformat())
    if kind is decimal.Decimal:
        return _tagged("decimal", str(value))
    if kind is PageRange:  # the password, if any, is never stored
        return _tagged("pages", [value.path, value.first, value.last])
    # Subclasses of the basic types (IntEnum, StrEnum, ...) are stored as their base type.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return to_jsonable(float(value))
    raise TypeError(
        f"a {kind.__module__}.{kind.__qualname__} has no JSON form (JSON stores None, bool, int, "
        "float, str, list, dict, and shoal adds tuple, set, bytes, paths, dates and decimals)"
    )


def from_jsonable(data: Any) -> Any:
    """The inverse of :func:`to_jsonable`."""
    if isinstance(data, list):
        return [from_jsonable(v) for v in data]
    if isinstance(data, dict):
        kind = data.get(_TAG)
        if kind is None:
            return {k: from_jsonable(v) for k, v in data.items()}
        v = data["v"]
        if kind == "tuple":
            return tuple(from_jsonable(x) for x in v)
        if kind == "dict":
            return {from_jsonable(k): from_jsonable(x) for k, x in v}
        if kind == "set":
            return {from_jsonable(x) for x in v}
        if kind == "frozenset":
            return frozenset(from_jsonable(x) for x in v)
        if kind == "bytes":
            return base64.b64decode(v)
        if kind == "path":
            return pathlib.Path(v)
        if kind == "datetime":
            return dt.datetime.fromisoformat(v)
        if kind == "date":
            return dt.date.fromisoformat(v)
        if kind == "decimal":
            return decimal.Decimal(v)
        if kind == "float":
            return float(v)
        if kind == "pages":
            path, first, last = v
            return PageRange(path, first, last)
        raise ValueError(f"unknown stored type tag {kind!r}; was this written by a newer shoal?")
    return data


class JSONCodec:
    """JSON, with tags for the types plain JSON would lose. The default; safe to read back."""

    name = "json"

    def encode(self, value: Any) -> str:
        if type(value) is int:
            return str(value)
        return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))

    def decode(self, data: str | bytes) -> Any:
        if type(data) is str and _TAG not in data:
            # Nothing tagged: the plain JSON is the value. The C scanner directly skips
            # json.loads' Python layers, which cost more than the parse for small values.
            try:
                value, end = _scan_once(data, 0)
            except StopIteration:
                pass
            else:
                if end == len(data):
                    return value
            return json.loads(data)
        return from_jsonable(json.loads(data))

    def __repr__(self) -> str:
        return "JSONCodec()"


class PickleCodec:
    """Pickle: stores anything picklable.

    Never a default, and never safe for a journal you did not write yourself: loading a pickle
    runs whatever code its writer put in it.
    """

    name = "pickle"

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: str | bytes) -> Any:
        if isinstance(data, str):
            raise TypeError("PickleCodec.decode() expects bytes")
        return pickle.loads(data)  # noqa: S301 - only when the user chose this codec

    def __repr__(self) -> str:
        return "PickleCodec()"


def to_plain(value: Any) -> Any:
    """``value`` as plain JSON data for exports: lossy where it must be, never failing."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool or kind is float:
        return value
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        members = [to_plain(v) for v in value]
        try:
            return sorted(members)
        except TypeError:
            return members
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def content_id(item: Any) -> str:
    """A stable id for ``item``: a hash of its canonical JSON form.

    Raises:
        TypeError: the item has no JSON form (give the job an ``id=`` function).
    """
    kind = type(item)
    if kind is str:
        raw = "s" + item
    elif kind is int:
        raw = "i" + repr(item)
    else:
        raw = "j" + _canonical_json(item)
    return hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


# One encoder for every id: json.dumps with options builds a new one per call, which cost more
# than the encoding of a small record.
_encode = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode
_SCALARS = frozenset((str, int, float, bool, type(None)))


def _canonical_json(item: Any) -> str:
    """``item``'s canonical JSON form (sorted keys, shoal's tags). A flat record or list of plain
    JSON values (most items that are not strs or ints) is its own JSON form: it is encoded as it
    is, without the copy that :func:`to_jsonable` makes (a NaN makes the encoder refuse it, and
    then it is tagged like any other)."""
    kind = type(item)
    if (
        kind is dict
        and set(map(type, item.values())) <= _SCALARS
        and set(map(type, item)) <= {str}
        and _TAG not in item
    ) or (kind is list and set(map(type, item)) <= _SCALARS):
        try:
            return _encode(item)
        except ValueError:  # NaN or an infinity: tagged below
            pass
    return _encode(to_jsonable(item, canonical=True))


def content_ids(items: list[Any]) -> list[str]:
    """``[content_id(item) for item in items]``, faster for a list of only ints or only strs
    (the hashing is the same; the per-item type checks and calls are not repeated).

    Raises:
        TypeError: an item has no JSON form.
    """
    kinds = set(map(type, items))
    blake2b = hashlib.blake2b
    if kinds == {int}:
        return [blake2b(b"i%d" % item, digest_size=16).hexdigest() for item in items]
    if kinds == {str}:
        return [
            blake2b(("s" + item).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
            for item in items
        ]
    return [content_id(item) for item in items]


def item_keys(items: list[Any]) -> list[Any]:
    """The keys a resume finds stored items by (see the journal's Preloaded.by_item): an int is
    its own key (the journal stores it as its decimal text), a str the JSON text the journal
    stores it as (``JSONCodec().encode``). Only exact ints and strs (True is not 1).

    Raises:
        TypeError: another kind of item.
    """
    kinds = set(map(type, items))
    if kinds == {int}:
        return items
    if kinds == {str}:
        return list(map(_encode_str, items))
    if kinds <= {int, str}:
        return [item if type(item) is int else _encode_str(item) for item in items]
    raise TypeError("item_keys takes ints and strs only")


# What json.dumps(a_str, ensure_ascii=False) returns, without building an encoder per call.
_encode_str: Callable[[str], str] = json.encoder.encode_basestring


def decode_many(codec: Codec, data: list[Any]) -> list[Any] | None:
    """Every stored result in ``data`` decoded, or ``None`` when one cannot be (the caller then
    decodes them one at a time to find which).

    With the JSON codec and nothing tagged, the whole list is parsed as one JSON array: a parse
    per result costs ten times more. The texts are this codec's own, one JSON text each; a damaged
    one fails the parse or changes the count. (Two damaged texts could in principle make up for
    each other; a journal's rows are written whole, in transactions, so only a file edited by
    hand has damaged ones.)
    """
    if type(codec) is JSONCodec:
        try:
            joined = ",".join(data)
        except TypeError:  # bytes or NULL among them: not this codec's texts
            return None
        if _TAG not in joined:
            try:
                values = json.loads(f"[{joined}]")
            except ValueError:
                return None
            return values if len(values) == len(data) else None
    decode = codec.decode
    try:
        return [decode(d) for d in data]
    except Exception:
        return None
