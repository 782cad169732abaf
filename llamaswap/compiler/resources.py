"""Resources: devices with budgets, what each model needs, and the passes that use them —
Check (every combination of the hand-written sets fits) and Derive (`sets: auto`).

A llamaswap extension (issue 17); a config without a top-level `resources:` key compiles
exactly as before. The schema, kept small:

    resources:                     # device name -> resource name -> size
      gpu0: {vram: 24GiB}
      gpu1: {vram: 24GiB, slots: 4}
    models:
      big:   {cmd: ..., resources: {vram: 40GiB, split: [gpu0, gpu1]}}   # even tensor split
      embed: {cmd: ..., resources: {vram: 1.5GiB, devices: [gpu1]}}      # pinned
      chat:  {cmd: ..., resources: {vram: 20GiB}}                         # any one device
    matrix:
      sets: auto                   # derive the sets (or write them by hand: they are checked)

A device may also name its `index`: what the process environment calls it
(`CUDA_VISIBLE_DEVICES`, `HIP_VISIBLE_DEVICES`, `${GPU}`/`${GPUS}`): a number or an id such
as a GPU UUID; without it, the device's position in `resources` (0, 1, …).

Sizes: a number with a unit — KiB, MiB, GiB, TiB (1024-based), KB, MB, GB, TB (1000-based),
B — or a bare number, meaning MiB. Any resource name may be used; a device without it holds
none. In a model's `resources`, `split` (devices sharing the model evenly) and `devices`
(the devices it may be placed on, one of them; default all) are the two reserved keys; every
other key is a resource the model needs. A model without `resources` needs nothing. Amounts
are whole bytes: a fractional byte rounds up for a need and down for a budget.

Invariants: pure; every problem is a located diagnostic (LS318-LS321 schema, LS220-LS222
sets, LS413/LS414/LS452 notes); derived sets and their order are deterministic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from llamaswap.compiler.ast import And, Leaf, Node, quote_id
from llamaswap.compiler.diagnostics import Diagnostic, Reporter
from llamaswap.compiler.expand import SetEntry
from llamaswap.compiler.placement import Space
from llamaswap.compiler.source import Pos, YMap, YNode, YScalar, YSeq
from llamaswap.compiler.suggest import closest, did_you_mean

RESERVED = ("split", "devices")
DEVICE_INDEX = "index"  # the one reserved key of a device
_INDEX = re.compile(r"[A-Za-z0-9_.:-]+")
UNITS: dict[str, int] = {
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
}
BARE_UNIT = "MiB"
AUTO_PREFIX = "auto-"
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")
_UNIT_LIST = "KiB, MiB, GiB, TiB (1024-based) or KB, MB, GB, TB (1000-based); a bare number is MiB"


@dataclass(frozen=True)
class Device:
    name: str
    budgets: Mapping[str, int]  # resource -> bytes
    pos: Pos
    index: str = ""  # what CUDA_VISIBLE_DEVICES / ${GPU} name it: `index:`, else its position


@dataclass(frozen=True)
class ModelNeed:
    model: str
    amounts: Mapping[str, int]  # resource -> bytes
    split: tuple[str, ...]
    devices: tuple[str, ...]  # allowed devices (empty: all)
    pos: Pos  # the model's `resources` key


@dataclass(frozen=True)
class Resources:
    """The declared devices and needs, and the placement space built from them."""

    devices: tuple[Device, ...]
    needs: Mapping[str, ModelNeed]  # models that declared resources, in definition order
    models: tuple[str, ...]  # every model, in definition order
    names: tuple[str, ...]  # resource names, sorted
    space: Space
    # Parts whose declaration has errors (already reported): fit checks that depend on them are
    # skipped, so one typo does not cascade into "does not fit" errors.
    broken_devices: bool = False
    broken_models: frozenset[str] = frozenset()

    def checkable(self, models: Sequence[str]) -> bool:
        return not self.broken_devices and not self.broken_models.intersection(models)

    def placement(self, models: Sequence[str]) -> dict[str, tuple[str, ...]] | None:
        """Device names per model (models needing nothing are left out); None if they do not fit."""
        fit = self.space.fit(models)
        if fit is None:
            return None
        return {m: tuple(self.space.devices[d] for d in devs) for m, devs in fit.items()}

    def usage(self, placement: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
        """Per device: its models and, per resource, bytes used and held (deterministic)."""
        index = {d: i for i, d in enumerate(self.space.devices)}
        loads = self.space.loads({m: tuple(index[d] for d in devs) for m, devs in placement.items()})
        out = []
        for i, dev in enumerate(self.devices):
            out.append(
                {
                    "device": dev.name,
                    "models": [m for m, devs in placement.items() if dev.name in devs],
                    "use": {
                        r: {
                            "used": _bytes(Fraction(loads[i][j], self.space.scale)),
                            "budget": dev.budgets.get(r, 0),
                        }
                        for j, r in enumerate(self.names)
                    },
                }
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": [
                {"name": d.name, "index": d.index, "budgets": dict(sorted(d.budgets.items()))}
                for d in self.devices
            ],
            "models": {
                m: {
                    "needs": dict(sorted(n.amounts.items())),
                    "split": list(n.split),
                    "devices": list(n.devices),
                }
                for m, n in self.needs.items()
            },
        }


def _bytes(v: Fraction) -> int | float:
    return v.numerator if v.denominator == 1 else float(v)


# -- sizes -----------------------------------------------------------------------------------


def parse_size(value: Any) -> tuple[Fraction | None, str | None, str | None]:
    """(bytes, problem, hint) for a size as written; bytes is None when there is a problem."""
    if isinstance(value, bool) or value is None:
        return None, f"expected a size such as 24GiB, got {_shown(value)}", f"units: {_UNIT_LIST}"
    if isinstance(value, (int, float)):
        if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
            return None, f"a size must be a non-negative number, got {value}", None
        return Fraction(value) * UNITS[BARE_UNIT], None, None
    if not isinstance(value, str):
        return None, f"expected a size such as 24GiB, got {_shown(value)}", f"units: {_UNIT_LIST}"
    m = _SIZE.fullmatch(value)
    if m is None:
        if value.strip().startswith("-"):
            return None, f"a size must be non-negative, got {value!r}", None
        return None, f"expected a size such as 24GiB, got {value!r}", f"units: {_UNIT_LIST}"
    number, unit = Fraction(m.group(1)), m.group(2)
    if unit == "":
        return number * UNITS[BARE_UNIT], None, None
    if unit not in UNITS:
        guess = _unit_guess(unit)
        hint = f"did you mean '{m.group(1)}{guess}'?" if guess else f"units: {_UNIT_LIST}"
        return None, f"unknown unit {unit!r} in size {value!r}", hint
    return number * UNITS[unit], None, None


def _unit_guess(unit: str) -> str | None:
    folded = {u.lower(): u for u in UNITS}
    low = unit.lower()
    for candidate in (low, low + "ib", low + "b"):  # GIB, G, Gi -> GiB; Gb -> GB
        if candidate in folded:
            return folded[candidate]
    return closest(unit, UNITS, cutoff=0.5)


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, YMap) or isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (YSeq, list, tuple)):
        return "a list"
    return repr(value)


def format_size(v: Fraction | int) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1 (up to 2 decimals)."""
    v = Fraction(v)
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if v >= UNITS[unit]:
            n = v / UNITS[unit]
            text = f"{float(n):.2f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{float(v):.2f}".rstrip("0").rstrip(".") + " B"


