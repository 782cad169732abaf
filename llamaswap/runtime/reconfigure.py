"""Reconfigure: what a hot reload changes, as one value. Pure (no I/O, no clock): the reload
edge (runtime/reload.py) computes it, logs and records it, and hands it to the router, whose
scheduler carries it out.

`reload_plan(old, new, running)` compares the serving plan, the newly compiled one and the
models running now (not stopped, in the scheduler's view):

- every model is added, removed, restarted, updated or unchanged. *Restarted*: its process
  spec differs (`RESTART_FIELDS`: what runs, where it listens, how it is checked and stopped;
  a reallocated `${PORT}` shows up in cmd and proxy). *Updated*: only settings the running
  process does not depend on changed (TTL, limits, filters, aliases, names, the unload or
  health-check timeout...): it keeps running and the new values apply at once;
- aliases that point elsewhere now, or nowhere;
- the decisions that changed (compiler/diff.py's `diff_plans`), counted up to a cap;
- the eviction the new policy forces. The running models that survive the reload must form
  a state the new policy allows: one the scheduler could reach by loading them one after
  another without evicting anything (`allowed`; every state a policy reaches is one). If
  they do not, `evict` is the cheapest subset to stop that leaves an allowed state:
  lowest sum of evict costs, then fewest models, then names.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from llamaswap.compiler.decision import EvictionPolicy
from llamaswap.compiler.diff import diff_plans
from llamaswap.compiler.plan import Plan
from llamaswap.compiler.reachable import StatesError
from llamaswap.runtime.settings import (
    effective_ttl,
    effective_unload_timeout,
    health_check_timeout,
)

# ModelConfig fields the upstream process depends on: a change restarts the model.
RESTART_FIELDS = ("cmd", "cmd_stop", "env", "proxy", "check_endpoint")
# ProcessSpec fields a running process picks up without a restart (the next start, the next
# stop use them). Every ProcessSpec field is one or the other (a test checks it).
LIVE_SPEC_FIELDS = ("health_check_timeout", "unload_timeout", "log_lines", "log_bytes")
# Fields already reflected elsewhere (macros are expanded into cmd/proxy/...).
_IGNORED_FIELDS = frozenset({"macros"})
# Subsets of the running models tried exactly for the cheapest eviction (2^n states).
EXACT_EVICTION_MAX = 14
# Decisions compared for the summary; past this the count is not given.
DIFF_DECISIONS_MAX = 200_000
DIFF_EXAMPLES = 5


@dataclass(frozen=True)
class ReloadPlan:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # model -> what differs
    aliases: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)  # old, new target
    ports: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)  # changed only
    decisions_changed: int | None = 0  # None: not counted (see decisions_note)
    decisions_note: str = ""
    decision_examples: tuple[str, ...] = ()
    evict: tuple[str, ...] = ()  # running models the new policy does not allow together
    evict_reason: str = ""

    @property
    def changes_models(self) -> bool:
        return bool(self.added or self.removed or self.restarted)

    @property
    def empty(self) -> bool:
        return not (
            self.added
            or self.removed
            or self.restarted
            or self.updated
            or self.aliases
            or self.decisions_changed
            or self.evict
        )

    def summary(self) -> str:
        """One line: models added/removed/restarted/updated, aliases, decisions, eviction."""

        def names(xs: Iterable[str]) -> str:
            return "[" + ", ".join(xs) + "]"

        parts = []
        if self.added:
            parts.append(f"added {names(self.added)}")
        if self.removed:
            parts.append(f"removed {names(self.removed)}")
        if self.restarted:
            parts.append(f"restarted {names(self.restarted)}")
        if self.updated:
            parts.append(f"updated {names(self.updated)}")
        parts.append(f"unchanged {len(self.unchanged)}")
        if self.aliases:
            parts.append(f"aliases changed {names(sorted(self.aliases))}")
        if self.decisions_changed is None:
            parts.append(f"decisions not compared ({self.decisions_note})")
        else:
            parts.append(f"decisions changed {self.decisions_changed}")
        if self.evict:
            parts.append(f"evict {names(self.evict)} ({self.evict_reason})")
        return "; ".join(parts)

    def to_json(self) -> dict:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "restarted": list(self.restarted),
            "updated": list(self.updated),
            "unchanged": list(self.unchanged),
            "fields": {m: list(f) for m, f in sorted(self.fields.items())},
            "aliases": {a: {"old": o, "new": n} for a, (o, n) in sorted(self.aliases.items())},
            "ports": {m: {"old": o, "new": n} for m, (o, n) in sorted(self.ports.items())},
            "decisions_changed": self.decisions_changed,
            "decisions_note": self.decisions_note,
            "decision_examples": list(self.decision_examples),
            "evict": list(self.evict),
            "evict_reason": self.evict_reason,
            "summary": self.summary(),
        }


def model_fields_changed(old: Plan, new: Plan, model: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(restart fields, live fields) that differ for a model both plans have."""
    assert old.config is not None and new.config is not None
    a, b = old.config.models[model], new.config.models[model]
    restart = tuple(f for f in RESTART_FIELDS if getattr(a, f) != getattr(b, f))
    live = [
        f
        for f in type(a).model_fields
        if f not in RESTART_FIELDS and f not in _IGNORED_FIELDS and getattr(a, f) != getattr(b, f)
    ]
    # Effective values that come from global settings.
    if effective_ttl(old, model) != effective_ttl(new, model) and "ttl" not in live:
        live.append("ttl")
    if (
        effective_unload_timeout(old, model) != effective_unload_timeout(new, model)
        and "unload_timeout" not in live
    ):
        live.append("unload_timeout")
    if health_check_timeout(old) != health_check_timeout(new):
        live.append("health_check_timeout")
    if old.priority.get(model, 0) != new.priority.get(model, 0):
        live.append("priority")
    if old.evict_cost(model) != new.evict_cost(model):
        live.append("evict_cost")
    return restart, tuple(live)


