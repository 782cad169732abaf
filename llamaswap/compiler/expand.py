"""Expand: resolved sets -> the set table (concrete combinations), within a budget.

Meaning (reference §3.2): a leaf is one one-model combination; OR concatenates its children's
families in child order; AND is their Cartesian product, left-major, each combination the
union of its parts; `+ref` inlines the referenced set's family. Every combination is
de-duplicated and sorted (code-point order, which is UTF-8 byte order); a combination that
appears twice in one set is kept once, at its first position (this never changes a decision:
the earlier copy wins every tie).

There is no fixed cap. Before expanding, the exact number of combinations is counted (cheap,
no expansion); a set whose count would exceed the remaining budget stays symbolic
(`combinations is None`) and every later stage works on its expression instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from llamaswap.compiler.ast import And, Leaf, Node, Or, Ref
from llamaswap.compiler.resolve import SetDef

DEFAULT_EXPAND_BUDGET = 100_000

Combination = tuple[str, ...]


@dataclass(frozen=True)
class SetEntry:
    """One row of the set table, in solver order."""

    name: str
    dsl: str
    expr: Node
    combinations: tuple[Combination, ...] | None  # None = symbolic
    count: int  # combinations before de-duplication (exact up to COUNT_CAP, which means "at least")

    @property
    def symbolic(self) -> bool:
        return self.combinations is None


# Counts saturate here: references can square a count at every step (`t2: "+t1 & +t1"`),
# and an exact count with billions of digits would exhaust memory for nothing.
COUNT_CAP = 10**18


def count_combinations(expr: Node, sets: Mapping[str, SetDef], memo: dict[str, int]) -> int:
    """Number of combinations of `expr` before de-duplication, saturating at COUNT_CAP."""
    if isinstance(expr, Leaf):
        return 1
    if isinstance(expr, Ref):
        if expr.name not in memo:
            memo[expr.name] = count_combinations(sets[expr.name].expr, sets, memo)
        return memo[expr.name]
    if isinstance(expr, Or):
        return min(COUNT_CAP, sum(count_combinations(c, sets, memo) for c in expr.children))
    if isinstance(expr, And):
        total = 1
        for c in expr.children:
            total = min(COUNT_CAP, total * count_combinations(c, sets, memo))
            if total == 0:
                return 0
        return total
    raise TypeError(f"unresolved node {expr!r}")


def _family(expr: Node, table: Mapping[str, tuple[frozenset[str], ...]]) -> list[frozenset[str]]:
    if isinstance(expr, Leaf):
        return [frozenset((expr.model,))]
    if isinstance(expr, Ref):
        return list(table[expr.name])
    if isinstance(expr, Or):
        out: list[frozenset[str]] = []
        for c in expr.children:
            out.extend(_family(c, table))
        return out
    if isinstance(expr, And):
        acc: list[frozenset[str]] = [frozenset()]
        for c in expr.children:
            part = _family(c, table)
            acc = [a | b for a in acc for b in part]
        return acc
    raise TypeError(f"unresolved node {expr!r}")


def expand_sets(sets: tuple[SetDef, ...], budget: int = DEFAULT_EXPAND_BUDGET) -> tuple[SetEntry, ...]:
    """Expand sets (given in solver order, so references come first) into the set table."""
    by_name = {s.name: s for s in sets}
    counts: dict[str, int] = {}
    families: dict[str, tuple[frozenset[str], ...]] = {}
    remaining = budget
    out: list[SetEntry] = []
    for s in sets:
        n = count_combinations(s.expr, by_name, counts)
        counts[s.name] = n
        refs_ok = all(r in families for r in s.refs)
        if refs_ok and n <= remaining:
            fam = _family(s.expr, families)
            seen: set[frozenset[str]] = set()
            unique: list[frozenset[str]] = []
            for combo in fam:
                if combo not in seen:
                    seen.add(combo)
                    unique.append(combo)
            families[s.name] = tuple(unique)
            remaining -= n
            combos: tuple[Combination, ...] | None = tuple(tuple(sorted(c)) for c in unique)
        else:
            combos = None
        out.append(SetEntry(s.name, s.dsl, s.expr, combos, n))
    return tuple(out)
