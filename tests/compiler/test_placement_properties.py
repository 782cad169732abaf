"""The placement searches against a brute-force reference written here: on small random
devices and models, `fit` finds a placement exactly when one exists (and the one it returns is
valid), `best` finds the least total overflow, and `maximal` lists exactly the fitting
combinations to which no model can be added, in definition order."""

from __future__ import annotations

import os
from itertools import combinations, product

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamaswap.compiler.placement import Space

_EXAMPLES = int(os.environ.get("LLAMASWAP_HYPOTHESIS_EXAMPLES", "0"))
PROPS = settings(max_examples=_EXAMPLES or 200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def spaces(draw):
    n_dev = draw(st.integers(1, 3))
    n_res = draw(st.integers(1, 2))
    devices = [f"d{i}" for i in range(n_dev)]
    resources = [f"r{j}" for j in range(n_res)]
    caps = [[draw(st.sampled_from([0, 4, 6, 8, 12])) for _ in resources] for _ in devices]
    needs = []
    for i in range(draw(st.integers(1, 6))):
        amounts = [draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 8, 10])) for _ in resources]
        kind = draw(st.sampled_from(["any", "any", "pinned", "split"]))
        allowed: list[int] = list(range(n_dev))
        split: list[int] = []
        if kind == "pinned":
            allowed = sorted(draw(st.sets(st.integers(0, n_dev - 1), min_size=1)))
        elif kind == "split":
            split = sorted(draw(st.sets(st.integers(0, n_dev - 1), min_size=1)))
        needs.append((f"m{i}", amounts, allowed, split))
    return Space.build(devices, resources, caps, needs)


def assignments(space: Space, models):
    """Every way to place `models`: one device each (split models fixed, empty ones nowhere)."""
    choices = []
    for m in models:
        need = space.needs[m]
        if need.empty:
            choices.append([()])
        elif need.split:
            choices.append([need.split])
        else:
            choices.append([(d,) for d in need.allowed])
    for pick in product(*choices):
        yield {m: devs for m, devs in zip(models, pick) if devs}


def total_overflow(space: Space, placement) -> int:
    return sum(sum(row) for row in space.overflow(space.loads(placement)))


def brute_fits(space: Space, models) -> bool:
    return any(total_overflow(space, p) == 0 for p in assignments(space, list(models)))


def subsets(models):
    for k in range(len(models) + 1):
        yield from combinations(models, k)


@PROPS
@given(spaces())
def test_fit_is_exact(space: Space):
    models = list(space.needs)
    for combo in subsets(models):
        got = space.fit(combo)
        assert (got is not None) == brute_fits(space, combo), combo
        if got is not None:
            assert set(got) == {m for m in combo if not space.needs[m].empty}
            for m, devs in got.items():
                need = space.needs[m]
                assert devs == need.split if need.split else (len(devs) == 1 and devs[0] in need.allowed)
            assert total_overflow(space, got) == 0


@PROPS
@given(spaces())
def test_best_finds_the_least_overflow(space: Space):
    models = list(space.needs)
    for combo in subsets(models):
        placement, loads = space.best(combo)
        want = min(total_overflow(space, p) for p in assignments(space, list(combo)))
        assert total_overflow(space, placement) == want, combo
        assert loads == space.loads(placement)


@PROPS
@given(spaces())
def test_maximal_lists_exactly_the_maximal_fitting_combinations(space: Space):
    models = list(space.needs)
    fitting = [frozenset(c) for c in subsets(models) if brute_fits(space, c)]
    alone = {m for m in models if brute_fits(space, (m,))}
    maximal = {c for c in fitting if not any(c < other for other in fitting)}
    # Models that cannot fit even alone are left out (they are an error of their own).
    want = {c for c in maximal if c} or set()
    got = space.maximal(models, limit=10_000)
    assert got is not None
    assert {frozenset(c) for c in got} == want
    assert all(set(c) <= alone for c in got)
    rank = {m: i for i, m in enumerate(models)}
    assert got == sorted(got, key=lambda c: [rank[m] for m in c])
    assert all(list(c) == sorted(c, key=rank.__getitem__) for c in got)


@PROPS
@given(spaces(), st.integers(0, 3))
def test_maximal_respects_its_limit(space: Space, limit: int):
    models = list(space.needs)
    full = space.maximal(models, limit=10_000)
    got = space.maximal(models, limit=limit)
    assert (got is None) == (len(full) > limit)
    if got is not None:
        assert got == full
