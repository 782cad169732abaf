"""Reachable running states of a plan: the precomputed table's, else enumerated on demand.

The one place that answers "which running states can this plan reach?" for everything that
lists them (`plan --all`, `plan --diff`, the graph views). The enumerations themselves are
precompute's (`matrix_states`, `group_states`), which also build the table. Pure: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamaswap.compiler.decision import State
from llamaswap.compiler.precompute import group_states, matrix_states

if TYPE_CHECKING:
    from llamaswap.compiler.group import Group
    from llamaswap.compiler.plan import Plan

# The default cap on a listing of every decision (`plan --all`, `--diff`, the transitions
# view) when there is no table: past the precompute budget each decision is a symbolic solve
# (tens of µs), so a cap keeps the listing from running for hours.
DECISIONS_MAX = 2_000_000


class StatesError(Exception):
    """The reachable states cannot be listed; `message` says why and what to do."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def enumerate_states(plan: Plan, limit: int) -> list[State] | None:
    """The reachable running states (the table's when there is one, sorted by size then
    names), or None when there are more than `limit` or a set is symbolic."""
    table = plan.policy.table
    if table is not None:
        return list(table.states)
    if plan.engine == "matrix":
        return matrix_states(plan.models, plan.sets, limit)
    return group_states(plan.models, plan.policy, limit)


def reachable_states(plan: Plan, max_decisions: int = DECISIONS_MAX) -> list[State]:
    """Every reachable running state, for a listing of every decision: at most
    `max_decisions` decisions (states x models). Raises StatesError when a set is symbolic
    (and there is no table) or when there are more."""
    limit = max(1, max_decisions // max(1, len(plan.models)))
    if plan.policy.table is None and plan.engine == "matrix":
        symbolic = [s.name for s in plan.sets if s.combinations is None]
        if symbolic:
            raise StatesError(
                f"set(s) {', '.join(symbolic)} are symbolic (too large to expand), so the "
                "reachable states cannot be listed; raise --expand-budget to expand them"
            )
    states = enumerate_states(plan, limit)
    if states is None:
        raise StatesError(
            f"more than {limit:,} reachable running states (x {len(plan.models)} models: over "
            f"{max_decisions:,} decisions); too many to list"
        )
    return states


def why_unreachable(plan: Plan, state: State) -> str | None:
    """Why no sequence of requests leaves exactly the models of `state` running, or None when
    one does (reference §3.4, §4). Matrix: some combination must hold them all (a model in
    no set runs alone). Groups: the models must have a start order in which no start stops
    a model started before it (eviction is decided pair by pair, and models outside the
    state can only stop models, never keep one running)."""
    if len(state) <= 1:
        return None
    policy = plan.policy
    if plan.engine == "matrix":
        solver = getattr(policy, "solver", None)
        if solver is None:
            return None
        mask = 0
        for m in state:
            mask |= 1 << solver.index[m]
        if solver.containing_all(mask) is not None:
            return None
        return f"no set lets {', '.join(state)} run together"
    # stops[a] = the models of the state that starting a stops, with the rule that says so.
    stops: dict[str, dict[str, str]] = {a: {} for a in state}
    for a in state:
        for b in state:
            if a != b:
                d = policy.decide(a, (b,))
                if b in d.evict:
                    stops[a][b] = d.rule
    group_of: dict[str, Group] = getattr(policy, "group_of", {})
    for i, a in enumerate(state):
        for b in state[i + 1 :]:
            if b in stops[a] and a in stops[b]:
                g = group_of.get(a)
                if g is not None and group_of.get(b) is g:
                    return f"{a} and {b} are both in group {g.name!r}, which runs one member at a time"
                return f"starting {a} stops {b} ({stops[a][b]}), and starting {b} stops {a} ({stops[b][a]})"
    # a must start before b when starting a stops b: the order exists when that is acyclic.
    left = set(state)
    while left:
        free = [b for b in left if not any(b in stops[a] for a in left if a != b)]
        if not free:
            return (
                f"no start order leaves {', '.join(sorted(left))} running together: each start stops "
                "one started before it"
            )
        left.difference_update(free)
    return None