# -- the schema pass ---------------------------------------------------------------------------


def _span(node: YNode) -> tuple[Pos, int]:
    if isinstance(node, YScalar) and node.raw and node.pos.line == node.end.line:
        return node.pos, len(node.raw)
    return node.pos, 1


def _size(p: Reporter, node: YNode, path: str, what: str, round_up: bool) -> int | None:
    value = node.value if isinstance(node, YScalar) else node
    amount, problem, hint = parse_size(value)
    if amount is None:
        pos, length = _span(node)
        p.error("LS318", f"{what}: {problem}", pos, path, hint=hint, length=length)
        return None
    return math.ceil(amount) if round_up else math.floor(amount)


def load_resources(root: YNode | None, file: str) -> tuple[Resources | None, list[Diagnostic]]:
    """Read `resources:` and every model's `resources:` from the located tree (after macro
    substitution). (None, []) when the config declares no resources at all."""
    p = Reporter(file)
    if not isinstance(root, YMap):
        return None, []
    block = root.get("resources")
    block_key = root.key_node("resources")
    models_node = root.get("models")
    model_items = list(models_node.items) if isinstance(models_node, YMap) else []
    declared = [(k, v) for k, v in model_items if isinstance(v, YMap) and v.key_node("resources") is not None]
    if block_key is None:
        for k, v in declared:
            key = v.key_node("resources")
            assert key is not None
            p.error(
                "LS319",
                f"model {k.value}: 'resources' needs devices, but the config declares none",
                key.pos,
                f"models.{k.value}.resources",
                length=len("resources"),
                hint="declare them at the top level, e.g. resources: {gpu0: {vram: 24GiB}}",
            )
        return None, p.diagnostics

    devices: list[Device] = []
    if not isinstance(block, YMap) or not block.items:
        pos = (
            block.pos
            if block is not None and not (isinstance(block, YScalar) and block.value is None)
            else block_key.pos
        )
        p.error(
            "LS318",
            "resources must map device names to their budgets",
            pos,
            "resources",
            hint="e.g. resources: {gpu0: {vram: 24GiB}, gpu1: {vram: 24GiB}}",
        )
    else:
        indices: dict[str, str] = {}  # device index -> device name
        for k, dv in block.items:
            name = str(k.value)
            path = f"resources.{name}"
            budgets: dict[str, int] = {}
            if isinstance(dv, YScalar) and dv.value is None:
                pass  # a device that holds nothing
            elif not isinstance(dv, YMap):
                pos, length = _span(dv)
                hint = (
                    f"write {name}: {{vram: {dv.value}}}"
                    if isinstance(dv, YScalar)
                    else f"e.g. {name}: {{vram: 24GiB}}"
                )
                p.error(
                    "LS318",
                    f"device {name}: expected a mapping of resource names to sizes, got "
                    f"{_shown(dv.value if isinstance(dv, YScalar) else dv)}",
                    pos,
                    path,
                    hint=hint,
                    length=length,
                )
            dev_index = str(len(devices))
            if isinstance(dv, YMap):
                for rk, rv in dv.items:
                    if rk.value == DEVICE_INDEX:
                        got = _device_index(p, name, rv, f"{path}.{DEVICE_INDEX}")
                        if got is not None:
                            dev_index = got
                        continue
                    amount = _size(p, rv, f"{path}.{rk.value}", f"device {name}: {rk.value}", round_up=False)
                    if amount is not None:
                        budgets[str(rk.value)] = amount
            if dev_index in indices:
                p.error(
                    "LS318",
                    f"device {name}: index {dev_index} is already device {indices[dev_index]}'s",
                    k.pos,
                    path,
                    length=len(name),
                    hint=f"give it its own index: {name}: {{..., index: N}}",
                )
            indices.setdefault(dev_index, name)
            devices.append(Device(name, budgets, k.pos, dev_index))
    broken_devices = bool(p.diagnostics)
    device_names = [d.name for d in devices]

    needs: dict[str, ModelNeed] = {}
    broken: set[str] = set()
    for k, v in declared:
        model = str(k.value)
        need = _model_need(p, model, v, device_names)
        if need is not None:
            needs[model] = need
        else:
            broken.add(model)

    model_order = [str(k.value) for k, _ in model_items]
    names = sorted({r for d in devices for r in d.budgets} | {r for n in needs.values() for r in n.amounts})
    index = {d: i for i, d in enumerate(device_names)}
    space = Space.build(
        device_names,
        names,
        [[d.budgets.get(r, 0) for r in names] for d in devices],
        [
            (
                m,
                [needs[m].amounts.get(r, 0) for r in names] if m in needs else [0] * len(names),
                [index[d] for d in needs[m].devices]
                if m in needs and needs[m].devices
                else list(range(len(devices))),
                [index[d] for d in needs[m].split] if m in needs else [],
            )
            for m in model_order
        ],
    )
    res = Resources(
        tuple(devices), needs, tuple(model_order), tuple(names), space, broken_devices, frozenset(broken)
    )

    # A model that cannot fit even alone: the shortfall of its best placement.
    for model, need in needs.items():
        if not devices or not res.checkable((model,)) or res.space.fits((model,)):
            continue
        p.error(
            "LS320",
            f"model {model} cannot fit even alone: {_overflow_text(res, (model,), 'short')}",
            need.pos,
            f"models.{model}.resources",
            length=len("resources"),
            hint=_alone_hint(res, need),
        )
    for k, mv in model_items:
        if isinstance(mv, YMap) and mv.key_node("resources") is None:
            p.warning(
                "LS413",
                f"model {k.value} declares no resources, so it fits anywhere",
                k.pos,
                f"models.{k.value}",
                length=len(str(k.value)),
                hint="add resources: {vram: ...}, or resources: {} if it really needs none",
            )
    return res, p.diagnostics


