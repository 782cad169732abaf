"""Go YAML: how llama-swap's decoder (gopkg.in/yaml.v3) reads a scalar into a typed key,
applied to plain data before the strict typed models see it.

yaml.v3 is more lenient than a strict schema in three ways that real configs rely on:
- a string key takes any scalar (`name: 2024`, `aliases: [7]`), as its text;
- a boolean key takes the YAML 1.1 words y/yes/on and n/no/off in any of their usual cases
  (`unlisted: yes`); only for a typed boolean, not in free data;
- a whole-number key takes a float and truncates it (`ttl: 1.5` is 1).

Everything else (a quoted number for a number, a list for a string, ...) stays an error, as
in llama-swap. Invariant: pure; the input is not modified; every reading that changes what
the author wrote is returned as a note (loc, message) so the loader can warn about it.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from pydantic import BaseModel

TRUE_WORDS = frozenset({"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"})
FALSE_WORDS = frozenset({"n", "N", "no", "No", "NO", "off", "Off", "OFF"})

Note = tuple[tuple[Any, ...], str]


def go_scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def coerce(data: Any, model: type[BaseModel]) -> tuple[Any, list[Note]]:
    """`data` (from YAML) read as yaml.v3 would read it into `model`; and the notes."""
    notes: list[Note] = []
    return _coerce(data, model, (), notes), notes


def _members(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return (annotation,)


def _coerce(value: Any, annotation: Any, loc: tuple[Any, ...], notes: list[Note]) -> Any:
    if value is None or annotation is Any:
        return value
    members = [m for m in _members(annotation) if m is not type(None)]
    if len(members) > 1:
        if any(m is str for m in members) and isinstance(value, (int, float, bool)):
            return go_scalar_text(value)
        for m in members:
            if isinstance(m, type) and issubclass(m, BaseModel) and isinstance(value, dict):
                return _coerce(value, m, loc, notes)
        return value
    ann = members[0] if members else annotation
    if ann is str:
        if isinstance(value, (int, float, bool)):
            return go_scalar_text(value)
        return value
    if ann is bool:
        if isinstance(value, str) and (value in TRUE_WORDS or value in FALSE_WORDS):
            read = value in TRUE_WORDS
            notes.append(
                (loc, f"'{value}' is read as {str(read).lower()} (YAML 1.1 word); write {str(read).lower()}")
            )
            return read
        return value
    if ann is int:
        if isinstance(value, float) and not isinstance(value, bool) and math.isfinite(value):
            whole = int(value)
            if whole != value:
                notes.append(
                    (loc, f"{value} is read as {whole} (a whole number is expected; the fraction is dropped)")
                )
            return whole
        return value
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin in (tuple, list) and isinstance(value, (tuple, list)):
        item = args[0] if args else Any
        return type(value)(_coerce(v, item, loc + (i,), notes) for i, v in enumerate(value))
    if origin is dict and isinstance(value, dict):
        item = args[1] if len(args) > 1 else Any
        return {
            go_scalar_text(k) if not isinstance(k, str) else k: _coerce(v, item, loc + (k,), notes)
            for k, v in value.items()
        }
    if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(value, dict):
        fields = {(f.alias or name): f.annotation for name, f in ann.model_fields.items()}
        return {k: (_coerce(v, fields[k], loc + (k,), notes) if k in fields else v) for k, v in value.items()}
    return value
