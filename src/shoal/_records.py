"""Frozen records that are cheap to make: shoal makes several per piece."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any


def quick_frozen_init(cls: type[Any]) -> None:
    """Give a frozen, slotted dataclass an ``__init__`` that is twice as fast, same signature.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (a global
    lookup, an attribute lookup and a call per field); this one calls each slot's own setter,
    bound once. A run makes one Outcome and (when watched) two events per piece, so this is a
    measurable share of shoal's per-piece overhead. The instances are the same: frozen,
    hashable, equal by fields.
    """
    params: list[str] = []
    lines: list[str] = []
    env: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        else:
            assert f.default_factory is MISSING, "fields with factories are not supported"
            params.append(f.name)
        env[f"_set_{f.name}"] = getattr(cls, f.name).__set__  # the slot's member descriptor
        lines.append(f"    _set_{f.name}(self, {f.name})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(lines) + "\n"
    exec(source, env)  # noqa: S102 - code made from the field names above, nothing else
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init