def _device_index(p: Reporter, name: str, node: YNode, path: str) -> str | None:
    """A device's `index`: a whole number or an id (a GPU UUID) as CUDA_VISIBLE_DEVICES takes it."""
    value = node.value if isinstance(node, YScalar) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and _INDEX.fullmatch(value):
        return value
    pos, length = _span(node)
    p.error(
        "LS318",
        f"device {name}: index must be a device number or id, got {_shown(value if value is not None else node)}",
        pos,
        path,
        length=length,
        hint="e.g. index: 0, or index: GPU-5fd2a5c4 (what CUDA_VISIBLE_DEVICES names it)",
    )
    return None


def _model_need(p: Reporter, model: str, v: YMap, device_names: list[str]) -> ModelNeed | None:
    key = v.key_node("resources")
    node = v.get("resources")
    assert key is not None
    base = f"models.{model}.resources"
    if isinstance(node, YScalar) and node.value is None:
        return ModelNeed(model, {}, (), (), key.pos)
    if not isinstance(node, YMap):
        pos, length = _span(node) if node is not None else (key.pos, 1)
        p.error(
            "LS318",
            f"model {model}: resources must be a mapping, got "
            f"{_shown(node.value if isinstance(node, YScalar) else node)}",
            pos,
            base,
            hint="e.g. resources: {vram: 20GiB}, with split: [...] or devices: [...] to place it",
        )
        return None
    ok = True
    amounts: dict[str, int] = {}
    lists: dict[str, tuple[str, ...]] = {}
    for rk, rv in node.items:
        name = str(rk.value)
        path = f"{base}.{name}"
        if name in RESERVED:
            got = _device_list(p, model, name, rv, path, device_names)
            if got is None:
                ok = False
            else:
                lists[name] = got
            continue
        amount = _size(p, rv, path, f"model {model}: {name}", round_up=True)
        if amount is None:
            ok = False
        else:
            amounts[name] = amount
    if "split" in lists and "devices" in lists:
        k2 = node.key_node("devices")
        assert k2 is not None
        p.error(
            "LS321",
            f"model {model}: use either split or devices, not both",
            k2.pos,
            f"{base}.devices",
            length=len("devices"),
            hint="split spreads the model evenly over all its devices; devices picks one of them",
        )
        ok = False
    if not ok:
        return None
    return ModelNeed(model, amounts, lists.get("split", ()), lists.get("devices", ()), key.pos)


