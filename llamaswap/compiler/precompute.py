"""Precompute: the decision for every reachable running state and every target, so a swap
decision at run time is one dictionary lookup.

Reachable running states:
- matrix engine: the empty set, every subset of every combination, and each model alone
  (a decision only ever leaves the target's combination, or the target alone, running);
- group engine: the closure of the empty set under the policy's own decisions.

The matrix table is computed from the expanded combinations directly (bitmasks, the
tie-break by solver order made explicit; see `build_matrix_table`) — deliberately not by
calling the symbolic solver, so the two paths check each other. There is no table when a set is symbolic or when
states x models exceeds the budget; the policy then asks the symbolic solver.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import TYPE_CHECKING

from llamaswap.compiler.decision import (
    RULE_ALONE,
    RULE_CHEAPEST,
    RULE_RUNNING,
    Decision,
    DecisionTable,
    EvictionPolicy,
    State,
)
from llamaswap.compiler.evict import GroupPolicy, MatrixPolicy

if TYPE_CHECKING:
    from llamaswap.compiler.expand import SetEntry


def matrix_states(models: Sequence[str], sets: Sequence[SetEntry], limit: int) -> list[State] | None:
    """Reachable running states of a fully expanded matrix (`sets` in solver order), or None
    past `limit` states (or when a set is symbolic)."""
    if any(s.combinations is None for s in sets):
        return None
    seen: set[State] = {()}
    for m in models:
        seen.add((m,))
        if len(seen) > limit:
            return None
    for s in sets:
        for combo in s.combinations or ():
            n = len(combo)
            if (1 << n) > limit:
                return None
            for bits in range(1, 1 << n):
                seen.add(tuple(combo[i] for i in range(n) if bits >> i & 1))
            if len(seen) > limit:
                return None
    return sorted(seen, key=lambda st: (len(st), st))


def group_states(models: Sequence[str], policy: EvictionPolicy, limit: int) -> list[State] | None:
    """Closure of the empty running set under a (group) policy's decisions for `models`, or
    None past `limit` states."""
    seen: set[State] = {()}
    frontier: list[State] = [()]
    while frontier:
        nxt: list[State] = []
        for state in frontier:
            for target in models:
                d = policy.decide(target, state)
                new = tuple(sorted(set(state) - set(d.evict) | {target}))
                if new not in seen:
                    seen.add(new)
                    if len(seen) > limit:
                        return None
                    nxt.append(new)
        frontier = nxt
    return sorted(seen, key=lambda st: (len(st), st))


def build_matrix_table(
    policy: MatrixPolicy, sets: Sequence[SetEntry], states: Sequence[State]
) -> DecisionTable:
    """Every decision for the given states, from the expanded combinations.

    `first[q]` is the earliest candidate (solver order) holding every model of the mask q.
    For a state S and a target t, let c1 be the earliest cheapest candidate and P1 = S & c1
    (what it keeps). `first[P1 | t]` holds t and P1, so it keeps at least P1's weight and
    comes no later than c1: it is c1. And a candidate `first[P | t]` keeps at least P's
    weight, so no sub-mask heavier than P1 has an entry. Hence: walk the sub-masks of S by
    weight, heaviest first; the first weight with any entry is P1's; among that weight's
    entries the earliest is c1. A few dictionary lookups instead of a scan of every
    candidate holding t."""
    models = policy.models
    index = {m: i for i, m in enumerate(models)}
    costs = [policy.cost_of(m) for m in models]
    # Candidates in solver order: (set name, dsl, combination mask, sorted combination).
    cands: list[tuple[str, str, int, tuple[str, ...]]] = []
    for s in sets:
        for combo in s.combinations or ():
            mask = 0
            for m in combo:
                mask |= 1 << index[m]
            cands.append((s.name, s.dsl, mask, combo))
    first: dict[int, int] = {}
    together = [0] * len(models)  # model index -> every model sharing a candidate with it
    for ci, (_, _, mask, _) in enumerate(cands):
        sub = mask
        while sub:
            if sub not in first:
                first[sub] = ci
            sub = (sub - 1) & mask
        rest = mask
        while rest:
            low = rest & -rest
            together[low.bit_length() - 1] |= mask
            rest ^= low

    weight_memo: dict[int, int] = {}

    def weight(mask: int) -> int:
        got = weight_memo.get(mask)
        if got is None:
            got = 0
            rest = mask
            while rest:
                low = rest & -rest
                got += costs[low.bit_length() - 1]
                rest ^= low
            weight_memo[mask] = got
        return got

    rows: dict[str, dict[State, Decision]] = {t: {} for t in models}
    # Per target: (model, bit, its row, its first candidate or None when it is in no set).
    per_target = [(t, 1 << i, rows[t], first.get(1 << i)) for i, t in enumerate(models)]
    for state in states:
        smask = 0
        near = 0  # targets that share a candidate with some running model
        for m in state:
            i = index[m]
            smask |= 1 << i
            near |= together[i]
        total = weight(smask)
        # Sub-masks of the state grouped by weight, heaviest first: the first group with a
        # candidate for the target holds the cheapest cost (see the docstring).
        by_weight: dict[int, list[int]] = {}
        sub = smask
        while True:
            by_weight.setdefault(weight(sub), []).append(sub)
            if not sub:
                break
            sub = (sub - 1) & smask
        groups = sorted(by_weight.items(), reverse=True)
        holder = first.get(smask) if smask else None
        containing = (cands[holder][0], cands[holder][1]) if holder is not None else (None, None)
        for target, tb, row, tfirst in per_target:
            if smask & tb:
                decision = Decision(target, state, (), containing[0], containing[1], state, 0, RULE_RUNNING)
            elif tfirst is None:
                decision = Decision(target, state, state, None, None, (target,), 0, RULE_ALONE)
            elif not near & tb:
                # No candidate holds the target and a running model: its first candidate
                # wins and everything running is evicted.
                name, dsl, _, combo = cands[tfirst]
                decision = Decision(target, state, state, name, dsl, combo, total, RULE_CHEAPEST)
            else:
                best_ci = -1
                best_cost = 0
                for kept, group in groups:
                    for p in group:
                        hit = first.get(p | tb)
                        if hit is not None and (best_ci < 0 or hit < best_ci):
                            best_ci = hit
                    if best_ci >= 0:
                        best_cost = total - kept
                        break
                name, dsl, mask, combo = cands[best_ci]
                evict = tuple(m for m in state if not mask >> index[m] & 1)
                decision = Decision(target, state, evict, name, dsl, combo, best_cost, RULE_CHEAPEST)
            row[state] = decision
    return DecisionTable(states, models, rows)


def build_table(
    policy: MatrixPolicy | GroupPolicy, sets: Sequence[SetEntry], budget: int
) -> DecisionTable | None:
    """The precomputed table for a policy (a matrix policy's `sets` in solver order; none for
    groups), or None when states x models would exceed `budget` entries."""
    n_models = max(1, len(policy.models))
    limit = budget // n_models
    if limit < 1 or not policy.models:
        return None
    # The table is many small acyclic objects: cyclic GC passes over it only cost time.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        if isinstance(policy, MatrixPolicy):
            states = matrix_states(policy.models, sets, limit)
            if states is None:
                return None
            return build_matrix_table(policy, sets, states)
        states = group_states(policy.models, policy, limit)
        if states is None:
            return None
        rows = {t: {s: policy.solve(t, s, False) for s in states} for t in policy.models}
        return DecisionTable(states, policy.models, rows)
    finally:
        if was_enabled:
            gc.enable()
