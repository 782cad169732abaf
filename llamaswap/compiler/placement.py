"""Placement: which models fit together on which devices — exact searches over small integers.

The model (issue 17): devices hold budgets of named resources; a model needs an amount of
some of them. A model either takes one device of its `allowed` ones (all devices unless
pinned), or is `split` evenly across a fixed list of devices (each listed device carries
amount / len(split) of every resource). A combination of models *fits* when every model can
be given a device so that on every device, for every resource, the loads stay within the
budget. A model needing nothing fits everywhere and is placed nowhere.

Everything here works on integers: amounts are bytes multiplied by the lcm of the split
lengths (`Space.scale`), so even shares are exact. Nothing here knows YAML or diagnostics.

Searches and their invariants:
- `fit` is exact (backtracking, big models first, symmetric devices tried once, failed
  states memoised); it returns a placement or None.
- `best` minimises the total overflow (then deterministic order: models in definition order,
  devices in definition order) by branch and bound; exact unless its node budget runs out,
  then the best placement found.
- `maximal` lists every maximal fitting combination (fits, and no model can be added) in a
  deterministic order: by the definition indices of their models, lexicographically.
Feasibility is downward closed (dropping a model never breaks a placement), which is what
makes the maximal combinations, with subset semantics, describe every fitting combination.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import lcm

BEST_NODE_BUDGET = 200_000


@dataclass(frozen=True)
class Need:
    """What one model needs, in scaled units, by resource index."""

    model: str
    index: int  # definition order
    amounts: tuple[int, ...]
    allowed: tuple[int, ...]  # device indices to choose one from (when not split)
    split: tuple[int, ...] = ()  # device indices sharing the model evenly

    @property
    def empty(self) -> bool:
        return not any(self.amounts)

    @property
    def devices(self) -> tuple[int, ...]:
        return self.split or self.allowed


Placement = Mapping[str, tuple[int, ...]]  # model -> device indices it occupies


@dataclass
class Space:
    """Devices, resources and needs; caches fit results by combination."""

    devices: tuple[str, ...]
    resources: tuple[str, ...]
    caps: tuple[tuple[int, ...], ...]  # [device][resource], scaled
    needs: Mapping[str, Need]
    scale: int = 1
    _fits: dict[frozenset[str], dict[str, tuple[int, ...]] | None] = field(default_factory=dict, repr=False)

    @staticmethod
    def build(
        devices: Sequence[str],
        resources: Sequence[str],
        caps_bytes: Sequence[Sequence[int]],
        needs_bytes: Iterable[tuple[str, Sequence[int], Sequence[int], Sequence[int]]],
    ) -> Space:
        """`needs_bytes`: (model, amounts in bytes by resource, allowed devices, split devices),
        in definition order."""
        raw = list(needs_bytes)
        scale = 1
        for _, _, _, split in raw:
            if split:
                scale = lcm(scale, len(split))
        needs: dict[str, Need] = {}
        for i, (model, amounts, allowed, split) in enumerate(raw):
            needs[model] = Need(
                model, i, tuple(a * scale for a in amounts), tuple(allowed) if not split else (), tuple(split)
            )
        caps = tuple(tuple(c * scale for c in row) for row in caps_bytes)
        return Space(tuple(devices), tuple(resources), caps, needs, scale)

    # -- loads -------------------------------------------------------------------------------
    def share(self, need: Need) -> tuple[int, ...]:
        """What one device carries of `need` (all of it, or its even share when split)."""
        if need.split:
            k = len(need.split)
            return tuple(a // k for a in need.amounts)
        return need.amounts

    def loads(self, placement: Placement) -> list[list[int]]:
        out = [[0] * len(self.resources) for _ in self.devices]
        for model, devs in placement.items():
            s = self.share(self.needs[model])
            for d in devs:
                row = out[d]
                for r, a in enumerate(s):
                    row[r] += a
        return out

    def overflow(self, loads: Sequence[Sequence[int]]) -> list[list[int]]:
        return [[max(0, load - cap) for load, cap in zip(row, caps)] for row, caps in zip(loads, self.caps)]

    # -- fit ---------------------------------------------------------------------------------
    def fits(self, models: Iterable[str]) -> bool:
        return self.fit(models) is not None

    def fit(self, models: Iterable[str]) -> dict[str, tuple[int, ...]] | None:
        """A placement of `models` within every budget, or None when there is none."""
        key = frozenset(models)
        if key in self._fits:
            return self._fits[key]
        result = self._fit(key)
        self._fits[key] = result
        return result

    def _fit(self, models: frozenset[str]) -> dict[str, tuple[int, ...]] | None:
        nres = len(self.resources)
        loads = [[0] * nres for _ in self.devices]
        placement: dict[str, tuple[int, ...]] = {}
        choosers: list[Need] = []
        for m in sorted(models, key=lambda m: self.needs[m].index):
            need = self.needs[m]
            if need.empty:
                continue
            if need.split:
                s = self.share(need)
                for d in need.split:
                    for r in range(nres):
                        loads[d][r] += s[r]
                placement[m] = need.split
            else:
                choosers.append(need)
        for d, row in enumerate(loads):
            if any(load > cap for load, cap in zip(row, self.caps[d])):
                return None
        # Few options first, then big first: failures surface near the root.
        choosers.sort(key=lambda n: (len(n.allowed), -sum(n.amounts), n.index))
        classes = self._symmetry_classes(choosers)
        failed: set[tuple] = set()
        chosen: list[int] = [0] * len(choosers)

        def go(i: int) -> bool:
            if i == len(choosers):
                return True
            state = (i, tuple(tuple(row) for row in loads))
            if state in failed:
                return False
            need = choosers[i]
            tried: set[tuple] = set()
            for d in need.allowed:
                row, cap = loads[d], self.caps[d]
                if any(row[r] + need.amounts[r] > cap[r] for r in range(nres)):
                    continue
                sym = (classes[d], tuple(row))
                if sym in tried:
                    continue
                tried.add(sym)
                for r in range(nres):
                    row[r] += need.amounts[r]
                chosen[i] = d
                ok = go(i + 1)
                for r in range(nres):
                    row[r] -= need.amounts[r]
                if ok:
                    return True
            failed.add(state)
            return False

        if not go(0):
            return None
        for i, need in enumerate(choosers):
            placement[need.model] = (chosen[i],)
        return dict(sorted(placement.items(), key=lambda kv: self.needs[kv[0]].index))

    def _greedy_fits(self, models: Sequence[str]) -> bool:
        """A sufficient test: first-fit, biggest first, onto the least loaded allowed device."""
        nres = len(self.resources)
        loads = [[0] * nres for _ in self.devices]
        choosers = []
        for m in models:
            need = self.needs[m]
            if need.empty:
                continue
            if need.split:
                s = self.share(need)
                for d in need.split:
                    row = loads[d]
                    for r in range(nres):
                        row[r] += s[r]
            else:
                choosers.append(need)
        for d, row in enumerate(loads):
            if any(load > cap for load, cap in zip(row, self.caps[d])):
                return False
        choosers.sort(key=lambda n: (len(n.allowed), -sum(n.amounts), n.index))
        for need in choosers:
            best = None
            for d in need.allowed:
                row, cap = loads[d], self.caps[d]
                if all(row[r] + need.amounts[r] <= cap[r] for r in range(nres)):
                    free = sum(cap[r] - row[r] for r in range(nres))
                    if best is None or free > best[0]:
                        best = (free, d)
            if best is None:
                return False
            row = loads[best[1]]
            for r in range(nres):
                row[r] += need.amounts[r]
        return True

    def _symmetry_classes(self, choosers: Sequence[Need]) -> list[int]:
        """Devices that no chooser tells apart and that hold the same budgets share a class:
        with equal loads, trying one of them is trying all."""
        signature: dict[tuple, int] = {}
        out: list[int] = []
        for d in range(len(self.devices)):
            sig = (self.caps[d], tuple(d in n.allowed for n in choosers))
            out.append(signature.setdefault(sig, len(signature)))
        return out

    # -- best (for errors) -------------------------------------------------------------------
    def best(
        self, models: Iterable[str], node_budget: int = BEST_NODE_BUDGET
    ) -> tuple[dict[str, tuple[int, ...]], list[list[int]]]:
        """The placement with the least total overflow, and its loads. Exact unless the node
        budget runs out (then the best one found); ties go to the first in search order."""
        nres = len(self.resources)
        loads = [[0] * nres for _ in self.devices]
        placement: dict[str, tuple[int, ...]] = {}
        choosers: list[Need] = []
        for m in sorted(set(models), key=lambda m: self.needs[m].index):
            need = self.needs[m]
            if need.empty:
                continue
            if need.split:
                s = self.share(need)
                for d in need.split:
                    for r in range(nres):
                        loads[d][r] += s[r]
                placement[m] = need.split
            else:
                choosers.append(need)
        choosers.sort(key=lambda n: (-sum(n.amounts), n.index))

        def over(row: Sequence[int], cap: Sequence[int]) -> int:
            return sum(max(0, a - c) for a, c in zip(row, cap))

        base = sum(over(row, self.caps[d]) for d, row in enumerate(loads))
        best_cost = [None]  # type: list[int | None]
        best_choice: list[list[int]] = [[]]
        chosen: list[int] = [0] * len(choosers)
        nodes = [0]

        def go(i: int, cost: int) -> None:
            nodes[0] += 1
            if best_cost[0] is not None and (cost >= best_cost[0] or nodes[0] > node_budget):
                return
            if i == len(choosers):
                best_cost[0] = cost
                best_choice[0] = list(chosen)
                return
            need = choosers[i]
            options = list(need.allowed) or list(range(len(self.devices)))
            # Cheapest extra overflow first, so a good bound comes early.
            scored = []
            for d in options:
                row, cap = loads[d], self.caps[d]
                before = over(row, cap)
                after = sum(max(0, row[r] + need.amounts[r] - cap[r]) for r in range(nres))
                scored.append((after - before, d))
            scored.sort()
            for extra, d in scored:
                row = loads[d]
                for r in range(nres):
                    row[r] += need.amounts[r]
                chosen[i] = d
                go(i + 1, cost + extra)
                for r in range(nres):
                    row[r] -= need.amounts[r]

        go(0, base)
        for i, need in enumerate(choosers):
            placement[need.model] = (best_choice[0][i],)
        placement = dict(sorted(placement.items(), key=lambda kv: self.needs[kv[0]].index))
        return placement, self.loads(placement)

    # -- maximal combinations ------------------------------------------------------------------
    def maximal(self, models: Sequence[str], limit: int) -> list[tuple[str, ...]] | None:
        """Every maximal fitting combination of `models` (each as models in definition order),
        sorted by definition indices; None when there are more than `limit`. Models that do
        not fit even alone are left out; models needing nothing are in every combination.

        The search decides model by model (big first) whether it joins, carrying the
        *frontier* of the combination so far: the device loads of all its placements, up to
        interchangeable devices, keeping only loads no other one is below everywhere (what a
        load can take, a lower one can too). A model joins when some load of the frontier takes
        it; a combination is maximal when no load of its frontier takes any model left out, so
        each combination is judged once and exactly, without re-placing anything. A branch is
        cut as soon as a model left out would still fit on every load of the frontier even if
        every model still to come went onto its device (it can never be blocked), or, with one
        resource, when the models still to come are too small to fill its devices."""
        free = [m for m in models if self.needs[m].empty]
        alone = [m for m in models if not self.needs[m].empty and self.fits((m,))]
        order = sorted(alone, key=lambda m: (-sum(self.needs[m].amounts), self.needs[m].index))
        needs = [self.needs[m] for m in order]
        nres = len(self.resources)
        ndev = len(self.devices)
        n = len(needs)
        shares = [self.share(nd) for nd in needs]
        options = [[nd.split] if nd.split else [(d,) for d in nd.allowed] for nd in needs]
        caps = [c for row in self.caps for c in row]  # flattened [device * nres + resource]

        # Interchangeable devices: same budgets, and every model treats them alike.
        sig: dict[tuple, int] = {}
        cls = [
            sig.setdefault((self.caps[d], tuple((d in nd.allowed, d in nd.split) for nd in needs)), len(sig))
            for d in range(ndev)
        ]
        groups = [[d for d in range(ndev) if cls[d] == c] for c in range(len(sig))]
        symmetric = any(len(g) > 1 for g in groups)

        def canon(load: list[int]) -> tuple[int, ...]:
            if not symmetric:
                return tuple(load)
            out = list(load)
            for g in groups:
                if len(g) > 1:
                    rows = sorted(tuple(load[d * nres : (d + 1) * nres]) for d in g)
                    for d, row in zip(g, rows):
                        out[d * nres : (d + 1) * nres] = row
            return tuple(out)

        def minimal(loads: set[tuple[int, ...]]) -> list[tuple[int, ...]]:
            ordered = sorted(loads, key=sum)
            keep: list[tuple[int, ...]] = []
            for cand in ordered:
                if not any(all(k[j] <= cand[j] for j in range(len(cand))) for k in keep):
                    keep.append(cand)
            return keep

        def takes(load: Sequence[int], i: int, extra: Sequence[int] | None = None) -> bool:
            s = shares[i]
            for devs in options[i]:
                ok = True
                for d in devs:
                    base = d * nres
                    for r in range(nres):
                        j = base + r
                        if load[j] + s[r] + (extra[j] if extra is not None else 0) > caps[j]:
                            ok = False
                            break
                    if not ok:
                        break
                if ok:
                    return True
            return False

        def extend(frontier: list[tuple[int, ...]], i: int) -> list[tuple[int, ...]]:
            s = shares[i]
            out: set[tuple[int, ...]] = set()
            for load in frontier:
                for devs in options[i]:
                    new = list(load)
                    ok = True
                    for d in devs:
                        base = d * nres
                        for r in range(nres):
                            new[base + r] += s[r]
                            if new[base + r] > caps[base + r]:
                                ok = False
                    if ok:
                        out.add(canon(new))
            return minimal(out) if len(out) > 1 else list(out)

        # rest_on[i][j]: what models i.. could add to device/resource j at most (all of them there).
        rest_on = [[0] * (ndev * nres) for _ in range(n + 1)]
        rest_total = [0] * (n + 1)
        for i in range(n - 1, -1, -1):
            rest_on[i] = list(rest_on[i + 1])
            seen: set[int] = set()
            for devs in options[i]:
                for d in devs:
                    if d not in seen:
                        seen.add(d)
                        for r in range(nres):
                            rest_on[i][d * nres + r] += shares[i][r]
            rest_total[i] = rest_total[i + 1] + sum(needs[i].amounts)

        def can_block(load: tuple[int, ...], i: int, pending: list[int]) -> bool:
            """Whether, from this load, models i.. could still block every pending model."""
            for x in pending:
                if takes(load, x, rest_on[i]):
                    return False
            if nres != 1:
                return True
            fill = [0] * ndev
            for x in pending:
                if needs[x].split:
                    continue  # blocked by any one of its devices
                for d in needs[x].allowed:
                    f = caps[d] - load[d] - shares[x][0] + 1
                    if f > fill[d]:
                        fill[d] = f
            return sum(fill) <= rest_total[i]

        found: list[frozenset[str]] = []
        chosen: list[str] = []

        class _Over(Exception):
            pass

        # `pending`: models left out that some load of the frontier still takes. Loads only
        # grow down the search, so a model no load takes stays blocked and leaves the list.
        def go(i: int, frontier: list[tuple[int, ...]], pending: list[int]) -> None:
            if pending and not any(can_block(load, i, pending) for load in frontier):
                return
            if i == n:
                if pending:
                    return  # a model left out still fits: not maximal
                if chosen or free:
                    found.append(frozenset(chosen))
                    if len(found) > limit:
                        raise _Over
                return
            grown = extend(frontier, i)
            if grown:
                chosen.append(needs[i].model)
                go(i + 1, grown, [x for x in pending if any(takes(load, x) for load in grown)])
                chosen.pop()
                go(i + 1, frontier, [*pending, i])
            else:
                go(i + 1, frontier, pending)  # does not fit with what is chosen: blocked for good

        try:
            go(0, [tuple([0] * (ndev * nres))], [])
        except _Over:
            return None
        rank = {m: self.needs[m].index for m in models}
        result = [tuple(sorted((*c, *free), key=rank.__getitem__)) for c in found]
        result = [c for c in result if c]
        result.sort(key=lambda c: [rank[m] for m in c])
        return result