def _device_list(
    p: Reporter, model: str, key: str, node: YNode, path: str, device_names: list[str]
) -> tuple[str, ...] | None:
    if isinstance(node, YScalar) and isinstance(node.value, str) and node.value:
        items: list[YNode] = [node]  # one device written without brackets
    elif isinstance(node, YSeq) and node.items:
        items = list(node.items)
    else:
        pos, length = _span(node)
        p.error(
            "LS321",
            f"model {model}: {key} must list device names",
            pos,
            path,
            length=length,
            hint=f"e.g. {key}: [{', '.join(device_names[:2]) or 'gpu0'}]",
        )
        return None
    out: list[str] = []
    ok = True
    for i, item in enumerate(items):
        ipath = f"{path}[{i}]" if isinstance(node, YSeq) else path
        if not isinstance(item, YScalar) or not isinstance(item.value, str):
            pos, length = _span(item)
            p.error("LS321", f"model {model}: {key}: expected a device name", pos, ipath, length=length)
            ok = False
            continue
        name = item.value
        if name not in device_names:
            pos, length = _span(item)
            p.error(
                "LS319",
                f"model {model}: {key}: unknown device {name!r}",
                pos,
                ipath,
                length=length,
                hint=did_you_mean(name, device_names, fold=True, partial=True)
                or f"declared devices: {', '.join(device_names) or 'none'}",
            )
            ok = False
            continue
        if name in out:
            pos, length = _span(item)
            p.error(
                "LS321", f"model {model}: {key}: device {name!r} is listed twice", pos, ipath, length=length
            )
            ok = False
            continue
        out.append(name)
    return tuple(out) if ok else None


