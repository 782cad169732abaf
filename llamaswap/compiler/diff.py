"""Decision diff: every decision of one plan against another's (`llamaswap plan OLD --diff NEW`).

Both plans are asked the same questions: every running state either can reach, for every
model either knows. Two decisions are the same when they evict the same models into the same
set. Pure: no I/O; the CLI prints the changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llamaswap.compiler.decision import Decision
from llamaswap.compiler.reachable import DECISIONS_MAX, State, reachable_states

if TYPE_CHECKING:
    from llamaswap.compiler.plan import Plan


@dataclass(frozen=True)
class DecisionChange:
    """One question whose answer differs: `old`/`new` is None when that plan lacks the model."""

    running: State
    request: str
    old: Decision | None
    new: Decision | None

    def to_json(self) -> dict:
        return {
            "running": list(self.running),
            "request": self.request,
            "old": _side_json(self.old),
            "new": _side_json(self.new),
        }

    def lines(self) -> list[str]:
        return [
            f"[{', '.join(self.running)}] + {self.request}",
            f"  - old: {_side_text(self.old)}",
            f"  + new: {_side_text(self.new)}",
        ]


def same_decision(a: Decision, b: Decision) -> bool:
    return (a.evict, a.set, a.target_set) == (b.evict, b.set, b.target_set)


def diff_plans(old: Plan, new: Plan, max_decisions: int = DECISIONS_MAX) -> Iterator[DecisionChange]:
    """The changed decisions, states by size then names, models sorted. Raises StatesError
    (before yielding anything) when either plan's states cannot be listed."""
    states = sorted(
        set(reachable_states(old, max_decisions)) | set(reachable_states(new, max_decisions)),
        key=lambda s: (len(s), s),
    )
    return _changes(old, new, states)


def _changes(old: Plan, new: Plan, states: list[State]) -> Iterator[DecisionChange]:
    models = sorted(set(old.models) | set(new.models))
    for state in states:
        for target in models:
            old_d = old.policy.decide(target, state) if target in old.models else None
            new_d = new.policy.decide(target, state) if target in new.models else None
            if old_d is not None and new_d is not None and same_decision(old_d, new_d):
                continue
            yield DecisionChange(state, target, old_d, new_d)


def _side_json(d: Decision | None) -> dict | None:
    if d is None:
        return None
    out = d.to_json()
    out.pop("candidates", None)
    for k in ("request", "model", "running"):
        out.pop(k, None)
    return out


def _side_text(d: Decision | None) -> str:
    if d is None:
        return "unknown model (not in this config)"
    return f"evict [{', '.join(d.evict)}]; set {d.set or '-'} [{', '.join(d.target_set)}]; cost {d.cost}"
