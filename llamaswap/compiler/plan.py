"""Plan: the immutable result of compiling a config, and `compile_text`, the one entry point.

A Plan holds the typed config, the routing engine, the set table in solver order (with
symbolic sets where expansion would exceed the budget), evict costs by real model ID, the
groups, and every diagnostic. `plan.policy` gives the eviction policy (matrix or groups),
built on first use, with its precomputed decision table.

Invariants: a Plan is never mutated after `compile_text` returns; its JSON forms are
deterministic (sorted keys, solver order, no timestamps, paths as given).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from llamaswap.compiler.config import Config
from llamaswap.compiler.diagnostics import Diagnostic, Reporter, has_errors, sort_diagnostics
from llamaswap.compiler.expand import COUNT_CAP, DEFAULT_EXPAND_BUDGET
from llamaswap.compiler.group import Group
from llamaswap.compiler.load import check_scheduling_policy, load_config
from llamaswap.compiler.source import Pos, YMap
from llamaswap.compiler.virtual import Virtual, check_virtual

# The matrix passes, the resources extension and the eviction policies are imported where
# they are used: a groups config never loads them, and `compile` stays quick (start-up time).
if TYPE_CHECKING:
    from llamaswap.compiler.decision import EvictionPolicy
    from llamaswap.compiler.evict import GroupPolicy, MatrixPolicy
    from llamaswap.compiler.expand import SetEntry
    from llamaswap.compiler.resources import Resources

PLAN_SCHEMA = "llamaswap.plan/1"
DEFAULT_PRECOMPUTE_BUDGET = 250_000  # (running state, target) entries in the decision table


@dataclass(frozen=True)
class CompileOptions:
    expand_budget: int = DEFAULT_EXPAND_BUDGET
    precompute_budget: int = DEFAULT_PRECOMPUTE_BUDGET
    env: Mapping[str, str] = field(default_factory=dict)
    # Checks `routing.scheduler.policy` (name, options) and returns None when the policy can
    # be made, else (option or None, message, hint or None). The compiler cannot know the
    # installed policies (entry points); the CLI passes runtime.policies.check_policy.
    # None: only the shape is checked.
    policy_check: Callable[[str, Mapping[str, Any]], tuple[str | None, str, str | None] | None] | None = None
    # Hot reload: the serving plan's ports (model -> port) and the startPort they came from;
    # a model that still takes a ${PORT} keeps its port when startPort is unchanged.
    keep_ports: Mapping[str, int] = field(default_factory=dict)
    keep_start_port: int | None = None


@dataclass(frozen=True)
class Plan:
    file: str
    engine: str  # "matrix" | "group"
    models: tuple[str, ...]  # sorted real IDs
    config: Config | None
    aliases: Mapping[str, str]  # alias -> real ID
    ports: Mapping[str, int]
    sets: tuple[SetEntry, ...]  # solver order
    evict_costs: Mapping[str, int]  # real ID -> cost (unlisted: 1)
    groups: tuple[Group, ...]
    preload: tuple[str, ...]
    priority: Mapping[str, int]
    diagnostics: tuple[Diagnostic, ...]
    options: CompileOptions = field(default_factory=CompileOptions)
    virtual: Virtual = field(default_factory=Virtual)  # peers, selectors, profiles
    resources: Resources | None = None  # devices and needs (llamaswap extension), when declared

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)

    def resolve_model(self, name: str) -> str | None:
        """Real model ID for a model ID or alias; None when unknown."""
        if name in self.models:
            return name
        return self.aliases.get(name)

    def evict_cost(self, model: str) -> int:
        return self.evict_costs.get(model, 1)

    @cached_property
    def policy(self) -> EvictionPolicy:
        """The eviction policy for this plan (matrix or groups), with its precomputed
        decision table when the plan is ok and the table fits the budget; pure and thread-safe."""
        from llamaswap.compiler import precompute
        from llamaswap.compiler.evict import GroupPolicy, MatrixPolicy

        policy: MatrixPolicy | GroupPolicy
        if self.engine == "matrix":
            policy = MatrixPolicy(
                self.models, [(s.name, s.dsl, s.expr) for s in self.sets], dict(self.evict_costs)
            )
        else:
            policy = GroupPolicy(self.models, self.groups)
        if self.ok:
            # Through the module, so a test can take the table away.
            policy.table = precompute.build_table(policy, self.sets, self.options.precompute_budget)
            if self.resources is not None and isinstance(policy, MatrixPolicy):
                # Where a starting model goes (the scheduler asks it when it is there).
                from llamaswap.compiler.placer import Placer

                placer = Placer(self.resources, policy)
                placer.precompute()
                policy.placer = placer
        return policy

    # -- JSON ------------------------------------------------------------------------------
    def compile_json(self) -> dict[str, Any]:
        """The object `llamaswap compile --format json` prints (a stable, documented shape)."""
        return {
            "ok": self.ok,
            "engine": self.engine,
            "models": list(self.models),
            "sets": [
                {
                    "name": s.name,
                    "dsl": s.dsl,
                    "combinations": None if s.combinations is None else [list(c) for c in s.combinations],
                }
                for s in self.sets
            ],
            "diagnostics": [d.to_json() for d in self.diagnostics],
            **({"resources": self.resources_json()} if self.resources is not None else {}),
        }

    def resources_json(self) -> dict[str, Any]:
        """Devices, needs and, per set combination, its placement and per-device use."""
        assert self.resources is not None
        res = self.resources
        out = res.to_json()
        placements = []
        for s in self.sets:
            for combo in s.combinations or ():
                placement = res.placement(combo)
                placements.append(
                    {
                        "set": s.name,
                        "combination": list(combo),
                        "fits": placement is not None,
                        "placement": None
                        if placement is None
                        else {m: list(d) for m, d in placement.items()},
                        "use": None if placement is None else res.usage(placement),
                    }
                )
        out["placements"] = placements
        return out

    def artifact_json(self) -> dict[str, Any]:
        """The compiled plan written by `compile -o` (versioned schema)."""
        c = self.config
        models = []
        for mid in self.models:
            m = c.models[mid] if c else None
            models.append(
                {
                    "id": mid,
                    "aliases": sorted(a for a, real in self.aliases.items() if real == mid),
                    "port": self.ports.get(mid),
                    "proxy": m.proxy if m else None,
                    "evict_cost": self.evict_cost(mid),
                    "priority": self.priority.get(mid, 0),
                }
            )
        out: dict[str, Any] = {
            "schema": PLAN_SCHEMA,
            "file": self.file,
            "ok": self.ok,
            "engine": self.engine,
            "models": models,
            "sets": self.compile_json()["sets"],
            "groups": [
                {
                    "name": g.name,
                    "swap": g.swap,
                    "exclusive": g.exclusive,
                    "persistent": g.persistent,
                    "members": list(g.members),
                }
                for g in self.groups
            ],
            "preload": list(self.preload),
            "diagnostics": [d.to_json() for d in self.diagnostics],
        }
        if self.resources is not None:
            out["resources"] = self.resources_json()
        if self.ok:
            table = self.policy.table
            out["decisions"] = None if table is None else [d.to_json() for d in table.decisions()]
        return out


def compile_text(text: str, file: str, options: CompileOptions | None = None) -> Plan:
    """Compile a config's text. Never raises on user input: problems are diagnostics."""
    options = options or CompileOptions()
    loaded = load_config(text, file, options.env, options.keep_ports, options.keep_start_port)
    report = Reporter(file)
    report.diagnostics.extend(loaded.diagnostics)
    report.diagnostics.extend(check_scheduling_policy(loaded, options.policy_check))
    config = loaded.config
    models = tuple(sorted(config.models)) if config else ()
    sets: tuple[SetEntry, ...] = ()
    costs: dict[str, int] = {}
    res = None
    if config is not None and _declares_resources(loaded.doc.root):
        from llamaswap.compiler.resources import load_resources

        res, rdiags = load_resources(loaded.doc.root, file)
        report.diagnostics.extend(rdiags)
        if res is not None and loaded.engine != "matrix":
            report.warning(
                "LS414",
                "resources are only checked against matrix sets; the groups engine ignores them",
                _key_pos(loaded.doc.root, "resources"),
                "resources",
                hint="use a matrix (sets: auto derives the sets from the resources)",
                length=len("resources"),
            )
    if loaded.engine == "matrix" and loaded.matrix_block is not None and config is not None:
        from llamaswap.compiler.expand import expand_sets
        from llamaswap.compiler.lints import lint_matrix
        from llamaswap.compiler.resolve import resolve_matrix

        matrix, mdiags = resolve_matrix(
            file, loaded.matrix_block, loaded.matrix_path, config.models, loaded.aliases
        )
        report.diagnostics.extend(mdiags)
        costs = dict(matrix.evict_costs)
        if matrix.auto:
            sets = _derive(loaded, res, report, options)
        else:
            sets = expand_sets(matrix.sets, options.expand_budget)
            if res is not None:
                from llamaswap.compiler.resources import check_sets  # with its placement search

                report.diagnostics.extend(check_sets(res, sets, file, loaded.matrix_path, matrix.set_pos))
        for s in sets if not matrix.auto else ():
            if s.combinations is None:
                report.info(
                    "LS450",
                    f"set {s.name!r} has {_distinct_text(s)}, more than the expansion budget "
                    f"({options.expand_budget:,}); it is kept symbolic and decided by the symbolic solver",
                    matrix.set_pos.get(s.name),
                    f"{loaded.matrix_path}.sets.{s.name}",
                    hint="raise the budget with --expand-budget to expand it",
                    length=len(s.name),
                )
        if not matrix.auto:  # derived sets are distinct, maximal and hold every model that fits
            model_pos = _model_positions(loaded.doc.root)
            report.diagnostics.extend(
                lint_matrix(
                    file, loaded.matrix_path, loaded.matrix_block, matrix, sets, config.models, model_pos
                )
            )
    plan = Plan(
        file=file,
        engine=loaded.engine,
        models=models,
        config=config,
        aliases=dict(sorted(loaded.aliases.items())),
        ports=dict(sorted(loaded.ports.items())),
        sets=sets,
        evict_costs=dict(sorted(costs.items())),
        groups=loaded.groups,
        preload=loaded.preload,
        priority=dict(sorted(loaded.priority.items())),
        diagnostics=sort_diagnostics(report.diagnostics),
        options=options,
        resources=res,
    )
    root = loaded.doc.root
    if not isinstance(root, YMap) or config is None:
        return plan
    virtual, vdiags = check_virtual(
        root, file, config.models, loaded.aliases, lambda targets: _why_apart(plan, targets)
    )
    if not vdiags and not virtual.peers and not virtual.selectors and not virtual.profiles:
        return plan
    return replace(plan, virtual=virtual, diagnostics=sort_diagnostics([*plan.diagnostics, *vdiags]))


