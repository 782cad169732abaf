"""Scheduler.reconfigure (hot reload), synchronous and deterministic like test_scheduler.py:
each test calls the inputs with explicit times and asserts on a RecordingEffects."""

from __future__ import annotations

from support.policies import RecordingEffects, StubPolicy

from llamaswap.runtime.scheduler import (
    Admission,
    ModelState,
    Scheduler,
    SchedulerSettings,
)

EXCLUSIVE = {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}


def make(policy=None, models=("a", "b", "c")):
    effects = RecordingEffects()
    return Scheduler(policy or StubPolicy(), SchedulerSettings(tuple(models)), effects), effects


def warm(s: Scheduler, eff: RecordingEffects, *models: str) -> None:
    for model in models:
        rid = ("warm", model)
        s.request(rid, model, 0)
        if s.state(model) is not ModelState.READY:
            s.swap_done(model, 0)
        s.serve_done(rid, 0)
    eff.clear()
    eff.positions.clear()


def settings(*models: str) -> SchedulerSettings:
    return SchedulerSettings(models)


def test_unchanged_models_keep_running_and_serving():
    s, eff = make()
    warm(s, eff, "a", "b")
    s.request(1, "a", 1)  # in flight across the reload
    s.reconfigure(StubPolicy(), settings("a", "b", "c"), 2)
    assert eff.stops() == [] and eff.of("start_swap") == []
    assert s.request(2, "b", 3) is Admission.GRANTED
    s.serve_done(1, 4)
    assert s.state("a") is ModelState.READY


def test_a_restarted_model_drains_then_stops_then_starts_again():
    s, eff = make()
    warm(s, eff, "a", "b")
    s.request(1, "a", 1)  # in flight
    s.reconfigure(StubPolicy(), settings("a", "b", "c"), 2, restart=("a",))
    assert eff.stops() == []  # never cut mid-request
    # New requests for it wait for the new process.
    assert s.request(2, "a", 3) is Admission.QUEUED
    s.serve_done(1, 4)
    assert eff.stops() == [(("a",), "reload", 10.0)]
    assert s.state("a") is ModelState.STOPPING
    eff.clear()
    s.stop_done(("a",), 5)
    # The queued request starts it again (the new spec), and is served by that swap.
    assert eff.of("start_swap") == [("start_swap", "a", ())]
    s.swap_done("a", 6)
    assert eff.granted() == [2]
    assert s.retiring() == {}


def test_an_idle_restarted_model_restarts_at_once_with_no_request():
    s, eff = make()
    warm(s, eff, "a", "b")
    s.reconfigure(StubPolicy(), settings("a", "b", "c"), 1, restart=("b",))
    assert eff.stops() == [(("b",), "reload", 10.0)]
    eff.clear()
    s.stop_done(("b",), 2)
    assert eff.of("start_swap") == [("start_swap", "b", ())]
    s.swap_done("b", 3)
    assert s.state("b") is ModelState.READY and s.state("a") is ModelState.READY


def test_a_restart_that_would_evict_waits_for_the_next_request():
    policy = StubPolicy(EXCLUSIVE)
    s, eff = make(policy)
    warm(s, eff, "a")
    s.request(1, "a", 1)
    s.reconfigure(policy, settings("a", "b", "c"), 1, restart=("a",))
    assert s.request(2, "b", 2) is Admission.QUEUED  # b evicts a, which is busy
    eff.clear()
    s.serve_done(1, 3)
    # The waiting request goes first: its swap evicts a (the restart's stop)...
    assert eff.of("start_swap") == [("start_swap", "b", ("a",))]
    s.swap_done("b", 5)
    assert eff.granted() == [2]
    # ...and a does not come back by evicting b.
    assert eff.of("start_swap") == [("start_swap", "b", ("a",))]
    assert s.state("a") is ModelState.STOPPED and s.retiring() == {}


def test_a_removed_model_finishes_its_stream_then_stops_and_is_forgotten():
    s, eff = make()
    warm(s, eff, "a", "b")
    s.request(1, "b", 1)
    s.reconfigure(StubPolicy(), settings("a", "c"), 2)
    assert s.request(2, "b", 3) is Admission.REJECTED
    assert eff.rejected(404) == [2]
    assert eff.stops() == []
    # What is loaded still serves, and an added model loads at once.
    assert s.request(4, "a", 4) is Admission.GRANTED
    assert s.request(3, "c", 4) is Admission.WAITING
    s.serve_done(1, 5)
    assert eff.stops() == [(("b",), "reload", 10.0)]
    s.stop_done(("b",), 6)
    assert not s.knows("b")
    assert ("start_swap", "c", ()) in eff.calls
    assert s.retiring() == {}


