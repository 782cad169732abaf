"""The scheduler: llama-swap's FIFO decision tree as a sans-IO state machine.

Theory of operation
===================

The scheduler decides *when* things happen; the eviction policy decides *what* may run
together; the runtime does the work. The scheduler owns no clock, no task and no socket.
Every input is a method call that carries the current time; every output is a call on a
small `Effects` object. One owner (the runtime's scheduler task, or the simulator behind
`plan --trace`) feeds it events one at a time, so nothing here needs a lock. Effects must
not call back into the scheduler: they record, resolve a future, or post an event.

Inputs (facts the owner reports)       Outputs (`Effects`, imperatives)
  request(req_id, model, now)            start_swap(model, decision, stop_timeout)
  cancel(req_id, now)                    grant(req_id, model) -> bool
  serve_done(req_id, now)                reject(req_id, status, message, headers)
  swap_done(model, now, error)           queue_position(req_id, position)
  stop_done(models, now)                 stop_processes(models, reason, timeout)
  model_exited(model, now)               end_requests(req_ids, model, reason)
  unload(models, now, timeout)
  reconfigure(policy, settings, now, ...)
  close(now)
  shutdown(now, timeout)
  tick(now)

Model states. The scheduler keeps its own view of every model, changed only by its inputs
and its own effects (never by reading a process): the `_TRANSITIONS` table below. A model
being evicted is STOPPING from the moment the swap starts until that swap's `swap_done`; a
model stopped through `stop_processes` is STOPPING until `stop_done`. STOPPING counts as
running for every decision, so a slow stop can never be overbooked. Each STOPPING model has
exactly one owner (the evicting swap, or the stop call) whose completion makes it STOPPED.

Requests. Each request gets exactly one outcome: `grant` (True means the caller took it and
it is now in flight until `serve_done`; False means the caller had gone), `reject`, or the
owner's own `cancel` while it was still waiting. Between admission and its outcome a request
is either QUEUED (in the queue) or WAITING (a waiter of the swap for its model).

Decision tree (`request`, and again for every queued request on each drain):
  0. Shutting down -> 503. Unknown model -> 404. The model's reservations (queued + waiting +
     in flight) at its concurrency limit -> 429 with Retry-After: 1. All three happen inside
     `request()`, before it returns, so a caller knows before any loading stream starts.
  1. A swap for the model is in progress -> join it (one swap serves every waiter).
  2. The model is settling (STOPPING, or its old swap was abandoned by an unload and has not
     reported yet) -> queue; its `stop_done` / `swap_done` drains the queue.
  3. Ask the policy: decision = policy.decide(model, running), running = every model that is
     not STOPPED (which includes the targets of the swaps in progress), sorted.
  4. Fast path: the model is READY and nothing must be evicted -> grant now.
  5. Collision with a swap S in progress -> queue. A collision is: S's target is in our
     evict set; our model is in S's evict set; or the two evict sets overlap.
  6. An evicted model is STOPPING or has requests in flight -> queue until it drains.
  7. Otherwise start a swap (possibly in parallel with others that do not collide).
A new arrival is not checked against earlier queued requests (llama-swap does this on
purpose: it saves swaps), except against the one protected request of bounded waiting.

Draining walks the queue in order and reruns steps 1-7; entries still blocked keep their
order. It runs on swap_done, on serve_done when a model's in-flight count reaches 0, on
stop_done, model_exited, unload, and cancel of a queued request. The queue is ordered by
priority (higher first, arrival order among equals).

Bounded waiting (`max_wait`). Once a queued request has waited `max_wait` seconds, the oldest
such request becomes *protected*: it moves to the head of the queue and is tried first on
every drain. While it is protected, other requests may not add work that would keep it
waiting: no fast-path grant to a model it must evict, and no new swap unless that swap evicts
nothing and leaves the protected request's evict set no larger. Joining a swap in progress
is still allowed (its waiters are all granted when it ends, so joining adds no new end
time). Protection is re-evaluated at the start and end of every input, including `tick`, so
it starts exactly when `now >= arrived + max_wait`; `next_deadline()` says when that, or a
TTL, is due. See docs/scheduler.md for the guarantee and its limits.

Placement (resources, issue 17). When the eviction policy carries a `placer` (a plan with
`resources:`), every decision is asked of it instead, with the devices of each running model
(the *placed state*): it picks the combination, the device(s) for the target and any extra
eviction together (`compiler/placer.py`), and `decision.devices` says where the target goes.
The scheduler keeps each model's devices from the start of its swap until it is STOPPED, so
models that are STARTING or STOPPING count against their devices, and two swaps started in
parallel never share room: the second is placed beside the first. A scheduling policy that
chooses victims chooses first; the placer then only adds the evictions its device needs.

TTL. A READY model with no request queued, waiting or in flight, idle since `last_used +
ttl`, is stopped on `tick` (reason "ttl", its unload timeout). Never while requests use it.

Reconfigure (hot reload). `reconfigure` swaps in a new eviction policy and new settings.
Added models start STOPPED. Models that must go are *retiring*, each with one reason:
"restart" (its process spec changed), "evict" (the new policy does not allow what runs) or
"removed". A retiring model is granted nothing new (requests for it queue; for a removed
one they get 404) and is never cut mid-request: once it is idle (READY, nothing in flight,
no swap) it is stopped (`stop_processes`, reason "reload"); once STOPPED it is done: a
removed model is forgotten, a restarted one that the reload itself stopped is started again
(a swap with no waiters) if that evicts nothing. Added models are available at once: a
removed model still finishing its requests is outside the new policy, so it neither blocks
nor is evicted by a load.

The drain is bounded. Each retiring model gets a deadline when it starts retiring: the
reload's time plus `settings.reload_drain_timeout` (a later reload never moves it later).
At the first input at or after that deadline (`next_deadline()` names it, so the owner ticks
then) every request still in flight on it is ended through one `end_requests(ids, model,
"reload")`: the owner ends those responses and reports `serve_done` for each as usual (no
second outcome: a request ended this way was granted, and its serve_done is still due).
An unload or a shutdown that stops a model with requests in flight (llama-swap stops it
anyway) first ends them the same way, `end_requests(ids, model, "unload" | "shutdown")`, so
that each client hears why its response stops; a request is never ended twice.
Nothing is granted to a retiring model, so no request can start on it after its deadline;
once the last one is done it is stopped as above, and the queue goes to the new process. A reload that brings `resources:` while models run gives each of
them the devices the placer would start it on (`adopted`; `unplaced` when it fits nowhere
beside the others), so later placements count them. Requests still waiting are re-resolved:
`moves` names their new model (an alias that now points elsewhere) or None (gone: 404); the
waiters of a retiring model's swap go back to the queue, to be served by the new process.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from llamaswap.compiler.decision import Decision, EvictionPolicy

__all__ = [
    "DEFAULT_CONCURRENCY_LIMIT",
    "DEFAULT_MAX_WAIT",
    "DEFAULT_RELOAD_DRAIN_TIMEOUT",
    "DEFAULT_SWAP_STOP_TIMEOUT",
    "DEFAULT_UNLOAD_TIMEOUT",
    "Admission",
    "Effects",
    "ModelState",
    "ReqId",
    "Scheduler",
    "SchedulerError",
    "SchedulerSettings",
    "SchedulingPolicy",
    "FifoPolicy",
]

ReqId = Hashable

DEFAULT_CONCURRENCY_LIMIT = 10  # llama-swap: concurrencyLimit 0 -> 10
DEFAULT_MAX_WAIT = 60.0  # seconds; see docs/scheduler.md "Why 60 seconds"
DEFAULT_SWAP_STOP_TIMEOUT = 120.0  # llama-swap: healthCheckTimeout
DEFAULT_UNLOAD_TIMEOUT = 10.0  # llama-swap: unloadTimeout 0 -> 10
# llama-swap's reload shuts its old server down with a 30 s deadline (llama-swap.go).
DEFAULT_RELOAD_DRAIN_TIMEOUT = 30.0

NOT_FOUND_MESSAGE = "no local server found for requested model"
TOO_MANY_MESSAGE = "Too many requests"
RETRY_AFTER: Mapping[str, str] = MappingProxyType({"Retry-After": "1"})
NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class SchedulerError(RuntimeError):
    """The owner broke the input protocol (e.g. serve_done for a request not in flight)."""


class ModelState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


class Admission(enum.Enum):
    """What `request()` did, known before it returns."""

    REJECTED = "rejected"  # reject() was called
    GRANTED = "granted"  # grant() was called (its return value says if the caller took it)
    WAITING = "waiting"  # joined or started a swap for the model
    QUEUED = "queued"  # queue_position() was called


_S = ModelState

# (state, what happened) -> new state. Anything else is a protocol error.
_TRANSITIONS: Mapping[tuple[ModelState, str], ModelState] = MappingProxyType(
    {
        (_S.STOPPED, "swap_started"): _S.STARTING,
        # Groups can ask a READY target to evict others (the non-exclusive gotcha);
        # the target keeps running during that swap.
        (_S.READY, "swap_started"): _S.READY,
        (_S.STARTING, "swap_succeeded"): _S.READY,
        (_S.READY, "swap_succeeded"): _S.READY,
        (_S.STOPPED, "swap_succeeded"): _S.READY,  # a READY target crashed mid-swap, restarted
        (_S.STARTING, "swap_failed"): _S.STOPPED,
        (_S.READY, "swap_failed"): _S.READY,
        (_S.STOPPED, "swap_failed"): _S.STOPPED,
        (_S.READY, "evicted"): _S.STOPPING,
        (_S.STARTING, "stop_requested"): _S.STOPPING,  # aborts the start
        (_S.READY, "stop_requested"): _S.STOPPING,
        (_S.STOPPING, "stopped"): _S.STOPPED,
        (_S.READY, "exited"): _S.STOPPED,
    }
)


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """Per-model knobs, plain values built from the compiled config.

    Mappings are keyed by real model ID; a missing key means the default.
    """

    models: tuple[str, ...]
    concurrency_limit: Mapping[str, int] = field(default_factory=dict)  # <= 0 -> 10
    priority: Mapping[str, int] = field(default_factory=dict)  # fifo.priority, default 0
    ttl: Mapping[str, float] = field(default_factory=dict)  # seconds; 0 -> never
    unload_timeout: Mapping[str, float] = field(default_factory=dict)  # <= 0 -> default
    max_wait: float | None = DEFAULT_MAX_WAIT  # None: off (llama-swap's behaviour)
    swap_stop_timeout: float = DEFAULT_SWAP_STOP_TIMEOUT  # graceful stop of evicted models
    default_unload_timeout: float = DEFAULT_UNLOAD_TIMEOUT  # TTL/API unloads
    # Seconds a reload lets requests in flight on a retiring model finish; 0: end them now.
    reload_drain_timeout: float = DEFAULT_RELOAD_DRAIN_TIMEOUT

    def __post_init__(self) -> None:
        models = tuple(self.models)
        if len(set(models)) != len(models):
            raise ValueError("SchedulerSettings.models has duplicates")
        known = set(models)
        for name in ("concurrency_limit", "priority", "ttl", "unload_timeout"):
            table = dict(getattr(self, name))
            unknown = sorted(set(table) - known)
            if unknown:
                raise ValueError(f"SchedulerSettings.{name} names unknown models: {unknown}")
            if name == "ttl" and any(v < 0 for v in table.values()):
                raise ValueError("SchedulerSettings.ttl must be >= 0")
            object.__setattr__(self, name, MappingProxyType(table))
        if self.max_wait is not None and self.max_wait < 0:
            raise ValueError("SchedulerSettings.max_wait must be >= 0 or None")
        if not self.reload_drain_timeout >= 0:
            raise ValueError("SchedulerSettings.reload_drain_timeout must be >= 0")
        object.__setattr__(self, "models", models)

    def limit(self, model: str) -> int:
        value = self.concurrency_limit.get(model, 0)
        return value if value > 0 else DEFAULT_CONCURRENCY_LIMIT

    def priority_of(self, model: str) -> int:
        return self.priority.get(model, 0)

    def ttl_of(self, model: str) -> float:
        return self.ttl.get(model, 0)

    def unload_timeout_of(self, model: str) -> float:
        value = self.unload_timeout.get(model, 0)
        return value if value > 0 else self.default_unload_timeout


class Effects(Protocol):
    """Everything the scheduler can do to the world. Calls must return promptly and must not
    re-enter the scheduler."""

    def start_swap(self, model: str, decision: Decision, stop_timeout: float) -> None:
        """Stop `decision.evict` (graceful `stop_timeout`), then make `model` ready, then
        report `swap_done(model, now, error)` exactly once, even if the model is unloaded or
        everybody leaves meanwhile. `decision` is the committed one: log or record it here."""

    def grant(self, req_id: ReqId, model: str) -> bool:
        """Hand the request to `model`. True: the caller took it (report `serve_done` when the
        response is finished). False: the caller had gone (no `serve_done` will follow)."""

    def reject(self, req_id: ReqId, status: int, message: str, headers: Mapping[str, str]) -> None:
        """Fail the request with an HTTP status, a message and extra headers."""

    def queue_position(self, req_id: ReqId, position: int) -> None:
        """The queued request's 1-based position changed (latest value wins)."""

    def stop_processes(self, models: tuple[str, ...], reason: str, timeout: float) -> None:
        """Stop these models (asynchronously), graceful `timeout` each, and report
        `stop_done` for each once stopped. `reason`: "ttl", "unload" or "shutdown". Several
        calls from one `unload` come smallest timeout first; run them in that order."""

    def end_requests(self, req_ids: tuple[ReqId, ...], model: str, reason: str) -> None:
        """End these in-flight requests on `model` now, as cleanly as the client's protocol
        allows, and say why (`reason`): "reload" (a reload's drain ran out), "unload" or
        "shutdown" (the model is stopped next, by the stop_processes that follows). Each
        still reports `serve_done` once its response is over; no request is named twice."""


