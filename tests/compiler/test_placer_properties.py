"""The placer against brute force, on small random boxes driven by random request walks:
every placed state it leads to stays within every budget (nothing is ever overcommitted),
and each decision's eviction cost is the least of any eviction that leaves the target a
device beside the models that stay, where they are, within a combination of the matrix."""

from __future__ import annotations

import os
from itertools import combinations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamaswap.compiler.placer import after
from llamaswap.compiler.plan import compile_text

_EXAMPLES = int(os.environ.get("LLAMASWAP_HYPOTHESIS_EXAMPLES", "0"))
PROPS = settings(max_examples=_EXAMPLES or 60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def boxes(draw):
    n_dev = draw(st.integers(1, 3))
    lines = ["resources:"] + [f"  g{d}: {{vram: {draw(st.sampled_from([8, 12, 16]))}}}" for d in range(n_dev)]
    lines.append("models:")
    costs = {}
    n_models = draw(st.integers(2, 5))
    for i in range(n_models):
        size = draw(st.sampled_from([2, 4, 6, 8]))
        kind = draw(st.sampled_from(["any", "any", "pinned", "split"])) if n_dev > 1 else "any"
        extra = ""
        if kind == "pinned":
            extra = f", devices: [g{draw(st.integers(0, n_dev - 1))}]"
        elif kind == "split":
            extra = ", split: [" + ", ".join(f"g{d}" for d in range(n_dev)) + "]"
        lines.append(f'  m{i}: {{cmd: "x ${{PORT}}", resources: {{vram: {size}{extra}}}}}')
        costs[f"m{i}"] = draw(st.integers(1, 4))
    lines += ["matrix:", "  evict_costs: {" + ", ".join(f"{m}: {c}" for m, c in costs.items()) + "}"]
    lines.append("  sets: auto")
    walk = draw(st.lists(st.integers(0, n_models - 1), min_size=1, max_size=10))
    return "\n".join(lines) + "\n", [f"m{i}" for i in walk]


def loads_ok(plan, state) -> bool:
    space = plan.resources.space
    index = {d: i for i, d in enumerate(space.devices)}
    placement = {m: tuple(index[d] for d in devs) for m, devs in state if devs}
    return all(v == 0 for row in space.overflow(space.loads(placement)) for v in row)


def fits_beside(plan, target, kept_state) -> bool:
    """Some option of `target` fits on top of the kept models where they are."""
    space = plan.resources.space
    index = {d: i for i, d in enumerate(space.devices)}
    need = space.needs[target]
    if need.empty:
        return True
    options = [need.split] if need.split else [(d,) for d in need.allowed]
    base = {m: tuple(index[d] for d in devs) for m, devs in kept_state if devs}
    for option in options:
        trial = space.loads({**base, target: option})
        if all(v == 0 for row in space.overflow(trial) for v in row):
            return True
    return False


def least_cost(plan, target, state) -> int:
    combos = [set(c) for s in plan.sets for c in s.combinations or ()]
    running = [m for m, _ in state]
    best = None
    for k in range(len(running) + 1):
        for evict in combinations(running, k):
            kept = [(m, d) for m, d in state if m not in evict]
            names = {m for m, _ in kept} | {target}
            in_matrix = any(names <= c for c in combos) or (not kept and not any(target in c for c in combos))
            if in_matrix and fits_beside(plan, target, kept):
                cost = sum(plan.evict_cost(m) for m in evict)
                best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@PROPS
@given(boxes())
def test_placer_never_overcommits_and_evicts_the_least(box):
    text, walk = box
    plan = compile_text(text, "box.yaml")
    if not plan.ok:
        return  # e.g. a model that cannot fit even alone: no placer
    placer = plan.policy.placer
    state: tuple = ()
    for target in walk:
        d = placer.decide(target, state)
        if target not in dict(state):
            assert d.cost == least_cost(plan, target, state), (target, state, d)
        state = after(state, d)
        assert loads_ok(plan, state), (target, state)