def test_waiting_requests_are_re_resolved():
    policy = StubPolicy(EXCLUSIVE)
    s, eff = make(policy)
    warm(s, eff, "a")
    s.request(1, "a", 1)  # in flight on a
    assert s.request(2, "b", 2) is Admission.QUEUED  # waits for a to drain
    assert s.request(3, "c", 2) is Admission.QUEUED
    # The alias request 2 used now points at a; c no longer exists.
    s.reconfigure(policy, settings("a", "b"), 3, moves={2: "a", 3: None})
    assert eff.rejected(404) == [3]
    assert 2 in eff.granted()  # a is ready and evicts nothing
    assert s.reserved("b") == 0 and s.reserved("a") == 2


def test_waiters_of_a_restarting_models_swap_go_to_the_new_process():
    s, eff = make()
    s.request(1, "a", 0)  # starting with the old spec
    s.reconfigure(StubPolicy(), settings("a", "b", "c"), 1, restart=("a",))
    assert s.queued() == (1,)
    s.swap_done("a", 2)  # the old process turned ready: nobody is granted on it
    assert eff.granted() == []
    assert eff.stops() == [(("a",), "reload", 10.0)]
    eff.clear()
    s.stop_done(("a",), 3)
    assert eff.of("start_swap") == [("start_swap", "a", ())]
    s.swap_done("a", 4)
    assert eff.granted() == [1]


def test_an_evicted_model_stops_once_idle_and_is_not_restarted():
    s, eff = make()
    warm(s, eff, "a", "b")
    s.request(1, "b", 1)
    s.reconfigure(StubPolicy(EXCLUSIVE), settings("a", "b", "c"), 2, evict=("b",))
    assert eff.stops() == []
    s.serve_done(1, 3)
    assert eff.stops() == [(("b",), "reload", 10.0)]
    eff.clear()
    s.stop_done(("b",), 4)
    assert eff.of("start_swap") == []
    assert s.state("b") is ModelState.STOPPED and s.state("a") is ModelState.READY


def test_a_model_removed_then_added_back_before_it_stopped_restarts():
    s, eff = make()
    warm(s, eff, "a")
    s.request(1, "a", 1)
    s.reconfigure(StubPolicy(), settings("b", "c"), 2)
    s.reconfigure(StubPolicy(), settings("a", "b", "c"), 3)
    assert s.retiring() == {"a": "restart"}
    assert s.request(2, "a", 4) is Admission.QUEUED
    s.serve_done(1, 5)
    s.stop_done(("a",), 6)
    s.swap_done("a", 7)
    assert 2 in eff.granted()


def test_many_reloads_in_a_row_keep_one_process_per_model():
    s, eff = make()
    warm(s, eff, "a", "b")
    for i in range(50):
        s.reconfigure(StubPolicy(), settings("a", "b", "c"), i, restart=("a",) if i % 2 else ())
        # The owner answers the reload's stops and starts like the router would.
        for models, _, _ in eff.stops():
            s.stop_done(models, i + 0.5)
        for call in eff.of("start_swap"):
            s.swap_done(call[1], i + 0.7)
        eff.clear()
        assert s.state("b") is ModelState.READY
        assert s.state("a") in (ModelState.READY, ModelState.STOPPED)
    assert s.retiring() == {}


def test_unload_of_a_retiring_model_stops_it_without_a_restart():
    s, eff = make()
    warm(s, eff, "a")
    s.request(1, "a", 1)
    s.reconfigure(StubPolicy(), settings("a", "b", "c"), 2, restart=("a",))
    s.unload(["a"], 3)
    eff.clear()
    s.stop_done(("a",), 4)
    assert eff.of("start_swap") == []
    assert s.retiring() == {}


