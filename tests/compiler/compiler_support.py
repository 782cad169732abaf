"""Helpers for the compiler tests: compile a YAML snippet, find diagnostics, locate tokens.

Positions in assertions come from `locate(text, needle)`, i.e. from the text itself, so a
test says "the error points at `bgi`" rather than repeating column arithmetic.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

from llamaswap.compiler.diagnostics import Diagnostic, Severity
from llamaswap.compiler.plan import CompileOptions, Plan, compile_text

FILE = "test.yaml"


def fake(model_id: str) -> str:
    return f"llamaswap fake-upstream --port ${{PORT}} --name {model_id}"


def models_yaml(*ids: str, indent: int = 0) -> str:
    """A `models:` block of fake upstreams (IDs are quoted, so any ID works)."""
    pad = " " * indent
    lines = [f"{pad}models:"]
    for mid in ids:
        quoted = '"' + mid.replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{pad}  {quoted}:")
        lines.append(f"{pad}    cmd: {fake('m')}")
    return "\n".join(lines) + "\n"


def compile_yaml(
    text: str, env: Mapping[str, str] | None = None, budget: int | None = None, dedent: bool = True
) -> Plan:
    source = textwrap.dedent(text) if dedent else text
    opts: dict = {"env": dict(env or {})}
    if budget is not None:
        opts["expand_budget"] = budget
    return compile_text(source, FILE, CompileOptions(**opts))


def matrix(
    sets: Mapping[str, str] | str,
    models: tuple[str, ...] = ("a", "b", "c", "d"),
    vars: Mapping[str, str] | None = None,
    costs: Mapping[str, object] | None = None,
    budget: int | None = None,
) -> Plan:
    """Compile a matrix config. `sets` may be raw YAML lines (already indented by 4)."""
    text = models_yaml(*models) + "matrix:\n"
    if vars:
        text += "  vars:\n" + "".join(f"    {k}: {v}\n" for k, v in vars.items())
    if costs:
        text += "  evict_costs:\n" + "".join(f"    {k}: {v}\n" for k, v in costs.items())
    text += "  sets:\n"
    if isinstance(sets, str):
        text += sets
    else:
        for name, dsl in sets.items():
            text += f"    {name}: '{dsl.replace(chr(39), chr(39) * 2)}'\n"
    return compile_yaml(text, dedent=False, budget=budget)


def codes(plan: Plan, severity: Severity | None = None) -> list[str]:
    return [d.code for d in plan.diagnostics if severity is None or d.severity is severity]


def errors(plan: Plan) -> list[Diagnostic]:
    return [d for d in plan.diagnostics if d.severity is Severity.ERROR]


def one(plan: Plan, code: str) -> Diagnostic:
    """The single diagnostic with `code` (fails listing all of them otherwise)."""
    found = [d for d in plan.diagnostics if d.code == code]
    assert len(found) == 1, f"expected one {code}, got: " + "; ".join(
        f"{d.code}@{d.line}:{d.column} {d.message}" for d in plan.diagnostics
    )
    return found[0]


def locate(text: str, needle: str, occurrence: int = 0, dedent: bool = True) -> tuple[int, int]:
    """1-based (line, column) of the `occurrence`-th `needle` in text (as compiled)."""
    source = textwrap.dedent(text) if dedent else text
    index = -1
    for _ in range(occurrence + 1):
        index = source.index(needle, index + 1)
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    return line, column


def at(d: Diagnostic) -> tuple[int | None, int | None]:
    return d.line, d.column


def combos(plan: Plan, name: str) -> list[list[str]] | None:
    for s in plan.sets:
        if s.name == name:
            return None if s.combinations is None else [list(c) for c in s.combinations]
    raise KeyError(
        f"no set {name!r} in plan (sets: {[s.name for s in plan.sets]}; diagnostics: "
        f"{[d.code + ' ' + d.message for d in plan.diagnostics]})"
    )
