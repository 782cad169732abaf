"""Explain: decisions in words, for `llamaswap plan` and the server's logs. Pure formatting.

One or two sentences per decision: what starts, what stops, and the rule that chose it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from llamaswap.compiler.decision import RULE_ALONE, RULE_RUNNING, Decision

if TYPE_CHECKING:
    from llamaswap.compiler.expand import SetEntry


def _names(items: tuple[str, ...] | list[str]) -> str:
    return ", ".join(items) if items else "nothing"


def explain(d: Decision, engine: str, request: str | None = None) -> str:
    """A sentence or two a user can read."""
    asked = d.target if request in (None, d.target) else f"{request} (alias of {d.target})"
    if d.rule == RULE_RUNNING and not d.evict:
        where = f" The running models fit set '{d.set}'." if d.set and engine == "matrix" else ""
        if engine == "matrix" and not d.set and len(d.running) > 1:
            where = " (No set holds all the running models, but nothing is stopped for a model that runs.)"
        return f"{asked} is already running: nothing is stopped.{where}"
    stop = f"stop {_names(d.evict)}" if d.evict else "nothing needs to stop"
    if d.target in d.running:
        # Only the groups engine evicts for a model that runs (llama-swap asks the group
        # rules on every request; the request is served once the others have stopped).
        return f"{asked} is already running, but the group rules {stop} — {d.rule}."
    if d.rule == RULE_ALONE:
        return f"{asked} is in no set, so it runs alone: {stop}."
    if engine == "matrix":
        cost = f" (eviction cost {d.cost})" if d.evict else ""
        return (
            f"Start {asked} in set '{d.set}' ({d.dsl}), combination [{_names(d.target_set)}]: {stop}{cost}."
        )
    return f"Start {asked} (group '{d.set}'): {stop} — {d.rule}."


def explain_candidates(d: Decision) -> list[str]:
    """One line per candidate, best first."""
    lines = []
    for i, c in enumerate(d.candidates or ()):
        mark = "*" if i == 0 else " "
        lines.append(f" {mark} {c.set:<20} cost {c.cost:<4} [{_names(c.combination)}]")
    return lines


def one_line(d: Decision) -> str:
    """Compact form for listings: `[running] + target -> evict ...; set S [target set]; cost N`."""
    return (
        f"[{', '.join(d.running)}] + {d.target} -> evict [{', '.join(d.evict)}]; "
        f"set {d.set or '-'} [{', '.join(d.target_set)}]; cost {d.cost}"
    )


def holding_sets(sets: Iterable[SetEntry], target: str, running: tuple[str, ...]) -> list[str]:
    """For a model that is already running (no candidates to weigh): one line per set that
    holds it, with the combinations that also hold the other running models (or, when none
    does, those that hold the model)."""
    lines: list[str] = []
    others = set(running)
    for s in sets:
        if s.combinations is None:
            lines.append(f"   {s.name:<20} (symbolic: combinations not listed)")
            continue
        holding = [c for c in s.combinations if target in c]
        if not holding:
            continue
        fitting = [c for c in holding if others <= set(c)]
        shown = fitting or holding
        mark = "*" if fitting else " "
        more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
        lines.append(f" {mark} {s.name:<20} " + " ".join(f"[{_names(c)}]" for c in shown[:3]) + more)
    return lines