class SchedulingPolicy(Protocol):
    """The scheduler's choices, as one small object (see docs/policies.md).

    The decision tree is fixed; a scheduling policy answers the questions in it that have
    more than one safe answer, and learns from what the scheduler saw. It is sans-IO like the
    scheduler: every method gets the current time, none may block, sleep or call back into
    the scheduler (it may read it through its public queries). `FifoPolicy` is llama-swap's
    behaviour, and a convenient base class: it answers every question the FIFO way.

    - `choose(eviction, decision, now) -> Decision`: which victims. `decision` is the eviction
      policy's answer for (target, running); return it, or another decision for the same
      target and running that the eviction policy allows. Only asked when `chooses_victims`
      is True (FIFO: never).
    - `hold(scheduler, target, decision, now) -> float | None`: a swap for `target` that
      evicts `decision.evict` (all idle) could start now. Return a time > now to keep the
      victims a little longer: the requests for `target` stay queued until then, and the
      victims keep serving (their requests take the fast path). While a hold lasts the
      scheduler asks again whenever it retries the target (the new answer replaces the
      deadline; None releases); once a hold ends, the target is not held again until its
      swap has started or its queue has emptied. Never asked for the request bounded
      waiting protects, so `max_wait` bounds every hold. None (FIFO) starts the swap now.
    - `on_request(model, now)`, `on_swap_started(decision, now)`,
      `on_swap_done(model, started, now, ok)`, `on_serve_done(model, now)`: what happened,
      for policies that learn (arrival patterns, load times).
    """

    name: str
    chooses_victims: bool

    def choose(self, eviction: EvictionPolicy, decision: Decision, now: float) -> Decision: ...

    def hold(self, scheduler: Scheduler, target: str, decision: Decision, now: float) -> float | None: ...

    def on_request(self, model: str, now: float) -> None: ...

    def on_swap_started(self, decision: Decision, now: float) -> None: ...

    def on_swap_done(self, model: str, started: float, now: float, ok: bool) -> None: ...

    def on_serve_done(self, model: str, now: float) -> None: ...