# -- explaining a placement ----------------------------------------------------------------------


def _overflow_text(res: Resources, models: Sequence[str], word: str) -> str:
    """The best placement of `models` described device by device, overflowing devices only."""
    space = res.space
    placement, loads = space.best(models)
    parts = []
    for d, row in enumerate(loads):
        over = [(r, load, cap) for r, (load, cap) in enumerate(zip(row, space.caps[d])) if load > cap]
        if not over:
            continue
        held = [m for m, devs in placement.items() if d in devs]
        amounts = ", ".join(
            f"{space.resources[r]} {format_size(Fraction(load, space.scale))} of "
            f"{format_size(Fraction(cap, space.scale))} ({format_size(Fraction(load - cap, space.scale))} {word})"
            for r, load, cap in over
        )
        parts.append(f"{space.devices[d]} would hold {', '.join(held)}: {amounts}")
    return "; ".join(parts)


def _alone_hint(res: Resources, need: ModelNeed) -> str:
    missing = [r for r in need.amounts if need.amounts[r] and not any(d.budgets.get(r) for d in res.devices)]
    if missing:
        return f"no device holds {', '.join(missing)}; add it to a device's budget"
    if need.split:
        return "split it over more devices, or lower its needs"
    if len(res.devices) > 1:
        return "split it over several devices (split: [...]), or lower its needs"
    return "lower its needs, or add a larger device"


# -- Check ---------------------------------------------------------------------------------------


def check_sets(
    res: Resources, sets: Sequence[SetEntry], file: str, matrix_path: str, set_pos: Mapping[str, Pos]
) -> list[Diagnostic]:
    """Every combination of every expanded set must fit; one error per set that has one that
    does not (the first in set order, with its best placement), a note per symbolic set that
    could not be checked."""
    p = Reporter(file)
    space = res.space
    for s in sets:
        path = f"{matrix_path}.sets.{s.name}"
        pos = set_pos.get(s.name)
        if s.combinations is None:
            support = sorted({n.model for n in _leaves(s.expr)})
            if res.checkable(support) and not space.fits(support):
                p.info(
                    "LS452",
                    f"set {s.name!r} is symbolic, so its combinations are not checked against the resources",
                    pos,
                    path,
                    length=len(s.name),
                    hint="raise --expand-budget to check it",
                )
            continue
        bad = [c for c in s.combinations if res.checkable(c) and not space.fits(c)]
        if not bad:
            continue
        first = bad[0]
        more = f"; {len(bad) - 1} more of its combinations do not fit either" if len(bad) > 1 else ""
        p.error(
            "LS220",
            f"set {s.name!r}: combination [{', '.join(first)}] does not fit the devices: "
            f"{_overflow_text(res, first, 'over')}{more}",
            pos,
            path,
            length=len(s.name),
            hint="remove a model from the combination, or split a model over more devices",
        )
    return p.diagnostics