def allowed(policy: EvictionPolicy, state: Iterable[str]) -> bool:
    """True when the policy can reach `state` by loading its models one after another without
    evicting anything: some model of it, asked for next to the others, evicts nothing, and
    the others are such a state themselves. (For a matrix: the state fits one combination.)"""
    seen: dict[frozenset[str], bool] = {}

    def reach(s: frozenset[str]) -> bool:
        if len(s) <= 1:
            return True
        got = seen.get(s)
        if got is None:
            got = any(not policy.evict_for(m, tuple(sorted(s - {m}))) and reach(s - {m}) for m in sorted(s))
            seen[s] = got
        return got

    return reach(frozenset(state))


def minimal_eviction(
    policy: EvictionPolicy, running: Iterable[str], cost: Mapping[str, int] | None = None
) -> tuple[str, ...]:
    """The cheapest subset of `running` whose stop leaves a state `policy` allows: lowest sum
    of evict costs (default 1 each), then fewest models, then names. () when it is allowed."""
    models = tuple(sorted(set(running)))
    if allowed(policy, models):
        return ()
    costs = {m: (cost or {}).get(m, 1) for m in models}
    if len(models) <= EXACT_EVICTION_MAX:
        subsets = [c for k in range(1, len(models) + 1) for c in itertools.combinations(models, k)]
        subsets.sort(key=lambda s: (sum(costs[m] for m in s), len(s), s))
        for subset in subsets:
            if allowed(policy, set(models) - set(subset)):
                return subset
        return models  # unreachable: the empty state is always allowed
    # Too many to try every subset: stop the cheapest first until what is left is allowed.
    chosen: list[str] = []
    for m in sorted(models, key=lambda m: (costs[m], m)):
        chosen.append(m)
        if allowed(policy, set(models) - set(chosen)):
            break
    return tuple(sorted(chosen))


def forced_eviction(
    policy: EvictionPolicy, running: Iterable[str], cost: Mapping[str, int] | None = None
) -> tuple[tuple[str, ...], str]:
    """(`minimal_eviction`, why in words; "" when nothing must go)."""
    survivors = tuple(sorted(set(running)))
    evict = minimal_eviction(policy, survivors, cost)
    if not evict:
        return (), ""
    kept = sorted(set(survivors) - set(evict))
    return evict, (
        f"the new config does not allow [{', '.join(survivors)}] together; "
        f"stopping the cheapest by evict cost keeps [{', '.join(kept)}]"
    )


def reload_plan(
    old: Plan, new: Plan, running: Iterable[str] = (), diff_max: int = DIFF_DECISIONS_MAX
) -> ReloadPlan:
    """What reloading from `old` to `new` changes while `running` models run."""
    old_models, new_models = set(old.models), set(new.models)
    added = tuple(sorted(new_models - old_models))
    removed = tuple(sorted(old_models - new_models))
    restarted, updated, unchanged = [], [], []
    fields: dict[str, tuple[str, ...]] = {}
    for m in sorted(old_models & new_models):
        restart, live = model_fields_changed(old, new, m)
        if restart:
            restarted.append(m)
            fields[m] = restart + live
        elif live:
            updated.append(m)
            fields[m] = live
        else:
            unchanged.append(m)
    aliases = {
        a: (old.aliases.get(a), new.aliases.get(a))
        for a in sorted(set(old.aliases) | set(new.aliases))
        if old.aliases.get(a) != new.aliases.get(a)
    }
    ports = {
        m: (old.ports.get(m), new.ports.get(m))
        for m in sorted(old_models & new_models)
        if old.ports.get(m) != new.ports.get(m)
    }

    changed: int | None = 0
    note = ""
    examples: list[str] = []
    try:
        for change in diff_plans(old, new, diff_max):
            if len(examples) < DIFF_EXAMPLES:
                examples.append(" ".join(line.strip() for line in change.lines()))
            changed += 1  # type: ignore[operator]
    except StatesError as exc:
        changed, note, examples = None, exc.message, []

    evict, reason = forced_eviction(new.policy, set(running) & new_models, new.evict_costs)
    return ReloadPlan(
        added=added,
        removed=removed,
        restarted=tuple(restarted),
        updated=tuple(updated),
        unchanged=tuple(unchanged),
        fields=fields,
        aliases=aliases,
        ports=ports,
        decisions_changed=changed,
        decisions_note=note,
        decision_examples=tuple(examples),
        evict=evict,
        evict_reason=reason,
    )
