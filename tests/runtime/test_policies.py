"""Scheduling policies: the interface, holds, the config key, entry points and `--compare`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.policies import RecordingEffects, StubPolicy

from llamaswap.cli import cli
from llamaswap.compiler.plan import CompileOptions, compile_text
from llamaswap.runtime.policies import (
    HoldPolicy,
    LookaheadPolicy,
    PolicyError,
    PolicyOptionError,
    check_policy,
    make_policy,
)
from llamaswap.runtime.scheduler import Admission, FifoPolicy, ModelState, Scheduler, SchedulerSettings
from llamaswap.runtime.settings import scheduler_settings
from llamaswap.runtime.simulate import TraceRequest, simulate

EXCLUSIVE = {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}


class FixedHold(FifoPolicy):
    """Holds every eviction for `seconds`, and records what it is told."""

    name = "fixed"

    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = seconds
        self.seen: list[tuple] = []

    def hold(self, scheduler, target, decision, now):
        self.seen.append(("hold", target, decision.evict, now))
        return self.seen_start(target, now) + self.seconds

    def seen_start(self, target, now):
        return next(e[3] for e in self.seen if e[0] == "hold" and e[1] == target)

    def on_request(self, model, now):
        self.seen.append(("request", model, now))

    def on_swap_started(self, decision, now):
        self.seen.append(("swap_started", decision.target, decision.evict, now))
        self.seen = [e for e in self.seen if not (e[0] == "hold" and e[1] == decision.target)]

    def on_swap_done(self, model, started, now, ok):
        self.seen.append(("swap_done", model, started, now, ok))

    def on_serve_done(self, model, now):
        self.seen.append(("serve_done", model, now))


def make(scheduling=None, **settings):
    effects = RecordingEffects()
    s = Scheduler(
        StubPolicy(EXCLUSIVE), SchedulerSettings(("a", "b", "c"), **settings), effects, scheduling=scheduling
    )
    return s, effects


def warm_a(s, eff):
    s.request("w", "a", 0)
    s.swap_done("a", 1)
    s.serve_done("w", 2)
    eff.clear()


# --- the interface in the scheduler ---------------------------------------------------------


def test_default_is_fifo_and_fifo_never_holds():
    s, eff = make(max_wait=None)
    assert s.scheduling.name == "fifo" and isinstance(s.scheduling, FifoPolicy)
    warm_a(s, eff)
    assert s.request(1, "b", 3) is Admission.WAITING
    assert [c[0] for c in eff.calls] == ["start_swap"] and s.holds() == {}


def test_a_hold_keeps_the_idle_victim_serving_until_its_deadline():
    policy = FixedHold(5.0)
    s, eff = make(policy, max_wait=None)
    warm_a(s, eff)
    assert s.request(1, "b", 3) is Admission.QUEUED  # held: a stays
    assert s.holds() == {"b": 8.0} and s.next_deadline() == 8.0
    assert s.state("a") is ModelState.READY
    assert s.request(2, "a", 4) is Admission.GRANTED  # the victim still serves, fast path
    s.serve_done(2, 6)
    assert s.queued() == (1,)  # re-asked on the drain: still held (same deadline)
    s.tick(7.9)
    assert s.queued() == (1,) and not any(c[0] == "start_swap" for c in eff.calls)
    s.tick(8.0)
    assert s.queued() == () and s.swaps() == ("b",) and s.holds() == {}
    assert [c for c in eff.calls if c[0] == "start_swap"][0][1] == "b"
    s.swap_done("b", 10)
    kinds = [e[0] for e in policy.seen]
    assert kinds.count("request") == 3 and "serve_done" in kinds
    assert ("swap_started", "b", ("a",), 8.0) in policy.seen
    assert ("swap_done", "b", 8.0, 10, True) in policy.seen


def test_a_spent_hold_is_not_renewed_while_the_target_waits():
    class Always(FixedHold):
        def hold(self, scheduler, target, decision, now):
            self.seen.append(("hold", target, decision.evict, now))
            return now + self.seconds  # would hold forever if asked again and again

    s, eff = make(Always(2.0), max_wait=None)
    warm_a(s, eff)
    s.request(1, "b", 3)
    s.request(2, "a", 4)  # a busy at the deadline
    s.tick(5.0)  # ran out (re-asked only when b is retried, and it was not: a's grant was the fast path)
    s.tick(6.0)
    assert s.queued() == (1,) and s.holds() == {}  # spent; blocked by a's request in flight
    s.serve_done(2, 7)
    assert s.swaps() == ("b",)  # starts at once: not held again


def test_the_protected_request_is_never_held():
    s, eff = make(FixedHold(100.0), max_wait=2)
    warm_a(s, eff)
    assert s.request(1, "b", 3) is Admission.QUEUED
    assert s.next_deadline() == 5.0  # max_wait comes first
    s.tick(5.0)
    assert s.protected is None and s.swaps() == ("b",)


def test_holds_end_when_nothing_waits_for_the_target():
    s, eff = make(FixedHold(5.0), max_wait=None)
    warm_a(s, eff)
    s.request(1, "b", 3)
    assert s.cancel(1, 4)
    assert s.holds() == {} and s.next_deadline() is None


def test_a_policy_that_chooses_victims_is_asked():
    class Chooser(FifoPolicy):
        name = "chooser"
        chooses_victims = True

        def __init__(self):
            self.asked = []

        def choose(self, eviction, decision, now):
            self.asked.append((decision.target, decision.evict, now))
            return decision

    policy = Chooser()
    s, eff = make(policy, max_wait=None)
    warm_a(s, eff)
    s.request(1, "b", 3)
    assert policy.asked == [("a", (), 0), ("b", ("a",), 3)]


# --- the shipped policies ---------------------------------------------------------------------


def test_make_policy_builtins_and_errors():
    assert isinstance(make_policy("fifo"), FifoPolicy)
    hold = make_policy("hold", {"budget": 0.5})
    assert isinstance(hold, HoldPolicy) and hold.budget == 0.5
    assert make_policy("hold") is not make_policy("hold")  # fresh objects: they learn
    with pytest.raises(PolicyError, match="unknown scheduling policy 'hodl'") as exc:
        make_policy("hodl")
    assert exc.value.hint == "did you mean 'hold'?"
    with pytest.raises(PolicyOptionError) as exc:
        make_policy("hold", {"budgte": 1})
    assert exc.value.option == "budgte" and exc.value.hint == "did you mean 'budget'?"
    with pytest.raises(PolicyOptionError, match="'quantile' must be between 0 and 1"):
        make_policy("hold", {"quantile": 2})
    with pytest.raises(PolicyOptionError, match="takes no options"):
        make_policy("fifo", {"x": 1})
    assert check_policy("hold", {}) is None
    assert check_policy("hold", {"budget": "x"}) == (
        "budget",
        "option 'budget' must be a number, not 'x'",
        None,
    )


def test_hold_learns_return_gaps_and_load_times():
    p = HoldPolicy(quantile=0.5, min_history=2, load_time=7)
    assert p.hot_for("a", 0) == 0.0 and p.load_time_of("a") == 7
    for t in (0, 2, 4, 6):
        p.on_request("a", t)
    assert p.hot_for("a", 6) == 2.0 and p.hot_for("a", 7.5) == 0.5 and p.hot_for("a", 9) == 0.0
    p.on_swap_done("a", 10, 14, True)
    assert p.load_time_of("a") == 4


def test_the_load_times_a_store_recorded_seed_a_fresh_policy(tmp_path):
    # What serve does at start and when a reload makes a new policy: the store's medians, for
    # the configured models only, each told to the policy as one load it saw.
    from llamaswap.runtime.activity import ActivityStore
    from llamaswap.runtime.policies import seed_load_times
    from llamaswap.runtime.processes import ProcessState, StateChanged

    db = tmp_path / "activity.sqlite3"
    store = ActivityStore(db)
    store.open()
    for model, seconds in (("a", 4.0), ("a", 30.0), ("a", 6.0), ("gone", 90.0)):
        for old, new, at in (
            ("stopped", "starting", 0.0),
            ("starting", "ready", seconds),
            ("ready", "stopped", 99.0),
        ):
            store.process_changed(StateChanged(model, ProcessState(old), ProcessState(new), at, None, ""))
    assert store.load_times(["a", "b"], flush=True) == {"a": 6.0}
    assert store.load_times() == {"a": 6.0, "gone": 90.0}
    store.close()
    assert ActivityStore(":memory:").load_times(["a"]) == {}

    for policy in (LookaheadPolicy(load_time=10), HoldPolicy(load_time=10)):
        seed_load_times(policy, {"a": 6.0}, now=1000.0)
        assert policy.load_time_of("a") == 6.0
        policy.on_swap_done("a", 1000.0, 1002.0, True)  # and goes on learning from real loads
        assert policy.load_time_of("a") == 4.0
    # A model never loaded: lookahead assumes the mean of the known ones, hold its default.
    assert policy.load_time_of("b") == 10 and LookaheadPolicy().load_time_of("b") == 10
    seeded = LookaheadPolicy(load_time=10)
    seed_load_times(seeded, {"a": 6.0}, now=0.0)
    assert seeded.load_time_of("b") == 6.0
    seed_load_times(FifoPolicy(), {"a": 6.0}, now=0.0)  # a policy that learns nothing ignores it


# Any two of a, b, c fit together; one set per pair, so a load that must evict has two
# equally cheap choices, and the eviction policy's own pick is the first set (solver order).
PAIRS = f"""\
models:
  a: {{cmd: "{"llamaswap fake-upstream --port ${PORT}"}"}}
  b: {{cmd: "{"llamaswap fake-upstream --port ${PORT}"}"}}
  c: {{cmd: "{"llamaswap fake-upstream --port ${PORT}"}"}}