class FifoPolicy:
    """llama-swap's FIFO choices: the eviction policy's victims, swaps start as soon as they
    can, nothing to learn. The default, and a base class for other policies."""

    name = "fifo"
    chooses_victims = False

    def choose(self, eviction: EvictionPolicy, decision: Decision, now: float) -> Decision:
        return decision

    def hold(self, scheduler: Scheduler, target: str, decision: Decision, now: float) -> float | None:
        return None

    def on_request(self, model: str, now: float) -> None:
        pass

    def on_swap_started(self, decision: Decision, now: float) -> None:
        pass

    def on_swap_done(self, model: str, started: float, now: float, ok: bool) -> None:
        pass

    def on_serve_done(self, model: str, now: float) -> None:
        pass


class _Phase(enum.Enum):
    QUEUED = "queued"
    WAITING = "waiting"
    SERVING = "serving"


@dataclass(slots=True, eq=False)
class _Request:
    id: ReqId
    model: str
    arrived: float
    seq: int
    priority: int
    phase: _Phase = _Phase.QUEUED
    ended: bool = False  # named by an end_requests (still SERVING until its serve_done)


@dataclass(slots=True, eq=False)
class _Swap:
    decision: Decision
    waiters: list[_Request]
    started: float = 0.0
    evict: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.evict = frozenset(self.decision.evict)

    @property
    def model(self) -> str:
        return self.decision.target


_STOP_CALL = "stop_processes"  # owner tag of a model stopped through stop_processes


def _per_model(settings: SchedulerSettings) -> tuple[dict[str, int], dict[str, int]]:
    """Each model's concurrency limit and priority, as plain dicts (the request path's reads)."""
    return (
        {m: settings.limit(m) for m in settings.models},
        {m: settings.priority_of(m) for m in settings.models},
    )


