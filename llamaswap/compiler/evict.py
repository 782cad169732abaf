"""Evict: the two eviction policies, pure functions `(target, running) -> Decision`.

MatrixPolicy (reference §3.4):
1. target already running -> evict nothing; the reported set is the first set (solver
   order) with a combination holding all running models, or none;
2. target in no set -> it runs alone: evict everything running (cost 0);
3. otherwise every combination holding the target is a candidate, costing the sum of the
   evict costs (default 1) of running models outside it; the lowest cost wins, ties go to the
   first candidate in solver order (sets in topological order, combinations in expansion
   order). `evict` keeps running order; `target_set` is the chosen combination, sorted.
   Lookups hit the precomputed table when there is one (`precompute.py`); otherwise, and
   for any state outside it, the symbolic solver answers (`solve.py`), memoised.

GroupPolicy (reference §4): for target T in group TG, a running M in group OG is evicted when
OG == TG and TG.swap, or OG != TG and TG.exclusive and not OG.persistent. Loading a member of
a non-exclusive group never unloads other groups (llama-swap's one-way behaviour).

Both are immutable after construction (the memo is a cache of pure results) and never log:
speculative queries must stay silent; the runtime logs committed swaps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from llamaswap.compiler.decision import (
    RULE_ALONE,
    RULE_CHEAPEST,
    RULE_RUNNING,
    Candidate,
    Decision,
    DecisionTable,
    State,
)
from llamaswap.compiler.group import Group
from llamaswap.compiler.solve import SymbolicSolver

MEMO_SIZE = 4096


class _Tabled:
    """The precomputed-table slot both policies share: setting it refreshes the row index."""

    _rows: dict[str, dict[State, Decision]]

    @property
    def table(self) -> DecisionTable | None:
        return self._table

    @table.setter
    def table(self, table: DecisionTable | None) -> None:
        self._table = table
        self._rows = table.rows if table is not None else {}


class MatrixPolicy(_Tabled):
    engine = "matrix"

    def __init__(
        self,
        models: Sequence[str],
        sets: Sequence[tuple[str, str, object]],
        evict_costs: dict[str, int],
        table_budget: int = 0,
    ):
        self.models = tuple(sorted(models))
        self.solver = SymbolicSolver(self.models, sets)  # type: ignore[arg-type]
        self.index = self.solver.index
        self._bits = {m: 1 << i for m, i in self.index.items()}
        self.evict_costs = dict(evict_costs)
        self.costs = [evict_costs.get(m, 1) for m in self.models]
        self.dsl = {cs.name: cs.dsl for cs in self.solver.sets}
        # Bounded FIFO memo of symbolic answers (pure results, so eviction order only
        # affects speed). A plain dict: a hit costs one lookup, no LRU bookkeeping.
        self._memo: dict[tuple[str, tuple[str, ...]], Decision] = {}
        self.table = None
        # With resources, the plan sets the Placer the scheduler asks (`placer.py`).
        self.placer: Any = None
        self._in_some_set = 0
        for cs in self.solver.sets:
            self._in_some_set |= cs.support

    def cost_of(self, model: str) -> int:
        return self.evict_costs.get(model, 1)

    def _known(self, target: str, run: tuple[str, ...]) -> Decision | None:
        """A decision already made for (target, run): from the table, else from the memo."""
        row = self._rows.get(target)
        if row is not None:
            hit = row.get(run)
            if hit is not None:
                return hit
        return self._memo.get((target, run))

    def decide(self, target: str, running: Iterable[str], explain: bool = False) -> Decision:
        if explain:
            return self.solve(target, _normal(running), explain=True)
        if type(running) is tuple:
            # Table and memo keys hold sorted, duplicate-free tuples, so a hit on the caller's
            # own tuple implies it already was in that normal form.
            hit = self._known(target, running)
            if hit is not None:
                return hit
        run = _normal(running)
        if run is not running:
            hit = self._known(target, run)
            if hit is not None:
                return hit
        decision = self.solve(target, run, explain=False)
        memo = self._memo
        memo[(target, run)] = decision
        if len(memo) > MEMO_SIZE:
            try:  # oldest first (insertion order); tolerant of a concurrent eviction
                memo.pop(next(iter(memo)), None)
            except (RuntimeError, StopIteration):
                pass
        return decision

    def evict_for(self, target: str, running: Iterable[str]) -> tuple[str, ...]:
        return self.decide(target, running).evict

    def solve(self, target: str, run: tuple[str, ...], explain: bool) -> Decision:
        """Decide with the symbolic solver (no table, no memo)."""
        if target not in self.index:
            raise KeyError(f"unknown model {target!r}")
        bits = self._bits
        running_mask = 0
        unknown_cost = 0
        for m in run:
            b = bits.get(m)
            if b is None:
                unknown_cost += 1
            else:
                running_mask |= b
        tbit = bits[target]
        if target in run:
            cs = self.solver.containing_all(running_mask) if unknown_cost == 0 else None
            return Decision(
                target,
                run,
                (),
                cs.name if cs else None,
                cs.dsl if cs else None,
                run,
                0,
                RULE_RUNNING,
                () if explain else None,
            )
        if not self._in_some_set & tbit:
            return Decision(target, run, run, None, None, (target,), 0, RULE_ALONE, () if explain else None)
        best, per_set = self.solver.best(tbit, running_mask, self.costs, explain)
        assert best is not None  # the target is in some set's support
        cost, cs, witness = best
        evict = tuple(m for m in run if not witness & bits.get(m, 0))
        candidates = None
        if explain:
            ranked = sorted(per_set, key=lambda t: (t[0], t[1].index))
            candidates = tuple(
                Candidate(s.name, self.solver.names(w), c + unknown_cost) for c, s, w in ranked
            )
        return Decision(
            target,
            run,
            evict,
            cs.name,
            cs.dsl,
            self.solver.names(witness),
            cost + unknown_cost,
            RULE_CHEAPEST,
            candidates,
        )


class GroupPolicy(_Tabled):
    engine = "group"

    def __init__(self, models: Sequence[str], groups: Sequence[Group]):
        self.models = tuple(sorted(models))
        self.groups = {g.name: g for g in groups}
        self.group_of: dict[str, Group] = {}
        for g in groups:
            for m in g.members:
                self.group_of[m] = g
        self.table = None

    def decide(self, target: str, running: Iterable[str], explain: bool = False) -> Decision:
        if not explain:
            row = self._rows.get(target)
            if row is not None:
                if type(running) is tuple:
                    hit = row.get(running)
                    if hit is not None:
                        return hit
                run = _normal(running)
                if run is not running:
                    hit = row.get(run)
                    if hit is not None:
                        return hit
                return self.solve(target, run, False)
        return self.solve(target, _normal(running), explain)

    def evict_for(self, target: str, running: Iterable[str]) -> tuple[str, ...]:
        return self.decide(target, running).evict

    def solve(self, target: str, run: tuple[str, ...], explain: bool) -> Decision:
        tg = self.group_of.get(target)
        if tg is None:
            raise KeyError(f"unknown model {target!r}")
        evict: list[str] = []
        # Why running models stop / stay: (sentence form, group named) -> models, in order.
        stops: dict[tuple[str, str], list[str]] = {}
        stays: dict[tuple[str, str], list[str]] = {}
        for m in run:
            og = self.group_of.get(m)
            if m == target:
                continue
            if og is None:
                evict.append(m)
                stops.setdefault(("unknown", ""), []).append(m)
            elif og is tg:
                if tg.swap:
                    evict.append(m)
                    stops.setdefault(("swap", tg.name), []).append(m)
                else:
                    stays.setdefault(("together", tg.name), []).append(m)
            elif not tg.exclusive:
                stays.setdefault(("open", tg.name), []).append(m)
            elif og.persistent:
                stays.setdefault(("persistent", og.name), []).append(m)
            else:
                evict.append(m)
                stops.setdefault(("exclusive", og.name), []).append(m)
        reasons = [_reason(kind, name, ms, tg.name) for (kind, name), ms in stops.items()]
        kept = [_reason(kind, name, ms, tg.name) for (kind, name), ms in stays.items()]
        after = tuple(sorted(set(run) - set(evict) | {target}))
        if reasons:
            rule = "; ".join(reasons + kept)
        elif target in run:
            rule = RULE_RUNNING
        elif kept:
            rule = "; ".join(kept)
        else:
            rule = f"nothing else runs ({group_character(tg)})"
        return Decision(
            target, run, tuple(evict), tg.name, None, after, len(evict), rule, () if explain else None
        )


def _reason(kind: str, group: str, models: list[str], target_group: str) -> str:
    """One sentence for the running models that stop (or stay) for the same reason."""
    one = len(models) == 1
    who = ", ".join(models)
    if kind == "unknown":
        return f"{who} {'is not a configured model' if one else 'are not configured models'}"
    if kind == "swap":
        return f"{who} {'shares' if one else 'share'} group {group!r}, which runs one member at a time"
    if kind == "exclusive":
        return f"{who} {'is' if one else 'are'} in group {group!r}, and group {target_group!r} is exclusive"
    stay = "stays" if one else "stay"
    if kind == "together":
        return f"{who} {stay}: group {group!r} has swap: false, its members run together"
    if kind == "open":
        return f"{who} {stay}: group {group!r} is not exclusive, it never stops other groups"
    return f"{who} {stay}: group {group!r} is persistent, no other group stops it"


def group_character(g: Group) -> str:
    """What a group's flags mean, in words (reference §4)."""
    parts = [f"group {g.name!r} runs " + ("one member at a time" if g.swap else "its members together")]
    if g.exclusive:
        parts.append(
            "is exclusive: starting a member stops the models of other groups that are not persistent"
        )
    else:
        parts.append("is not exclusive: it never stops other groups")
    if g.persistent:
        parts.append("is persistent: no other group stops its models")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def _normal(running: Iterable[str]) -> tuple[str, ...]:
    """The running set as a Decision holds it: sorted, without duplicates."""
    run = tuple(running)
    for i in range(1, len(run)):
        if run[i - 1] >= run[i]:
            return tuple(sorted(set(run)))
    return run