matrix:
  sets: {{ab: "a & b", ac: "a & c", bc: "b & c"}}
"""


def pairs_plan():
    plan = compile_text(PAIRS, "pairs.yaml")
    assert plan.ok, plan.diagnostics
    return plan


def test_lookahead_keeps_the_model_asked_for_more_and_fifo_evicts_by_set_order():
    """b is asked for six times, a once: loading c, FIFO evicts b (set ac comes first), and
    b's next request costs a swap back; lookahead evicts a. Nothing waits longer for it.
    (min_trials 0: act before the self-check has seen a trial; by default it first needs 5.)"""
    plan = pairs_plan()
    trace = [TraceRequest(0, "a", 0.1)] + [TraceRequest(0.5 * i, "b", 0.1) for i in range(1, 7)]
    trace += [TraceRequest(4, "c", 0.1), TraceRequest(5, "b", 0.1)]
    settings = scheduler_settings(plan)
    loads = {"a": 1, "b": 1, "c": 1}
    fifo = simulate(plan.policy, settings, trace, loads, verbose=True)
    policy = LookaheadPolicy(horizon=2, min_trials=0)
    look = simulate(plan.policy, settings, trace, loads, verbose=True, scheduling=policy)
    assert (fifo["swaps"], fifo["evictions"]) == (4, {"b": 1, "c": 1})
    assert (look["swaps"], look["evictions"]) == (3, {"a": 1})
    waits = [(f["wait"], m["wait"]) for f, m in zip(fifo["per_request"], look["per_request"])]
    assert all(m <= f for f, m in waits) and waits[-1] == (1.1, 0.0)  # FIFO: c serves, then b reloads
    assert policy.trusted()  # b (kept) came back before a (evicted): the trial went its way
    # With the default min_trials, one decision is no evidence: FIFO's pick, FIFO's schedule.
    cautious = simulate(
        plan.policy, settings, trace, loads, verbose=True, scheduling=LookaheadPolicy(horizon=2)
    )
    assert (cautious["swaps"], cautious["per_request"]) == (fifo["swaps"], fifo["per_request"])


def test_lookahead_self_check_stops_overriding_fifo_when_its_preference_comes_back_first():
    """Every 20 s: a, a burst of b, c, then a and c again. Loading c, recency says keep the
    busy b and evict a, but a is the next one asked for, so each such override costs a
    swap back (and the swaps after it); FIFO's pick (evict b) is right. Without the
    self-check the preference keeps overriding: 20 swaps to FIFO's 9, p95 1.5 s to 1 s.
    With it, the first override's trial is lost (a came back before b), lookahead stops
    overriding, and from the next cycle on every request waits exactly as under FIFO."""
    plan = pairs_plan()
    trace = []
    for t in (0, 20, 40, 60):
        trace += [TraceRequest(t, "a", 0.1)] + [TraceRequest(t + 0.5 * i, "b", 0.1) for i in range(1, 7)]
        trace += [TraceRequest(t + 4, "c", 0.1), TraceRequest(t + 5, "a", 0.1), TraceRequest(t + 6, "c", 0.1)]
    settings = scheduler_settings(plan)
    loads = {"a": 1, "b": 1, "c": 1}

    def run(**options):
        policy = LookaheadPolicy(horizon=2, min_history=1000, min_trials=0, **options)
        return policy, simulate(plan.policy, settings, trace, loads, verbose=True, scheduling=policy)

    fifo = simulate(plan.policy, settings, trace, loads, verbose=True)
    _, blind = run(trust=0.0)  # trust 0: every trial record is good enough, i.e. no self-check
    policy, checked = run(trials=2)
    assert (fifo["swaps"], fifo["wait"]["p95"]) == (9, 1.0)
    assert (blind["swaps"], blind["wait"]["p95"], blind["evictions"]["a"]) == (20, 1.5, 8)
    assert (checked["swaps"], checked["wait"]["p95"], checked["evictions"]["a"]) == (11, 1.0, 1)
    later = [i for i, r in enumerate(trace) if r.at >= 20]
    assert [checked["per_request"][i]["wait"] for i in later] == [
        fifo["per_request"][i]["wait"] for i in later
    ]
    assert not policy.trusted()
    # The trials go on while it defers (FIFO's picks are judged too): still losing, still FIFO.
    assert fifo["decisions"][-1]["evicted"] == checked["decisions"][-1]["evicted"] == ["b"]


def test_lookahead_return_gaps_veto_a_recency_pick_that_evicts_a_regular_model():
    """a is asked for every 20 s; b had a burst that is over. Loading c at 75, recency alone
    (b's four requests just now, a's one 15 s ago) says evict a, which is due again at 80;
    a's return gaps say it is needed in about 5 s and b, idle longer than any gap it had, is
    cold: lookahead keeps FIFO's pick (b) and a's request at 80 needs no swap back."""
    plan = pairs_plan()
    trace = [TraceRequest(t, "a", 0.1) for t in (0, 20, 40, 60, 80)]
    trace += [TraceRequest(t, "b", 0.1) for t in (70, 71, 72, 73)] + [TraceRequest(75, "c", 0.1)]
    settings = scheduler_settings(plan)
    loads = {"a": 1, "b": 1, "c": 1}
    look = simulate(
        plan.policy,
        settings,
        trace,
        loads,
        verbose=True,
        scheduling=LookaheadPolicy(horizon=10, min_trials=0),
    )
    assert (look["swaps"], look["evictions"]) == (3, {"b": 1})
    assert look["per_request"][-1]["model"] == "a" and look["per_request"][-1]["wait"] == 0
    # Without enough history the second opinion abstains: recency alone evicts a.
    blind = LookaheadPolicy(horizon=10, min_history=1000, min_trials=0)
    recency = simulate(plan.policy, settings, trace, loads, verbose=True, scheduling=blind)
    assert (recency["swaps"], recency["evictions"]) == (4, {"a": 1, "c": 1})
    assert recency["per_request"][-1]["wait"] == 1.0
    p = LookaheadPolicy()
    for t in (0, 20, 40, 60):
        p.on_request("a", t)
    assert p.expected_idle("a", 75) == 5.0 and p.expected_idle("a", 90) == math.inf
    assert p.expected_idle("b", 75) is None


def test_lookahead_self_check_judges_each_pair_of_victims_by_its_own_trials():
    """Two kinds of disagreement: loading c next to a and b (FIFO evicts b, the preference
    the cold a), where the preference is right twice (b is asked for next), and loading a
    next to b and c (FIFO evicts c, the preference the cold b), where it is wrong twice (b
    is asked for next). All trials together are half right, which is trusted; but each
    pair, with its own min_trials, is judged by its own record: it keeps overriding the
    first kind and defers to FIFO on the second (whose first lost trial already vetoed)."""
    plan = pairs_plan()
    p = LookaheadPolicy(horizon=1, min_history=1000, min_trials=2, trials=4)
    load_c, load_a = plan.policy.decide("c", ("a", "b")), plan.policy.decide("a", ("b", "c"))
    assert (load_c.evict, load_a.evict) == (("b",), ("c",))  # FIFO's picks (set order)

    def trial(t, hot, decision, back):
        for i in range(3):
            p.on_request(hot, t + 0.1 * i)
        chosen = p.choose(plan.policy, decision, t + 0.5)
        p.on_swap_started(chosen, t + 0.5)
        p.on_request(back, t + 1)
        return chosen.evict

    p.on_request("a", 0)
    # No evidence yet: FIFO's pick (evict b), but the trials run, and b is asked for first.
    assert [trial(t, "b", load_c, "b") for t in (10, 20)] == [("b",), ("b",)]
    # Trusted on that record, it evicts the cold b instead of c, and b is asked for first;
    # the pair's own one trial, lost, then vetoes the next (FIFO's pick, and b is first again).
    assert [trial(t, "c", load_a, "b") for t in (30, 40)] == [("b",), ("c",)]
    assert p.trusted(frozenset("a"), frozenset("b")) and not p.trusted(frozenset("b"), frozenset("c"))
    assert p.trusted()  # a pair without trials of its own: all trials, 2 of 4 right
    assert trial(50, "c", load_a, "c") == ("c",)  # FIFO's pick for the losing pair ...
    assert trial(60, "b", load_c, "b") == ("a",)  # ... the preference for the winning one


def test_lookahead_choices_are_allowed_decisions_and_margin_keeps_fifos_pick():
    plan = pairs_plan()
    decision = plan.policy.decide("c", ("a", "b"))
    assert decision.evict == ("b",) and decision.set == "ac"
    p = LookaheadPolicy(horizon=10, margin=0.25, min_trials=0)
    options = p.alternatives(plan.policy, decision)
    assert [(d.evict, d.set, d.dsl, d.target_set) for d in options] == [
        (("b",), "ac", "a & c", ("a", "c")),
        (("a",), "bc", "b & c", ("b", "c")),
    ]
    for t in (10, 11, 12):
        p.on_request("b", t)
    p.on_request("a", 0)
    # At 12 a's one request is 12 s old: a is asked for again within the horizon with
    # 1 - exp(-exp(-1.2)) = 26 % against b's 94 %: not below a quarter, FIFO's pick stays.
    assert p.choose(plan.policy, decision, 12).evict == ("b",)
    assert p.choose(plan.policy, decision, 16).evict == ("a",)  # a at 18 %, b at 84 %
    assert p.choose(plan.policy, plan.policy.decide("a", ("b",)), 16).evict == ()  # no eviction
    # Learned load times weigh in: a 10x slower load makes a the one to keep.
    p.on_swap_done("a", 0, 40, True)
    p.on_swap_done("b", 0, 4, True)
    assert p.load_time_of("c") == 22  # unknown: the mean of the known ones
    assert p.choose(plan.policy, decision, 16).evict == ("b",)


def test_lookahead_options():
    p = make_policy(
        "lookahead",
        {
            "horizon": 30,
            "margin": 0.5,
            "load_time": 3,
            "history": 16,
            "min_history": 2,
            "trials": 8,
            "min_trials": 0,
            "trust": 0.75,
        },
    )
    assert isinstance(p, LookaheadPolicy)
    assert (p.horizon, p.margin, p.load_time, p.history, p.min_history) == (30, 0.5, 3, 16, 2)
    assert (p.trials, p.min_trials, p.trust) == (8, 0, 0.75)
    with pytest.raises(PolicyOptionError, match="'trials' must be >= 1"):
        make_policy("lookahead", {"trials": 0})
    with pytest.raises(PolicyOptionError, match="'trust' must be between 0 and 1"):
        make_policy("lookahead", {"trust": 1.5})
    with pytest.raises(PolicyOptionError, match="'history' must be an integer"):
        make_policy("lookahead", {"history": 1.5})
    with pytest.raises(PolicyOptionError, match="'margin' must be between 0 and 1"):
        make_policy("lookahead", {"margin": 2})
    with pytest.raises(PolicyOptionError) as exc:
        make_policy("lookahead", {"horizont": 1})
    assert exc.value.hint == "did you mean 'horizon'?"


# --- configuration ----------------------------------------------------------------------------

FAKE = "llamaswap fake-upstream --port ${PORT}"
BASE = f'models:\n  a: {{cmd: "{FAKE}"}}\n  b: {{cmd: "{FAKE}"}}\n'


def compiled(extra: str):
    return compile_text(BASE + extra, "c.yaml", CompileOptions(policy_check=check_policy))


def errors(plan):
    return [
        (d.code, d.line, d.column, d.message, d.hint) for d in plan.diagnostics if d.severity.value == "error"
    ]


def test_config_names_a_policy_with_options():
    plan = compiled("routing:\n  scheduler:\n    policy: {use: hold, budget: 0.5}\n")
    assert plan.ok, plan.diagnostics
    assert plan.config.routing.scheduler.policy_name == "hold"
    assert plan.config.routing.scheduler.policy_options == {"budget": 0.5}
    assert compiled("routing: {scheduler: {policy: hold}}\n").ok
    assert compile_text(BASE, "c.yaml").config.routing.scheduler.policy_name == "fifo"


def test_config_policy_errors_are_located():
    assert errors(compiled("routing:\n  scheduler:\n    policy: hodl\n")) == [
        (
            "LS219",
            6,
            13,
            "routing.scheduler.policy: unknown scheduling policy 'hodl' (available: fifo, hold, lookahead)",
            "did you mean 'hold'?",
        )
    ]
    assert errors(compiled("routing:\n  scheduler:\n    policy:\n      use: hold\n      budgte: 2\n")) == [
        (
            "LS219",
            8,
            7,
            "routing.scheduler.policy: policy 'hold' has no option 'budgte' (options: budget, "
            "quantile, min_history, history, load_time)",
            "did you mean 'budget'?",
        )
    ]
    assert errors(compiled("routing:\n  scheduler:\n    policy: {use: hold, budget: -1}\n"))[0][:3] == (
        "LS219",
        6,
        25,
    )
    assert errors(compiled("routing:\n  scheduler:\n    policy: {budget: 1}\n"))[0][3] == (
        "routing.scheduler.policy.use must name a scheduling policy"
    )
    # Without a checker (library use) only the shape is checked.
    assert compile_text(BASE + "routing: {scheduler: {policy: hodl}}\n", "c.yaml").ok


# --- plan --trace --compare -------------------------------------------------------------------

CONFIG = BASE.replace("  b:", "  b:") + "groups:\n  g: {swap: true, exclusive: true, members: [a, b]}\n"


def trace_lines():
    # a's bursts, interrupted by a single b: FIFO evicts a, then loads it back.
    lines = []
    for burst in range(6):
        t0 = burst * 100.0
        for i in range(6):
            lines.append({"at": t0 + 3 * i, "model": "a", "duration": 2})
        lines.append({"at": t0 + 7.5, "model": "b", "duration": 1})
    return [json.dumps(x) for x in lines]


def write(tmp_path: Path, config: str = CONFIG) -> tuple[Path, Path]:
    (tmp_path / "c.yaml").write_text(config)
    (tmp_path / "t.jsonl").write_text("\n".join(trace_lines()) + "\n")
    return tmp_path / "c.yaml", tmp_path / "t.jsonl"


def test_compare_prints_the_policies_side_by_side(tmp_path):
    c, t = write(tmp_path)
    args = [
        "plan",
        str(c),
        "--trace",
        str(t),
        "--load-time",
        "a=10",
        "--load-time",
        "b=2",
        "--compare",
        "fifo,hold",
    ]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert first.output == again.output  # deterministic
    lines = first.output.splitlines()
    assert lines[0] == f"42 requests in {t}"
    assert lines[1].split() == [
        "policy",
        "swaps",
        "load-s",
        "p50",
        "p95",
        "max",
        "mean",
        "makespan",
        "rejected",
    ]
    assert [line.split()[0] for line in lines[2:4]] == ["fifo", "hold"]
    data = json.loads(CliRunner().invoke(cli, args + ["--format", "json"], catch_exceptions=False).output)
    assert list(data["policies"]) == ["fifo", "hold"]
    plain = json.loads(
        CliRunner().invoke(cli, args[:-2] + ["--format", "json"], catch_exceptions=False).output
    )
    fifo = data["policies"]["fifo"]
    assert fifo["swaps"] == plain["swaps"] and fifo["wait"] == plain["wait"]  # the same run as plan --trace
    assert fifo["load_seconds"] == 10 * plain["loads"]["a"] + 2 * plain["loads"]["b"]
    hold = data["policies"]["hold"]
    assert hold["swaps"] < fifo["swaps"]  # here a is always back before b is even loaded


def test_compare_rejects_unknown_policies(tmp_path):
    c, t = write(tmp_path)
    r = CliRunner().invoke(cli, ["plan", str(c), "--trace", str(t), "--compare", "fifo,hodl"])
    assert (
        r.exit_code == 2
        and "unknown scheduling policy 'hodl'" in r.output
        and "did you mean 'hold'?" in r.output
    )
    r = CliRunner().invoke(cli, ["plan", str(c), "--all", "--compare", "fifo"])
    assert r.exit_code == 2 and "go with --trace" in r.output


def test_plan_trace_runs_the_configured_policy(tmp_path):
    c, t = write(tmp_path, CONFIG + "routing: {scheduler: {policy: hold}}\n")
    args = [
        "plan",
        str(c),
        "--trace",
        str(t),
        "--load-time",
        "a=10",
        "--load-time",
        "b=2",
        "--format",
        "json",
    ]
    configured = json.loads(CliRunner().invoke(cli, args, catch_exceptions=False).output)
    compared = json.loads(
        CliRunner().invoke(cli, args + ["--compare", "hold"], catch_exceptions=False).output
    )
    assert configured["swaps"] == compared["policies"]["hold"]["swaps"]


def test_simulate_with_a_policy_object():
    reqs = [TraceRequest(0, "a", 1), TraceRequest(2, "b", 1)]
    out = simulate(
        StubPolicy(EXCLUSIVE), SchedulerSettings(("a", "b", "c")), reqs, {}, 1.0, scheduling=FixedHold(3.0)
    )
    assert out["wait"]["max"] == 4.0  # b held from 2 to 5, then loads for 1 s


# --- an external policy through the entry point ------------------------------------------------

PLUGIN = '''
from llamaswap.runtime.scheduler import FifoPolicy


class Patient(FifoPolicy):
    """Waits `seconds` before every eviction."""

    name = "patient"
    OPTIONS = ("seconds",)

    def __init__(self, seconds=1.0):
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self.seconds = seconds
        self.since = {}

    def hold(self, scheduler, target, decision, now):
        return self.since.setdefault(target, now) + self.seconds

    def on_swap_started(self, decision, now):
        self.since.pop(decision.target, None)
'''


def install_plugin(root: Path) -> dict[str, str]:
    """A distribution `patient-policy` (a module and its dist-info) in `root`, found through
    PYTHONPATH: importlib.metadata sees its entry point, nothing is installed in the venv."""
    (root / "patient_policy.py").write_text(PLUGIN)
    info = root / "patient_policy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: patient-policy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[llamaswap.policies]\npatient = patient_policy:Patient\n")
    return {**os.environ, "PYTHONPATH": str(root)}


def run(args, env, cwd):
    return subprocess.run(
        [sys.executable, "-m", "llamaswap", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_entry_point_policy_is_found_configured_and_run(tmp_path):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    env = install_plugin(plugin)
    c, t = write(tmp_path, CONFIG + "routing:\n  scheduler:\n    policy: {use: patient, seconds: 4}\n")
    r = run(["compile", str(c)], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(
        ["plan", str(c), "--trace", str(t), "--compare", "fifo,patient", "--format", "json"], env, tmp_path
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["policies"]
    assert list(rows) == ["fifo", "patient"]
    # Every b waits 4 s of hold before its swap: the plugin really ran.
    assert rows["patient"]["wait"]["max"] >= rows["fifo"]["wait"]["max"] + 4 - 1e-6
    bad = c.with_name("bad.yaml")
    bad.write_text(CONFIG + "routing:\n  scheduler:\n    policy: {use: patient, seconds: -1}\n")
    r = run(["compile", str(bad)], env, tmp_path)
    assert r.returncode == 1 and "bad.yaml:8:19" in r.stdout + r.stderr
    assert "seconds must be >= 0" in r.stdout + r.stderr
    # Without the plugin on the path the name is unknown, and said so at its place.
    r = run(["compile", str(c)], {k: v for k, v in env.items() if k != "PYTHONPATH"}, tmp_path)
    assert r.returncode == 1 and "unknown scheduling policy 'patient'" in r.stdout + r.stderr