def _derive(
    loaded: Any, res: Resources | None, report: Reporter, options: CompileOptions
) -> tuple[SetEntry, ...]:
    """`sets: auto`: the sets derived from the resources (an error without them)."""
    assert loaded.matrix_block is not None
    value = loaded.matrix_block.get("sets")
    where = value.pos if value is not None else None
    if res is None:
        report.error(
            "LS221",
            "sets: auto derives the sets from the resources, but the config declares none",
            where,
            f"{loaded.matrix_path}.sets",
            length=4,
            hint="declare devices (resources: {gpu0: {vram: 24GiB}}) and each model's resources",
        )
        return ()
    from llamaswap.compiler.resources import derive_sets

    sets, diags = derive_sets(res, loaded.file, loaded.matrix_path, where, options.expand_budget)
    report.diagnostics.extend(diags)
    return sets


def _declares_resources(root: object) -> bool:
    """Whether the config uses the resources extension at all (top level or any model)."""
    if not isinstance(root, YMap):
        return False
    if root.key_node("resources") is not None:
        return True
    models = root.get("models")
    return isinstance(models, YMap) and any(
        isinstance(v, YMap) and v.key_node("resources") is not None for _, v in models.items
    )


def _key_pos(root: object, key: str) -> Pos | None:
    k = root.key_node(key) if isinstance(root, YMap) else None
    return k.pos if k is not None else None


