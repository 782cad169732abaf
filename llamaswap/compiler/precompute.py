"""Precompute: the decision for every reachable running state and every target, so a swap
decision at run time is one dictionary lookup.

Reachable running states:
- matrix engine: the empty set, every subset of every combination, and each model alone
  (a decision only ever leaves the target's combination, or the target alone, running);
- group engine: the closure of the empty set under the policy's own decisions.

The matrix table is computed by scanning the expanded combinations directly (bitmasks, the
tie-break by solver order made explicit) — deliberately not by calling the symbolic solver,
so the two paths check each other. There is no table when a set is symbolic or when
states x models exceeds the budget; the policy then asks the symbolic solver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

from llamaswap.compiler.decision import Decision

if TYPE_CHECKING:
    from llamaswap.compiler.evict import GroupPolicy, MatrixPolicy
    from llamaswap.compiler.plan import Plan

State = tuple[str, ...]


class DecisionTable:
    """(target, running) -> Decision for every reachable running state."""

    def __init__(self, states: Sequence[State], models: Sequence[str], entries: dict[tuple[str, State], Decision]):
        self.states = tuple(states)
        self.models = tuple(models)
        # One dict per target, keyed by the running state: a lookup hashes only the state
        # (no key tuple to build), which is what keeps it well under a microsecond.
        self.rows: dict[str, dict[State, Decision]] = {t: {} for t in self.models}
        for (target, state), decision in entries.items():
            self.rows[target][state] = decision
        self._size = len(entries)

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


def matrix_states(plan: "Plan", limit: int) -> list[State] | None:
    """Reachable running states of a fully expanded matrix, or None past `limit` states
    (or when a set is symbolic)."""
    if any(s.combinations is None for s in plan.sets):
        return None
    seen: set[State] = {()}
    for m in plan.models:
        seen.add((m,))
        if len(seen) > limit:
            return None
    for s in plan.sets:
        for combo in s.combinations or ():
            n = len(combo)
            if (1 << n) > limit:
                return None
            for bits in range(1, 1 << n):
                seen.add(tuple(combo[i] for i in range(n) if bits >> i & 1))
            if len(seen) > limit:
                return None
    return sorted(seen, key=lambda st: (len(st), st))


def group_states(policy: "GroupPolicy", limit: int) -> list[State] | None:
    """Closure of the empty running set under the group policy's decisions."""
    seen: set[State] = {()}
    frontier: list[State] = [()]
    while frontier:
        nxt: list[State] = []
        for state in frontier:
            for target in policy.models:
                d = policy.solve(target, state, False)
                new = tuple(sorted(set(state) - set(d.evict) | {target}))
                if new not in seen:
                    seen.add(new)
                    if len(seen) > limit:
                        return None
                    nxt.append(new)
        frontier = nxt
    return sorted(seen, key=lambda st: (len(st), st))


def build_matrix_table(plan: "Plan", policy: "MatrixPolicy", states: Sequence[State]) -> DecisionTable:
    from llamaswap.compiler.evict import RULE_ALONE, RULE_CHEAPEST, RULE_RUNNING

    models = policy.models
    index = {m: i for i, m in enumerate(models)}
    costs = [plan.evict_cost(m) for m in models]
    # Candidates in solver order: (set name, dsl, combination mask, sorted combination).
    cands: list[tuple[str, str, int, tuple[str, ...]]] = []
    for s in plan.sets:
        for combo in s.combinations or ():
            mask = 0
            for m in combo:
                mask |= 1 << index[m]
            cands.append((s.name, s.dsl, mask, combo))
    by_target: dict[int, list[int]] = {}
    for ci, (_, _, mask, _) in enumerate(cands):
        for i in range(len(models)):
            if mask >> i & 1:
                by_target.setdefault(i, []).append(ci)

    weight_memo: dict[int, int] = {}

    def weight(mask: int) -> int:
        got = weight_memo.get(mask)
        if got is None:
            got = sum(costs[i] for i in range(len(models)) if mask >> i & 1)
            weight_memo[mask] = got
        return got

    entries: dict[tuple[str, State], Decision] = {}
    for state in states:
        smask = 0
        for m in state:
            smask |= 1 << index[m]
        containing = next(((n, d) for n, d, mask, _ in cands if mask & smask == smask), (None, None))
        for ti, target in enumerate(models):
            if target in state:
                decision = Decision(target, state, (), containing[0], containing[1], state, 0, RULE_RUNNING)
            elif ti not in by_target:
                decision = Decision(target, state, state, None, None, (target,), 0, RULE_ALONE)
            else:
                best_ci = -1
                best_cost = 0
                for ci in by_target[ti]:
                    cost = weight(smask & ~cands[ci][2])
                    if best_ci < 0 or cost < best_cost:
                        best_ci, best_cost = ci, cost
                        if cost == 0:
                            break
                name, dsl, mask, combo = cands[best_ci]
                evict = tuple(m for m in state if not mask >> index[m] & 1)
                decision = Decision(target, state, evict, name, dsl, combo, best_cost, RULE_CHEAPEST)
            entries[(target, state)] = decision
    return DecisionTable(states, models, entries)


def build_table(plan: "Plan", policy: "MatrixPolicy | GroupPolicy") -> DecisionTable | None:
    """The precomputed table for a plan, or None when it would exceed the budget."""
    n_models = max(1, len(plan.models))
    limit = plan.options.precompute_budget // n_models
    if limit < 1 or not plan.ok or not plan.models:
        return None
    if policy.engine == "matrix":
        states = matrix_states(plan, limit)
        if states is None:
            return None
        return build_matrix_table(plan, policy, states)  # type: ignore[arg-type]
    states = group_states(policy, limit)  # type: ignore[arg-type]
    if states is None:
        return None
    entries = {(t, s): policy.solve(t, s, False) for s in states for t in policy.models}  # type: ignore[union-attr]
    return DecisionTable(states, policy.models, entries)
