"""Placement through the scheduler (issue 17, Place): a compiled plan with resources, its
placer, and the sans-IO scheduler driven by explicit calls. Where each model goes, that
parallel starts never share room, and that a model needing a whole device evicts the
cheapest way given where the running models really are."""

from __future__ import annotations

import pytest
from support.policies import RecordingEffects

from llamaswap.compiler.plan import compile_text
from llamaswap.runtime.scheduler import Admission, ModelState, Scheduler
from llamaswap.runtime.settings import scheduler_settings

CONFIG = """
resources:
  gpu0: {vram: 24GiB}
  gpu1: {vram: 24GiB, index: 3}
models:
  a: {cmd: "run ${PORT} ${GPU}", resources: {vram: 20GiB}}
  b: {cmd: "run ${PORT} ${GPUS}", resources: {vram: 20GiB}}
  c: {cmd: "run ${PORT}", resources: {vram: 10GiB}}
  d: {cmd: "run ${PORT}", resources: {vram: 10GiB}}
  y: {cmd: "run ${PORT}", resources: {vram: 10GiB}}
  big: {cmd: "run ${PORT}", resources: {vram: 24GiB}}
matrix:
  evict_costs: {a: 5, c: 3}
  sets: auto
"""


@pytest.fixture(scope="module")
def plan():
    p = compile_text(CONFIG, "box.yaml")
    assert p.ok, [d.message for d in p.diagnostics]
    return p


def make(plan):
    effects = RecordingEffects()
    return Scheduler(plan.policy, scheduler_settings(plan), effects), effects


def start(s: Scheduler, eff: RecordingEffects, model: str, now: float, *, finish: bool = True):
    """Request `model`; with `finish`, complete its swap and its request. Returns the decision."""
    rid = (model, now)
    assert s.request(rid, model, now) is Admission.WAITING
    decision = eff.decisions[-1]
    if finish:
        s.swap_done(model, now)
        s.serve_done(rid, now)
    return decision


def test_models_that_fit_anywhere_are_placed_best_fit_then_in_device_order(plan):
    s, eff = make(plan)
    assert start(s, eff, "c", 0).devices == ("gpu0",)  # both empty: the first device
    assert start(s, eff, "d", 1).devices == ("gpu0",)  # best fit: packs next to c
    assert start(s, eff, "a", 2).devices == ("gpu1",)
    assert (s.devices("a"), s.devices("c"), s.devices("d")) == (("gpu1",), ("gpu0",), ("gpu0",))
    assert plan.policy.placer.device_ids(("gpu0", "gpu1")) == ("0", "3")


def test_parallel_starts_never_share_a_device_and_starting_models_count(plan):
    s, eff = make(plan)
    first = start(s, eff, "a", 0, finish=False)
    second = start(s, eff, "b", 0, finish=False)
    assert (first.devices, second.devices) == (("gpu0",), ("gpu1",))
    assert s.state("a") is ModelState.STARTING and s.state("b") is ModelState.STARTING
    # Both devices are taken by models still starting: big must evict one of them, and that
    # collides with its swap in progress, so it waits instead of overcommitting a device.
    assert s.request("big", "big", 0) is Admission.QUEUED
    s.swap_done("b", 1)
    s.serve_done(("b", 0), 1)
    # b (cost 1) is cheaper to evict than a (cost 5); big takes b's device.
    assert eff.decisions[-1].target == "big"
    assert eff.decisions[-1].evict == ("b",)
    assert eff.decisions[-1].devices == ("gpu1",)


