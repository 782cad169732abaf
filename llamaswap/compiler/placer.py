"""Placer: where a starting model goes, chosen together with what it evicts (issue 17, Place).

Running models stay on the devices they were started on, so placing a model is not the
compile-time `fit` of its combination: the target must fit beside the running models *on
their devices*. For a request for `target`, given every running model with its devices
(a *placed state*):

1. Candidates: the combinations the matrix policy ranks for the target (each set's cheapest
   one, `decide(explain=True)`), or its one answer when the target runs alone. A candidate
   keeps the running models inside it and evicts the others (its cost).
2. For each candidate and each way to place the target (one of its allowed devices, or its
   split), the cheapest set of kept models to evict as well so that the target fits beside
   the rest on their devices: none, usually; evicting every model on those devices always
   works, since the target fits alone.
3. The choice: the least total eviction cost (the candidate's plus the extra evictions'),
   then the least fragmentation — the room left free on the devices the target lands on, as
   a fraction of each budget, summed (best fit: large holes stay whole for large models) —
   then definition order (the candidate's rank, then the devices' order, then the extra
   evictions' models in definition order).

The answer is the policy's `Decision` for that candidate, its `evict` grown by the extra
evictions and its cost the total, with `devices`: the device names the target occupies
(empty for a model that needs nothing). A target already running keeps its devices.

Pure and deterministic: a function of (target, placed state). `precompute` fills a table for
every placed state reachable from nothing through the placer's own answers, within a budget
(none when the policy has no decision table, or the sets are so many that the table would
take long to fill); past it answers are computed once and memoised (bounded): a new placed
state costs one explained decision (milliseconds with thousands of sets), a known one a lookup. Only for the matrix engine, and only for a plan that
compiled without errors (every combination fits, every model fits alone).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from fractions import Fraction
from itertools import combinations

from llamaswap.compiler.decision import RULE_RUNNING, Decision
from llamaswap.compiler.evict import MatrixPolicy
from llamaswap.compiler.resources import Resources

# A running model and the device names it occupies (empty: it needs nothing, or it was
# started without a placement), sorted by model.
PlacedState = tuple[tuple[str, tuple[str, ...]], ...]

DEFAULT_BUDGET = 5_000  # (placed state, target) entries precomputed
# Each entry asks the policy to explain (every set's best combination: about 2 us a set), so
# the budget shrinks with the sets: entries x sets stays under this (about 0.2 s).
WORK_BUDGET = 100_000
MEMO_SIZE = 4096
MAX_BLOCKERS = 12  # models sharing the target's devices searched exhaustively (2^n subsets)


class Placer:
    """The placement step the scheduler asks after (or instead of) the eviction policy."""

    def __init__(self, res: Resources, policy: MatrixPolicy):
        self.res = res
        self.policy = policy
        space = res.space
        self._space = space
        self._dev = {d: i for i, d in enumerate(space.devices)}
        self.ids = {d.name: d.index for d in res.devices}
        self._rank = {m: i for i, m in enumerate(res.models)}
        self._rows: dict[str, dict[PlacedState, Decision]] = {}
        self._memo: dict[tuple[str, PlacedState], Decision] = {}
        self.precomputed = 0  # entries in the table

    # -- lookups -----------------------------------------------------------------------------
    def decide(self, target: str, state: PlacedState) -> Decision:
        """The placed decision for `target` beside the running models of `state`."""
        row = self._rows.get(target)
        if row is not None:
            hit = row.get(state)
            if hit is not None:
                return hit
        key = (target, state)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._solve(target, state, None)
            self._remember(key, hit)
        return hit

    def place(self, decision: Decision, state: PlacedState) -> Decision:
        """Place the target of a decision chosen elsewhere (a scheduling policy that picks its
        own victims): its combination stands; only extra evictions may be added."""
        return self._solve(decision.target, state, decision)

    def device_ids(self, devices: Iterable[str]) -> tuple[str, ...]:
        """The ids the process environment names (`CUDA_VISIBLE_DEVICES`, `${GPUS}`)."""
        return tuple(self.ids[d] for d in devices)

    def _remember(self, key: tuple[str, PlacedState], decision: Decision) -> None:
        memo = self._memo
        memo[key] = decision
        if len(memo) > MEMO_SIZE:
            try:  # oldest first (insertion order)
                memo.pop(next(iter(memo)), None)
            except (RuntimeError, StopIteration):
                pass

    # -- precompute --------------------------------------------------------------------------
    def precompute(self, budget: int = DEFAULT_BUDGET) -> bool:
        """Answer every (placed state, target) reachable from nothing, when there are at most
        `budget` of them (fewer with many sets, see WORK_BUDGET); False (and no table) past
        it, or when the policy has no decision table itself (its states are too many)."""
        if self.policy.table is None:
            return False
        budget = min(budget, WORK_BUDGET // max(1, len(self.policy.dsl)))
        models = self.policy.models
        rows: dict[str, dict[PlacedState, Decision]] = {t: {} for t in models}
        seen: set[PlacedState] = {()}
        frontier: list[PlacedState] = [()]
        entries = 0
        while frontier:
            nxt: list[PlacedState] = []
            for state in frontier:
                for target in models:
                    entries += 1
                    if entries > budget:
                        return False
                    d = self._solve(target, state, None)
                    rows[target][state] = d
                    new = after(state, d)
                    if new not in seen:
                        seen.add(new)
                        nxt.append(new)
            frontier = nxt
        self._rows = rows
        self.precomputed = entries
        return True

    # -- the search --------------------------------------------------------------------------
    def _solve(self, target: str, state: PlacedState, chosen: Decision | None) -> Decision:
        where = dict(state)
        running = tuple(m for m, _ in state)
        cands: list[tuple[str | None, tuple[str, ...], int]]
        if chosen is None:
            base = self.policy.decide(target, running, explain=True)
            if base.rule == RULE_RUNNING or target in where:
                return replace(base, candidates=None, devices=where.get(target, ()))
            cands = [(c.set, c.combination, c.cost) for c in base.candidates or ()]
            if not cands:  # runs alone
                cands = [(base.set, base.target_set, base.cost)]
            base = replace(base, candidates=None)
        else:
            if target in where:
                return replace(chosen, devices=where[target])
            base = chosen
            cands = [(chosen.set, chosen.target_set, chosen.cost)]
        need = self._space.needs.get(target)
        if need is None or need.empty:
            return self._decision(base, cands[0], running, (), ())
        best: tuple | None = None
        for rank, cand in enumerate(cands):
            keep = set(cand[1])
            kept = [m for m in running if m in keep]
            for orank, option in enumerate([need.split] if need.split else [(d,) for d in need.allowed]):
                for extra, extra_cost, frag in self._room(target, option, kept, where):
                    key = (cand[2] + extra_cost, frag, rank, orank)
                    if best is None or key < best[0]:
                        best = (key, cand, option, extra)
                    break  # the first that fits is this option's cheapest
        if best is None:  # cannot happen for a plan without errors: the target fits alone
            return self._decision(base, cands[0], running, (), ())
        _, cand, option, extra = best
        names = tuple(self._space.devices[d] for d in option)
        return self._decision(base, cand, running, extra, names)

    def _decision(
        self,
        base: Decision,
        cand: tuple[str | None, tuple[str, ...], int],
        running: tuple[str, ...],
        extra: tuple[str, ...],
        devices: tuple[str, ...],
    ) -> Decision:
        name, combo, cost = cand
        keep = set(combo) - set(extra)
        evict = tuple(m for m in running if m not in keep)
        extra_cost = sum(self.policy.cost_of(m) for m in extra)
        if name == base.set and tuple(combo) == base.target_set and not extra:
            return replace(base, devices=devices)
        return replace(
            base,
            evict=evict,
            set=name,
            dsl=self.policy.dsl.get(name) if name is not None else None,
            target_set=tuple(combo),
            cost=cost + extra_cost,
            devices=devices,
        )

    def _room(
        self, target: str, option: Sequence[int], kept: Sequence[str], where: dict[str, tuple[str, ...]]
    ) -> Iterator[tuple[tuple[str, ...], int, Fraction]]:
        """The ways to make room for `target` on the devices of `option`, cheapest first (then
        by the extra evictions' definition order): (extra evictions, their cost, the
        fragmentation left)."""
        space = self._space
        need = space.needs[target]
        share = space.share(need)
        nres = len(space.resources)
        touched = set(option)
        loads = {d: [0] * nres for d in option}
        blockers: list[str] = []
        for m in kept:
            devs = [self._dev[d] for d in where.get(m, ()) if d in self._dev]
            mneed = space.needs.get(m)
            if mneed is None or mneed.empty or not touched.intersection(devs):
                continue
            s = space.share(mneed)
            for d in devs:
                if d in loads:
                    for r in range(nres):
                        loads[d][r] += s[r]
            blockers.append(m)
        blockers.sort(key=lambda m: self._rank.get(m, len(self._rank)))
        if len(blockers) > MAX_BLOCKERS:
            subsets: list[tuple[str, ...]] = [(), tuple(blockers)]
        else:
            subsets = [c for k in range(len(blockers) + 1) for c in combinations(blockers, k)]
        cost = self.policy.cost_of
        subsets.sort(key=lambda sub: (sum(cost(m) for m in sub), len(sub)))
        fitting = []
        for sub in subsets:
            after_loads = {d: list(row) for d, row in loads.items()}
            for m in sub:
                s = space.share(space.needs[m])
                for d in (self._dev[x] for x in where.get(m, ())):
                    if d in after_loads:
                        for r in range(nres):
                            after_loads[d][r] -= s[r]
            ok = True
            frag = Fraction(0)
            for d in option:
                caps = space.caps[d]
                row = after_loads[d]
                for r in range(nres):
                    used = row[r] + share[r]
                    if used > caps[r]:
                        ok = False
                        break
                    if caps[r]:
                        frag += Fraction(caps[r] - used, caps[r])
                if not ok:
                    break
            if ok:
                fitting.append((sub, sum(cost(m) for m in sub), frag))
        fitting.sort(key=lambda t: (t[1], t[2]))
        yield from fitting


def after(state: PlacedState, decision: Decision) -> PlacedState:
    """The placed state once `decision` is carried out."""
    gone = set(decision.evict)
    kept = {m: devs for m, devs in state if m not in gone}
    kept[decision.target] = decision.devices or ()
    return tuple(sorted(kept.items()))


def placed_state(running: Sequence[str], devices: dict[str, tuple[str, ...]]) -> PlacedState:
    """The placed state of `running` (sorted model IDs) with each model's devices."""
    return tuple((m, devices.get(m, ())) for m in running)
