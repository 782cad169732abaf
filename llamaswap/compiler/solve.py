"""Solve: the symbolic matrix solver — decisions straight from the set expressions, with no
expansion (llama-swap HEAD's projection idea, reference §3.4), so it works for sets far too
large to expand.

For one query only the target and the running models matter ("relevant" models). Each
expression node evaluates to a list of *projected states*: (mask of relevant models present,
witness = the first concrete combination with that projection, as a global bitmask), in the
order of first occurrence in expansion order. A leaf gives its own bit; OR concatenates; AND
takes the left-major product (masks and witnesses unioned); `+ref` reuses the referenced
set's list. A subtree with no relevant model collapses to a single state (its first
combination), which is what keeps queries cheap.

Pruning keeps each list small without changing the answer: a state is dropped when an
*earlier* state's mask contains its mask. For every completion the earlier state is at least
as cheap (fewer relevant running models evicted; costs are >= 1) and comes first in solver
order, so it wins every tie too. (llama-swap also drops earlier states dominated by later
ones; that can change which of two equal-cost combinations is reported, so we do not.)

Result for a query: over sets in solver order whose support holds the target, the state
holding the target with the lowest cost (sum of evict costs of running models not in it);
ties go to the first in (set order, expansion order). Identical, field for field, to scanning
the expanded table (checked by property tests against a brute-force solver).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from llamaswap.compiler.ast import And, Leaf, Node, Or, Ref


class _N:
    """A compiled expression node."""

    __slots__ = ("kind", "bit", "children", "support", "first", "ref")

    def __init__(self, kind: int, bit: int = 0, children: tuple["_N", ...] = (), support: int = 0,
                 first: int = 0, ref: int = -1):
        self.kind = kind
        self.bit = bit
        self.children = children
        self.support = support
        self.first = first
        self.ref = ref


LEAF, OR, AND, REF = 0, 1, 2, 3


@dataclass(frozen=True)
class CompiledSet:
    index: int
    name: str
    dsl: str
    root: _N
    support: int


class SymbolicSolver:
    """Compiled form of the set expressions over a fixed model index."""

    def __init__(self, models: Sequence[str], sets: Sequence[tuple[str, str, Node]]):
        self.models = tuple(models)
        self.index = {m: i for i, m in enumerate(self.models)}
        self.sets: list[CompiledSet] = []
        self._hosts: dict[int, tuple[CompiledSet, ...]] = {}  # target bit -> sets that can hold it
        by_name: dict[str, int] = {}
        for name, dsl, expr in sets:
            root = self._compile(expr, by_name)
            cs = CompiledSet(len(self.sets), name, dsl, root, root.support)
            by_name[name] = cs.index
            self.sets.append(cs)

    def _compile(self, n: Node, by_name: Mapping[str, int]) -> _N:
        if isinstance(n, Leaf):
            bit = 1 << self.index[n.model]
            return _N(LEAF, bit=bit, support=bit, first=bit)
        if isinstance(n, Ref):
            target = self.sets[by_name[n.name]]
            return _N(REF, support=target.support, first=target.root.first, ref=target.index)
        if isinstance(n, Or):
            kids = tuple(self._compile(c, by_name) for c in n.children)
            support = 0
            for k in kids:
                support |= k.support
            return _N(OR, children=kids, support=support, first=kids[0].first)
        if isinstance(n, And):
            kids = tuple(self._compile(c, by_name) for c in n.children)
            support = first = 0
            for k in kids:
                support |= k.support
                first |= k.first
            return _N(AND, children=kids, support=support, first=first)
        raise TypeError(f"unresolved node {n!r}")

    # -- evaluation ---------------------------------------------------------------------
    def states(self, node: _N, relevant: int, memo: dict[int, list[tuple[int, int]]]) -> list[tuple[int, int]]:
        """Projected states of `node` for the relevant-model mask, pruned, in order."""
        if not node.support & relevant:
            return [(0, node.first)]
        kind = node.kind
        if kind == LEAF:
            return [(node.bit, node.bit)]
        if kind == REF:
            got = memo.get(node.ref)
            if got is None:
                got = self.states(self.sets[node.ref].root, relevant, memo)
                memo[node.ref] = got
            return got
        if kind == OR:
            out: list[tuple[int, int]] = []
            for child in node.children:
                # Leaves and irrelevant children inline: most children of a wide OR.
                if not child.support & relevant:
                    got = ((0, child.first),)
                elif child.kind == LEAF:
                    got = ((child.bit, child.bit),)
                else:
                    got = self.states(child, relevant, memo)  # type: ignore[assignment]
                for st in got:
                    m = st[0]
                    for em, _ in out:
                        if em & m == m:
                            break
                    else:
                        out.append(st)
            return out
        acc: list[tuple[int, int]] = [(0, 0)]
        for child in node.children:
            part = self.states(child, relevant, memo)
            if len(part) == 1:
                pm, pw = part[0]
                acc = _pruned([(m | pm, w | pw) for m, w in acc])
            else:
                nxt: list[tuple[int, int]] = []
                for m, w in acc:
                    for pm, pw in part:
                        _push(nxt, (m | pm, w | pw))
                acc = nxt
        return acc

    def set_states(self, set_index: int, relevant: int, memo: dict[int, list[tuple[int, int]]]) -> list[tuple[int, int]]:
        got = memo.get(set_index)
        if got is None:
            got = self.states(self.sets[set_index].root, relevant, memo)
            memo[set_index] = got
        return got

    def names(self, mask: int) -> tuple[str, ...]:
        """Sorted model IDs of a mask (the index is sorted, so bit order is name order)."""
        models = self.models
        out = []
        while mask:
            low = mask & -mask
            out.append(models[low.bit_length() - 1])
            mask ^= low
        return tuple(out)

    def containing_all(self, running_mask: int) -> CompiledSet | None:
        """First set (solver order) with a combination holding every model in the mask."""
        memo: dict[int, list[tuple[int, int]]] = {}
        for cs in self.sets:
            if cs.support & running_mask != running_mask:
                continue
            for m, _ in self.set_states(cs.index, running_mask, memo):
                if m == running_mask:
                    return cs
        return None

    def best(self, target_bit: int, running_mask: int, costs: Sequence[int], explain: bool
             ) -> tuple[tuple[int, CompiledSet, int] | None, list[tuple[int, CompiledSet, int]]]:
        """(best (cost, set, witness) or None, per-set bests when explaining)."""
        relevant = target_bit | running_mask
        memo: dict[int, list[tuple[int, int]]] = {}
        total = _weight(running_mask, costs)
        best: tuple[int, CompiledSet, int] | None = None
        per_set: list[tuple[int, CompiledSet, int]] = []
        hosts = self._hosts.get(target_bit)
        if hosts is None:
            hosts = self._hosts[target_bit] = tuple(cs for cs in self.sets if cs.support & target_bit)
        for cs in hosts:
            set_best: tuple[int, CompiledSet, int] | None = None
            for m, w in self.set_states(cs.index, relevant, memo):
                if not m & target_bit:
                    continue
                cost = total - _weight(m & running_mask, costs)
                if set_best is None or cost < set_best[0]:
                    set_best = (cost, cs, w)
                    if cost == 0 and not explain:
                        break
            if set_best is None:
                continue
            if explain:
                per_set.append(set_best)
            if best is None or set_best[0] < best[0]:
                best = set_best
                if best[0] == 0 and not explain:
                    break
        return best, per_set


def _weight(mask: int, costs: Sequence[int]) -> int:
    total = 0
    i = 0
    while mask:
        low = mask & -mask
        i = low.bit_length() - 1
        total += costs[i]
        mask ^= low
    return total


def _push(out: list[tuple[int, int]], st: tuple[int, int]) -> None:
    m = st[0]
    for em, _ in out:
        if em & m == m:
            return
    out.append(st)


def _pruned(states: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for st in states:
        _push(out, st)
    return out
