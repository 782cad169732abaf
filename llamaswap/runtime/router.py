"""Router: the one asyncio task that owns the Scheduler, and the Effects that carry out its
decisions with the process supervisor.

Theory of operation
-------------------
Everything that wants the scheduler posts an event into the router's inbox; the owner task
takes events one at a time and calls the matching scheduler input with `now` from the loop
clock. Nothing else ever touches the scheduler, so there are no locks. The scheduler answers
through `_Effects`, which never re-enter it: they resolve a request's future, or start a
task (a swap, a stop) that posts its completion back as a new event.

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
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from llamaswap.compiler.decision import Decision, EvictionPolicy
from llamaswap.runtime.processes import ModelProcess, ProcessState, StartError, StateChanged
from llamaswap.runtime.scheduler import Admission, ModelState, Scheduler, SchedulerSettings

logger = logging.getLogger("llamaswap.router")


@dataclass(frozen=True, slots=True)
class Granted:
    model: str
    swap: "SwapRecord | None" = None  # the swap this request waited for, if any
    waited: float = 0.0  # seconds from submit() to the grant


@dataclass(frozen=True, slots=True)
class Rejected:
    status: int
    message: str
    headers: Mapping[str, str]


@dataclass
class SwapRecord:
    """A committed swap: what was decided and how it went (for logs, headers, /api)."""

    id: int
    model: str
    decision: Decision
    started_wall: float  # time.time()
    started: float  # loop clock
    requests_waited: list[float] = field(default_factory=list)
    load_seconds: float | None = None
    error: str | None = None
    finished: float | None = None


class Observer:
    """What the router reports as it goes (metrics, decision records). Every method is called
    from the owner task or a swap/stop task, must be quick, and must not raise."""

    def swap_started(self, record: SwapRecord, requested: str) -> None: ...

    def swap_finished(self, record: SwapRecord) -> None: ...

    def granted(self, model: str, waited: float) -> None: ...

    def evicted(self, model: str, reason: str) -> None: ...

    def served(self, model: str) -> None: ...


class Ticket:
    """One request's passage through the scheduler."""

    __slots__ = ("req_id", "model", "requested", "arrived", "admission", "outcome", "position",
                 "_position_event", "granted_at", "released")

    def __init__(self, req_id: int, model: str, requested: str, arrived: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.req_id = req_id
        self.model = model
        self.requested = requested
        self.arrived = arrived
        self.admission: asyncio.Future[Admission] = loop.create_future()
        self.outcome: asyncio.Future[Granted | Rejected] = loop.create_future()
        self.position: int | None = None
        self._position_event: asyncio.Event | None = None  # made on first use (rare)
        self.granted_at: float | None = None
        self.released = False

    async def position_changed(self) -> None:
        if self._position_event is None:
            self._position_event = asyncio.Event()
        await self._position_event.wait()
        self._position_event.clear()

    def _set_position(self, position: int) -> None:
        self.position = position
        if self._position_event is not None:
            self._position_event.set()


class _Effects:
    def __init__(self, router: "Router") -> None:
        self.router = router

    def start_swap(self, model: str, decision: Decision, stop_timeout: float) -> None:
        self.router._begin_swap(model, decision, stop_timeout)

    def grant(self, req_id: Any, model: str) -> bool:
        r = self.router
        ticket = r._tickets.get(req_id)
        if ticket is None or ticket.outcome.done():
            r._tickets.pop(req_id, None)
            return False
        ticket.granted_at = r.now()
        waited = ticket.granted_at - ticket.arrived
        swap = r._waited_for.pop(req_id, None)
        if swap is None and r._finishing is not None and r._finishing.model == model:
            swap = r._finishing  # queued behind something, then served by this swap
        if swap is not None:
            swap.requests_waited.append(waited)
        ticket.outcome.set_result(Granted(model, swap, waited))
        r.last_advance = time.monotonic()
        r._notify("granted", model, waited)
        return True

    def reject(self, req_id: Any, status: int, message: str, headers: Mapping[str, str]) -> None:
        r = self.router
        r.last_advance = time.monotonic()
        ticket = r._tickets.pop(req_id, None)
        r._waited_for.pop(req_id, None)
        if ticket is not None:
            if not ticket.admission.done():
                ticket.admission.set_result(Admission.REJECTED)
            if not ticket.outcome.done():
                ticket.outcome.set_result(Rejected(status, message, dict(headers)))

    def queue_position(self, req_id: Any, position: int) -> None:
        ticket = self.router._tickets.get(req_id)
        if ticket is not None:
            ticket._set_position(position)

    def stop_processes(self, models: tuple[str, ...], reason: str, timeout: float) -> None:
        self.router._begin_stop(models, reason, timeout)


class Router:
    """Owns the scheduler; the HTTP layer talks to it through tickets and a few commands."""

    def __init__(self, policy: EvictionPolicy, settings: SchedulerSettings,
                 processes: Mapping[str, ModelProcess], *,
                 on_swap: Callable[[SwapRecord], None] | None = None,
                 on_swap_done: Callable[[SwapRecord], None] | None = None,
                 observer: Observer | None = None) -> None:
        self.policy = policy
        self.settings = settings
        self.processes = dict(processes)
        self.scheduler = Scheduler(policy, settings, _Effects(self))
        self._on_swap = on_swap
        self._on_swap_done = on_swap_done
        self._observer = observer
        self._current: Ticket | None = None  # the ticket whose request() is being handled
        # The owner's inbox: a deque plus one future to wake the owner when it is idle
        # (cheaper than asyncio.Queue on the proxy's hot path: two events per request).
        self._inbox: collections.deque[tuple] = collections.deque()
        self._wakeup: asyncio.Future | None = None
        self._tickets: dict[int, Ticket] = {}
        self._waited_for: dict[int, SwapRecord] = {}  # req id -> swap it joined
        self._swaps: dict[str, SwapRecord] = {}  # model -> swap in progress
        self._finishing: SwapRecord | None = None  # the swap whose swap_done is being handled
        # Models whose process died after turning ready but before the owner heard that
        # their swap succeeded: the crash is applied right after that swap_done.
        self._exited_early: set[str] = set()
        self._closing = False
        self._tick_not_before = 0.0
        self.swaps_started = 0
        self._ids = itertools.count(1)
        self._swap_ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._collecting: list[asyncio.Task] | None = None  # stops started by an unload
        self._stop_chain: asyncio.Task | None = None
        self._owner: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        # Liveness, for /health: when the owner last finished handling something.
        self.last_progress = time.monotonic()
        self.events_handled = 0
        # When something last started, finished or was granted (for the stall check).
        self.last_advance = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for proc in self.processes.values():
            self._unsubscribe.append(proc.add_listener(self._on_process_change))
        self._owner = self._loop.create_task(self._own(), name="llamaswap:scheduler")

    @property
    def owner(self) -> asyncio.Task | None:
        return self._owner

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    @property
    def shutdown_message(self) -> str:
        return f"{getattr(self.policy, 'engine', 'scheduler')} is shutting down"

    async def shutdown(self, timeout: float | None = None) -> None:
        """Answer every waiting request with 503, stop every model, stop the owner."""
        self._closing = True
        if self._owner is None or self._owner.done():
            await self._shutdown_processes(timeout)
            return
        fut = self._loop.create_future()  # type: ignore[union-attr]
        self.post(("shutdown", timeout, fut))
        try:
            await fut
        finally:
            await self._shutdown_processes(timeout)
            self._owner.cancel()
            try:
                await self._owner
            except (asyncio.CancelledError, Exception):
                pass
            for unsub in self._unsubscribe:
                unsub()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def kill(self) -> None:
        """Cut every graceful stop short: SIGKILL every upstream process group now."""
        self._closing = True
        await asyncio.gather(*(p.shutdown(0) for p in self.processes.values()), return_exceptions=True)

    async def _shutdown_processes(self, timeout: float | None) -> None:
        t = self.settings.swap_stop_timeout if timeout is None or timeout <= 0 else timeout
        await asyncio.gather(*(p.shutdown(t) for p in self.processes.values()), return_exceptions=True)

    # -- the HTTP layer's side -----------------------------------------------------------
    def post(self, event: tuple) -> None:
        self._inbox.append(event)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def submit(self, model: str, requested: str | None = None) -> Ticket:
        """Ask for `model` (a real ID). Await `ticket.outcome`; then `release` or `abandon`."""
        assert self._loop is not None
        ticket = Ticket(next(self._ids), model, requested or model, self._loop.time(), self._loop)
        if self._closing:
            # The owner may already be gone; nobody would ever answer this ticket.
            ticket.admission.set_result(Admission.REJECTED)
            ticket.outcome.set_result(Rejected(503, self.shutdown_message, {}))
            ticket.released = True
            return ticket
        self._tickets[ticket.req_id] = ticket
        self.post(("request", ticket))
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
        if not outcome.cancelled() and isinstance(outcome.result(), Granted):
            self.post(("serve_done", ticket.req_id))
        elif outcome.cancelled():
            self.post(("cancel", ticket.req_id))

    async def unload(self, models: Iterable[str] | None = None, timeout: float | None = None) -> None:
        """Unload models (None: all) and return once they are stopped."""
        assert self._loop is not None
        if self._closing:
            return  # shutdown stops everything anyway
        fut = self._loop.create_future()
        self.post(("unload", None if models is None else tuple(models), timeout, fut))
        stops = await fut
        if stops:
            await asyncio.wait(stops)

    async def call(self, fn: Callable[[Scheduler], Any]) -> Any:
        """Run `fn(scheduler)` inside the owner task (a consistent read of its state)."""
        assert self._loop is not None
        if self._owner is None or self._owner.done():
            raise RuntimeError("the scheduler task is not running")
        fut = self._loop.create_future()
        self.post(("call", fn, fut))
        return await fut

    def waiting_tickets(self) -> list[Ticket]:
        """Tickets still waiting for their outcome (queued, or waiting on a swap)."""
        return [t for t in self._tickets.values() if not t.outcome.done()]

    def _notify(self, method: str, *args: Any) -> None:
        if self._observer is None:
            return
        try:
            getattr(self._observer, method)(*args)
        except Exception:  # observation must never break routing
            logger.exception("observer %s failed", method)

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
            if deadline is None:
                await wakeup
            else:
                try:
                    async with asyncio.timeout(delay):
                        await wakeup
                except TimeoutError:
                    self._handle_tick()
            self._wakeup = None

    def _handle_tick(self) -> None:
        try:
            self.scheduler.tick(self.now())
        except Exception:  # as in _handle: a protocol error must not kill the owner task
            logger.exception("router: tick failed")
            self._tick_not_before = self.now() + 1.0  # and must not spin on a stale deadline
        self.last_progress = time.monotonic()

    def _handle(self, event: tuple) -> None:
        kind = event[0]
        sched = self.scheduler
        now = self.now()
        try:
            if kind == "request":
                ticket: Ticket = event[1]
                if ticket.outcome.cancelled():
                    self._tickets.pop(ticket.req_id, None)
                    if not ticket.admission.done():
                        ticket.admission.set_result(Admission.REJECTED)
                else:
                    self._current = ticket
                    try:
                        admission = sched.request(ticket.req_id, ticket.model, now)
                    finally:
                        self._current = None
                    if admission is Admission.WAITING:
                        swap = self._swaps.get(ticket.model)
                        if swap is not None:
                            self._waited_for[ticket.req_id] = swap
                    if not ticket.admission.done():
                        ticket.admission.set_result(admission)
            elif kind == "cancel":
                self._tickets.pop(event[1], None)
                self._waited_for.pop(event[1], None)
                sched.cancel(event[1], now)
            elif kind == "serve_done":
                done = self._tickets.pop(event[1], None)
                self.last_advance = time.monotonic()
                sched.serve_done(event[1], now)
                if done is not None:
                    self._notify("served", done.model)
            elif kind == "swap_done":
                _, model, error, record = event
                self.last_advance = time.monotonic()
                self._finishing = record
                try:
                    sched.swap_done(model, now, error)
                finally:
                    self._finishing = None
                # After the grants: the record now holds every waiter's wait.
                self._notify("swap_finished", record)
                if model in self._exited_early:
                    self._exited_early.discard(model)
                    if error is None:
                        sched.model_exited(model, now)
            elif kind == "stop_done":
                self.last_advance = time.monotonic()
                sched.stop_done(event[1], now)
            elif kind == "exited":
                model = event[1]
                self._notify("evicted", model, "crash")
                if sched.state(model) is ModelState.STARTING:
                    # The process turned ready and died before its swap_done reached us
                    # (both are on their way): apply the crash right after that swap_done.
                    self._exited_early.add(model)
                else:
                    sched.model_exited(model, now)
            elif kind == "unload":
                _, models, timeout, fut = event
                self._collecting = []
                try:
                    sched.unload(models, now, timeout)
                finally:
                    stops, self._collecting = self._collecting, None
                if not fut.done():
                    fut.set_result(stops)
            elif kind == "shutdown":
                _, timeout, fut = event
                sched.shutdown(now, timeout)
                if not fut.done():
                    fut.set_result(None)
            elif kind == "call":
                _, fn, fut = event
                try:
                    result = fn(sched)
                except Exception as exc:  # a bad query must not kill the owner
                    if not fut.done():
                        fut.set_exception(exc)
                else:
                    if not fut.done():
                        fut.set_result(result)
            else:  # pragma: no cover - programming error
                logger.error("router: unknown event %r", kind)
        except Exception:
            # The scheduler raised on a protocol error: log loudly and keep serving; the
            # /health check reports the owner alive, and tests assert this never happens.
            logger.exception("router: event %s failed", kind)
        self.events_handled += 1
        self.last_progress = time.monotonic()

    # -- effects' work -------------------------------------------------------------------
    def _spawn(self, coro, name: str) -> asyncio.Task:
        assert self._loop is not None
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _begin_swap(self, model: str, decision: Decision, stop_timeout: float) -> None:
        record = SwapRecord(next(self._swap_ids), model, decision, time.time(), self.now())
        self._swaps[model] = record
        self.swaps_started += 1
        self.last_advance = time.monotonic()
        current = self._current
        requested = current.requested if current is not None and current.model == model else model
        self._notify("swap_started", record, requested)
        for evicted in decision.evict:
            self._notify("evicted", evicted, "swap")
        if self._on_swap is not None:
            try:
                self._on_swap(record)
            except Exception:
                logger.exception("on_swap hook failed")
        self._spawn(self._swap(record, stop_timeout), f"llamaswap:swap:{model}")

    async def _swap(self, record: SwapRecord, stop_timeout: float) -> None:
        model = record.model
        error: str | None = None
        try:
            stops = [self.processes[m].stop(stop_timeout, "evicted") for m in record.decision.evict
                     if m in self.processes]
            if stops:
                results = await asyncio.gather(*stops, return_exceptions=True)
                for res in results:
                    if isinstance(res, BaseException) and not isinstance(res, StartError):
                        logger.error("stopping an evicted model failed: %r", res)
            load_started = self.now()
            await self.processes[model].ensure_ready()
            record.load_seconds = self.now() - load_started
        except StartError as exc:
            error = str(exc)
        except asyncio.CancelledError:
            error = "cancelled"
            raise
        except Exception as exc:  # never let a swap die without reporting
            logger.exception("swap for %s failed", model)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            record.error = error
            record.finished = self.now()
            if self._swaps.get(model) is record:
                del self._swaps[model]
            self.post(("swap_done", model, error, record))
            if self._on_swap_done is not None:
                try:
                    self._on_swap_done(record)
                except Exception:
                    logger.exception("on_swap_done hook failed")

    def _begin_stop(self, models: tuple[str, ...], reason: str, timeout: float) -> None:
        self.last_advance = time.monotonic()
        for model in models:
            self._notify("evicted", model, reason)
        # Stops issued together (one unload's buckets) run in order, smallest timeout first.
        previous = self._stop_chain if reason == "unload" else None
        task = self._spawn(self._stop(models, reason, timeout, previous), f"llamaswap:stop:{','.join(models)}")
        if reason == "unload":
            self._stop_chain = task
        if self._collecting is not None:
            self._collecting.append(task)

    async def _stop(self, models: tuple[str, ...], reason: str, timeout: float,
                    previous: asyncio.Task | None) -> None:
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if reason == "ttl":
                for m in models:
                    logger.info("%s: unloading model, TTL of %ss reached", m, self.settings.ttl_of(m))
            if reason == "shutdown":
                await asyncio.gather(*(self.processes[m].shutdown(timeout) for m in models
                                       if m in self.processes), return_exceptions=True)
            else:
                await asyncio.gather(*(self.processes[m].stop(timeout, reason) for m in models
                                       if m in self.processes), return_exceptions=True)
        finally:
            self.post(("stop_done", models))

    def _on_process_change(self, change: StateChanged) -> None:
        if change.old is ProcessState.READY and change.new is ProcessState.STOPPED:
            logger.warning("%s: upstream exited unexpectedly (%s)", change.model, change.detail or "no detail")
            self.post(("exited", change.model))
