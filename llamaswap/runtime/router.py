"""Router: the one asyncio task that owns the Scheduler, and the work that carries out its
decisions with the process supervisor.

Theory of operation
-------------------
Everything that wants the scheduler posts an event into the router's inbox: a frozen
dataclass naming a fact (`RequestArrived`, `SwapFinished`, `ProcessExited`, ...). The owner
task takes events one at a time, looks up the handler for the event's type in one table, and
calls the matching scheduler input with `now` from the loop clock. Nothing else ever touches
the scheduler, so there are no locks.

The hot path's own events (a request arriving, finishing or giving up) are handled at once,
in the poster's task, when the owner is idle with an empty inbox: the same handler the owner
would run next, in the same order (on one event loop nothing can run in between), without
the two loop iterations and the wake-up a round trip through the owner costs. A grant the
scheduler can decide at once (the model is ready and has room) is then already resolved when
`submit()` returns. The owner stays the only place that decides: it is woken afterwards only
if the scheduler's next deadline moved earlier than the one it sleeps until.

The scheduler answers through `_Recorder`, its `Effects`: each output is written down as a
command, and the handler carries the commands out once the scheduler call has returned,
passing what it knows as arguments (the arriving ticket, whose `requested` name the decision
record keeps; the swap that just finished, which its queued requests waited for). Carrying
out a command resolves a request's future, or starts a task (a swap, a stop). Those tasks
change no router state: they do their work with the processes and post what happened back
as a new event (`SwapFinished`, `StopFinished`). So the owner task is the only writer of the
scheduler, the tickets, the swap records and the table of swaps in progress.

A request is a `Ticket`: `submit()` posts it; `ticket.admission` resolves as soon as the
scheduler has seen it (so a 429 is known before any loading stream starts); `ticket.outcome`
resolves with `Granted` or `Rejected`. The holder must call `release()` exactly when it is
done with the ticket, whatever happened: after the response of a granted ticket, or when it
gives up before the grant. Giving up cancels `ticket.outcome` at once (in the caller's
task), so a grant that the owner decides later finds nobody there and returns False; that
is what keeps a client that left from holding an in-flight slot.

A grant carries the swap the request waited for, if any (it joined the swap, or was queued
and granted when the swap for its model finished), and the request's own wait; the HTTP
layer turns that into the `X-Llamaswap-Swap` header.

After `shutdown()` has begun, `submit()` rejects at once with 503: the owner may be gone.

Swaps stop the evicted models (in parallel), then `ensure_ready` the target; the process's
own task decides how (it waits out a stop in progress). The owner also ticks the scheduler at
`next_deadline()` (TTL unloads, bounded waiting) and notices crashes: a process that leaves
`ready` by itself is reported as `model_exited`.

A hot reload is one more event (`ReconfigureRequested`, posted by `reconfigure()`): the owner
gives each kept model's process its new spec (at once, or at its next stop when it must be
restarted), makes processes for added models, re-resolves the waiting tickets by the name
they asked for, swaps in the new policy and settings, and hands the rest to
`Scheduler.reconfigure`. A removed model's process is shut down and forgotten once the
scheduler has forgotten the model (it stopped after its last request). When a retiring
model's drain runs out (`reload_drain_timeout`), or an unload or a shutdown stops a model,
the scheduler asks to end what is still in flight on it: the owner logs which requests and
why, and calls each ticket's `on_end` (set by the HTTP layer once it serves the ticket: it
ends the response the way its protocol allows, and then releases the ticket as usual).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from llamaswap.compiler.decision import Decision, EvictionPolicy
from llamaswap.compiler.resolution import Resolution
from llamaswap.runtime.processes import (
    DevicePlacement,
    ModelProcess,
    ProcessSpec,
    ProcessState,
    StartError,
    StateChanged,
)
from llamaswap.runtime.reconfigure import forced_eviction
from llamaswap.runtime.scheduler import Admission, ModelState, Scheduler, SchedulerSettings, SchedulingPolicy

logger = logging.getLogger("llamaswap.router")


@dataclass(frozen=True, slots=True)
class Granted:
    model: str
    swap: SwapRecord | None = None  # the swap this request waited for, if any
    waited: float = 0.0  # seconds from submit() to the grant


@dataclass(frozen=True, slots=True)
class Rejected:
    status: int
    message: str
    headers: Mapping[str, str]


@dataclass
class SwapRecord:
    """A committed swap: what was decided and how it went (for logs, headers, /api).
    Written by the owner task only: at the start, at each grant, and when it finished."""

    id: int
    model: str
    decision: Decision
    started_wall: float  # time.time()
    started: float  # loop clock
    requests_waited: list[float] = field(default_factory=list)
    load_seconds: float | None = None
    error: str | None = None
    finished: float | None = None
    via: Resolution | None = None  # how the request that started it was resolved (profile, selector)


class Observer(Protocol):
    """What the router reports as it goes (metrics, decision records). Every method is called
    from the owner task, must be quick, and must not raise (an exception is logged)."""

    def swap_started(self, record: SwapRecord, requested: str) -> None: ...

    def swap_finished(self, record: SwapRecord) -> None: ...

    def granted(self, model: str, waited: float) -> None: ...

    def evicted(self, model: str, reason: str) -> None: ...

    def served(self, model: str) -> None: ...

    def profile_changed(self, old: str | None, new: str | None, reason: str) -> None: ...


class _Unobserved:
    """The observer when nobody observes."""

    def swap_started(self, record: SwapRecord, requested: str) -> None:
        pass

    def swap_finished(self, record: SwapRecord) -> None:
        pass

    def granted(self, model: str, waited: float) -> None:
        pass

    def evicted(self, model: str, reason: str) -> None:
        pass

    def served(self, model: str) -> None:
        pass

    def profile_changed(self, old: str | None, new: str | None, reason: str) -> None:
        pass


class Ticket:
    """One request's passage through the scheduler."""

    __slots__ = (
        "req_id",
        "model",
        "requested",
        "arrived",
        "admission",
        "outcome",
        "position",
        "_position_event",
        "released",
        "via",
        "on_end",
        "end_reason",
    )

    def __init__(
        self,
        req_id: int,
        model: str,
        requested: str,
        arrived: float,
        loop: asyncio.AbstractEventLoop,
        via: Resolution | None = None,
    ) -> None:
        self.req_id = req_id
        self.model = model
        self.requested = requested
        self.via = via  # the profile pin / selector choice that led to `requested`
        self.arrived = arrived
        self.admission: asyncio.Future[Admission] = loop.create_future()
        self.outcome: asyncio.Future[Granted | Rejected] = loop.create_future()
        self.position: int | None = None
        self._position_event: asyncio.Event | None = None  # made on first use (rare)
        self.released = False
        # Set by the holder while it serves the ticket: end the response now (the arguments:
        # the scheduler's reason, "reload" | "unload" | "shutdown", and the message for the
        # client). `end_reason`: those two, set when the router asked for that.
        self.on_end: Callable[[str, str], None] | None = None
        self.end_reason: tuple[str, str] | None = None

    async def position_changed(self) -> None:
        if self._position_event is None:
            self._position_event = asyncio.Event()
        await self._position_event.wait()
        self._position_event.clear()

    def _set_position(self, position: int) -> None:
        self.position = position
        if self._position_event is not None:
            self._position_event.set()