def _why_apart(plan: Plan, targets: tuple[str, ...]) -> str | None:
    """Why spillover targets can never run together (llama-swap's rule), or None."""
    if plan.engine == "matrix":
        if not plan.ok:
            return None  # the matrix has its own errors; judged once it compiles
        from llamaswap.compiler.evict import MatrixPolicy

        policy = MatrixPolicy(
            plan.models, [(s.name, s.dsl, s.expr) for s in plan.sets], dict(plan.evict_costs)
        )
        d = policy.decide(targets[0], tuple(sorted(set(targets[1:]))))
        return None if not d.evict else "targets must all appear together in one expanded matrix set"
    group_of = {m: g for g in plan.groups for m in g.members}
    first = group_of.get(targets[0])
    if first is None:
        return f"target {targets[0]!r} is not in a routing group"
    if first.swap:
        return "spillover targets must share a group with swap: false"
    if any(group_of.get(t) is not first for t in targets[1:]):
        return "spillover targets must share one routing group"
    return None


def _distinct_text(s: SetEntry) -> str:
    def n(v: int) -> str:
        return f"{'at least ' if v >= COUNT_CAP else ''}{v:,}"

    if s.distinct_exact:
        return f"{n(s.distinct)} combinations"
    return f"up to {n(s.distinct)} distinct combinations ({n(s.count)} before de-duplication)"


def _model_positions(root: object) -> dict[str, Pos]:
    if not isinstance(root, YMap):
        return {}
    models = root.get("models")
    if not isinstance(models, YMap):
        return {}
    return {str(k.value): k.pos for k, _ in models.items}
