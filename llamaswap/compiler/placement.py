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
  deterministic order: by the definition indices of their models, lexicographically. Its
  loads are packed integers (bench/resources.py: mixed-30 4.3 s -> about 0.5 s).
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
                _add(out[d], s, 1)
        return out

    def _fixed(self, models: Iterable[str]) -> tuple[list[list[int]], dict[str, tuple[int, ...]], list[Need]]:
        """The start of every search: the loads of the split models (they have one placement),
        their placement, and the models left to choose a device for, in definition order.
        Models needing nothing are left out."""
        loads = [[0] * len(self.resources) for _ in self.devices]
        placement: dict[str, tuple[int, ...]] = {}
        choosers: list[Need] = []
        for m in sorted(set(models), key=lambda m: self.needs[m].index):
            need = self.needs[m]
            if need.empty:
                continue
            if need.split:
                s = self.share(need)
                for d in need.split:
                    _add(loads[d], s, 1)
                placement[m] = need.split
            else:
                choosers.append(need)
        return loads, placement, choosers

    def _ordered(self, placement: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        return dict(sorted(placement.items(), key=lambda kv: self.needs[kv[0]].index))

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
        loads, placement, choosers = self._fixed(models)
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
                _add(row, need.amounts, 1)
                chosen[i] = d
                ok = go(i + 1)
                _add(row, need.amounts, -1)
                if ok:
                    return True
            failed.add(state)
            return False

        if not go(0):
            return None
        for i, need in enumerate(choosers):
            placement[need.model] = (chosen[i],)
        return self._ordered(placement)

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
        loads, placement, choosers = self._fixed(models)
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
                _add(loads[d], need.amounts, 1)
                chosen[i] = d
                go(i + 1, cost + extra)
                _add(loads[d], need.amounts, -1)

        go(0, base)
        for i, need in enumerate(choosers):
            placement[need.model] = (best_choice[0][i],)
        placement = self._ordered(placement)
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
        resource, when the models still to come are too small to fill its devices. A load is one
        packed integer (a field per device and resource), so adding loads and comparing them in
        every field are single integer operations."""
        free = [m for m in models if self.needs[m].empty]
        alone = [m for m in models if not self.needs[m].empty and self.fits((m,))]
        order = sorted(alone, key=lambda m: (-sum(self.needs[m].amounts), self.needs[m].index))
        needs = [self.needs[m] for m in order]
        nres = len(self.resources)
        ndev = len(self.devices)
        n = len(needs)
        width = ndev * nres
        shares = [self.share(nd) for nd in needs]
        options = [[nd.split] if nd.split else [(d,) for d in nd.allowed] for nd in needs]
        caps = [c for row in self.caps for c in row]  # flattened [device * nres + resource]

        # rest_on[i][j]: what models i.. could add to device/resource j at most (all of them there).
        rest_on = [[0] * width for _ in range(n + 1)]
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

        # A load is one integer: field j (device * nres + resource) at bit j * bits, each field
        # with a guard bit on top that no value reaches. Then a sum of loads is one addition,
        # and "a <= b in every field" is one test: ((b | guard) - a) & guard == guard (a field
        # where a is larger borrows its guard bit away, and no borrow crosses a field).
        top = max((caps[j] + rest_on[0][j] for j in range(width)), default=0)
        bits = top.bit_length() + 1
        guard = sum(1 << (j * bits + bits - 1) for j in range(width))
        field_mask = (1 << bits) - 1

        def pack(values: Sequence[int]) -> int:
            return sum(v << (j * bits) for j, v in enumerate(values))

        cap_g = pack(caps) | guard
        # What each option of each model adds, as one packed load.
        deltas = [
            [
                pack([shares[i][r] if d in devs else 0 for d in range(ndev) for r in range(nres)])
                for devs in options[i]
            ]
            for i in range(n)
        ]
        # The guard bits of the fields each option touches: a test of what an option adds
        # looks at those fields only (`can_block` adds more than fits elsewhere).
        touched = [
            [
                sum(1 << ((d * nres + r) * bits + bits - 1) for d in devs for r in range(nres))
                for devs in options[i]
            ]
            for i in range(n)
        ]
        rest_packed = [pack(row) for row in rest_on]

        # Interchangeable devices: same budgets, and every model treats them alike.
        sig: dict[tuple, int] = {}
        cls = [
            sig.setdefault((self.caps[d], tuple((d in nd.allowed, d in nd.split) for nd in needs)), len(sig))
            for d in range(ndev)
        ]
        groups = [[d for d in range(ndev) if cls[d] == c] for c in range(len(sig))]
        symmetric = [g for g in groups if len(g) > 1]
        row_bits = nres * bits
        row_mask = (1 << row_bits) - 1

        def canon(load: int) -> int:
            """The load with each class of interchangeable devices' rows sorted."""
            for g in symmetric:
                rows = sorted((load >> (d * row_bits)) & row_mask for d in g)
                for d, row in zip(g, rows):
                    load = (load & ~(row_mask << (d * row_bits))) | (row << (d * row_bits))
            return load

        def minimal(loads: set[int]) -> list[int]:
            # A load below another in every field is a smaller integer: ascending order visits
            # every dominating load before the loads it dominates.
            keep: list[int] = []
            for cand in sorted(loads):
                cg = cand | guard
                for k in keep:
                    if (cg - k) & guard == guard:
                        break
                else:
                    keep.append(cand)
            return keep

        # (delta, guard bits of the fields it touches) per option of each model.
        placed = [list(zip(deltas[i], touched[i])) for i in range(n)]

        def takes_any(rooms: list[int], x: int) -> bool:
            """Whether some option of model x fits on top of some load, given as `cap_g - load`
            (its room; tested only in the fields the option touches)."""
            for room in rooms:
                for delta, g in placed[x]:
                    if (room - delta) & g == g:
                        return True
            return False

        def extend(frontier: list[int], i: int) -> list[int]:
            opts = deltas[i]
            if len(opts) == 1:
                # One way to place it: adding the same load to an antichain keeps it one.
                delta = opts[0]
                grown = [load + delta for load in frontier if (cap_g - load - delta) & guard == guard]
                return [canon(x) for x in grown] if symmetric else grown
            out: set[int] = set()
            for load in frontier:
                for delta in opts:
                    new = load + delta
                    if (cap_g - new) & guard == guard:
                        out.add(canon(new) if symmetric else new)
            return minimal(out) if len(out) > 1 else list(out)

        # With one resource: per model, (device, bit offset, what fills the device so the model
        # no longer fits there: its budget - the model's share + 1) for each allowed device.
        fills = [
            [] if nd.split or nres != 1 else [(d, d * bits, caps[d] - shares[x][0] + 1) for d in nd.allowed]
            for x, nd in enumerate(needs)
        ]

        def can_block(load: int, i: int, pending: list[int]) -> bool:
            """Whether, from this load, models i.. could still block every pending model."""
            room = cap_g - load - rest_packed[i]  # as if every model still to come went there
            for x in pending:
                for delta, g in placed[x]:
                    if (room - delta) & g == g:
                        return False
            if nres != 1:
                return True
            fill = [0] * ndev
            for x in pending:
                for d, shift, gap in fills[x]:  # empty for a split model: any one device blocks it
                    f = gap - ((load >> shift) & field_mask)
                    if f > fill[d]:
                        fill[d] = f
            return sum(fill) <= rest_total[i]

        found: list[frozenset[str]] = []
        chosen: list[str] = []

        class _Over(Exception):
            pass

        # `pending`: models left out that some load of the frontier still takes. Loads only
        # grow down the search, so a model no load takes stays blocked and leaves the list.
        def go(i: int, frontier: list[int], pending: list[int]) -> None:
            if i == n:
                if pending:
                    return  # a model left out still fits: not maximal
                if chosen or free:
                    found.append(frozenset(chosen))
                    if len(found) > limit:
                        raise _Over
                return
            if pending:
                for load in frontier:
                    if can_block(load, i, pending):
                        break
                else:
                    return
            grown = extend(frontier, i)
            if grown:
                chosen.append(needs[i].model)
                rooms = [cap_g - load for load in grown]
                go(i + 1, grown, [x for x in pending if takes_any(rooms, x)])
                chosen.pop()
                go(i + 1, frontier, [i, *pending])  # newest first: the likeliest never blocked
            else:
                go(i + 1, frontier, pending)  # does not fit with what is chosen: blocked for good

        try:
            go(0, [0], [])
        except _Over:
            return None
        rank = {m: self.needs[m].index for m in models}
        result = [tuple(sorted((*c, *free), key=rank.__getitem__)) for c in found]
        result = [c for c in result if c]
        result.sort(key=lambda c: [rank[m] for m in c])
        return result


def _add(row: list[int], amounts: Sequence[int], sign: int) -> None:
    """Add (sign 1) or take away (sign -1) `amounts` on one device's row of loads."""
    for r, a in enumerate(amounts):
        row[r] += sign * a
