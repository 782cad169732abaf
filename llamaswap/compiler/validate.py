"""Validate: plain config data -> a typed `Config` (pydantic, strict), every pydantic error
turned into a located LS302 diagnostic.

The adapter between pydantic and our diagnostics: one report per failing value (a union's
per-member errors merged into "must be a whole number or a string"), worded for a YAML
author, with a hint for the usual slips (quoted numbers, yes/no booleans). Validation never
gives up: each failing value is reported, dropped, and validation retried, so one run
reports every schema problem and the rest of the config is still checked.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from llamaswap.compiler.config import Config
from llamaswap.compiler.source import PathReporter, format_path

_PYDANTIC_TYPE_WORDS = {
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "string_type": "a string",
    "float_type": "a number",
    "dict_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, (tuple, list)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# pydantic adds the member type of a union to an error's loc ("str", "AliasEntry", …);
# those parts are not in the user's data and are dropped from the reported path.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none", "AliasEntry"})


def _user_loc(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, (list, tuple)) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        elif isinstance(part, str) and part in _UNION_TAGS:
            continue
        else:
            cur = None
        out.append(part)
    return tuple(out)


def validate_config(data: dict, report: PathReporter) -> Config:
    """pydantic validation that never gives up: each failing value is reported, dropped
    (from `data`, in place), and validation retried so the rest of the config is still checked."""
    config = validate_part(Config, data, report)
    return config if config is not None else Config.model_validate({"models": {}})


M = TypeVar("M", bound=BaseModel)


def validate_part(cls: type[M], data: Any, report: PathReporter, prefix: tuple[Any, ...] = ()) -> M | None:
    """`data` validated as `cls`, each failing value reported (at `prefix` + its path in
    `data`) and dropped from `data` (in place) until the rest validates; None when it never
    does (`data` itself is of the wrong kind)."""
    for _ in range(200):
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        # One report per value: a union gives one error per member type.
        by_loc: dict[tuple[Any, ...], list[ErrorDetails]] = {}
        for err in errors:
            by_loc.setdefault(_user_loc(data, tuple(err["loc"])), []).append(err)
        # When one member of a union got further (`{name: x}` as an alias object missing
        # its id), its deeper error is the useful one; drop the shallow "wrong type" ones.
        for loc in [loc for loc in by_loc if any(len(o) > len(loc) and o[: len(loc)] == loc for o in by_loc)]:
            del by_loc[loc]
        for loc, errs in by_loc.items():
            _report(prefix + loc, errs, report)
        removed = False
        # Last first, so removing an item from a list does not shift the ones still to remove.
        for loc in reversed(list(by_loc)):
            if _delete(data, loc):
                removed = True
        if not removed:
            break
    return None


def _report(loc: tuple[Any, ...], errs: list[ErrorDetails], report: PathReporter) -> None:
    first = errs[0]
    value = first.get("input")
    if first["type"] == "missing":
        report.error_at("LS302", f"'{format_path(loc)}' is required", loc[:-1])
        return
    wants: list[str] = []
    for err in errs:
        kind = err["type"]
        want = _PYDANTIC_TYPE_WORDS.get(kind)
        if want is None and kind.endswith("_type"):
            want = kind[:-5].replace("_", " ")
        if want is None:
            report.error_at("LS302", f"'{format_path(loc)}': {err['msg']}", loc)
            return
        if want not in wants:
            wants.append(want)
    kinds = {e["type"] for e in errs}
    hint = None
    if "bool_type" in kinds and isinstance(value, str):
        hint = "write true or false (YAML 1.2: yes/no/on/off are strings)"
    elif kinds & {"int_type", "float_type"} and isinstance(value, str) and _numeric(value):
        hint = "remove the quotes around the number"
    elif kinds == {"string_type"} and isinstance(value, (int, float, bool)):
        hint = "quote the value to make it a string"
    elif loc == ("models",) and isinstance(value, (list, tuple)):
        hint = "each model is a key under models, not a '- ' item: 'models:' then '  my-model:' then '    cmd: ...'"
    want_text = " or ".join(wants)
    report.error_at(
        "LS302", f"'{format_path(loc)}' must be {want_text}, got {_describe(value)}", loc, hint=hint
    )


def _numeric(text: str) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return False
    return True


def _delete(data: Any, loc: tuple[Any, ...]) -> bool:
    """Remove the value at loc; when the path stops early (a required field is missing),
    remove the deepest value that exists on it. Lists (tuples) lose just that item."""
    steps: list[tuple[Any, Any]] = []  # (container, key) along the path
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            steps.append((cur, part))
            cur = cur[part]
        elif isinstance(cur, (list, tuple)) and isinstance(part, int) and 0 <= part < len(cur):
            steps.append((cur, part))
            cur = cur[part]
        else:
            break
    if not steps:
        return False
    _remove(steps, len(steps) - 1)
    return True


def _remove(steps: list[tuple[Any, Any]], depth: int) -> None:
    container, key = steps[depth]
    if isinstance(container, dict):
        del container[key]
    else:
        _replace(steps, depth - 1, tuple(x for i, x in enumerate(container) if i != key))


def _replace(steps: list[tuple[Any, Any]], depth: int, new: Any) -> None:
    container, key = steps[depth]
    if isinstance(container, dict):
        container[key] = new
    else:
        _replace(steps, depth - 1, tuple(new if i == key else x for i, x in enumerate(container)))
