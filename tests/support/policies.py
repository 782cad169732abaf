"""Test doubles for the scheduler's collaborators: eviction policies and a recording Effects.

`MatrixTestPolicy` and `GroupTestPolicy` implement the `EvictionPolicy` protocol by
llama-swap's rules. They are the brute-force references of `support.brute_force` (written to
be obviously right, and checked against the compiled policies by tests/plan), given
constructors that suit hand-written scheduler tests:

- matrix (behaviour reference §3.4): `MatrixTestPolicy([(set name, [combination, ...]), ...],
  evict_costs)`, sets in solver order. Target already running -> evict nothing. Target in no
  combination -> runs alone, evicts everything. Otherwise the candidate with the lowest sum
  of evict costs (default 1) of the running models it lacks; ties go to the earliest.
- groups (§4): `GroupTestPolicy(models, {name: Group(members, swap, exclusive, persistent)})`;
  every model not in a group is in "(default)" {swap, exclusive}. A running model M != T is
  evicted when it shares T's group and that group swaps, or when T's group is exclusive and
  M's group is not persistent. Loading a non-exclusive member never evicts other groups.

`StubPolicy` mirrors llama-swap's `stubPlanner`: a fixed evict list per target (kept to the
models actually running, as a Decision requires).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from llamaswap.compiler.decision import Decision
from support.brute_force import BruteGroups, BruteMatrix


class MatrixTestPolicy(BruteMatrix):
    def __init__(
        self,
        sets: Sequence[tuple[str, Sequence[Iterable[str]]]],
        evict_costs: Mapping[str, int] | None = None,
    ) -> None:
        explicit = []
        for name, combos in sets:
            combos = [sorted(set(combo)) for combo in combos]
            explicit.append((name, " | ".join(" & ".join(c) for c in combos), combos))
        super().__init__(explicit, evict_costs or {})

    def allows(self, models: Iterable[str]) -> bool:
        """Do these models fit in one combination (or is it a single model running alone)?"""
        wanted = set(models)
        return len(wanted) <= 1 or any(wanted <= combo for _, _, combos in self.sets for combo in combos)


@dataclass(frozen=True)
class Group:
    members: tuple[str, ...]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


class GroupTestPolicy(BruteGroups):
    def __init__(self, models: Iterable[str], groups: Mapping[str, Group]) -> None:
        super().__init__(
            models, [(name, g.swap, g.exclusive, g.persistent, g.members) for name, g in groups.items()]
        )


class StubPolicy:
    engine = "stub"
    table = None  # no precomputed decisions

    def __init__(self, evict: Mapping[str, Iterable[str]] | None = None) -> None:
        self.victims = {target: frozenset(victims) for target, victims in (evict or {}).items()}
        self.queries = 0

    def decide(self, target: str, running: Iterable[str], explain: bool = False) -> Decision:
        self.queries += 1
        running = tuple(sorted(set(running)))
        victims = self.victims.get(target, frozenset())
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

    def end_requests(self, req_ids: tuple[Hashable, ...], model: str, reason: str) -> None:
        self.calls.append(("end", tuple(req_ids), model, reason))

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

    def ended(self) -> list[tuple]:
        """(request ids, model, reason) of each end_requests call."""
        return [c[1:] for c in self.of("end")]

    def clear(self) -> None:
        self.calls.clear()
        self.decisions.clear()
