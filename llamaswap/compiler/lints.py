"""Lints: warnings about configs that load but probably do not do what their author meant.

- LS401 a model in no set while the matrix engine is active (it can only run alone);
- LS402 a set whose every combination is contained in another set's (redundant);
- LS403 a var never used;
- LS404 an evict cost on a model that never shares a combination with another model;
- LS405 two sets with exactly the same combinations.

Redundancy and duplicates need the concrete combinations, so they skip symbolic sets;
the other lints work on expressions and cover symbolic sets too. Of two sets that are
duplicates or allow the same thing, the later-defined one is reported. Lints that a broken
set could invalidate (LS401, LS403, LS404) stay silent until every set compiles.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llamaswap.compiler.ast import And, Leaf, Node, Ref, quote_id
from llamaswap.compiler.diagnostics import Diagnostic, Reporter
from llamaswap.compiler.expand import SetEntry
from llamaswap.compiler.resolve import Matrix, support
from llamaswap.compiler.source import Pos, YMap


def sharing_models(table: Iterable[SetEntry]) -> set[str]:
    """Models that appear in some combination together with another model."""
    entries = {e.name: e for e in table}
    memo: dict[str, tuple[frozenset[str], frozenset[str]]] = {}

    def go(n: Node) -> tuple[frozenset[str], frozenset[str]]:
        # (support, models that co-occur with another model inside n)
        if isinstance(n, Leaf):
            return frozenset((n.model,)), frozenset()
        if isinstance(n, Ref):
            if n.name not in memo:
                memo[n.name] = go(entries[n.name].expr)
            return memo[n.name]
        parts = [go(c) for c in n.children]  # type: ignore[union-attr]
        sup = frozenset().union(*(p[0] for p in parts))
        shared = frozenset().union(*(p[1] for p in parts))
        if isinstance(n, And):
            # m (from child i) meets any model o != m from another child j: pick a
            # combination of i holding m and one of j holding o.
            for i, (si, _) in enumerate(parts):
                others = frozenset().union(*(p[0] for j, p in enumerate(parts) if j != i))
                shared |= {m for m in si if others - {m}}
        return sup, shared

    out: set[str] = set()
    for e in entries.values():
        if e.combinations is not None:
            for combo in e.combinations:
                if len(combo) > 1:
                    out.update(combo)
        else:
            out |= go(e.expr)[1]
    return out


def lint_matrix(
    file: str,
    path: str,
    block: YMap,
    matrix: Matrix,
    table: tuple[SetEntry, ...],
    models: Mapping[str, object],
    model_pos: dict[str, Pos],
) -> list[Diagnostic]:
    report = Reporter(file)

    in_sets: set[str] = set()
    memo: dict[str, frozenset[str]] = {}
    by_name = {s.name: s for s in matrix.sets}
    for s in matrix.sets:
        in_sets |= support(s.expr, by_name, memo)
    # Only meaningful when every set compiled: a broken set may well mention the model.
    complete = _all_sets_compiled(block, matrix)
    if complete:
        for model_id in sorted(models):
            if model_id not in in_sets:
                report.warning(
                    "LS401",
                    f"model {model_id!r} is in no set: it can only run alone and "
                    "stops every other model when requested",
                    model_pos.get(model_id),
                    f"models.{model_id}",
                    hint=f"add it to a set (e.g. '{quote_id(model_id)} & ...') if it may share the GPUs, "
                    f"or add a set '{quote_id(model_id)}' to say it runs alone",
                    length=len(model_id),
                )

    # A set that failed to parse may well use the var: only judge a complete matrix.
    unused = sorted(set(matrix.vars) - matrix.used_vars) if complete and matrix.sets else []
    for var in unused:
        report.warning(
            "LS403",
            f"var {var!r} is never used",
            matrix.var_pos.get(var),
            f"{path}.vars.{var}",
            hint="remove it, or use it in a set",
            length=len(var),
        )

    shared = sharing_models(table)
    if complete:
        for model_id in sorted(matrix.evict_costs):
            if model_id not in shared:
                report.warning(
                    "LS404",
                    f"evict cost for {model_id!r} never matters: it never shares a "
                    "combination with another model, so every request for another "
                    "model evicts it whatever it costs",
                    matrix.cost_pos.get(model_id),
                    f"{path}.evict_costs.{matrix.cost_key.get(model_id, model_id)}",
                    hint="remove the cost, or put the model in a set with others",
                    length=len(matrix.cost_key.get(model_id, model_id)),
                )

    # Duplicates and redundancy are judged in definition order: the later of two equal sets
    # is the one reported, whatever the solver order.
    rank = {name: i for i, name in enumerate(matrix.set_pos)}
    expanded = sorted((e for e in table if e.combinations is not None), key=lambda e: rank.get(e.name, 0))
    seen: dict[frozenset[tuple[str, ...]], str] = {}
    duplicate: set[str] = set()
    for e in expanded:
        key = frozenset(e.combinations or ())
        if key in seen:
            duplicate.add(e.name)
            report.warning(
                "LS405",
                f"set {e.name!r} has exactly the same combinations as set {seen[key]!r}",
                matrix.set_pos.get(e.name),
                f"{path}.sets.{e.name}",
                hint="remove one of them",
                length=len(e.name),
            )
        else:
            seen[key] = e.name
    _redundant(report, path, matrix, table, expanded, duplicate)
    return report.diagnostics


# Upper bound on subset tests for the redundancy lint; past it the lint stays silent rather
# than slow down a compile.
REDUNDANCY_WORK = 2_000_000


def _redundant(
    report: Reporter,
    path: str,
    matrix: Matrix,
    table: tuple[SetEntry, ...],
    expanded: list[SetEntry],
    duplicate: set[str],
) -> None:
    """LS402: a set every combination of which is contained in a combination of another set.

    Sets are judged from the last defined to the first, and a set found redundant no longer
    covers others: of two sets that allow the same thing, only the later one is reported.
    Sets used through `+ref` are building blocks and never reported. Needs every other set
    expanded, so it stays silent when some set is symbolic.
    """
    if any(e.combinations is None for e in table if e.name not in duplicate):
        return
    live = [e for e in expanded if e.name not in duplicate]
    combos: list[frozenset[str]] = []
    owner: list[str] = []
    by_model: dict[str, list[int]] = {}
    exact: dict[frozenset[str], set[str]] = {}
    for e in live:
        for c in e.combinations or ():
            fc = frozenset(c)
            idx = len(combos)
            combos.append(fc)
            owner.append(e.name)
            exact.setdefault(fc, set()).add(e.name)
            for m in fc:
                by_model.setdefault(m, []).append(idx)
    dropped: set[str] = set()
    work = 0
    for e in reversed(live):
        if e.name in matrix.referenced_sets or not e.combinations:
            continue
        covered = True
        for c in e.combinations:
            fc = frozenset(c)
            if exact.get(fc, set()) - dropped - {e.name}:
                continue
            smallest = min((by_model.get(m, []) for m in fc), key=len)
            found = False
            for idx in smallest:
                work += 1
                if owner[idx] != e.name and owner[idx] not in dropped and fc <= combos[idx]:
                    found = True
                    break
            if work > REDUNDANCY_WORK:
                return
            if not found:
                covered = False
                break
        if covered:
            dropped.add(e.name)
            report.warning(
                "LS402",
                f"set {e.name!r} is redundant: every combination it allows is contained in another set's",
                matrix.set_pos.get(e.name),
                f"{path}.sets.{e.name}",
                hint="sets allow every subset of their combinations; this set adds nothing",
                length=len(e.name),
            )


def _all_sets_compiled(block: YMap, matrix: Matrix) -> bool:
    sets = block.get("sets")
    if not isinstance(sets, YMap):
        return False
    return len(sets.items) == len(matrix.sets)
