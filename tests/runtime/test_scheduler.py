"""Scheduler unit tests, in the style of llama-swap's scheduler/fifo_test.go.

Synchronous and deterministic: each test calls the scheduler's inputs directly, with
explicit times, and asserts on a RecordingEffects. A swap "completes" when the test calls
swap_done, a request "finishes" when it calls serve_done, exactly as the runtime would.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support.policies import Group, GroupTestPolicy, MatrixTestPolicy, RecordingEffects, StubPolicy

from llamaswap.compiler.decision import EvictionPolicy
from llamaswap.runtime.scheduler import (
    DEFAULT_MAX_WAIT,
    Admission,
    ModelState,
    Scheduler,
    SchedulerError,
    SchedulerSettings,
)

EXCLUSIVE = {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}


def make(policy=None, models=("a", "b", "c"), **settings):
    effects = RecordingEffects()
    scheduler = Scheduler(policy or StubPolicy(), SchedulerSettings(tuple(models), **settings), effects)
    return scheduler, effects


def warm(s: Scheduler, eff: RecordingEffects, *models: str, now: float = 0.0) -> None:
    """Bring models to READY and idle, one after the other, then forget the calls."""
    for model in models:
        rid = ("warm", model)
        s.request(rid, model, now)
        s.swap_done(model, now)
        s.serve_done(rid, now)
    eff.clear()
    eff.positions.clear()


# --- the decision tree, branch by branch -------------------------------------------------


def test_unknown_model_is_404_and_starts_nothing():
    s, eff = make()
    assert s.request(1, "ghost", 0) is Admission.REJECTED
    assert eff.calls == [("reject", 1, 404, "no local server found for requested model", {})]


def test_fast_path_grants_a_ready_model_without_swapping():
    s, eff = make()
    warm(s, eff, "a")
    assert s.request(1, "a", 0) is Admission.GRANTED
    assert eff.calls == [("grant", 1, "a", True)]
    assert s.in_flight("a") == 1


def test_on_demand_start_then_serve():
    s, eff = make()
    assert s.request(1, "a", 0) is Admission.WAITING
    assert eff.calls == [("start_swap", "a", ())]
    assert s.state("a") is ModelState.STARTING
    s.swap_done("a", 5)
    assert s.state("a") is ModelState.READY
    assert eff.served("a") == 1


def test_join_in_flight_swap():
    s, eff = make()
    for rid in (1, 2, 3):
        s.request(rid, "a", 0)
    assert eff.starts_for("a") == 1
    assert s.waiting("a") == (1, 2, 3)
    s.swap_done("a", 1)
    assert eff.served("a") == 3
    assert s.in_flight("a") == 3


def test_swap_failure_fails_every_waiter_and_the_next_request_retries():
    s, eff = make()
    s.request(1, "a", 0)
    s.request(2, "a", 0)
    s.swap_done("a", 1, error="health check timed out after 120s")
    message = "unspecific error: health check timed out after 120s"
    assert eff.of("reject") == [("reject", 1, 500, message, {}), ("reject", 2, 500, message, {})]
    assert s.state("a") is ModelState.STOPPED
    assert s.reserved("a") == 0
    s.request(3, "a", 2)
    assert eff.starts_for("a") == 2


def test_queue_on_eviction_collision_then_wait_for_serving_to_drain():
    s, eff = make(StubPolicy({"b": ["a"]}))
    s.request(1, "a", 0)
    assert s.request(2, "b", 0) is Admission.QUEUED  # b would stop a while a is starting
    s.swap_done("a", 1)
    assert eff.starts_for("b") == 0  # a is serving request 1
    s.serve_done(1, 2)
    assert eff.of("start_swap")[-1] == ("start_swap", "b", ("a",))
    assert s.state("a") is ModelState.STOPPING


def test_collision_when_an_active_swap_evicts_the_target():
    s, eff = make(StubPolicy({"a": ["b"]}))
    warm(s, eff, "b")
    s.request(1, "a", 0)  # evicts idle b
    assert eff.calls == [("start_swap", "a", ("b",))]
    assert s.request(2, "b", 0) is Admission.QUEUED  # b is being stopped by a's swap
    s.swap_done("a", 1)  # b is stopped now, and the drain starts it again
    assert eff.of("start_swap")[-1] == ("start_swap", "b", ())
    assert s.state("b") is ModelState.STARTING


def test_disjoint_swaps_run_in_parallel():
    s, eff = make()
    s.request(1, "a", 0)
    s.request(2, "b", 0)
    assert eff.starts_for("a") == 1 and eff.starts_for("b") == 1


def test_overlapping_evict_sets_do_not_run_in_parallel():
    s, eff = make(StubPolicy({"a": ["x"], "b": ["x"]}), models=("a", "b", "x"))
    warm(s, eff, "x")
    s.request(1, "a", 0)
    assert s.request(2, "b", 0) is Admission.QUEUED  # both would stop x
    assert eff.starts_for("b") == 0
    s.swap_done("a", 1)
    assert s.state("x") is ModelState.STOPPED
    assert eff.of("start_swap")[-1] == ("start_swap", "b", ())


def test_queue_drain_promotes_multiple():
    s, eff = make(StubPolicy({"a": ["b", "c"]}))
    s.request(1, "a", 0)
    s.request(2, "b", 0)  # in a's evict set once running: queue
    s.request(3, "c", 0)
    # b and c are not running when a starts, so a evicts nothing and they don't collide
    # with it; llama-swap's stub ignored `running`, so here they start at once.
    assert eff.starts_for("b") == 1 and eff.starts_for("c") == 1


def test_queue_collation_abcabc_serves_aabbcc_with_one_swap_each():
    s, eff = make(StubPolicy(EXCLUSIVE))
    for rid, model in enumerate("abcabc"):
        s.request(rid, model, 0)
    assert s.queued() == (1, 2, 4, 5)

    def finish(model: str, rids: tuple[int, ...]) -> None:
        s.swap_done(model, 0)
        for rid in rids:
            s.serve_done(rid, 0)

    finish("a", (0, 3))
    finish("b", (1, 4))
    finish("c", (2, 5))
    for model in "abc":
        assert eff.starts_for(model) == 1
        assert eff.served(model) == 2
    assert [c[2] for c in eff.of("grant")] == list("aabbcc")


def test_no_swap_while_serving():
    s, eff = make(StubPolicy({"b": ["a"]}))
    warm(s, eff, "a")
    s.request(1, "a", 0)
    s.request(2, "a", 0)
    s.request(3, "b", 0)
    assert eff.starts_for("b") == 0
    s.serve_done(1, 1)
    assert eff.starts_for("b") == 0
    s.serve_done(2, 2)
    assert eff.starts_for("b") == 1


def test_a_new_arrival_may_overtake_the_queue_on_the_fast_path():
    s, eff = make(StubPolicy({"b": ["a"]}), max_wait=None)
    warm(s, eff, "a")
    s.request(1, "a", 0)
    s.request(2, "b", 0)  # queued behind a's work
    assert s.request(3, "a", 1) is Admission.GRANTED  # llama-swap: saves a swap


def test_grant_refused_does_not_leak_in_flight():
    s, eff = make(StubPolicy({"b": ["a"]}))
    eff.gone.add(1)
    s.request(1, "a", 0)
    s.swap_done("a", 1)  # the caller had gone: in flight stays 0
    assert eff.of("grant") == [("grant", 1, "a", False)]
    assert s.in_flight("a") == 0 and s.reserved("a") == 0
    s.request(2, "b", 1)
    assert eff.starts_for("b") == 1


def test_the_committed_decision_goes_to_start_swap_and_speculation_has_no_effects():
    policy = MatrixTestPolicy([("pair", [["a", "b"]]), ("solo", [["c"]])])
    s, eff = make(policy)
    warm(s, eff, "a")
    s.request(1, "a", 0)  # a busy
    s.request(2, "c", 0)  # must evict a: queued, re-decided on every drain
    s.request(3, "b", 0)  # fits next to a
    assert [c[0] for c in eff.calls] == ["grant", "position", "start_swap"]
    [decision] = eff.decisions
    assert (decision.target, decision.running, decision.evict, decision.set) == ("b", ("a",), (), "pair")
    s.swap_done("b", 1)
    s.serve_done(1, 2)
    s.serve_done(3, 2)
    assert eff.decisions[-1].target == "c"
    assert eff.decisions[-1].evict == ("a", "b")
    assert len(eff.decisions) == 2


def test_groups_gotcha_ready_target_still_evicts_and_waits_for_serving():
    policy = GroupTestPolicy(["a", "b"], {"g1": Group(("a",), exclusive=False), "g2": Group(("b",))})
    s, eff = make(policy, models=("a", "b"))
    warm(s, eff, "b")
    s.request(1, "a", 0)  # non-exclusive: leaves b running
    s.swap_done("a", 1)
    s.request(2, "b", 1)  # b is READY, but exclusive g2 evicts a, which is serving
    assert s.queued() == (2,)
    s.serve_done(1, 2)
    assert eff.of("start_swap")[-1] == ("start_swap", "b", ("a",))
    assert s.state("b") is ModelState.READY  # the target keeps running during its swap
    s.swap_done("b", 3)
    assert eff.served("b") == 1


# --- priorities, positions, cancel -------------------------------------------------------


def test_priority_queue_order():
    models = ("z", "A", "B", "C", "D")
    s, eff = make(
        StubPolicy({m: ["z"] for m in "ABCD"}), models=models, priority={"A": 10, "B": 5, "C": 5, "D": 1}
    )
    warm(s, eff, "z")
    s.request("hold", "z", 0)  # z busy: everyone else must wait to evict it
    for model in "BDCA":
        s.request(model, model, 0)
    assert s.queued() == ("A", "B", "C", "D")


def test_queue_positions_are_one_based_and_sent_when_they_change():
    s, eff = make(StubPolicy(EXCLUSIVE), priority={"c": 1})
    s.request(1, "a", 0)
    s.request(2, "b", 0)
    assert eff.of("position") == [("position", 2, 1)]
    s.request(3, "c", 0)  # higher priority: goes first
    assert eff.of("position")[1:] == [("position", 3, 1), ("position", 2, 2)]
    s.cancel(3, 1)
    assert eff.positions == {2: 1, 3: 1}
    assert eff.of("position")[-1] == ("position", 2, 1)


def test_cancel_queued_request_never_triggers_a_load():
    s, eff = make(StubPolicy({"b": ["a"]}))
    s.request(1, "a", 0)
    s.request(2, "b", 0)
    assert s.cancel(2, 1) is True
    assert s.queued() == () and s.reserved("b") == 0
    s.swap_done("a", 2)
    assert eff.starts_for("b") == 0


def test_cancel_swap_waiter_leaves_the_swap_running():
    s, eff = make()
    s.request(1, "a", 0)
    s.request(2, "a", 0)
    s.cancel(2, 1)
    assert s.waiting("a") == (1,)
    s.cancel(1, 1)
    assert s.swaps() == ("a",)  # the swap goes on with nobody waiting
    s.swap_done("a", 2)
    assert eff.of("grant") == []
    assert s.state("a") is ModelState.READY and s.reserved("a") == 0


def test_cancel_after_grant_is_a_no_op():
    s, eff = make()
    warm(s, eff, "a")
    s.request(1, "a", 0)
    assert s.cancel(1, 0) is False
    assert s.in_flight("a") == 1
    assert s.cancel("never-seen", 0) is False


# --- admission -----------------------------------------------------------------------------


def test_concurrency_limit_counts_queued_waiting_and_in_flight():
    s, eff = make(StubPolicy({"b": ["a"]}), concurrency_limit={"b": 2})
    warm(s, eff, "a")
    s.request(1, "a", 0)  # a busy, so b queues
    s.request(2, "b", 0)
    s.request(3, "b", 0)
    assert s.request(4, "b", 0) is Admission.REJECTED
    assert eff.of("reject") == [("reject", 4, 429, "Too many requests", {"Retry-After": "1"})]
    s.cancel(3, 1)  # releases a slot
    assert s.request(5, "b", 1) is Admission.QUEUED


def test_concurrency_limit_defaults_to_ten_and_releases_on_serve_done():
    s, eff = make()
    warm(s, eff, "a")
    for rid in range(10):
        assert s.request(rid, "a", 0) is Admission.GRANTED
    assert s.request(10, "a", 0) is Admission.REJECTED
    s.serve_done(0, 1)
    assert s.request(11, "a", 1) is Admission.GRANTED


def test_concurrency_limit_slot_released_by_refused_grant_and_by_errors():
    s, eff = make(concurrency_limit={"a": 1})
    eff.gone.add(1)
    s.request(1, "a", 0)
    s.swap_done("a", 1)  # refused
    assert s.reserved("a") == 0
    s.unload(["a"], 1)
    s.stop_done(["a"], 1)
    s.request(2, "a", 2)
    s.swap_done("a", 3, error="boom")
    assert s.reserved("a") == 0
    assert s.request(3, "a", 4) is Admission.WAITING


# --- unload and shutdown ---------------------------------------------------------------------


def test_unload_during_swap_releases_its_waiters_and_stops_the_model():
    s, eff = make(unload_timeout={"a": 7})
    s.request(1, "a", 0)
    s.request(2, "a", 0)
    s.unload(["a"], 1)
    message = "unspecific error: stub: model unloaded"
    assert eff.of("reject") == [("reject", 1, 500, message, {}), ("reject", 2, 500, message, {})]
    assert eff.stops() == [(("a",), "unload", 7)]
    assert s.state("a") is ModelState.STOPPING
    # A new request waits until both the stop and the abandoned swap have reported.
    assert s.request(3, "a", 2) is Admission.QUEUED
    s.swap_done("a", 2, error="aborted")  # abandoned swap: its result is dropped
    assert eff.rejected() == [1, 2]
    s.stop_done(["a"], 3)
    assert eff.starts_for("a") == 2
    s.swap_done("a", 4)
    assert eff.served("a") == 1


def test_unload_drops_queued_requests_for_the_model_only():
    s, eff = make(StubPolicy({"b": ["a"], "c": ["a"]}))
    s.request(1, "a", 0)
    s.request(2, "b", 0)
    s.request(3, "c", 0)
    s.unload(["b"], 1)
    assert eff.rejected(500) == [2]
    assert s.queued() == (3,)
    assert eff.stops() == []  # b was not running
    assert eff.of("grant") == []  # a's swap is untouched


def test_unload_stops_smallest_timeout_first_and_an_explicit_timeout_overrides():
    models = ("a", "c", "e")
    s, eff = make(models=models, unload_timeout={"a": 45, "c": 10, "e": 25})
    warm(s, eff, *models)
    s.unload(None, 0)
    assert eff.stops() == [(("c",), "unload", 10), (("e",), "unload", 25), (("a",), "unload", 45)]
    s.stop_done(models, 1)
    assert all(s.state(m) is ModelState.STOPPED for m in models)
    warm(s, eff, *models, now=2)
    s.unload(None, 3, timeout=5)
    assert eff.stops() == [(models, "unload", 5)]


def test_unload_of_a_busy_model_still_stops_it_and_in_flight_finishes_normally():
    s, eff = make()
    warm(s, eff, "a")
    s.request(1, "a", 0)
    s.unload(["a"], 1)
    assert eff.stops() == [(("a",), "unload", 10.0)]
    s.serve_done(1, 2)
    assert s.in_flight("a") == 0


def test_shutdown_fails_every_waiter_and_every_later_request_and_stops_all():
    s, eff = make(StubPolicy({"c": ["a", "b"]}), swap_stop_timeout=30)
    s.request(1, "a", 0)
    s.request(2, "a", 0)
    s.request(3, "b", 0)
    s.request(4, "b", 0)
    s.request(5, "c", 0)
    s.shutdown(1)
    assert sorted(eff.rejected(503)) == [1, 2, 3, 4, 5]
    assert eff.of("reject")[0][3] == "stub is shutting down"
    assert eff.stops() == [(("a", "b"), "shutdown", 30)]
    assert s.request(6, "a", 2) is Admission.REJECTED
    assert eff.rejected(503)[-1] == 6
    s.swap_done("a", 2)  # late reports are absorbed
    s.stop_done(["a", "b"], 3)
    s.swap_done("b", 3)
    assert all(s.state(m) is ModelState.STOPPED for m in ("a", "b", "c"))
    assert eff.of("grant") == []


# --- process reports, TTL ---------------------------------------------------------------------


def test_crash_after_ready_marks_stopped_and_the_next_request_starts_a_new_swap():
    s, eff = make(StubPolicy({"b": ["a"]}))
    warm(s, eff, "a")
    s.request(1, "a", 0)
    s.request(2, "b", 0)  # waits for a to drain
    s.model_exited("a", 1)
    assert s.state("a") is ModelState.STOPPED
    assert eff.of("start_swap") == [("start_swap", "b", ())]  # nothing left to evict
    s.serve_done(1, 2)  # the dead process' request still reports
    s.request(3, "a", 3)
    assert eff.starts_for("a") == 1


def test_ttl_unload_on_tick_never_with_in_flight():
    s, eff = make(ttl={"a": 30}, unload_timeout={"a": 4})
    s.request(1, "a", 0)
    s.swap_done("a", 10)
    assert s.next_deadline() is None  # in flight: no TTL
    s.tick(100)
    assert eff.stops() == []
    s.serve_done(1, 20)
    assert s.next_deadline() == 50
    s.tick(49.5)
    assert eff.stops() == []
    s.tick(50)
    assert eff.stops() == [(("a",), "ttl", 4)]
    assert s.state("a") is ModelState.STOPPING and s.next_deadline() is None


def test_request_during_a_ttl_stop_waits_for_it_then_starts_again():
    s, eff = make(ttl={"a": 5})
    warm(s, eff, "a")
    s.tick(5)
    assert s.request(1, "a", 6) is Admission.QUEUED
    assert eff.starts_for("a") == 0
    s.stop_done(["a"], 7)
    assert eff.starts_for("a") == 1
    s.swap_done("a", 8)
    assert eff.served("a") == 1


def test_ttl_zero_never_unloads():
    s, eff = make()
    warm(s, eff, "a")
    s.tick(10**9)
    assert eff.calls == [] and s.next_deadline() is None


# --- bounded waiting ----------------------------------------------------------------------------


def test_without_max_wait_steady_traffic_starves_the_other_model():
    s, eff = make(StubPolicy({"b": ["a"]}), max_wait=None)
    warm(s, eff, "a")
    s.request("a0", "a", 0)
    s.request("b", "b", 1)
    for t in range(1, 500):  # overlapping traffic: a never drains
        s.request(f"a{t}", "a", t)
        s.serve_done(f"a{t - 1}", t)
        s.tick(t)
    assert eff.starts_for("b") == 0 and s.protected is None


def test_max_wait_protects_the_oldest_request_and_queues_victims_work_behind_it():
    s, eff = make(StubPolicy({"a": ["b"], "b": ["a"]}), max_wait=30)
    warm(s, eff, "a")
    s.request("a0", "a", 0)
    s.request("b", "b", 1)
    assert s.next_deadline() == 31
    for t in range(1, 31):
        s.request(f"a{t}", "a", t)
        s.serve_done(f"a{t - 1}", t)
    s.tick(31)
    assert s.protected == "b"
    assert s.request("late", "a", 31.5) is Admission.QUEUED  # no fast path to a victim
    assert eff.starts_for("b") == 0
    s.serve_done("a30", 32)  # the last request admitted before protection drains
    assert eff.of("start_swap") == [("start_swap", "b", ("a",))]
    assert s.protected is None
    s.swap_done("b", 33)
    assert eff.served("b") == 1
    # The queued a request now waits behind b's own service.
    assert s.queued() == ("late",)


def test_max_wait_starts_protection_inside_any_input_not_only_tick():
    s, eff = make(StubPolicy({"b": ["a"]}), max_wait=10)
    warm(s, eff, "a")
    s.request("a0", "a", 0)
    s.request("b", "b", 0)
    s.request("a1", "a", 10)  # b has waited exactly max_wait: protected before a1 decides
    assert s.protected == "b"
    assert s.queued() == ("b", "a1")


def test_protected_request_jumps_priority_and_later_arrivals_queue_behind_it():
    s, eff = make(StubPolicy(EXCLUSIVE), max_wait=5, priority={"c": 9})
    warm(s, eff, "a")
    s.request("a0", "a", 0)
    s.request("b", "b", 0)
    s.request("c1", "c", 1)
    assert s.queued() == ("c1", "b")
    s.tick(5)
    assert s.queued() == ("b", "c1")
    assert eff.positions == {"b": 1, "c1": 2}
    s.request("c2", "c", 6)
    assert s.queued() == ("b", "c1", "c2")


def test_max_wait_still_lets_requests_join_a_swap_in_progress():
    s, eff = make(StubPolicy(EXCLUSIVE), max_wait=5)
    for rid, model in enumerate("abcabc"):
        s.request(rid, model, 0)
    s.tick(5)
    assert s.protected == 1  # b arrived before c (same time, earlier sequence)
    s.swap_done("a", 10)
    s.serve_done(0, 11)
    s.serve_done(3, 11)  # a drains: b starts, second b joins it despite c's protection
    assert s.protected == 2
    assert s.waiting("b") == (1, 4)
    s.swap_done("b", 21)
    s.serve_done(1, 22)
    s.serve_done(4, 22)
    s.swap_done("c", 32)
    assert [c[2] for c in eff.of("grant")] == list("aabbcc")
    assert len(eff.of("start_swap")) == 3


def test_max_wait_allows_a_swap_that_does_not_touch_the_protected_request():
    policy = MatrixTestPolicy([("s", [["a", "c"], ["b", "c"]])])
    s, eff = make(policy, max_wait=5)
    warm(s, eff, "a")
    s.request("a0", "a", 0)
    s.request("b", "b", 0)  # must evict a, which is busy
    s.tick(5)
    assert s.protected == "b"
    assert s.request("c", "c", 6) is Admission.WAITING  # fits next to a and next to b
    assert eff.of("start_swap") == [("start_swap", "c", ())]


def test_max_wait_blocks_a_swap_that_would_grow_the_protected_requests_evictions():
    policy = MatrixTestPolicy([("s", [["a", "c"], ["b"]])])
    s, eff = make(policy, max_wait=5)
    warm(s, eff, "a")
    s.request("a0", "a", 0)
    s.request("b", "b", 0)
    s.tick(5)
    assert s.request("c", "c", 6) is Admission.QUEUED  # b would then have to evict c too
    s.serve_done("a0", 7)
    assert eff.of("start_swap") == [("start_swap", "b", ("a",))]


def test_max_wait_blocks_a_swap_that_evicts_anything_while_a_request_is_protected():
    # c fits next to a (evicting idle d) and b could live next to c, but c's eviction
    # would change what is running under the protected b: c waits behind b.
    policy = MatrixTestPolicy([("s", [["a", "d"], ["a", "c"], ["b", "c", "d"]])])
    s, eff = make(policy, models=("a", "b", "c", "d"), max_wait=5)
    s.request("a0", "a", 0)
    s.request("d0", "d", 0)
    s.swap_done("a", 0)
    s.swap_done("d", 0)
    s.serve_done("d0", 0)
    s.request("b", "b", 0)  # must evict busy a
    s.tick(5)
    assert s.protected == "b"
    assert policy.evict_for("c", ("a", "d")) == ("d",)
    assert s.request("c", "c", 6) is Admission.QUEUED
    s.serve_done("a0", 7)
    assert eff.of("start_swap")[-1] == ("start_swap", "b", ("a",))


def test_next_deadline_reports_the_oldest_queued_request_reaching_max_wait():
    s, eff = make(StubPolicy(EXCLUSIVE), max_wait=DEFAULT_MAX_WAIT)
    s.request(1, "a", 3)
    s.request(2, "b", 4)
    assert s.next_deadline() == 4 + DEFAULT_MAX_WAIT
    s.tick(4 + DEFAULT_MAX_WAIT)
    assert s.protected == 2 and s.next_deadline() is None


# --- protocol ------------------------------------------------------------------------------------


def test_protocol_errors_are_loud():
    s, eff = make()
    s.request(1, "a", 0)
    with pytest.raises(SchedulerError):
        s.request(1, "a", 0)
    with pytest.raises(SchedulerError):
        s.serve_done(1, 0)  # still waiting on its swap
    with pytest.raises(SchedulerError):
        s.swap_done("b", 0)
    with pytest.raises(SchedulerError):
        s.stop_done(["a"], 0)


def test_settings_defaults_and_validation():
    settings = SchedulerSettings(("a", "b"), concurrency_limit={"a": 0, "b": 3}, unload_timeout={"a": 0})
    assert settings.limit("a") == 10 and settings.limit("b") == 3
    assert settings.unload_timeout_of("a") == 10 and settings.priority_of("a") == 0
    assert settings.max_wait == DEFAULT_MAX_WAIT == 60
    with pytest.raises(ValueError):
        SchedulerSettings(("a",), priority={"ghost": 1})
    with pytest.raises(ValueError):
        SchedulerSettings(("a",), max_wait=-1)


def test_test_policies_implement_the_protocol():
    assert isinstance(StubPolicy(), EvictionPolicy)
    assert isinstance(MatrixTestPolicy([("s", [["a"]])]), EvictionPolicy)
    assert isinstance(GroupTestPolicy(["a"], {}), EvictionPolicy)


@pytest.mark.parametrize("module", ["scheduler.py", "simulate.py"])
def test_sans_io_modules_import_nothing_that_does_io(module):
    path = Path(__file__).resolve().parents[2] / "llamaswap" / "runtime" / module
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    forbidden = {"asyncio", "aiohttp", "time", "subprocess", "socket", "threading", "logging", "os", "click"}
    assert imported & forbidden == set()
