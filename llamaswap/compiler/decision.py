"""Decision: the eviction vocabulary — what a policy answers, the rules it names, the
precomputed table it may hold, and the interface every policy implements.

A policy is a pure function `(target, running) -> Decision`. The matrix policy and the
groups policy implement the same `EvictionPolicy` protocol; `plan`, the scheduler, `serve`
and the benchmarks only ever talk to this protocol.

This module sits at the bottom of the compiler: it imports nothing else of it, so the
policies (`evict`), the table builder (`precompute`) and their users all build on it.

Invariants of a Decision:
- `running` is the sorted tuple of real model IDs that were running when asked.
- `evict` is a sub-sequence of `running` (so it is in running order, i.e. sorted).
- `target` is never in `evict`.
- `target_set` is sorted and contains `target`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

# The rules a Decision names (`Decision.rule`); the groups engine words its own rules.
RULE_RUNNING = "already running"
RULE_ALONE = "in no set: runs alone"
RULE_CHEAPEST = "cheapest combination"

State = tuple[str, ...]  # a running set: sorted real model IDs, no duplicates


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
    # With resources (`placer.py`): the device names the target occupies (empty: it needs
    # nothing). None when the config declares no resources or nobody placed it.
    devices: tuple[str, ...] | None = None

    def to_json(self, request: str | None = None) -> dict:
        out: dict[str, Any] = {
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
        if self.devices is not None:
            out["devices"] = list(self.devices)
        return out


class DecisionTable:
    """(target, running) -> Decision for every reachable running state (`precompute.py`)."""

    def __init__(
        self, states: Sequence[State], models: Sequence[str], rows: dict[str, dict[State, Decision]]
    ):
        self.states = tuple(states)
        self.models = tuple(models)
        # One dict per target, keyed by the running state: a lookup hashes only the state
        # (no key tuple to build), which is what keeps it well under a microsecond.
        self.rows = rows
        self._size = sum(len(r) for r in rows.values())

    def get(self, target: str, running: State) -> Decision | None:
        row = self.rows.get(target)
        return None if row is None else row.get(running)

    def __len__(self) -> int:
        return self._size

    def decisions(self) -> Iterator[Decision]:
        """Every decision: states in order (by size, then names), targets sorted."""
        rows = self.rows
        for state in self.states:
            for target in self.models:
                yield rows[target][state]


@runtime_checkable
class EvictionPolicy(Protocol):
    """What the scheduler and the CLI need from an eviction policy."""

    engine: str  # "matrix" or "group"
    # The precomputed decisions, or None (too many states, a symbolic set, or a policy
    # that computes every answer). The CLI lists and diffs plans from it.
    table: DecisionTable | None

    def decide(self, target: str, running: Iterable[str], explain: bool = False) -> Decision:
        """Decide what to evict so `target` can run next to `running` (real model IDs)."""
        ...

    def evict_for(self, target: str, running: Iterable[str]) -> tuple[str, ...]:
        """Shortcut for `decide(target, running).evict`."""
        ...