# -- events: the facts posted into the owner's inbox -----------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class RequestArrived:
    ticket: Ticket


@dataclass(frozen=True, slots=True, eq=False)
class RequestCancelled:
    """The holder gave up on its ticket before the grant."""

    req_id: int


@dataclass(frozen=True, slots=True, eq=False)
class ServeFinished:
    """The response of a granted ticket is finished (or failed)."""

    req_id: int


@dataclass(frozen=True, slots=True, eq=False)
class SwapFinished:
    """A swap task ended: the model is ready (`error` None) or it is not."""

    record: SwapRecord
    error: str | None
    load_seconds: float | None  # set when the model turned ready
    finished: float  # loop clock


@dataclass(frozen=True, slots=True, eq=False)
class StopFinished:
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True, eq=False)
class ProcessExited:
    """A ready upstream exited by itself."""

    model: str


@dataclass(frozen=True, slots=True, eq=False)
class UnloadRequested:
    models: tuple[str, ...] | None  # None: all
    timeout: float | None
    reply: asyncio.Future[list[asyncio.Task]]  # the stops the unload started


@dataclass(frozen=True, slots=True, eq=False)
class CloseRequested:
    """Graceful shutdown begins: admit nothing more; requests in flight go on."""


@dataclass(frozen=True, slots=True, eq=False)
class ShutdownRequested:
    timeout: float | None
    reply: asyncio.Future[None]


@dataclass(frozen=True, slots=True, eq=False)
class ReconfigureRequested:
    """A hot reload: the new policy and settings, every model's new process spec, the
    models to restart once idle, the evict costs (for what the new policy forbids), how a
    requested name resolves now, and how to make the process of an added model. The reply
    is the eviction applied, and why."""

    policy: EvictionPolicy
    settings: SchedulerSettings
    specs: Mapping[str, ProcessSpec]
    restart: tuple[str, ...]
    evict_costs: Mapping[str, int]
    resolve: Callable[[str], str | None]
    make_process: Callable[[ProcessSpec], ModelProcess]
    scheduling: SchedulingPolicy | None  # None: keep the current scheduling policy
    profiles: frozenset[str] | None  # the profiles the new config has (None: not told)
    reply: asyncio.Future[tuple[tuple[str, ...], str]]


@dataclass(frozen=True, slots=True, eq=False)
class ProfileSelected:
    """Make `name` the active profile (None: none). `known(name)` is asked when the event is
    handled (against the live config then); the reply is whether the active profile changed,
    or a LookupError when the profile is unknown."""

    name: str | None
    known: Callable[[str], bool]
    reason: str
    reply: asyncio.Future[bool]


@dataclass(frozen=True, slots=True, eq=False)
class QueryAsked:
    fn: Callable[[Scheduler], Any]
    reply: asyncio.Future[Any]


Event = (
    RequestArrived
    | RequestCancelled
    | ServeFinished
    | SwapFinished
    | StopFinished
    | ProcessExited
    | UnloadRequested
    | CloseRequested
    | ShutdownRequested
    | ReconfigureRequested
    | ProfileSelected
    | QueryAsked
)