def test_a_model_needing_a_whole_device_evicts_the_cheapest_given_real_placements(plan):
    s, eff = make(plan)
    start(s, eff, "a", 0)  # gpu0
    start(s, eff, "c", 1)  # gpu1: a leaves only 4 GiB on gpu0
    start(s, eff, "y", 2)  # gpu1 next to c
    s.unload(["a"], 3)
    s.stop_done(["a"], 3)
    assert start(s, eff, "d", 4).devices == ("gpu0",)  # gpu1 has 4 GiB left
    s.unload(["y"], 5)
    s.stop_done(["y"], 5)
    # c (gpu1) and d (gpu0) fit with big on paper (both on one device), but not where they
    # run: one must go. d costs 1, c costs 3: d goes, and big takes its device.
    decision = start(s, eff, "big", 6, finish=False)
    assert decision.evict == ("d",)
    assert decision.devices == ("gpu0",)
    assert decision.cost == 1
    assert decision.to_json()["devices"] == ["gpu0"]
    assert s.devices("d") == ("gpu0",)  # stopping: still counts until it has stopped
    s.swap_done("big", 7)
    assert s.devices("d") is None and s.devices("big") == ("gpu0",)


def test_placer_table_agrees_with_its_own_search(plan):
    placer = plan.policy.placer
    assert placer.precomputed > 0
    for target, row in placer._rows.items():
        for state, decision in row.items():
            assert placer._solve(target, state, None) == decision


def test_a_config_without_resources_has_no_placer():
    text = 'models:\n  a: {cmd: "run ${PORT}"}\n  b: {cmd: "run ${PORT}"}\nmatrix:\n  sets:\n    s: "a & b"\n'
    p = compile_text(text, "plain.yaml")
    assert p.ok and p.engine == "matrix"
    assert p.policy.placer is None
    s = Scheduler(p.policy, scheduler_settings(p), RecordingEffects())
    s.request(1, "a", 0)
    assert s.devices("a") is None


WITHOUT_RESOURCES = """
models:
  a: {cmd: "run ${PORT}"}
  b: {cmd: "run ${PORT}"}
  c: {cmd: "run ${PORT}"}
  free: {cmd: "run ${PORT}"}
matrix:
  sets: {all: "a & b & c & free"}
"""
WITH_RESOURCES = """
resources:
  gpu0: {vram: 24GiB}
  gpu1: {vram: 24GiB}
models:
  a: {cmd: "run ${PORT}", resources: {vram: 20GiB}}
  b: {cmd: "run ${PORT}", resources: {vram: 20GiB}}
  c: {cmd: "run ${PORT}", resources: {vram: 20GiB}}
  free: {cmd: "run ${PORT}"}
matrix:
  sets: auto
"""


def test_a_reload_that_brings_resources_places_the_running_models():
    old, new = compile_text(WITHOUT_RESOURCES, "old.yaml"), compile_text(WITH_RESOURCES, "new.yaml")
    assert old.ok and new.ok, [d.message for d in new.diagnostics]
    s, eff = make(old)
    for i, m in enumerate(("a", "b", "free")):
        start(s, eff, m, i)
    assert s.devices("a") is None
    s.reconfigure(new.policy, scheduler_settings(new), 5)
    # Counted where the placer would have started them, one after another.
    assert s.adopted == {"a": ("gpu0",), "b": ("gpu1",)} and s.unplaced == {}
    assert (s.devices("a"), s.devices("b"), s.devices("free")) == (("gpu0",), ("gpu1",), None)
    # So c, which fits on neither device beside them, evicts one and takes its device
    # (without the placement it would have gone to gpu0 as if both were empty).
    decision = start(s, eff, "c", 6, finish=False)
    assert len(decision.evict) == 1
    assert decision.devices == s.devices(decision.evict[0])


def test_a_running_model_the_reload_evicts_stays_unplaced_and_says_why():
    old, new = compile_text(WITHOUT_RESOURCES, "old.yaml"), compile_text(WITH_RESOURCES, "new.yaml")
    s, eff = make(old)
    for i, m in enumerate(("a", "b", "c")):
        start(s, eff, m, i)
    s.reconfigure(new.policy, scheduler_settings(new), 5, evict=["c"])
    assert s.adopted == {"a": ("gpu0",), "b": ("gpu1",)}
    assert s.unplaced == {"c": "the reload stops it (the new config does not allow what runs)"}
    assert s.devices("c") is None
