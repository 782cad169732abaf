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

Hot-path shortcuts, each keeping the lists exactly as the rules above define them:
- an OR of leaves (the common "10 alternatives") visits only its relevant leaves, ordered by
  first occurrence, behind the first child's empty state when that child is irrelevant;
- an AND whose children have disjoint relevant supports takes the plain product: no union
  can then contain an earlier one, so pruning would drop nothing;
- each state carries the evict cost of the running models it keeps, so a candidate's cost is
  one subtraction (the overlap of two parts is subtracted once when an AND is not disjoint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llamaswap.compiler.ast import And, Leaf, Node, Or, Ref


class _N:
    """A compiled expression node."""

    __slots__ = ("kind", "bit", "children", "support", "first", "ref", "pos")

    def __init__(
        self,
        kind: int,
        bit: int = 0,
        children: tuple[_N, ...] = (),
        support: int = 0,
        first: int = 0,
        ref: int = -1,
        pos: dict[int, int] | None = None,
    ):
        self.kind = kind
        self.bit = bit
        self.children = children
        self.support = support
        self.first = first
        self.ref = ref
        self.pos = pos  # LEAF_OR: leaf bit -> position of its first occurrence


LEAF, OR, AND, REF, LEAF_OR = 0, 1, 2, 3, 4
_S = tuple[int, int, int]  # (mask, witness, kept cost), see SymbolicSolver._eval


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
        by_name: dict[str, int] = {}
        for name, dsl, expr in sets:
            root = self._compile(expr, by_name)
            cs = CompiledSet(len(self.sets), name, dsl, root, root.support)
            by_name[name] = cs.index
            self.sets.append(cs)
        # Target bit -> the sets (solver order) that can hold it; built here, not on demand,
        # so nothing about a query is cached between queries.
        hosts: dict[int, list[CompiledSet]] = {}
        for cs in self.sets:
            rest = cs.support
            while rest:
                low = rest & -rest
                hosts.setdefault(low, []).append(cs)
                rest ^= low
        self.hosts: dict[int, tuple[CompiledSet, ...]] = {b: tuple(v) for b, v in hosts.items()}

    def _compile(self, n: Node, by_name: Mapping[str, int]) -> _N:
        if isinstance(n, Leaf):
            i = self.index[n.model]
            bit = 1 << i
            return _N(LEAF, bit=bit, support=bit, first=bit, ref=i)  # a leaf's ref: its model index
        if isinstance(n, Ref):
            target = self.sets[by_name[n.name]]
            return _N(REF, support=target.support, first=target.root.first, ref=target.index)
        if isinstance(n, Or):
            kids = tuple(self._compile(c, by_name) for c in n.children)
            support = 0
            for k in kids:
                support |= k.support
            if all(k.kind == LEAF for k in kids):
                pos: dict[int, int] = {}
                for i, k in enumerate(kids):
                    pos.setdefault(k.bit, i)
                return _N(LEAF_OR, children=kids, support=support, first=kids[0].first, pos=pos)
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
    # Internally a state is (mask, witness, kept): the relevant models present, the first
    # concrete combination with that projection (a global mask), and the evict cost of the
    # running models it keeps, carried along so a candidate's cost is `total - kept` with no
    # per-state bit loop. A memo belongs to one (relevant, running) query.

    def _eval(
        self, node: _N, relevant: int, running: int, costs: Sequence[int], memo: dict[int, list[_S]]
    ) -> list[_S]:
        if not node.support & relevant:
            return [(0, node.first, 0)]
        kind = node.kind
        if kind == LEAF:
            bit = node.bit
            return [(bit, bit, costs[node.ref] if bit & running else 0)]
        if kind == REF:
            got = memo.get(node.ref)
            if got is None:
                got = memo[node.ref] = self._eval(self.sets[node.ref].root, relevant, running, costs, memo)
            return got
        if kind == LEAF_OR:
            # Only the relevant leaves survive, in order of first occurrence, after the
            # first child's state when that child is irrelevant (every later irrelevant
            # child projects to 0, which an earlier state always contains).
            rel = node.support & relevant
            bits: list[int]
            if rel & (rel - 1):
                bits = []
                while rel:
                    low = rel & -rel
                    bits.append(low)
                    rel ^= low
                assert node.pos is not None  # every LEAF_OR node carries pos
                bits.sort(key=node.pos.__getitem__)
            else:
                bits = [rel]
            out = [(b, b, costs[b.bit_length() - 1] if b & running else 0) for b in bits]
            if not node.first & relevant:
                out.insert(0, (0, node.first, 0))
            return out
        if kind == OR:
            out = []
            for child in node.children:
                # Leaves and irrelevant children inline: most children of a wide OR.
                if not child.support & relevant:
                    got = [(0, child.first, 0)]
                elif child.kind == LEAF:
                    b = child.bit
                    got = [(b, b, costs[child.ref] if b & running else 0)]
                else:
                    got = self._eval(child, relevant, running, costs, memo)
                for st in got:
                    m = st[0]
                    for e in out:
                        if e[0] & m == m:
                            break
                    else:
                        out.append(st)
            return out
        acc: list[_S] = [(0, 0, 0)]
        seen = 0  # relevant models the children so far can hold
        for child in node.children:
            part = self._eval(child, relevant, running, costs, memo)
            csup = child.support & relevant
            if not seen & csup:
                # Disjoint relevant supports: a union contains another only if both of its
                # parts do, and no list holds a state contained in an earlier one, so the
                # left-major product needs no pruning (and kept costs simply add up).
                acc = [(m | pm, w | pw, k + pk) for m, w, k in acc for pm, pw, pk in part]
            else:
                nxt: list[_S] = []
                for m, w, k in acc:
                    for pm, pw, pk in part:
                        both = m & pm & running
                        _push(nxt, (m | pm, w | pw, k + pk - (_weight(both, costs) if both else 0)))
                acc = nxt
            seen |= csup
        return acc

    def _set_eval(
        self, set_index: int, relevant: int, running: int, costs: Sequence[int], memo: dict[int, list[_S]]
    ) -> list[_S]:
        got = memo.get(set_index)
        if got is None:
            got = memo[set_index] = self._eval(self.sets[set_index].root, relevant, running, costs, memo)
        return got

    def states(self, node: _N, relevant: int, memo: dict[int, list[_S]]) -> list[tuple[int, int]]:
        """Projected states (mask, witness) of `node` for the relevant-model mask, pruned,
        in order. `memo` is reused across calls with the same `relevant` only."""
        return [(m, w) for m, w, _ in self._eval(node, relevant, 0, (), memo)]

    def set_states(self, set_index: int, relevant: int, memo: dict[int, list[_S]]) -> list[tuple[int, int]]:
        """`states` of a set's root, memoised in `memo` (same `relevant` only)."""
        return [(m, w) for m, w, _ in self._set_eval(set_index, relevant, 0, (), memo)]

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
        memo: dict[int, list[_S]] = {}
        for cs in self.sets:
            if cs.support & running_mask != running_mask:
                continue
            for st in self._set_eval(cs.index, running_mask, 0, (), memo):
                if st[0] == running_mask:
                    return cs
        return None

    def best(
        self, target_bit: int, running_mask: int, costs: Sequence[int], explain: bool
    ) -> tuple[tuple[int, CompiledSet, int] | None, list[tuple[int, CompiledSet, int]]]:
        """(best (cost, set, witness) or None, per-set bests when explaining)."""
        relevant = target_bit | running_mask
        memo: dict[int, list[_S]] = {}
        total = _weight(running_mask, costs)
        best: tuple[int, CompiledSet, int] | None = None
        per_set: list[tuple[int, CompiledSet, int]] = []
        hosts = self.hosts.get(target_bit, ())
        for cs in hosts:
            set_best: tuple[int, CompiledSet, int] | None = None
            for m, w, kept in self._set_eval(cs.index, relevant, running_mask, costs, memo):
                if not m & target_bit:
                    continue
                cost = total - kept
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


def _push(out: list[_S], st: _S) -> None:
    m = st[0]
    for e in out:
        if e[0] & m == m:
            return
    out.append(st)