# Handled in the poster's task when the owner is idle (see the module docstring).
_INLINE = frozenset({RequestArrived, ServeFinished, RequestCancelled})


# -- commands: the scheduler's outputs, carried out by the owner after each input ------------
# (Not frozen, unlike the events: they never leave the router, and a frozen dataclass's
# __init__ costs one object.__setattr__ call per field, on every grant.)


@dataclass(slots=True, eq=False)
class _StartSwap:
    model: str
    decision: Decision
    stop_timeout: float


@dataclass(slots=True, eq=False)
class _Grant:
    ticket: Ticket
    model: str


@dataclass(slots=True, eq=False)
class _Reject:
    req_id: int
    status: int
    message: str
    headers: Mapping[str, str]


@dataclass(slots=True, eq=False)
class _QueuePosition:
    req_id: int
    position: int


@dataclass(slots=True, eq=False)
class _StopProcesses:
    models: tuple[str, ...]
    reason: str
    timeout: float


@dataclass(slots=True, eq=False)
class _EndRequests:
    req_ids: tuple[Any, ...]
    model: str
    reason: str


_Command = _StartSwap | _Grant | _Reject | _QueuePosition | _StopProcesses | _EndRequests


class _Recorder:
    """The scheduler's `Effects`: writes each output down for the owner to carry out.
    `grant` answers at once whether anybody still holds the ticket (the scheduler needs the
    answer); the grant itself is carried out with the others."""

    __slots__ = ("tickets", "commands")

    def __init__(self, tickets: dict[int, Ticket]) -> None:
        self.tickets = tickets
        self.commands: list[_Command] = []

    def start_swap(self, model: str, decision: Decision, stop_timeout: float) -> None:
        self.commands.append(_StartSwap(model, decision, stop_timeout))

    def grant(self, req_id: Any, model: str) -> bool:
        ticket = self.tickets.get(req_id)
        if ticket is None or ticket.outcome.done():
            self.tickets.pop(req_id, None)
            return False
        self.commands.append(_Grant(ticket, model))
        return True

    def reject(self, req_id: Any, status: int, message: str, headers: Mapping[str, str]) -> None:
        self.commands.append(_Reject(req_id, status, message, dict(headers)))

    def queue_position(self, req_id: Any, position: int) -> None:
        self.commands.append(_QueuePosition(req_id, position))

    def stop_processes(self, models: tuple[str, ...], reason: str, timeout: float) -> None:
        self.commands.append(_StopProcesses(models, reason, timeout))

    def end_requests(self, req_ids: tuple[Any, ...], model: str, reason: str) -> None:
        self.commands.append(_EndRequests(tuple(req_ids), model, reason))

    def take(self) -> list[_Command]:
        commands, self.commands = self.commands, []
        return commands


_Handler = Callable[[Any, float], None]

# What a client whose request a reload's drain ended is told, by why the model retires.
_DRAIN_ENDS = {
    "restart": "restarts for a config reload",
    "evict": "stops for a config reload (the new config does not let it run beside what runs)",
    "removed": "was removed by a config reload",
}


