"""Test doubles for the scheduler's collaborators: eviction policies and a recording Effects.

`MatrixTestPolicy` and `GroupTestPolicy` implement the `EvictionPolicy` protocol by
llama-swap's rules, written as plainly as possible so they double as brute-force references
for the compiled policies:

- matrix (behaviour reference §3.4): sets are explicit lists of combinations, in set order
  (topological order is the caller's business). Target already running -> evict nothing.
  Target in no combination -> runs alone, evicts everything. Otherwise the candidate with the
  lowest sum of evict costs (default 1) of the running models it lacks; ties go to the
  earliest candidate.
- groups (§4): every model not in a group is in "(default)" {swap, exclusive}. A running
  model M != T is evicted when it shares T's group and that group swaps, or when T's group
  is exclusive and M's group is not persistent. Loading a non-exclusive member never evicts
  other groups (the one-way gotcha).

`StubPolicy` mirrors llama-swap's `stubPlanner`: a fixed evict list per target (kept to the
models actually running, as a Decision requires).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping, Sequence

from llamaswap.compiler.decision import Candidate, Decision

DEFAULT_GROUP = "(default)"


class MatrixTestPolicy:
    engine = "matrix"

    def __init__(
        self,
        sets: Sequence[tuple[str, Sequence[Iterable[str]]]],
        evict_costs: Mapping[str, int] | None = None,
    ) -> None:
        self.sets: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = tuple(
            (name, tuple(tuple(sorted(set(combo))) for combo in combos)) for name, combos in sets
        )
        self.evict_costs = dict(evict_costs or {})

    def cost(self, model: str) -> int:
        return self.evict_costs.get(model, 1)

    def dsl(self, set_name: str) -> str:
        combos = dict(self.sets)[set_name]
        return " | ".join(" & ".join(combo) for combo in combos)

    def allows(self, models: Iterable[str]) -> bool:
        """Do these models fit in one combination (or is it a single model running alone)?"""
        wanted = set(models)
        if len(wanted) <= 1:
            return True
        return any(wanted <= set(combo) for _, combos in self.sets for combo in combos)

    def decide(self, target: str, running: Iterable[str], explain: bool = False) -> Decision:
        running = tuple(sorted(set(running)))
        ranked: list[tuple[int, int, str, tuple[str, ...]]] = []
        order = 0
        for name, combos in self.sets:
            for combo in combos:
                if target in combo:
                    cost = sum(self.cost(m) for m in running if m not in combo)
                    ranked.append((cost, order, name, combo))
                order += 1
        ranked.sort()
        candidates = (
            tuple(Candidate(name, combo, cost) for cost, _, name, combo in ranked) if explain else None
        )
        if target in running:
            name = next(
                (n for n, combos in self.sets if any(set(running) <= set(c) for c in combos)), None
            )
            return Decision(
                target, running, (), name, self.dsl(name) if name else None, running, 0,
                "already running", candidates,
            )
        if not ranked:
            return Decision(target, running, running, None, None, (target,), 0, "runs alone", candidates)
        cost, _, name, combo = ranked[0]
        evict = tuple(m for m in running if m not in combo)
        return Decision(
            target, running, evict, name, self.dsl(name), combo, cost, "cheapest combination", candidates
        )

    def evict_for(self, target: str, running: Iterable[str]) -> tuple[str, ...]:
        return self.decide(target, running).evict


@dataclass(frozen=True)
class Group:
    members: tuple[str, ...]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


class GroupTestPolicy:
    engine = "group"

    def __init__(self, models: Iterable[str], groups: Mapping[str, Group]) -> None:
        self.groups = dict(groups)
        self.group_of: dict[str, str] = {}
        for gid, group in self.groups.items():
            for member in group.members:
                if member in self.group_of:
                    raise ValueError(f"model member {member} is used in multiple groups")
                self.group_of[member] = gid
        unlisted = sorted(m for m in models if m not in self.group_of)
        if unlisted:
            self.groups.setdefault(DEFAULT_GROUP, Group(tuple(unlisted)))
            for m in unlisted:
                self.group_of[m] = DEFAULT_GROUP

    def evicts(self, target: str, other: str) -> tuple[bool, str]:
        """Does loading `target` evict a running `other`, and by which rule?"""
        tg, og = self.group_of[target], self.group_of[other]
        if tg == og:
            return self.groups[tg].swap, "same group (swap)"
        if self.groups[tg].exclusive and not self.groups[og].persistent:
            return True, "exclusive group"
        return False, ""

    def decide(self, target: str, running: Iterable[str], explain: bool = False) -> Decision:
        if target not in self.group_of:
            raise ValueError(f"unknown model {target!r}")
        running = tuple(sorted(set(running)))
        evict, rules = [], []
        for m in running:
            if m == target:
                continue
            hit, rule = self.evicts(target, m)
            if hit:
                evict.append(m)
                rules.append(rule)
        kept = tuple(sorted((set(running) - set(evict)) | {target}))
        rule = ", ".join(dict.fromkeys(rules)) or "nothing to evict"
        return Decision(
            target, running, tuple(evict), self.group_of[target], None, kept, len(evict), rule,
            () if explain else None,
        )

    def evict_for(self, target: str, running: Iterable[str]) -> tuple[str, ...]:
        return self.decide(target, running).evict


class StubPolicy:
    engine = "stub"

    def __init__(self, evict: Mapping[str, Iterable[str]] | None = None) -> None:
        self.table = {target: frozenset(victims) for target, victims in (evict or {}).items()}
        self.queries = 0

    def decide(self, target: str, running: Iterable[str], explain: bool = False) -> Decision:
        self.queries += 1
        running = tuple(sorted(set(running)))
        victims = self.table.get(target, frozenset())
        evict = tuple(m for m in running if m in victims and m != target)
        kept = tuple(sorted((set(running) - set(evict)) | {target}))
        return Decision(target, running, evict, None, None, kept, len(evict), "stub")

    def evict_for(self, target: str, running: Iterable[str]) -> tuple[str, ...]:
        return self.decide(target, running).evict


@dataclass
class RecordingEffects:
    """An Effects that records every call. Requests whose id is in `gone` refuse their grant,
    as a caller that disconnected would."""

    calls: list[tuple] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    positions: dict[Hashable, int] = field(default_factory=dict)
    gone: set[Hashable] = field(default_factory=set)

    def start_swap(self, model: str, decision: Decision, stop_timeout: float) -> None:
        self.decisions.append(decision)
        self.calls.append(("start_swap", model, decision.evict))

    def grant(self, req_id: Hashable, model: str) -> bool:
        took = req_id not in self.gone
        self.calls.append(("grant", req_id, model, took))
        return took

    def reject(self, req_id: Hashable, status: int, message: str, headers: Mapping[str, str]) -> None:
        self.calls.append(("reject", req_id, status, message, dict(headers)))

    def queue_position(self, req_id: Hashable, position: int) -> None:
        self.positions[req_id] = position
        self.calls.append(("position", req_id, position))

    def stop_processes(self, models: tuple[str, ...], reason: str, timeout: float) -> None:
        self.calls.append(("stop", models, reason, timeout))

    # -- queries, in the vocabulary of llama-swap's fifo_test.go

    def of(self, kind: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == kind]

    def starts_for(self, model: str) -> int:
        return sum(1 for c in self.of("start_swap") if c[1] == model)

    def served(self, model: str) -> int:
        return sum(1 for c in self.of("grant") if c[2] == model and c[3])

    def granted(self) -> list[Hashable]:
        return [c[1] for c in self.of("grant")]

    def rejected(self, status: int | None = None) -> list[Hashable]:
        return [c[1] for c in self.of("reject") if status is None or c[2] == status]

    def stops(self) -> list[tuple]:
        return [c[1:] for c in self.of("stop")]

    def clear(self) -> None:
        self.calls.clear()
        self.decisions.clear()
