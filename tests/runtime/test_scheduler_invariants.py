"""Scheduler invariants under random configs and random event sequences (hypothesis).

The machine plays the runtime: it keeps its own picture of the world (each model's process
state, the swaps and stops it was asked to run, the requests in flight) updated only from
the scheduler's effects and its own completions, and checks after every step that:

(a) safety: the models starting or ready fit in one allowed combination (matrix), and every
    committed eviction is exactly what the group rules name (groups); the scheduler's
    `running` is the world's;
(b) every request gets exactly one outcome (grant, reject, or its own cancel while waiting);
(c) in-flight counts never go negative and return to zero;
(d) no model is evicted by a swap while it has requests in flight;
(e) once all swaps, stops and requests complete, the queue is empty;
(f) bounded waiting: the protected request is the oldest one that has waited max_wait; it is
    only ever blocked by work already committed (a swap in progress, requests on its victims,
    a stop); and while it is protected nothing new is granted to its victims nor started in a
    way that grows what it must evict;
(g) hot reload (`reconfigure` with random restarts, evictions and moved requests): a reload
    never stops a model with requests in flight, and every request still gets one outcome;
(h) bounded drain: once an input reaches a retiring model's deadline (the reload that
    retired it + reload_drain_timeout), every request in flight on it has been ended, by
    exactly one end_requests that names all of them and nothing else, never before the
    deadline; `next_deadline()` is never later than a drain still to end; ended requests
    still finish with one serve_done, and at quiescence nothing is retiring;
(i) an unload or a shutdown that stops a model first ends the requests in flight on it (one
    end_requests with its own reason, naming exactly those not ended before), so that no
    response is cut off without a word.

Hypothesis settings: the suite's profile (tests/conftest.py), 100 examples of 40 steps;
LLAMASWAP_HYPOTHESIS_EXAMPLES=3000 runs a random, longer session (see tests/support/fuzz.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from support.fuzz import examples
from support.policies import Group, GroupTestPolicy, MatrixTestPolicy

from llamaswap.runtime.policies import BUILTIN, make_policy
from llamaswap.runtime.scheduler import FifoPolicy, Scheduler, SchedulerSettings, SchedulingPolicy

SETTINGS = settings(max_examples=examples(100), stateful_step_count=40)

POOL = ("a", "b", "c", "d")


@st.composite
def configs(draw):
    models = POOL[: draw(st.integers(3, 4))]
    if draw(st.booleans()):
        sets = []
        for i in range(draw(st.integers(1, 3))):
            combos = draw(
                st.lists(st.sets(st.sampled_from(models), min_size=1, max_size=3), min_size=1, max_size=4)
            )
            sets.append((f"s{i}", [sorted(c) for c in combos]))
        costs = draw(st.dictionaries(st.sampled_from(models), st.integers(1, 3)))
        policy = MatrixTestPolicy(sets, costs)
    else:
        slots = draw(st.lists(st.sampled_from([None, 0, 1, 2]), min_size=len(models), max_size=len(models)))
        groups = {}
        for gi in sorted({s for s in slots if s is not None}):
            members = tuple(m for m, s in zip(models, slots) if s == gi)
            groups[f"g{gi}"] = Group(
                members,
                swap=draw(st.booleans()),
                exclusive=draw(st.booleans()),
                persistent=draw(st.booleans()),
            )
        policy = GroupTestPolicy(models, groups)
    per_model = lambda values: draw(st.fixed_dictionaries({m: values for m in models}))  # noqa: E731
    config = SchedulerSettings(
        models,
        concurrency_limit=per_model(st.integers(0, 3)),
        priority=per_model(st.integers(0, 2)),
        ttl=per_model(st.sampled_from([0, 0, 2, 5])),
        unload_timeout=per_model(st.sampled_from([0, 1, 5])),
        max_wait=draw(st.sampled_from([None, 0, 0.5, 1, 1, 2, 3, 10])),
        reload_drain_timeout=draw(st.sampled_from([0, 1, 3, 30])),
    )
    return policy, config


class SchedulerMachine(RuleBasedStateMachine):
    # The scheduling policy under test: (name, options) for runtime.policies.make_policy, or
    # a factory.
    scheduling: tuple[str, dict] | Callable[[], SchedulingPolicy] = ("fifo", {})

    def __init__(self) -> None:
        super().__init__()
        self.ready_to_run = False

    # ------------------------------------------------------------------ setup

    @initialize(config=configs())
    def setup(self, config):
        self.policy, self.settings = config
        self.models = self.settings.models
        self.s = Scheduler(
            self.policy,
            self.settings,
            self,
            scheduling=make_policy(*self.scheduling)
            if isinstance(self.scheduling, tuple)
            else self.scheduling(),
        )
        self.now = 0.0
        self.world = {m: "stopped" for m in self.models}
        self.swaps: dict[str, dict] = {}  # outstanding swaps: model -> {decision, detached}
        self.stop_calls: set[str] = set()  # models with an outstanding stop_processes
        self.in_flight: dict[str, set] = {m: set() for m in self.models}
        self.pending: dict[int, tuple[str, float]] = {}  # admitted, no outcome yet
        self.outcomes: Counter = Counter()
        self.gone: set[int] = set()
        self.next_id = 0
        self.waiters_before: set = set()
        self.seen = 0.0
        self.inputs = 0
        self.retiring_since: dict[str, float] = {}  # model -> the reload that retired it
        self.ended: set = set()  # requests end_requests named
        self.current = ""  # the input being fed (its effects are checked against it)
        self.ready_to_run = True

    # ------------------------------------------------------- world helpers

    def running(self) -> tuple[str, ...]:
        return tuple(sorted(m for m, st_ in self.world.items() if st_ != "stopped"))

    def live_swaps(self) -> dict[str, dict]:
        return {m: sw for m, sw in self.swaps.items() if not sw["detached"]}

    def victims(self, model: str, running=None) -> set[str]:
        return set(self.policy.evict_for(model, self.running() if running is None else running))

    def call(self, method, *args, **kwargs):
        self.inputs += 1
        self.current = method.__name__  # which input the effects come from
        self.seen = self.now  # the scheduler only learns the time from its inputs
        self.waiters_before = {rid for m in self.models for rid in self.s.waiting(m)}
        result = method(*args, **kwargs)
        retiring = self.s.retiring()
        for model in list(self.retiring_since):
            if model not in retiring:
                del self.retiring_since[model]
        for model in retiring:
            self.retiring_since.setdefault(model, self.now)
        return result

    def drain_deadline(self, model):
        return self.retiring_since.get(model, self.now) + self.settings.reload_drain_timeout

    def outcome(self, req_id) -> None:
        self.outcomes[req_id] += 1
        assert self.outcomes[req_id] == 1, f"(b) request {req_id} got a second outcome"
        self.pending.pop(req_id, None)

    # ---------------------------------------------- Effects (the runtime's side)

    def start_swap(self, model, decision, stop_timeout):
        running = self.running()
        assert decision.target == model and decision.running == running, "(a) running differs"
        assert model not in self.swaps, "two swaps for one model"
        for victim in decision.evict:
            assert self.world[victim] == "ready", f"(a) evicting {victim} in {self.world[victim]}"
            assert not self.in_flight[victim], f"(d) evicting {victim} while it serves"
        if isinstance(self.policy, GroupTestPolicy):
            expected = tuple(m for m in running if m != model and self.policy.evicts(model, m))
            assert decision.evict == expected, "(a) evictions do not follow the group rules"
        guard = self.s.protected
        if guard is not None and self.pending[guard][0] != model:
            victims = self.victims(self.pending[guard][0], running)
            after = self.victims(self.pending[guard][0], tuple(sorted({*running, model})))
            assert decision.evict == (), "(f) a new swap evicts while a request is protected"
            assert model not in after and after <= victims, "(f) a new swap grows the protected evictions"
        for victim in decision.evict:
            self.world[victim] = "stopping"
        if self.world[model] == "stopped":
            self.world[model] = "starting"
        self.swaps[model] = {"decision": decision, "detached": False}
        if isinstance(self.policy, MatrixTestPolicy):
            live = [m for m, st_ in self.world.items() if st_ in ("starting", "ready")]
            assert self.policy.allows(live), f"(a) {sorted(live)} fit no combination"

    def grant(self, req_id, model):
        assert req_id in self.pending and self.pending[req_id][0] == model
        assert self.world[model] == "ready", f"granted {model} while {self.world[model]}"
        guard = self.s.protected
        if guard is not None and guard != req_id and req_id not in self.waiters_before:
            assert model not in self.victims(self.pending[guard][0]), "(f) fast path to a victim"
        self.outcome(req_id)
        if req_id in self.gone:
            return False
        self.in_flight[model].add(req_id)
        return True

    def reject(self, req_id, status, message, headers):
        assert status in (404, 429, 500, 503)
        assert (status == 429) == ("Retry-After" in headers)
        self.outcome(req_id)

    def queue_position(self, req_id, position):
        assert req_id in self.pending and position >= 1

    def stop_processes(self, models, reason, timeout):
        assert reason in ("ttl", "unload", "shutdown", "reload") and timeout > 0 and models
        for m in models:
            assert self.world[m] in ("starting", "ready"), f"stopping {m} in {self.world[m]}"
            if reason == "ttl":
                assert not self.in_flight[m], "TTL stopped a model with requests in flight"
            if reason == "reload":
                assert not self.in_flight[m], "(g) a reload stopped a model with requests in flight"
            if reason in ("unload", "shutdown"):
                assert not self.in_flight[m] - self.ended, (
                    f"(i) {reason} stopped {m} without ending its requests"
                )
            self.world[m] = "stopping"
            self.stop_calls.add(m)
            if m in self.swaps:
                self.swaps[m]["detached"] = True

    def end_requests(self, req_ids, model, reason):
        named = set(req_ids)
        assert named and len(named) == len(req_ids), "(h) an empty or repeating end_requests"
        assert not named & self.ended, "(h) a request was ended twice"
        assert named == self.in_flight[model] - self.ended, (
            "(h) end_requests must name exactly the requests in flight on the model not yet ended"
        )
        if reason == "reload":
            assert model in self.s.retiring(), "(h) ended outside a reload's drain"
            assert self.seen >= self.drain_deadline(model), "(h) ended before the drain deadline"
        else:
            assert reason in ("unload", "shutdown") and reason == self.current, (
                f"(i) ended for {reason!r} during {self.current}"
            )
            assert self.world[model] in ("starting", "ready"), "(i) ended on a model that is not stopped next"
        self.ended.update(named)

    # ------------------------------------------------------------------ rules

    @rule(picks=st.lists(st.integers(0, 15), min_size=1, max_size=4), dt=st.sampled_from([0, 0.5, 1]))
    def requests(self, picks, dt):
        """One to four requests arriving together (index 15 names an unknown model)."""
        self.now += dt
        for pick in picks:
            model = "ghost" if pick == 15 else self.models[pick % len(self.models)]
            rid = self.next_id
            self.next_id += 1
            self.pending[rid] = (model, self.now)
            self.call(self.s.request, rid, model, self.now)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def cancel(self, data):
        rid = data.draw(st.sampled_from(sorted(self.pending)))
        if self.call(self.s.cancel, rid, self.now):
            self.outcome(rid)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def client_leaves_silently(self, data):
        self.gone.add(data.draw(st.sampled_from(sorted(self.pending))))

    @precondition(lambda self: self.swaps)
    @rule(data=st.data(), ok=st.booleans())
    def swap_finishes(self, data, ok):
        model = data.draw(st.sampled_from(sorted(self.swaps)))
        self._finish_swap(model, ok)

    def _finish_swap(self, model, ok):
        swap = self.swaps.pop(model)
        for victim in swap["decision"].evict:
            self.world[victim] = "stopped"
        if not swap["detached"]:
            if ok:
                self.world[model] = "ready"
            elif self.world[model] == "starting":
                self.world[model] = "stopped"
        self.call(self.s.swap_done, model, self.now, None if ok else "boom")

    @precondition(lambda self: self.stop_calls)
    @rule(data=st.data())
    def stop_finishes(self, data):
        self._finish_stop(data.draw(st.sampled_from(sorted(self.stop_calls))))

    def _finish_stop(self, model):
        self.stop_calls.discard(model)
        self.world[model] = "stopped"
        self.call(self.s.stop_done, [model], self.now)

    @precondition(lambda self: any(self.in_flight.values()))
    @rule(data=st.data(), dt=st.sampled_from([0, 0.5, 2]))
    def serve_finishes(self, data, dt):
        self.now += dt
        rid = data.draw(st.sampled_from(sorted(r for reqs in self.in_flight.values() for r in reqs)))
        self._finish_serve(rid)

    def _finish_serve(self, rid):
        for reqs in self.in_flight.values():
            reqs.discard(rid)
        self.call(self.s.serve_done, rid, self.now)

    @precondition(lambda self: any(r in self.ended for reqs in self.in_flight.values() for r in reqs))
    @rule(data=st.data())
    def ended_request_finishes(self, data):
        """The runtime ended a response: its serve_done follows."""
        ended = sorted(r for reqs in self.in_flight.values() for r in reqs if r in self.ended)
        self._finish_serve(data.draw(st.sampled_from(ended)))

    @rule(dt=st.sampled_from([0.5, 1, 3, 10]), tick=st.booleans())
    def time_passes(self, dt, tick):
        self.now += dt
        if tick:
            self.call(self.s.tick, self.now)

    @precondition(lambda self: self.s.next_deadline() is not None)
    @rule()
    def tick_at_deadline(self):
        self.now = max(self.now, self.s.next_deadline())
        self.call(self.s.tick, self.now)

    # Unloads, crashes and shutdown clear a lot of state: keep them rare.
    @precondition(lambda self: self.inputs % 6 == 5)
    @rule(models=st.none() | st.sets(st.sampled_from(POOL), max_size=2), timeout=st.sampled_from([None, 3]))
    def unload(self, models, timeout):
        self.call(self.s.unload, None if models is None else sorted(models), self.now, timeout)

    @precondition(lambda self: self.inputs % 5 == 4 and "ready" in self.world.values())
    @rule(data=st.data())
    def crash(self, data):
        model = data.draw(st.sampled_from(sorted(m for m, st_ in self.world.items() if st_ == "ready")))
        self.world[model] = "stopped"
        self.call(self.s.model_exited, model, self.now)

    @precondition(lambda self: self.inputs % 4 == 3)
    @rule(data=st.data())
    def reload(self, data):
        """A hot reload with the same models and policy: some running models restart or are
        evicted once idle, some waiting requests now resolve to another model or to none."""
        running = sorted(m for m, st_ in self.world.items() if st_ != "stopped")
        restart = data.draw(st.sets(st.sampled_from(running)) if running else st.just(set()))
        evict = data.draw(st.sets(st.sampled_from(running)) if running else st.just(set()))
        waiting = sorted(set(self.s.queued()) | {r for m in self.models for r in self.s.waiting(m)})
        moves = {}
        for rid in data.draw(st.sets(st.sampled_from(waiting)) if waiting else st.just(set())):
            target = data.draw(st.sampled_from([*self.models, None]))
            moves[rid] = target
            if target is not None:
                self.pending[rid] = (target, self.pending[rid][1])
        self.call(
            self.s.reconfigure,
            self.policy,
            self.settings,
            self.now,
            restart=sorted(restart),
            evict=sorted(evict),
            moves=moves,
        )

    @precondition(lambda self: self.next_id > 40 and not self.s.shutting_down)
    @rule()
    def shutdown(self):
        self.call(self.s.shutdown, self.now)

    # ------------------------------------------------------------- invariants

    @invariant()
    def views_agree(self):
        if not self.ready_to_run:
            return
        for m in self.models:
            assert self.s.state(m).value == self.world[m], f"{m}: scheduler and world disagree"
            assert self.s.in_flight(m) == len(self.in_flight[m]) >= 0, "(c) in-flight count"
            waiting = sum(1 for model, _ in self.pending.values() if model == m)
            assert self.s.reserved(m) == waiting + len(self.in_flight[m])
        held = set(self.s.queued()) | {r for m in self.models for r in self.s.waiting(m)}
        assert held <= set(self.pending)

    @invariant()
    def bounded_drain(self):
        if not self.ready_to_run or self.s.shutting_down:
            return
        draining = {}
        for model in self.retiring_since:
            deadline = self.drain_deadline(model)
            if self.in_flight.get(model):
                draining[model] = deadline
            left = self.in_flight.get(model, set()) - self.ended
            if self.seen >= deadline:
                assert not left, f"(h) {model}'s drain ran out but {sorted(left)} still run"
            elif left:
                nxt = self.s.next_deadline()
                assert nxt is not None and nxt <= deadline, "(h) the owner would sleep past a drain"
        assert dict(self.s.draining()) == draining, "(h) draining() disagrees"

    @invariant()
    def bounded_waiting(self):
        if not self.ready_to_run or self.settings.max_wait is None or self.s.shutting_down:
            return
        queued = self.s.queued()
        starved = [r for r in queued if self.seen >= self.pending[r][1] + self.settings.max_wait]
        guard = self.s.protected
        if not starved:
            assert guard is None
            return
        assert guard == min(starved, key=lambda r: (self.pending[r][1], r)), "(f) not the oldest"
        assert queued[0] == guard
        model = self.pending[guard][0]
        if model in self.s.retiring():
            return  # a reload retires it: it waits for the old process to drain and stop
        assert model not in self.live_swaps(), "(f) protected request should have joined"
        if self.world[model] == "stopping" or model in self.swaps:
            return  # settling: its stop or abandoned swap will report
        decision = self.policy.decide(model, self.running())
        assert not (self.world[model] == "ready" and not decision.evict), "(f) should be served"
        evict = set(decision.evict)
        collides = any(
            s in evict or model in sw["decision"].evict or evict & set(sw["decision"].evict)
            for s, sw in self.live_swaps().items()
        )
        busy = any(self.world[v] == "stopping" or self.in_flight[v] for v in evict)
        assert collides or busy, "(f) protected request is not blocked by committed work"

    def teardown(self):
        if not self.ready_to_run:
            return
        for _ in range(10_000):
            serving = sorted(r for reqs in self.in_flight.values() for r in reqs)
            if self.swaps:
                self._finish_swap(sorted(self.swaps)[0], True)
            elif self.stop_calls:
                self._finish_stop(sorted(self.stop_calls)[0])
            elif serving:
                self._finish_serve(serving[0])
            elif self.s.queued() and self.s.holds():  # a policy holds victims: let time run out
                self.now = max(self.now, self.s.next_deadline())
                self.call(self.s.tick, self.now)
            else:
                break
        assert not self.pending, f"(b) requests without an outcome: {sorted(self.pending)}"
        assert all(n == 1 for n in self.outcomes.values())
        assert self.s.queued() == (), "(e) queue not empty at quiescence"
        assert dict(self.s.retiring()) == {}, "(h) a reload's drain never ended"
        for m in self.models:
            assert self.s.in_flight(m) == 0 and self.s.reserved(m) == 0, "(c)"


SchedulerMachine.TestCase.settings = SETTINGS
TestSchedulerInvariants = SchedulerMachine.TestCase


# The same invariants for every shipped scheduling policy: with its defaults, and (for `hold`)
# tuned to hold as often as the short random histories allow.
class _HoldsEverything(FifoPolicy):
    """Not shipped: holds every eviction 0.5-1.5 s (re-asked, it moves the deadline), so the
    hold machinery (deadlines, re-asks, release, bounded waiting over holds) runs all the time."""

    name = "holds-everything"

    def __init__(self) -> None:
        self.asked = 0

    def hold(self, scheduler, target, decision, now):
        self.asked += 1
        return now + (0.5, 1.5, 1.0)[self.asked % 3]


POLICIES: dict = {name: (name, {}) for name in BUILTIN if name != "fifo"}
POLICIES["hold-eager"] = ("hold", {"min_history": 1, "quantile": 1.0, "budget": 3.0, "load_time": 2.0})
POLICIES["holds-everything"] = _HoldsEverything
POLICIES["lookahead-eager"] = (
    "lookahead",
    {"margin": 1.0, "horizon": 5.0, "load_time": 1.0, "min_history": 1, "min_trials": 0, "trials": 2},
)
for _label, _spec in POLICIES.items():
    _machine = type(f"SchedulerMachine_{_label}", (SchedulerMachine,), {"scheduling": _spec})
    _machine.TestCase.settings = SETTINGS
    globals()[f"TestSchedulerInvariants_{_label.replace('-', '_')}"] = _machine.TestCase