class Router:
    """Owns the scheduler; the HTTP layer talks to it through tickets and a few commands."""

    def __init__(
        self,
        policy: EvictionPolicy,
        settings: SchedulerSettings,
        processes: Mapping[str, ModelProcess],
        *,
        observer: Observer | None = None,
        scheduling: SchedulingPolicy | None = None,
    ) -> None:
        self.policy = policy
        self.settings = settings
        self.processes = dict(processes)
        self._tickets: dict[int, Ticket] = {}
        self._effects = _Recorder(self._tickets)
        # The scheduling policy (FIFO when None): the same objects `plan --trace` runs.
        self.scheduler = Scheduler(policy, settings, self._effects, scheduling=scheduling)
        self._observer: Observer = observer if observer is not None else _Unobserved()
        # The owner's inbox: a deque plus one future to wake the owner when it is idle
        # (cheaper than asyncio.Queue on the proxy's hot path: two events per request).
        self._inbox: collections.deque[Event] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._sleeps_until: float | None = None  # the deadline the idle owner wakes at
        self._inline = False  # an event is being handled in a poster's task
        self._handlers: dict[type, _Handler] = {
            RequestArrived: self._on_request_arrived,
            RequestCancelled: self._on_request_cancelled,
            ServeFinished: self._on_serve_finished,
            SwapFinished: self._on_swap_finished,
            StopFinished: self._on_stop_finished,
            ProcessExited: self._on_process_exited,
            UnloadRequested: self._on_unload_requested,
            CloseRequested: self._on_close_requested,
            ShutdownRequested: self._on_shutdown_requested,
            ReconfigureRequested: self._on_reconfigure_requested,
            ProfileSelected: self._on_profile_selected,
            QueryAsked: self._on_query_asked,
        }
        self._waited_for: dict[int, SwapRecord] = {}  # req id -> swap it joined
        self._swaps: dict[str, SwapRecord] = {}  # model -> swap in progress
        # Models whose process died after turning ready but before the owner heard that
        # their swap succeeded: the crash is applied right after that SwapFinished.
        self._exited_early: set[str] = set()
        self._closing = False
        self._drained: asyncio.Event | None = None  # set once drain() sees nothing in flight
        self._tick_not_before = 0.0
        self.swaps_started = 0
        self._ids = itertools.count(1)
        self._swap_ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._stop_chain: asyncio.Task | None = None
        self._owner: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: dict[str, Callable[[], None]] = {}  # model -> drop its listener
        self._retired: set[str] = set()  # removed by a reload; process kept until it stopped
        # The active profile (None: none, as at startup). Written by the owner task only;
        # the request path reads it once per request.
        self.profile: str | None = None
        # When something last started, finished or was granted (for the stall check).
        self.last_advance = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for proc in self.processes.values():
            self._unsubscribe[proc.spec.model] = proc.add_listener(self._on_process_change)
        self._owner = self._loop.create_task(self._own(), name="llamaswap:scheduler")

    @property
    def owner(self) -> asyncio.Task | None:
        return self._owner

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _shutdown_message(self) -> str:
        return f"{getattr(self.policy, 'engine', 'scheduler')} is shutting down"

    async def shutdown(self, timeout: float | None = None) -> None:
        """Answer every waiting request with 503, stop every model, stop the owner."""
        self._closing = True
        if self._owner is None or self._owner.done():
            await self._shutdown_processes(timeout)
            return
        assert self._loop is not None
        reply: asyncio.Future[None] = self._loop.create_future()
        self._post(ShutdownRequested(timeout, reply))
        try:
            await reply
        finally:
            await self._shutdown_processes(timeout)
            self._owner.cancel()
            try:
                await self._owner
            except (asyncio.CancelledError, Exception):
                pass
            for unsub in self._unsubscribe.values():
                unsub()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self, timeout: float) -> bool:
        """Graceful shutdown, first half: every waiting and every later request gets 503;
        requests in flight go on. True once none is left in flight, False after `timeout`
        seconds. `shutdown()` does the rest."""
        self._closing = True
        if self._owner is None or self._owner.done():
            return True
        if self._drained is None:
            self._drained = asyncio.Event()
            self._post(CloseRequested())
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True

    async def kill(self) -> None:
        """Cut every graceful stop short: SIGKILL every upstream process group now."""
        self._closing = True
        await asyncio.gather(*(p.shutdown(0) for p in self.processes.values()), return_exceptions=True)

    async def _shutdown_processes(self, timeout: float | None) -> None:
        t = self.settings.swap_stop_timeout if timeout is None or timeout <= 0 else timeout
        await asyncio.gather(*(p.shutdown(t) for p in self.processes.values()), return_exceptions=True)

    # -- the HTTP layer's side -----------------------------------------------------------
    def _post(self, event: Event) -> None:
        wakeup = self._wakeup
        if type(event) in _INLINE and self._idle_owner() is not None:
            assert wakeup is not None
            self._inline_handle(self._handlers[type(event)], event, type(event).__name__, wakeup)
            return
        self._inbox.append(event)
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _idle_owner(self) -> asyncio.Future[None] | None:
        """The idle owner's wake-up when an event may be handled at once in the poster's task
        (the owner is idle, nothing is before it in the inbox, no inline handler runs)."""
        wakeup = self._wakeup
        if self._inbox or wakeup is None or wakeup.done() or self._inline:
            return None
        return wakeup

    def _inline_handle(self, handler: _Handler, arg: Any, name: str, wakeup: asyncio.Future[None]) -> None:
        """Handle an event now, here (see `_idle_owner`); `arg`: what its handler takes. The
        request path's own events skip the event object and the handler table this way."""
        self._inline = True
        try:
            self._handle_with(handler, arg, name)
        finally:
            self._inline = False
        deadline = self.scheduler.next_deadline()
        until = self._sleeps_until
        if deadline is not None and (until is None or deadline < until):
            wakeup.set_result(None)  # the owner must sleep less long now

    def submit(self, model: str, requested: str | None = None, via: Resolution | None = None) -> Ticket:
        """Ask for `model` (a real ID). Await `ticket.outcome`; then `release` it."""
        assert self._loop is not None
        ticket = Ticket(next(self._ids), model, requested or model, self._loop.time(), self._loop, via)
        if self._closing:
            # The owner may already be gone; nobody would ever answer this ticket.
            ticket.admission.set_result(Admission.REJECTED)
            ticket.outcome.set_result(Rejected(503, self._shutdown_message(), {}))
            ticket.released = True
            return ticket
        self._tickets[ticket.req_id] = ticket
        wakeup = self._idle_owner()
        if wakeup is not None:
            self._inline_handle(self._arrive, ticket, "RequestArrived", wakeup)
        else:
            self._post(RequestArrived(ticket))
        return ticket

    def release(self, ticket: Ticket) -> None:
        """The holder is done with the ticket: its granted response is finished (or failed),
        or it gave up waiting. Idempotent."""
        if ticket.released:
            return
        ticket.released = True
        outcome = ticket.outcome
        if not outcome.done():
            # Cancel now, in this task: a grant decided later must see that nobody is
            # waiting (grant() -> False), or the slot would stay in flight forever.
            outcome.cancel()
        if not outcome.cancelled() and type(outcome.result()) is Granted:
            wakeup = self._idle_owner()
            if wakeup is not None:
                self._inline_handle(self._serve_finished, ticket.req_id, "ServeFinished", wakeup)
            else:
                self._post(ServeFinished(ticket.req_id))
        elif outcome.cancelled():
            self._post(RequestCancelled(ticket.req_id))

    async def unload(self, models: Iterable[str] | None = None, timeout: float | None = None) -> None:
        """Unload models (None: all) and return once they are stopped."""
        assert self._loop is not None
        if self._closing:
            return  # shutdown stops everything anyway
        reply: asyncio.Future[list[asyncio.Task]] = self._loop.create_future()
        self._post(UnloadRequested(None if models is None else tuple(models), timeout, reply))
        stops = await reply
        if stops:
            await asyncio.wait(stops)

    async def reconfigure(
        self,
        policy: EvictionPolicy,
        settings: SchedulerSettings,
        specs: Mapping[str, ProcessSpec],
        *,
        restart: Iterable[str] = (),
        evict_costs: Mapping[str, int] | None = None,
        resolve: Callable[[str], str | None],
        make_process: Callable[[ProcessSpec], ModelProcess],
        scheduling: SchedulingPolicy | None = None,
        profiles: Iterable[str] | None = None,
    ) -> tuple[tuple[str, ...], str]:
        """Apply a hot reload (see the module docstring); returns once the owner applied it
        (models still draining stop later), with the models the new policy evicts and why."""
        assert self._loop is not None
        if self._closing or self._owner is None or self._owner.done():
            raise RuntimeError("the scheduler task is not running")
        reply: asyncio.Future[tuple[tuple[str, ...], str]] = self._loop.create_future()
        self._post(
            ReconfigureRequested(
                policy,
                settings,
                dict(specs),
                tuple(restart),
                dict(evict_costs or {}),
                resolve,
                make_process,
                scheduling,
                None if profiles is None else frozenset(profiles),
                reply,
            )
        )
        return await reply

    async def select_profile(
        self, name: str | None, known: Callable[[str], bool], reason: str = "api"
    ) -> bool:
        """Make `name` the active profile (None: none); True if that changed it. Raises
        LookupError when `known(name)` says no (asked inside the owner task)."""
        assert self._loop is not None
        if self._owner is None or self._owner.done():
            raise RuntimeError("the scheduler task is not running")
        reply: asyncio.Future[bool] = self._loop.create_future()
        self._post(ProfileSelected(name, known, reason, reply))
        return await reply

    async def call(self, fn: Callable[[Scheduler], Any]) -> Any:
        """Run `fn(scheduler)` inside the owner task (a consistent read of its state)."""
        assert self._loop is not None
        if self._owner is None or self._owner.done():
            raise RuntimeError("the scheduler task is not running")
        reply: asyncio.Future[Any] = self._loop.create_future()
        self._post(QueryAsked(fn, reply))
        return await reply

    def waiting_tickets(self) -> list[Ticket]:
        """Tickets still waiting for their outcome (queued, or waiting on a swap)."""
        return [t for t in self._tickets.values() if not t.outcome.done()]

    def swap_in_progress(self, model: str) -> SwapRecord | None:
        return self._swaps.get(model)

    def ticket_model(self, req_id: int) -> str | None:
        """The model a live ticket asked for (None once it is forgotten)."""
        ticket = self._tickets.get(req_id)
        return None if ticket is None else ticket.model

    # -- the owner task ------------------------------------------------------------------
    async def _own(self) -> None:
        sched = self.scheduler
        inbox = self._inbox
        loop = self._loop
        assert loop is not None
        while True:
            while inbox:
                self._handle(inbox.popleft())
            deadline = sched.next_deadline()
            if deadline is not None:
                deadline = max(deadline, self._tick_not_before)
                delay = deadline - loop.time()
                if delay <= 0:
                    self._handle_tick()
                    continue
            self._wakeup = wakeup = loop.create_future()
            self._sleeps_until = deadline
            if deadline is None:
                await wakeup
            else:
                try:
                    async with asyncio.timeout(delay):
                        await wakeup
                except TimeoutError:
                    self._wakeup = None
                    self._handle_tick()
            self._wakeup = None

    def _handle_tick(self) -> None:
        now = self.now()
        try:
            self.scheduler.tick(now)
        except Exception:  # as in _handle: a protocol error must not kill the owner task
            logger.exception("router: tick failed")
            self._tick_not_before = self.now() + 1.0  # and must not spin on a stale deadline
        self._carry_out(now)

    def _handle(self, event: Event) -> None:
        self._handle_with(self._handlers[type(event)], event, type(event).__name__)

    def _handle_with(self, handler: _Handler, arg: Any, name: str) -> None:
        """Run one event's handler with `now`; `arg`: the event (or what stands for it on the
        inline path), `name`: the event's type, for the log."""
        assert self._loop is not None
        try:
            handler(arg, self._loop.time())
            if self._retired:
                self._dispose_retired()
        except Exception as exc:
            # The scheduler raised on a protocol error: log loudly and keep serving; the
            # /health check reports the owner alive, and tests assert this never happens.
            logger.exception("router: %s failed", name)
            self._carry_out(self.now())  # what the scheduler asked for before it raised
            reply = getattr(arg, "reply", None)
            if reply is not None and not reply.done():
                reply.set_exception(exc)
        drained = self._drained
        if drained is not None and not drained.is_set() and self.scheduler.in_flight_total() == 0:
            drained.set()

    # -- handlers: one per event type, each the only place that feeds its scheduler input --
    def _on_request_arrived(self, event: RequestArrived, now: float) -> None:
        self._arrive(event.ticket, now)

    def _arrive(self, ticket: Ticket, now: float) -> None:
        if ticket.outcome.cancelled():  # the holder left before the owner saw the ticket
            self._tickets.pop(ticket.req_id, None)
            if not ticket.admission.done():
                ticket.admission.set_result(Admission.REJECTED)
            return
        admission = self.scheduler.request(ticket.req_id, ticket.model, now)
        self._carry_out(now, arriving=ticket)
        if admission is Admission.WAITING:
            swap = self._swaps.get(ticket.model)
            if swap is not None:
                self._waited_for[ticket.req_id] = swap
        if not ticket.admission.done():
            ticket.admission.set_result(admission)

    def _on_request_cancelled(self, event: RequestCancelled, now: float) -> None:
        self._tickets.pop(event.req_id, None)
        self._waited_for.pop(event.req_id, None)
        self.scheduler.cancel(event.req_id, now)
        self._carry_out(now)

    def _on_serve_finished(self, event: ServeFinished, now: float) -> None:
        self._serve_finished(event.req_id, now)

    def _serve_finished(self, req_id: int, now: float) -> None:
        done = self._tickets.pop(req_id, None)
        self.last_advance = time.monotonic()
        self.scheduler.serve_done(req_id, now)
        if self._effects.commands:
            self._carry_out(now)
        if done is not None:
            try:
                self._observer.served(done.model)
            except Exception:  # as _notify: observation must never break routing
                logger.exception("observer served failed")

    def _on_swap_finished(self, event: SwapFinished, now: float) -> None:
        record = event.record
        model = record.model
        record.error = event.error
        record.load_seconds = event.load_seconds
        record.finished = event.finished
        if self._swaps.get(model) is record:  # not when an unload abandoned it and a new one began
            del self._swaps[model]
        self.last_advance = time.monotonic()
        self.scheduler.swap_done(model, now, event.error)
        self._carry_out(now, finishing=record)
        # After the grants: the record now holds every waiter's wait.
        self._notify(self._observer.swap_finished, record)
        if model in self._exited_early:
            self._exited_early.discard(model)
            if event.error is None:
                self.scheduler.model_exited(model, now)
                self._carry_out(now)

    def _on_stop_finished(self, event: StopFinished, now: float) -> None:
        self.last_advance = time.monotonic()
        self.scheduler.stop_done(event.models, now)
        self._carry_out(now)

    def _on_process_exited(self, event: ProcessExited, now: float) -> None:
        model = event.model
        self._notify(self._observer.evicted, model, "crash")
        if self.scheduler.state(model) is ModelState.STARTING:
            # The process turned ready and died before its SwapFinished reached us (both
            # are on their way): apply the crash right after that SwapFinished.
            self._exited_early.add(model)
        else:
            self.scheduler.model_exited(model, now)
            self._carry_out(now)

    def _on_unload_requested(self, event: UnloadRequested, now: float) -> None:
        self.scheduler.unload(event.models, now, event.timeout)
        stops = self._carry_out(now)
        if not event.reply.done():
            event.reply.set_result(stops)

    def _on_close_requested(self, event: CloseRequested, now: float) -> None:
        self.scheduler.close(now)
        self._carry_out(now)

    def _on_shutdown_requested(self, event: ShutdownRequested, now: float) -> None:
        self.scheduler.shutdown(now, event.timeout)
        self._carry_out(now)
        if not event.reply.done():
            event.reply.set_result(None)

    def _on_reconfigure_requested(self, event: ReconfigureRequested, now: float) -> None:
        restart = set(event.restart)
        for model, spec in event.specs.items():
            proc = self.processes.get(model)
            if proc is None:
                proc = self.processes[model] = event.make_process(spec)
                self._unsubscribe[model] = proc.add_listener(self._on_process_change)
            else:
                # Back before its removal finished: a restart, like a changed spec.
                again = model in self._retired
                self._retired.discard(model)
                proc.respec(spec, at_next_stop=model in restart or again)
                if again:
                    restart.add(model)
        self._retired.update(m for m in self.processes if m not in event.specs)
        sched = self.scheduler
        # What runs now, among the models the new config keeps: the new policy must allow it.
        running = [
            m for m in event.settings.models if sched.knows(m) and sched.state(m) is not ModelState.STOPPED
        ]
        evict, why = forced_eviction(event.policy, running, event.evict_costs)
        if evict:
            logger.warning("reload: evicting %s: %s", ", ".join(evict), why)
        moves: dict[Hashable, str | None] = {}
        leaving = restart | set(evict) | self._retired
        for ticket in self._tickets.values():
            if ticket.outcome.done():
                continue
            target = event.resolve(ticket.requested)
            moved = target != ticket.model
            if moved:
                moves[ticket.req_id] = target
                if target is not None:
                    ticket.model = target
            if moved or ticket.model in leaving:
                self._waited_for.pop(ticket.req_id, None)  # it no longer waits for that swap
        self.policy = event.policy
        self.settings = event.settings
        sched.reconfigure(
            event.policy,
            event.settings,
            now,
            restart=sorted(restart),
            evict=evict,
            moves=moves,
            scheduling=event.scheduling,
        )
        for model, devices in sched.adopted.items():
            logger.info(
                "reload: %s was running before resources were declared: counted on %s from now on "
                "(its process keeps the devices it was started with; its next start is placed)",
                model,
                ", ".join(devices),
            )
        for model, why in sched.unplaced.items():
            logger.warning(
                "reload: %s runs without a placement: %s; it is not counted on any device", model, why
            )
        self._carry_out(now)
        if self.profile is not None and event.profiles is not None and self.profile not in event.profiles:
            gone = self.profile
            self.profile = None
            logger.info('reload: profile "%s" is no longer in the config; no profile is active now', gone)
            self._notify(self._observer.profile_changed, gone, None, "reload")
        if not event.reply.done():
            event.reply.set_result((evict, why))

    def _on_profile_selected(self, event: ProfileSelected, now: float) -> None:
        name = event.name or None
        if name is not None and not event.known(name):
            if not event.reply.done():
                event.reply.set_exception(LookupError(f'profile "{name}" not found'))
            return
        old = self.profile
        if old == name:
            if not event.reply.done():
                event.reply.set_result(False)
            return
        self.profile = name
        logger.info('active profile changed to "%s"', name or "")
        self._notify(self._observer.profile_changed, old, name, event.reason)
        if not event.reply.done():
            event.reply.set_result(True)

    def _dispose_retired(self) -> None:
        """Forget the processes of removed models the scheduler has forgotten (stopped)."""
        for model in [m for m in self._retired if not self.scheduler.knows(m)]:
            self._retired.discard(model)
            unsub = self._unsubscribe.pop(model, None)
            if unsub is not None:
                unsub()
            proc = self.processes.pop(model, None)
            if proc is not None:
                self._spawn(proc.shutdown(0), f"llamaswap:retire:{model}")

    def _on_query_asked(self, event: QueryAsked, now: float) -> None:
        try:
            result = event.fn(self.scheduler)
        except Exception as exc:  # a bad query must not kill the owner
            if not event.reply.done():
                event.reply.set_exception(exc)
        else:
            if not event.reply.done():
                event.reply.set_result(result)

    # -- carrying out the scheduler's commands -------------------------------------------
    def _carry_out(
        self, now: float, *, arriving: Ticket | None = None, finishing: SwapRecord | None = None
    ) -> list[asyncio.Task]:
        """Carry out what the scheduler just asked for. `arriving`: the ticket whose request
        was handled; `finishing`: the swap whose end was handled. Returns the stop tasks."""
        stops: list[asyncio.Task] = []
        for command in self._effects.take():
            if type(command) is _Grant:
                self._grant(command, finishing)
            elif type(command) is _Reject:
                self._reject(command)
            elif type(command) is _StartSwap:
                self._start_swap(command, arriving)
            elif type(command) is _QueuePosition:
                ticket = self._tickets.get(command.req_id)
                if ticket is not None:
                    ticket._set_position(command.position)
            elif type(command) is _EndRequests:
                self._end_requests(command)
            else:
                assert type(command) is _StopProcesses
                stops.append(self._start_stop(command))
        return stops

    def _end_requests(self, command: _EndRequests) -> None:
        """End what is still in flight on a model: a retiring model's drain ran out
        ("reload"), or an unload or a shutdown stops it next ("unload", "shutdown"). One log
        line says which requests and why; each response's own end is logged where it happens."""
        model, reason = command.model, command.reason
        tickets = [t for t in map(self._tickets.get, command.req_ids) if t is not None]
        which = ", ".join(f"#{t.req_id} ({t.requested})" for t in tickets) or "none"
        if reason == "reload":
            grace = self.settings.reload_drain_timeout
            why = _DRAIN_ENDS.get(self.scheduler.retiring().get(model, ""), "restarts for a config reload")
            message = (
                f"{model} {why}: the request was still running after the reload's drain timeout "
                f"({grace:g}s, llamaswap.reloadDrainTimeout)"
            )
            logger.warning(
                "reload: %s still has %d request(s) in flight %ss after the reload (%s): ending them, "
                "so that its old process stops (%s)",
                model,
                len(tickets),
                f"{grace:g}",
                which,
                why,
            )
        elif reason == "unload":
            message = f"{model} was unloaded while the request was running (an unload stops it at once)"
            logger.warning("unload: ending %d request(s) in flight on %s (%s)", len(tickets), model, which)
        else:
            message = f"{self._shutdown_message()}: {model} was stopped while the request was still running"
            logger.warning(
                "shutdown: ending %d request(s) still in flight on %s (%s)", len(tickets), model, which
            )
        for ticket in tickets:
            ticket.end_reason = (reason, message)
            on_end = ticket.on_end
            if on_end is None:
                # Not (yet) served through the proxy: a preload or load releases at once, and
                # dispatch, not resumed since its grant, ends it when it sees end_reason.
                continue
            try:
                on_end(reason, message)
            except Exception:  # one response's end must not stop the others'
                logger.exception("ending request #%s failed", ticket.req_id)

    def _grant(self, command: _Grant, finishing: SwapRecord | None) -> None:
        ticket, model = command.ticket, command.model
        waited = self.now() - ticket.arrived
        swap = self._waited_for.pop(ticket.req_id, None)
        if swap is None and finishing is not None and finishing.model == model:
            swap = finishing  # queued behind something, then served by this swap
        if swap is not None:
            swap.requests_waited.append(waited)
        ticket.outcome.set_result(Granted(model, swap, waited))
        self.last_advance = time.monotonic()
        try:
            self._observer.granted(model, waited)
        except Exception:  # as _notify: observation must never break routing
            logger.exception("observer granted failed")

    def _reject(self, command: _Reject) -> None:
        self.last_advance = time.monotonic()
        ticket = self._tickets.pop(command.req_id, None)
        self._waited_for.pop(command.req_id, None)
        if ticket is not None:
            if not ticket.admission.done():
                ticket.admission.set_result(Admission.REJECTED)
            if not ticket.outcome.done():
                ticket.outcome.set_result(Rejected(command.status, command.message, command.headers))

    def _notify(self, report: Callable[..., None], *args: Any) -> None:
        try:
            report(*args)
        except Exception:  # observation must never break routing
            logger.exception("observer %s failed", getattr(report, "__name__", report))

    def _spawn(self, coro: Any, name: str) -> asyncio.Task:
        assert self._loop is not None
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_swap(self, command: _StartSwap, arriving: Ticket | None) -> None:
        model, decision = command.model, command.decision
        record = SwapRecord(next(self._swap_ids), model, decision, time.time(), self.now())
        if arriving is not None and arriving.model == model:
            record.via = arriving.via
        self._swaps[model] = record
        self.swaps_started += 1
        self.last_advance = time.monotonic()
        requested = arriving.requested if arriving is not None and arriving.model == model else model
        self._notify(self._observer.swap_started, record, requested)
        for evicted in decision.evict:
            self._notify(self._observer.evicted, evicted, "swap")
        placement = None
        placer = getattr(self.policy, "placer", None)
        if placer is not None and decision.devices is not None:
            placement = DevicePlacement(decision.devices, placer.device_ids(decision.devices))
        self._spawn(
            self._swap(model, decision.evict, command.stop_timeout, record, placement),
            f"llamaswap:swap:{model}",
        )

    async def _swap(
        self,
        model: str,
        evict: tuple[str, ...],
        stop_timeout: float,
        record: SwapRecord,
        placement: DevicePlacement | None = None,
    ) -> None:
        """Stop `evict`, make `model` ready, and report how it went; changes nothing itself
        (`record` only travels back in the report)."""
        error: str | None = None
        load_seconds: float | None = None
        try:
            stops = [self.processes[m].stop(stop_timeout, "evicted") for m in evict if m in self.processes]
            if stops:
                results = await asyncio.gather(*stops, return_exceptions=True)
                for res in results:
                    if isinstance(res, BaseException) and not isinstance(res, StartError):
                        logger.error("stopping an evicted model failed: %r", res)
            load_started = self.now()
            await self.processes[model].ensure_ready(placement)
            load_seconds = self.now() - load_started
        except StartError as exc:
            error = str(exc)
        except asyncio.CancelledError:
            error = "cancelled"
            raise
        except Exception as exc:  # never let a swap die without reporting
            logger.exception("swap for %s failed", model)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._post(SwapFinished(record, error, load_seconds, self.now()))

    def _start_stop(self, command: _StopProcesses) -> asyncio.Task:
        models, reason = command.models, command.reason
        self.last_advance = time.monotonic()
        for model in models:
            self._notify(self._observer.evicted, model, reason)
        # Stops issued together (one unload's buckets) run in order, smallest timeout first.
        previous = self._stop_chain if reason == "unload" else None
        task = self._spawn(
            self._stop(models, reason, command.timeout, previous), f"llamaswap:stop:{','.join(models)}"
        )
        if reason == "unload":
            self._stop_chain = task
        return task

    async def _stop(
        self, models: tuple[str, ...], reason: str, timeout: float, previous: asyncio.Task | None
    ) -> None:
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if reason == "ttl":
                for m in models:
                    logger.info("%s: unloading model, TTL of %ss reached", m, self.settings.ttl_of(m))
            if reason == "shutdown":
                await asyncio.gather(
                    *(self.processes[m].shutdown(timeout) for m in models if m in self.processes),
                    return_exceptions=True,
                )
            else:
                await asyncio.gather(
                    *(self.processes[m].stop(timeout, reason) for m in models if m in self.processes),
                    return_exceptions=True,
                )
        finally:
            self._post(StopFinished(models))

    def _on_process_change(self, change: StateChanged) -> None:
        if change.old is ProcessState.READY and change.new is ProcessState.STOPPED:
            logger.warning(
                "%s: upstream exited unexpectedly (%s)", change.model, change.detail or "no detail"
            )
            self._post(ProcessExited(change.model))
        elif change.crashed:
            # It died by itself just as it was being stopped (e.g. evicted by a queued
            # request): the stop's owner reports the stop; the crash still counts as one.
            self._notify(self._observer.evicted, change.model, "crash")