def test_shutdown_after_a_reload_stops_removed_models_too():
    s, eff = make()
    warm(s, eff, "a", "b")
    s.request(1, "b", 1)
    s.reconfigure(StubPolicy(), settings("a"), 2)
    s.shutdown(3)
    assert eff.stops()[-1][0] == ("a", "b")
    s.serve_done(1, 4)
    s.stop_done(("a", "b"), 5)
    assert not s.knows("b")


# -- the bounded drain (reload_drain_timeout) ----------------------------------------------------


def drained(*models: str, grace: float) -> SchedulerSettings:
    return SchedulerSettings(models, reload_drain_timeout=grace)


def test_a_long_request_on_a_restarted_model_is_ended_at_the_drain_deadline():
    s, eff = make()
    warm(s, eff, "a", "b")
    s.request(1, "a", 1)  # a long stream on a
    s.request(2, "b", 1)  # another model's request
    s.reconfigure(StubPolicy(), drained("a", "b", "c", grace=5), 2, restart=("a",))
    assert s.request(3, "a", 3) is Admission.QUEUED
    assert s.next_deadline() == 7
    assert dict(s.draining()) == {"a": 7}
    s.tick(6.9)
    assert eff.ended() == [] and eff.stops() == []
    s.tick(7)
    assert eff.ended() == [((1,), "a", "reload")]  # only a's, and only once
    s.tick(8)
    assert len(eff.ended()) == 1 and eff.stops() == []  # still in flight until its serve_done
    s.serve_done(1, 8)
    assert eff.stops() == [(("a",), "reload", 10.0)]
    eff.clear()
    s.stop_done(("a",), 9)
    assert eff.of("start_swap") == [("start_swap", "a", ())]
    s.swap_done("a", 10)
    assert eff.granted() == [3]  # the queued request is served by the new process
    assert s.retiring() == {} and dict(s.draining()) == {}
    s.serve_done(2, 11)  # b's request was never touched
    assert s.state("b") is ModelState.READY


def test_a_request_that_ends_within_the_drain_is_not_ended():
    s, eff = make()
    warm(s, eff, "a")
    s.request(1, "a", 1)
    s.reconfigure(StubPolicy(), drained("a", "b", "c", grace=5), 2, restart=("a",))
    s.serve_done(1, 6.5)
    s.tick(7)
    s.tick(100)
    assert eff.ended() == []
    assert eff.stops() == [(("a",), "reload", 10.0)]
    assert s.next_deadline() is None


def test_a_drain_of_zero_ends_requests_at_once_and_a_removed_model_too():
    s, eff = make()
    warm(s, eff, "a", "b")
    s.request(1, "b", 1)
    s.request(2, "b", 1)
    s.reconfigure(StubPolicy(), drained("a", "c", grace=0), 2)
    assert eff.ended() == [((1, 2), "b", "reload")]
    s.serve_done(1, 2)
    s.serve_done(2, 2)
    assert eff.stops() == [(("b",), "reload", 10.0)]
    s.stop_done(("b",), 3)
    assert not s.knows("b")


def test_a_later_reload_never_moves_the_drain_deadline_later():
    s, eff = make()
    warm(s, eff, "a")
    s.request(1, "a", 1)
    s.reconfigure(StubPolicy(), drained("a", "b", "c", grace=5), 2, restart=("a",))
    s.reconfigure(StubPolicy(), drained("a", "b", "c", grace=30), 4, restart=("a",))
    assert s.next_deadline() == 7
    s.reconfigure(StubPolicy(), drained("a", "b", "c", grace=1), 5, restart=("a",))
    assert s.next_deadline() == 6  # an earlier one does apply
    s.tick(6)
    assert eff.ended() == [((1,), "a", "reload")]


def test_an_evicted_model_is_drained_by_its_deadline_too():
    policy = StubPolicy(EXCLUSIVE)
    s, eff = make(StubPolicy())
    warm(s, eff, "a", "b")
    s.request(1, "a", 1)
    s.request(2, "b", 1)
    s.reconfigure(policy, drained("a", "b", "c", grace=3), 2, evict=("b",))
    assert s.retiring() == {"b": "evict"}
    s.tick(5)
    assert eff.ended() == [((2,), "b", "reload")]


def test_the_drain_timeout_must_not_be_negative():
    import pytest

    with pytest.raises(ValueError, match="reload_drain_timeout"):
        SchedulerSettings(("a",), reload_drain_timeout=-1)
