"""Decision: what an eviction policy answers, and the interface every policy implements.

A policy is a pure function `(target, running) -> Decision`. The matrix policy and the
groups policy implement the same `EvictionPolicy` protocol; `plan`, the scheduler, `serve`
and the benchmarks only ever talk to this protocol.

Invariants of a Decision:
- `running` is the sorted tuple of real model IDs that were running when asked.
- `evict` is a sub-sequence of `running` (so it is in running order, i.e. sorted).
- `target` is never in `evict`.
- `target_set` is sorted and contains `target`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Candidate:
    """One place the target could run: a set's best combination and what it would cost."""

    set: str
    combination: tuple[str, ...]
    cost: int

    def to_json(self) -> dict:
        return {"set": self.set, "combination": list(self.combination), "cost": self.cost}


@dataclass(frozen=True, slots=True)
class Decision:
    target: str
    running: tuple[str, ...]
    evict: tuple[str, ...]
    # Matrix engine: the chosen set's name and DSL. Groups engine: the target's group name
    # in `set`, and `dsl` None. None when no set applies (target runs alone / nothing fits).
    set: str | None
    dsl: str | None
    target_set: tuple[str, ...]
    cost: int
    # Which rule decided, in words a user can read ("already running", "runs alone",
    # "cheapest combination", or the group rule that applied).
    rule: str
    # Ranked alternatives (best first); only filled when the caller asks to explain.
    candidates: tuple[Candidate, ...] | None = None

    def to_json(self, request: str | None = None) -> dict:
        out = {
            "request": request if request is not None else self.target,
            "model": self.target,
            "running": list(self.running),
            "evict": list(self.evict),
            "set": self.set,
            "dsl": self.dsl,
            "target_set": list(self.target_set),
            "cost": self.cost,
        }
        if self.candidates is not None:
            out["candidates"] = [c.to_json() for c in self.candidates]
        return out


@runtime_checkable
class EvictionPolicy(Protocol):
    """What the scheduler and the CLI need from an eviction policy."""

    engine: str  # "matrix" or "group"

    def decide(self, target: str, running: Iterable[str], explain: bool = False) -> Decision:
        """Decide what to evict so `target` can run next to `running` (real model IDs)."""
        ...

    def evict_for(self, target: str, running: Iterable[str]) -> tuple[str, ...]:
        """Shortcut for `decide(target, running).evict`."""
        ...