class Scheduler:
    """llama-swap's FIFO scheduler plus bounded waiting, driven by method calls."""

    def __init__(
        self,
        policy: EvictionPolicy,
        settings: SchedulerSettings,
        effects: Effects,
        *,
        scheduling: SchedulingPolicy | None = None,
    ) -> None:
        self._policy = policy
        self._placer = getattr(policy, "placer", None)
        # Devices of every model that is not STOPPED and was placed (resources only).
        self._devices: dict[str, tuple[str, ...]] = {}
        self._scheduling: SchedulingPolicy = FifoPolicy() if scheduling is None else scheduling
        self._chooses = bool(getattr(self._scheduling, "chooses_victims", False))
        # False for the plain FifoPolicy, whose on_request / on_serve_done do nothing: the
        # request path then skips those two calls.
        self._learns = type(self._scheduling) is not FifoPolicy
        self._settings = settings
        # settings.limit / priority_of per model, read on every request.
        self._limits, self._priorities = _per_model(settings)
        self._effects = effects
        self._name = getattr(policy, "engine", "scheduler")
        self._models = settings.models
        # The models with a TTL (tick and next_deadline look only at these).
        self._ttl_models = tuple(m for m in self._models if settings.ttl_of(m) > 0)
        self._state: dict[str, ModelState] = {m: ModelState.STOPPED for m in self._models}
        # _running()'s answer until a model's state (or the removed set) changes.
        self._running_memo: tuple[str, ...] | None = None
        # Who will report a STOPPING model stopped: the evicting _Swap, or _STOP_CALL.
        self._stopper: dict[str, object] = {}
        self._in_flight: dict[str, int] = {m: 0 for m in self._models}
        self._reserved: dict[str, int] = {m: 0 for m in self._models}
        self._last_used: dict[str, float] = {}
        self._requests: dict[ReqId, _Request] = {}
        self._queue: list[_Request] = []
        self._positions: dict[ReqId, int] = {}
        self._active: dict[str, _Swap] = {}  # live swaps, by target, in start order
        self._detached: dict[str, _Swap] = {}  # unloaded mid-swap, swap_done still due
        self._protected: _Request | None = None
        self._shutting_down = False
        self._closed = False  # close(): no admission, in-flight requests go on
        self._seq = 0
        # Holds (SchedulingPolicy.hold): target -> until when its swap waits; targets whose
        # hold ran out (asked once per target until its swap starts or its queue empties).
        self._holds: dict[str, float] = {}
        self._held: set[str] = set()
        # Hot reload: model -> why it must go ("restart", "evict", "removed"); the removed
        # ones (unknown to the policy); the ones whose stop the reload itself issued.
        self._retiring: dict[str, str] = {}
        self._gone: set[str] = set()
        # The last reconfigure's placement of models that ran unplaced (see "Reconfigure").
        self.adopted: dict[str, tuple[str, ...]] = {}
        self.unplaced: dict[str, str] = {}
        self._reload_stopped: set[str] = set()
        # Bounded drain: each retiring model's deadline, and the ones whose requests in
        # flight were ended at it.
        self._drain_until: dict[str, float] = {}
        self._drain_ended: set[str] = set()

    # ------------------------------------------------------------------ inputs

    def request(self, req_id: ReqId, model: str, now: float) -> Admission:
        """A request for `model` (a real model ID) arrived."""
        if req_id in self._requests:
            raise SchedulerError(f"request id {req_id!r} is already in use")
        if self._shutting_down or self._closed:
            self._effects.reject(req_id, 503, self._shutdown_message(), NO_HEADERS)
            return Admission.REJECTED
        self._refresh_protection(now)
        if model not in self._state or model in self._gone:
            self._effects.reject(req_id, 404, NOT_FOUND_MESSAGE, NO_HEADERS)
            outcome = Admission.REJECTED
        elif self._reserved[model] >= (self._limits.get(model) or self._settings.limit(model)):
            self._effects.reject(req_id, 429, TOO_MANY_MESSAGE, RETRY_AFTER)
            outcome = Admission.REJECTED
        else:
            if self._learns:
                self._scheduling.on_request(model, now)
            req = _Request(req_id, model, now, self._seq, self._priorities.get(model, 0))
            self._seq += 1
            self._requests[req_id] = req
            self._reserved[model] += 1
            if self._attempt(req, now):
                outcome = Admission.WAITING if req.phase is _Phase.WAITING else Admission.GRANTED
            else:
                self._enqueue(req)
                outcome = Admission.QUEUED
        self._finish(now)
        return outcome

    def cancel(self, req_id: ReqId, now: float) -> bool:
        """The client left before its grant. Prunes it from the queue or its swap's waiters
        (the swap goes on) and releases its reservation. True if it was still waiting; a
        no-op (False) once it was granted, rejected, or never known."""
        self._refresh_protection(now)
        req = self._requests.get(req_id)
        if req is None or req.phase is _Phase.SERVING:
            self._finish(now)
            return False
        self._forget(req)
        if req.phase is _Phase.QUEUED:
            self._queue.remove(req)
            if req is self._protected:
                self._protected = None
            self._drain(now)
        else:
            self._active[req.model].waiters.remove(req)
        self._finish(now)
        return True

    def serve_done(self, req_id: ReqId, now: float) -> None:
        """A granted request finished (successfully or not)."""
        req = self._requests.get(req_id)
        if req is None or req.phase is not _Phase.SERVING:
            raise SchedulerError(f"serve_done for {req_id!r}, which is not in flight")
        self._refresh_protection(now)
        self._forget(req)
        model = req.model
        self._in_flight[model] -= 1
        self._last_used[model] = now
        if self._learns:
            self._scheduling.on_serve_done(model, now)
        if self._in_flight[model] == 0:
            self._drain(now)
        self._finish(now)

    def swap_done(self, model: str, now: float, error: str | None = None) -> None:
        """The swap started for `model` has finished: its evicted models are stopped and the
        model is ready, or `error` says why it is not."""
        self._refresh_protection(now)
        swap = self._active.pop(model, None)
        live = swap is not None
        if swap is None:
            # Abandoned by unload/shutdown: only its evictions are news; the target's own
            # stop is reported by stop_done.
            swap = self._detached.pop(model, None)
            if swap is None:
                raise SchedulerError(f"swap_done for {model!r}, which has no swap in progress")
        self._settle_evicted(swap)
        if live:
            self._scheduling.on_swap_done(model, swap.started, now, error is None)
        if live and error is None:
            self._transition(model, "swap_succeeded")
            self._last_used[model] = now
            for req in swap.waiters:
                self._grant(req, now)
        elif live:
            self._transition(model, "swap_failed")
            message = f"unspecific error: {error}"
            for req in swap.waiters:
                self._reject(req, 500, message)
        self._drain(now)
        self._finish(now)

    def stop_done(self, models: Iterable[str], now: float) -> None:
        """Models passed to stop_processes have stopped."""
        self._refresh_protection(now)
        for model in models:
            if self._stopper.get(model) != _STOP_CALL:
                raise SchedulerError(f"stop_done for {model!r}, which was not being stopped")
            del self._stopper[model]
            self._transition(model, "stopped")
        self._drain(now)
        self._finish(now)

    def model_exited(self, model: str, now: float) -> None:
        """A READY model's process died on its own. Requests in flight on it still report
        serve_done. Ignored in any other state: a start reports through swap_done and a stop
        through stop_done/swap_done."""
        self._refresh_protection(now)
        if self._state.get(model) is ModelState.READY:
            self._transition(model, "exited")
            self._drain(now)
        self._finish(now)

    def unload(self, models: Iterable[str] | None, now: float, timeout: float | None = None) -> None:
        """Unload `models` (None: all). Waiters of their swaps and their queued requests get
        500 `<engine>: model unloaded`; their requests in flight are ended (`end_requests`,
        "unload"); the models are stopped (`timeout` if > 0, else each model's unload
        timeout, smallest first); then the queue drains."""
        if self._shutting_down:
            return
        self._refresh_protection(now)
        if models is None:
            targets = list(self._models)
        else:
            targets = [m for m in dict.fromkeys(models) if m in self._state]
        chosen = set(targets)
        message = f"unspecific error: {self._name}: model unloaded"
        for model in targets:
            swap = self._active.pop(model, None)
            if swap is not None:
                for req in swap.waiters:
                    self._reject(req, 500, message)
                swap.waiters.clear()
                self._detached[model] = swap
        for req in [r for r in self._queue if r.model in chosen]:
            self._queue.remove(req)
            if req is self._protected:
                self._protected = None
            self._reject(req, 500, message)
        to_stop = self._mark_stopping(targets)
        for model in to_stop:  # llama-swap cuts them off; the client is told why
            self._end_serving(model, "unload")
        if timeout is not None and timeout > 0:
            if to_stop:
                self._effects.stop_processes(tuple(to_stop), "unload", timeout)
        else:
            buckets: dict[float, list[str]] = {}
            for model in to_stop:
                buckets.setdefault(self._settings.unload_timeout_of(model), []).append(model)
            for bucket_timeout in sorted(buckets):
                self._effects.stop_processes(tuple(buckets[bucket_timeout]), "unload", bucket_timeout)
        self._drain(now)
        self._finish(now)

    def reconfigure(
        self,
        policy: EvictionPolicy,
        settings: SchedulerSettings,
        now: float,
        *,
        restart: Iterable[str] = (),
        evict: Iterable[str] = (),
        moves: Mapping[ReqId, str | None] | None = None,
        scheduling: SchedulingPolicy | None = None,
    ) -> None:
        """A hot reload: from now on decide with `policy` and `settings` (and `scheduling`,
        when the scheduling policy changed; None keeps the current one and what it learnt).
        `restart`: models whose process must be restarted once idle; `evict`: running models
        to stop once idle (the new policy does not allow them together); models missing from
        `settings` are removed once idle. `moves`: waiting requests whose model is now
        another one (None: none, 404). See "Reconfigure" above."""
        if self._shutting_down:
            return
        self._refresh_protection(now)
        known = set(settings.models)
        strength = {"restart": 1, "evict": 2, "removed": 3}

        def retire(model: str, reason: str) -> None:
            current = self._retiring.get(model)
            if current is None or strength[reason] > strength[current]:
                self._retiring[model] = reason

        self._running_memo = None
        for model in settings.models:
            if model not in self._state:
                self._state[model] = ModelState.STOPPED
                self._in_flight[model] = 0
                self._reserved[model] = 0
            elif model in self._gone:  # removed by an earlier reload, back before it stopped
                self._gone.discard(model)
                self._retiring[model] = "restart"
        for model in list(self._state):
            if model not in known:
                self._gone.add(model)
                retire(model, "removed")
        for model in restart:
            if model in known and self._state[model] is not ModelState.STOPPED:
                retire(model, "restart")
        for model in evict:
            if model in known and self._state[model] is not ModelState.STOPPED:
                retire(model, "evict")
        until = now + settings.reload_drain_timeout
        for model in self._retiring:
            if until < self._drain_until.get(model, until + 1):
                self._drain_until[model] = until  # never later than an earlier reload's
        self._policy = policy
        self._placer = getattr(policy, "placer", None)  # running models keep their devices
        self._settings = settings
        self._limits, self._priorities = _per_model(settings)
        self._name = getattr(policy, "engine", "scheduler")
        self._models = tuple(settings.models) + tuple(sorted(self._gone))
        self._ttl_models = tuple(m for m in self._models if settings.ttl_of(m) > 0)
        self._running_memo = None  # the removed set changed
        self._place_unplaced()
        if scheduling is not None:
            self._scheduling = scheduling
            self._chooses = bool(getattr(scheduling, "chooses_victims", False))
            self._learns = type(scheduling) is not FifoPolicy
            self._holds.clear()
            self._held.clear()
        for model in self._gone:
            self._holds.pop(model, None)
            self._held.discard(model)
        # Re-resolve what is still waiting.
        moves = dict(moves or {})
        for req in list(self._requests.values()):
            if req.phase is _Phase.SERVING:
                continue
            if req.id in moves:
                target = moves[req.id]
            elif req.model in self._gone:
                target = None
            elif req.model in self._retiring:
                target = req.model  # back to the queue: the new process serves it
            else:
                continue
            self._unwait(req)
            if target is None or target not in known:
                self._reject(req, 404, NOT_FOUND_MESSAGE)
                continue
            if target != req.model:
                self._reserved[req.model] -= 1
                self._reserved[target] += 1
                req.model = target
                req.priority = self._settings.priority_of(target)
            self._enqueue(req)
        # Requests back in the queue may be older than the protected one: choose again.
        self._protected = None
        self._drain(now)
        self._finish(now)

    def _place_unplaced(self) -> None:
        """Models running without devices under a policy that places (a reload brought
        `resources:`) get devices now, so the placer counts them: one after another in
        definition order, each where the placer would start it beside those placed so far,
        if that evicts nothing. Their processes keep running as they were started (nothing
        told them their devices; their next start is placed as usual). A model that fits
        nowhere beside the others, or that the reload evicts, stays unplaced (`unplaced`
        says why) until it stops."""
        self.adopted, self.unplaced = {}, {}
        placer = self._placer
        if placer is None:
            return
        needs = placer.res.needs
        running = [
            m
            for m in self._settings.models
            if self._state.get(m, ModelState.STOPPED) is not ModelState.STOPPED
        ]
        counted = [m for m in running if m in self._devices or m not in needs]
        for model in running:
            if model in counted:
                continue
            if self._retiring.get(model) == "evict":
                self.unplaced[model] = "the reload stops it (the new config does not allow what runs)"
                continue
            state = tuple(sorted((m, self._devices.get(m, ())) for m in counted))
            decision = placer.decide(model, state)
            if decision.evict or decision.devices is None:
                beside = ", ".join(m for m, _ in state) or "nothing"
                self.unplaced[model] = f"it does not fit beside {beside} on any device"
                continue
            self._devices[model] = decision.devices
            self.adopted[model] = decision.devices
            counted.append(model)

    def close(self, now: float) -> None:
        """The first half of a graceful shutdown: everyone waiting (queued, or waiting on a
        swap), and every later request, gets 503 `<engine> is shutting down`. Requests in
        flight go on, models keep running, and a swap in progress finishes (with nobody
        left to grant); `shutdown` stops them."""
        if self._closed or self._shutting_down:
            return
        self._closed = True
        message = self._shutdown_message()
        for swap in self._active.values():
            for req in swap.waiters:
                self._reject(req, 503, message)
            swap.waiters.clear()
        for req in self._queue:
            self._reject(req, 503, message)
        self._queue.clear()
        self._protected = None
        self._positions.clear()
        self._finish(now)

    def shutdown(self, now: float, timeout: float | None = None) -> None:
        """Everyone waiting, and every later request, gets 503 `<engine> is shutting down`;
        what is still in flight is ended (`end_requests`, "shutdown"); every model is stopped
        (`timeout` if > 0, else the swap stop timeout)."""
        if self._shutting_down:
            return
        self._shutting_down = True
        message = self._shutdown_message()
        for model, swap in list(self._active.items()):
            for req in swap.waiters:
                self._reject(req, 503, message)
            swap.waiters.clear()
            self._detached[model] = swap
        self._active.clear()
        for req in self._queue:
            self._reject(req, 503, message)
        self._queue.clear()
        self._protected = None
        self._positions.clear()
        self._holds.clear()
        self._held.clear()
        to_stop = self._mark_stopping(self._models)
        for model in to_stop:  # the drain (if any) ran out before they finished
            self._end_serving(model, "shutdown")
        if to_stop:
            stop_timeout = (
                timeout if timeout is not None and timeout > 0 else self._settings.swap_stop_timeout
            )
            self._effects.stop_processes(tuple(to_stop), "shutdown", stop_timeout)

    def tick(self, now: float) -> None:
        """Time passed: start protecting a request that has waited max_wait, and stop
        models whose TTL ran out. Call it at `next_deadline()` (calling more often is fine)."""
        if self._shutting_down:
            return
        self._refresh_protection(now)
        for model in self._ttl_models:
            ttl = self._settings.ttl_of(model)
            if ttl > 0 and self._idle(model) and now >= self._last_used[model] + ttl:
                self._mark_stopping([model])
                self._effects.stop_processes((model,), "ttl", self._settings.unload_timeout_of(model))
        expired = [m for m, until in self._holds.items() if until <= now]
        if expired:
            for model in expired:
                del self._holds[model]
                self._held.add(model)
            self._drain(now)
        self._finish(now)

    # ----------------------------------------------------------------- queries

    def next_deadline(self) -> float | None:
        """The earliest time at which `tick` has work (a TTL runs out, or the oldest queued
        request reaches max_wait), or None."""
        if self._shutting_down:
            return None
        if (
            not self._ttl_models
            and not self._holds
            and not self._drain_until
            and (self._protected is not None or not self._queue)
        ):
            return None  # the common case: no TTL, no hold, nothing queued, no drain
        deadlines = []
        for model in self._ttl_models:
            ttl = self._settings.ttl_of(model)
            if ttl > 0 and self._idle(model):
                deadlines.append(self._last_used[model] + ttl)
        max_wait = self._settings.max_wait
        if max_wait is not None and self._protected is None and self._queue:
            deadlines.append(min(r.arrived for r in self._queue) + max_wait)
        deadlines.extend(self._holds.values())
        deadlines.extend(self._pending_drains().values())
        return min(deadlines, default=None)

    def state(self, model: str) -> ModelState:
        return self._state[model]

    def in_flight(self, model: str) -> int:
        return self._in_flight[model]

    def devices(self, model: str) -> tuple[str, ...] | None:
        """The devices `model` occupies while it is not STOPPED (resources only), else None."""
        return self._devices.get(model)

    def reserved(self, model: str) -> int:
        """Admitted requests for `model` that are queued, waiting on a swap or in flight."""
        return self._reserved[model]

    def queued(self) -> tuple[ReqId, ...]:
        return tuple(r.id for r in self._queue)

    def waiting(self, model: str) -> tuple[ReqId, ...]:
        """Waiters of the swap in progress for `model` (empty when there is none)."""
        swap = self._active.get(model)
        return () if swap is None else tuple(r.id for r in swap.waiters)

    def retiring(self) -> Mapping[str, str]:
        """Models a reload retires, and why ("restart", "evict", "removed")."""
        return MappingProxyType(dict(self._retiring))

    def draining(self) -> Mapping[str, float]:
        """Retiring models with requests in flight, and when their drain ends (the same clock
        as `now`); after that, whatever is still in flight on them is being ended."""
        return MappingProxyType({m: d for m, d in self._drain_until.items() if self._in_flight.get(m, 0) > 0})

    def knows(self, model: str) -> bool:
        """True while the scheduler tracks `model` (a removed one until it has stopped)."""
        return model in self._state

    def swaps(self) -> tuple[str, ...]:
        """Targets of the swaps in progress, in start order."""
        return tuple(self._active)

    def holds(self) -> Mapping[str, float]:
        """Targets whose swap the scheduling policy holds back, and until when."""
        return MappingProxyType(dict(self._holds))

    @property
    def scheduling(self) -> SchedulingPolicy:
        return self._scheduling

    @property
    def protected(self) -> ReqId | None:
        """The request bounded waiting currently protects (see max_wait)."""
        return None if self._protected is None else self._protected.id

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def closed(self) -> bool:
        """Whether `close` or `shutdown` has been called (nothing is admitted)."""
        return self._closed or self._shutting_down

    def in_flight_total(self) -> int:
        return sum(self._in_flight.values())

    # ------------------------------------------------------------- decisions

    def _attempt(self, req: _Request, now: float) -> bool:
        """Run the decision tree for a pending request. True when it left the queue (granted,
        or waiting on a swap); False when it must stay queued."""
        model = req.model
        swap = self._active.get(model)
        if swap is not None and model not in self._retiring:  # not the old process of a reload
            swap.waiters.append(req)
            req.phase = _Phase.WAITING
            return True
        if self._settling(model):
            return False
        running = self._running()
        decision = self._decide(model, running, now)
        evict = decision.evict
        guard = self._protected if self._protected is not req else None
        # A READY model can't be in a live swap's evict set (those are STOPPING), so
        # llama-swap's "nobody is evicting us" check is implied here.
        if self._state[model] is ModelState.READY and not evict:
            if guard is not None and model in self._victims(guard, running, now):
                return False
            self._grant(req, now)
            return True
        if self._blocked(model, evict):
            return False
        if guard is not None and self._interferes(model, evict, running, guard, now):
            return False
        if evict and req is not self._protected and self._holding(model, decision, now):
            return False
        self._start_swap(req, decision, now)
        return True

    def _decide(self, model: str, running: tuple[str, ...], now: float) -> Decision:
        placer = self._placer
        if placer is not None and not self._chooses:
            return placer.decide(model, self._placed(running))
        decision = self._policy.decide(model, running)
        if self._chooses:
            decision = self._scheduling.choose(self._policy, decision, now)
            if placer is not None:
                decision = placer.place(decision, self._placed(running))
        return decision

    def _evict_for(self, model: str, running: tuple[str, ...], now: float) -> tuple[str, ...]:
        if self._chooses or self._placer is not None:
            return self._decide(model, running, now).evict
        return self._policy.evict_for(model, running)

    def _placed(self, running: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The running models with their devices, the placer's key."""
        devices = self._devices
        return tuple((m, devices.get(m, ())) for m in running)

    def _holding(self, model: str, decision: Decision, now: float) -> bool:
        """Does the scheduling policy keep this swap's (idle) victims a little longer?"""
        if model in self._held:
            return False
        until = self._holds.get(model)
        if until is not None and now >= until:
            answer = None
        else:
            answer = self._scheduling.hold(self, model, decision, now)
        if answer is None or not answer > now:
            if until is not None:
                del self._holds[model]
                self._held.add(model)
            return False
        self._holds[model] = answer
        return True

    def _blocked(self, model: str, evict: tuple[str, ...]) -> bool:
        # The overlap rule is implied by the STOPPING check below (a live swap's victims are
        # STOPPING until it ends); it stays to mirror llama-swap's three collision rules.
        for swap in self._active.values():
            if swap.model in evict or model in swap.evict or not swap.evict.isdisjoint(evict):
                return True
        return any(self._state[m] is ModelState.STOPPING or self._in_flight[m] > 0 for m in evict)

    def _victims(self, guard: _Request, running: tuple[str, ...], now: float) -> frozenset[str]:
        return frozenset(self._evict_for(guard.model, running, now))

    def _interferes(
        self,
        model: str,
        evict: tuple[str, ...],
        running: tuple[str, ...],
        guard: _Request,
        now: float,
    ) -> bool:
        """Would starting a swap for `model` keep the protected request waiting longer?"""
        if evict:
            # Even a disjoint eviction changes `running`, and a min-cost policy may then
            # pick a different combination for the protected request.
            return True
        after = self._evict_for(guard.model, tuple(sorted({*running, model})), now)
        return model in after or not self._victims(guard, running, now).issuperset(after)

    def _running(self) -> tuple[str, ...]:
        memo = self._running_memo
        if memo is not None:
            return memo
        if self._gone:  # removed models are unknown to the policy
            gone = self._gone
            memo = tuple(
                sorted(m for m, s in self._state.items() if s is not ModelState.STOPPED and m not in gone)
            )
        else:
            memo = tuple(sorted(m for m, s in self._state.items() if s is not ModelState.STOPPED))
        self._running_memo = memo
        return memo

    def _settling(self, model: str) -> bool:
        return self._state[model] is ModelState.STOPPING or model in self._detached or model in self._retiring

    def _idle(self, model: str) -> bool:
        return (
            self._state[model] is ModelState.READY
            and self._reserved[model] == 0
            and model not in self._active
        )

    # --------------------------------------------------------------- actions

    def _start_swap(self, req: _Request, decision: Decision, now: float) -> None:
        swap = _Swap(decision, [req], now)
        self._active[decision.target] = swap
        self._holds.pop(decision.target, None)
        self._held.discard(decision.target)
        req.phase = _Phase.WAITING
        for victim in decision.evict:
            self._transition(victim, "evicted")
            self._stopper[victim] = swap
        self._transition(decision.target, "swap_started")
        if decision.devices is not None:
            self._devices[decision.target] = decision.devices
        self._effects.start_swap(decision.target, decision, self._settings.swap_stop_timeout)
        self._scheduling.on_swap_started(decision, now)

    def _unwait(self, req: _Request) -> None:
        """Take a waiting request out of the queue or its swap's waiters."""
        if req.phase is _Phase.QUEUED:
            self._queue.remove(req)
            if req is self._protected:
                self._protected = None
        elif req.phase is _Phase.WAITING:
            self._active[req.model].waiters.remove(req)

    def _advance_retiring(self) -> tuple[bool, list[str]]:
        """Stop the retiring models that are idle; finish the ones that have stopped. Returns
        whether one finished (the queue may now move) and the ones to start again."""
        finished = False
        restarts: list[str] = []
        for model, reason in list(self._retiring.items()):
            state = self._state[model]
            if state is ModelState.READY and self._in_flight[model] == 0 and model not in self._active:
                self._mark_stopping([model])
                self._reload_stopped.add(model)
                self._effects.stop_processes((model,), "reload", self._settings.unload_timeout_of(model))
            elif (
                state is ModelState.STOPPED
                and model not in self._active
                and model not in self._detached
                and (reason != "removed" or self._reserved[model] == 0)
            ):
                del self._retiring[model]
                self._drain_until.pop(model, None)
                self._drain_ended.discard(model)
                if reason == "restart" and model in self._reload_stopped:
                    restarts.append(model)
                self._reload_stopped.discard(model)
                if reason == "removed":
                    self._running_memo = None
                    self._gone.discard(model)
                    for table in (self._state, self._in_flight, self._reserved, self._last_used):
                        table.pop(model, None)
                    self._models = tuple(m for m in self._models if m != model)
                    self._ttl_models = tuple(m for m in self._ttl_models if m != model)
                finished = True
        return finished, restarts

    def _pending_drains(self) -> dict[str, float]:
        """Deadlines of the drains that still have requests in flight to end."""
        return {
            m: d
            for m, d in self._drain_until.items()
            if m not in self._drain_ended and self._in_flight.get(m, 0) > 0
        }

    def _end_overdue(self, now: float) -> None:
        """End the requests still in flight on retiring models whose drain ran out."""
        for model, until in self._pending_drains().items():
            if now >= until:
                self._drain_ended.add(model)
                self._end_serving(model, "reload")

    def _end_serving(self, model: str, reason: str) -> None:
        """End the requests in flight on `model` that no earlier end_requests named (one
        call, none when there are none)."""
        ids = []
        for r in self._requests.values():
            if r.model == model and r.phase is _Phase.SERVING and not r.ended:
                r.ended = True
                ids.append(r.id)
        if ids:
            self._effects.end_requests(tuple(ids), model, reason)

    def _restart(self, model: str, now: float) -> None:
        """Start a reload-restarted model again when that evicts nothing (else it waits for
        its next request)."""
        if self._shutting_down or model in self._active or self._protected is not None:
            return
        decision = self._decide(model, self._running(), now)
        if decision.evict or self._blocked(model, ()):
            return
        self._active[model] = _Swap(decision, [], now)
        self._transition(model, "swap_started")
        if decision.devices is not None:
            self._devices[model] = decision.devices
        self._scheduling.on_swap_started(decision, now)
        self._effects.start_swap(model, decision, self._settings.swap_stop_timeout)

    def _settle_evicted(self, swap: _Swap) -> None:
        for victim in swap.decision.evict:
            if self._stopper.get(victim) is not swap:
                raise SchedulerError(f"{victim!r} was not being stopped by the swap for {swap.model!r}")
            del self._stopper[victim]
            self._transition(victim, "stopped")

    def _mark_stopping(self, models: Iterable[str]) -> list[str]:
        """Mark the STARTING/READY ones among `models` as stopping by stop_processes."""
        chosen = []
        for model in models:
            if self._state[model] in (ModelState.STARTING, ModelState.READY):
                self._transition(model, "stop_requested")
                self._stopper[model] = _STOP_CALL
                chosen.append(model)
        return chosen

    def _grant(self, req: _Request, now: float) -> None:
        if self._effects.grant(req.id, req.model):
            req.phase = _Phase.SERVING
            self._in_flight[req.model] += 1
            self._last_used[req.model] = now
        else:
            self._forget(req)

    def _reject(self, req: _Request, status: int, message: str) -> None:
        self._forget(req)
        self._effects.reject(req.id, status, message, NO_HEADERS)

    def _forget(self, req: _Request) -> None:
        del self._requests[req.id]
        self._reserved[req.model] -= 1

    def _transition(self, model: str, event: str) -> None:
        self._running_memo = None
        try:
            new = self._state[model] = _TRANSITIONS[self._state[model], event]
        except KeyError:
            raise SchedulerError(
                f"{model!r}: {event} is impossible in state {self._state[model].value}"
            ) from None
        if new is ModelState.STOPPED:
            self._devices.pop(model, None)  # its devices are free

    def _shutdown_message(self) -> str:
        return f"{self._name} is shutting down"

    # ---------------------------------------------------------------- queue

    def _enqueue(self, req: _Request) -> None:
        start = 1 if self._queue and self._queue[0] is self._protected else 0
        index = len(self._queue)
        for i in range(start, len(self._queue)):
            if self._queue[i].priority < req.priority:
                index = i
                break
        req.phase = _Phase.QUEUED
        self._queue.insert(index, req)

    def _drain(self, now: float) -> None:
        if self._shutting_down or not self._queue:
            return  # (nothing queued: nothing to protect or to try)
        # The protected request goes first, and whenever it leaves, the next one that has
        # waited max_wait takes its place before anything else is tried.
        while True:
            self._refresh_protection(now)
            guard = self._protected
            if guard is None or not self._attempt(guard, now):
                break
            self._queue.remove(guard)
            self._protected = None
        remaining = []
        for req in self._queue:
            if req is self._protected or not self._attempt(req, now):
                remaining.append(req)
        self._queue = remaining

    def _refresh_protection(self, now: float) -> None:
        max_wait = self._settings.max_wait
        if max_wait is None or self._protected is not None or not self._queue:
            return
        oldest = min(self._queue, key=lambda r: (r.arrived, r.seq))
        if now >= oldest.arrived + max_wait:
            self._queue.remove(oldest)
            self._queue.insert(0, oldest)
            self._protected = oldest

    def _finish(self, now: float) -> None:
        if self._drain_until and not self._shutting_down:
            self._end_overdue(now)
        while self._retiring:
            finished, restarts = self._advance_retiring()
            if not finished:
                break
            self._drain(now)  # the queue first: a restart must not overtake a waiting request
            for model in restarts:
                self._restart(model, now)
        self._refresh_protection(now)
        guard = self._protected
        if guard is not None and guard.model in self._holds and not self._shutting_down:
            # Bounded waiting overrides a hold: the protected request goes now if it can.
            del self._holds[guard.model]
            self._held.add(guard.model)
            self._drain(now)
            self._refresh_protection(now)
        if self._holds or self._held:
            # A hold lasts while requests for its target are queued.
            queued = {r.model for r in self._queue}
            for model in [m for m in self._holds if m not in queued]:
                del self._holds[model]
            self._held &= queued
        if not self._queue and not self._positions:
            return  # no queue before, none now: no position changed
        positions = {req.id: i for i, req in enumerate(self._queue, 1)}
        for req_id, position in positions.items():
            if self._positions.get(req_id) != position:
                self._effects.queue_position(req_id, position)
        self._positions = positions