def _leaves(expr: Node):
    from llamaswap.compiler.ast import walk

    for n in walk(expr):
        if isinstance(n, Leaf):
            yield n


# -- Derive --------------------------------------------------------------------------------------


def derive_sets(
    res: Resources, file: str, matrix_path: str, pos: Pos | None, limit: int
) -> tuple[tuple[SetEntry, ...], list[Diagnostic]]:
    """`sets: auto`: one set per maximal fitting combination (`auto-1`, `auto-2`, …, in the
    order of `Space.maximal`). Models that cannot fit even alone (already an error) are left
    out. More than `limit` combinations is an error (LS221)."""
    p = Reporter(file)
    if not res.checkable(res.models):
        return (), p.diagnostics  # the declarations have errors (reported); nothing sound to derive
    combos = res.space.maximal(res.models, limit)
    if combos is None:
        p.error(
            "LS222",
            f"sets: auto derives more than {limit:,} combinations",
            pos,
            f"{matrix_path}.sets",
            length=4,
            hint="raise --expand-budget, or write the sets by hand",
        )
        return (), p.diagnostics
    out: list[SetEntry] = []
    width = len(str(len(combos)))
    quoted = {m: quote_id(m) for m in res.models}  # once per model, not once per set
    for i, combo in enumerate(combos, 1):
        members = tuple(sorted(combo))
        dsl, expr = _dsl(members, quoted)
        out.append(SetEntry(f"{AUTO_PREFIX}{i:0{width}d}", dsl, expr, (members,), 1, 1, True))
    return tuple(out), p.diagnostics


def _dsl(members: Sequence[str], quoted: Mapping[str, str]) -> tuple[str, Node]:
    leaves: list[Leaf] = []
    text = ""
    for i, m in enumerate(members):
        if i:
            text += " & "
        q = quoted[m]
        leaves.append(Leaf(m, len(text), len(text) + len(q)))
        text += q
    if len(leaves) == 1:
        return text, leaves[0]
    return text, And(tuple(leaves), 0, len(text))


# -- explaining a decision (plan --explain) --------------------------------------------------------


def device_use(res: Resources, models: Sequence[str]) -> list[dict[str, Any]] | None:
    """Per-device use of `models` in the placement found for them; None if they do not fit."""
    placement = res.placement(models)
    return None if placement is None else res.usage(placement)


def explain_devices(res: Resources, before: Sequence[str], after: Sequence[str]) -> list[str]:
    """Lines for `plan --explain`: each device's use before and after a decision."""
    use_before, use_after = device_use(res, before), device_use(res, after)
    lines = ["devices (before -> after):"]

    def cell(use: list[dict[str, Any]] | None, i: int) -> str:
        if use is None:
            return "(does not fit)"
        dev = use[i]
        amounts = ", ".join(
            f"{r} {format_size(u['used'])}/{format_size(u['budget'])}"
            for r, u in dev["use"].items()
            if u["budget"] or u["used"]
        )
        return f"{amounts or 'nothing held'} [{', '.join(dev['models'])}]"

    width = max(len(d.name) for d in res.devices) if res.devices else 0
    for i, dev in enumerate(res.devices):
        lines.append(f"  {dev.name:<{width}}  {cell(use_before, i)} -> {cell(use_after, i)}")
    return lines
