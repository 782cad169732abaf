"""The Router driven directly: real `ModelProcess`es running the fake upstream, no HTTP layer.

No mocks and no fixed sleeps: every wait is on a ticket's future, on the router's own reply
(`unload`, `call`, `shutdown`), or on a condition polled under a deadline. Two submits made
without an `await` between them reach the owner in one batch, which is how a test makes a
request join a swap in progress without racing the upstream's start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Mapping

from support.policies import StubPolicy
from support.upstream import fake_upstream_cmd, free_port, pid_alive, run_async, wait_until_async

from llamaswap.runtime.processes import ModelProcess, ProcessSpec, ProcessState
from llamaswap.runtime.router import Granted, Observer, Rejected, Router, SwapRecord
from llamaswap.runtime.scheduler import Admission, ModelState, SchedulerSettings

EXCLUSIVE = {"a": ["b"], "b": ["a"]}  # a and b never run together
TIMEOUT = 10.0


class RecordingObserver:
    """Every report the router makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def swap_started(self, record: SwapRecord, requested: str) -> None:
        self.calls.append(("swap_started", record.model, requested))

    def swap_finished(self, record: SwapRecord) -> None:
        self.calls.append(("swap_finished", record.model, record.error))

    def granted(self, model: str, waited: float) -> None:
        self.calls.append(("granted", model))

    def evicted(self, model: str, reason: str) -> None:
        self.calls.append(("evicted", model, reason))

    def served(self, model: str) -> None:
        self.calls.append(("served", model))

    def count(self, *call: object) -> int:
        return sum(1 for c in self.calls if c == call)


@contextlib.asynccontextmanager
async def running_router(
    evict: Mapping[str, list[str]] | None = None,
    models: tuple[str, ...] = ("a", "b"),
    startup_delay: Mapping[str, float] | None = None,
    ttl: Mapping[str, float] | None = None,
) -> AsyncIterator[tuple[Router, dict[str, ModelProcess], RecordingObserver]]:
    processes = {}
    for model in models:
        port = free_port()
        delay = (startup_delay or {}).get(model, 0.0)
        spec = ProcessSpec(
            model=model,
            cmd=fake_upstream_cmd(port, name=model, startup_delay=delay),
            proxy=f"http://127.0.0.1:{port}",
            check_endpoint="/health",
            health_check_timeout=20,
            unload_timeout=5,
        )
        processes[model] = ModelProcess(spec)
    observer = RecordingObserver()
    reports: Observer = observer  # the test double fits the Protocol (a type checker says so)
    router = Router(
        StubPolicy(evict),
        SchedulerSettings(models, ttl=dict(ttl or {}), max_wait=None),
        processes,
        observer=reports,
    )
    await router.start()
    try:
        yield router, processes, observer
    finally:
        await router.shutdown(5)
        assert all(p.pid is None or not pid_alive(p.pid) for p in processes.values())


async def granted(ticket) -> Granted:
    outcome = await asyncio.wait_for(ticket.outcome, TIMEOUT)
    assert isinstance(outcome, Granted), outcome
    return outcome


async def scheduler_state(router: Router, model: str) -> ModelState:
    return await router.call(lambda s: s.state(model))


async def wait_for(predicate, message: str):
    return await wait_until_async(predicate, TIMEOUT, message=message)


def test_grant_starts_a_swap_then_the_ready_model_is_granted_on_the_fast_path():
    async def scenario():
        async with running_router() as (router, procs, observer):
            first = router.submit("a", "alias-of-a")
            assert await first.admission is Admission.WAITING
            record = router.swap_in_progress("a")
            assert record is not None and record.finished is None  # the owner writes it at the end
            got = await granted(first)
            assert got.model == "a" and got.swap is record and got.waited >= 0
            assert procs["a"].state is ProcessState.READY and pid_alive(procs["a"].pid)
            # The owner wrote the outcome into the record before the grant, and forgot the swap.
            assert record.error is None and record.load_seconds is not None and record.finished is not None
            assert record.requests_waited == [got.waited]
            assert router.swap_in_progress("a") is None
            router.release(first)

            second = router.submit("a")
            assert await second.admission is Admission.GRANTED
            again = await granted(second)
            assert again.swap is None  # it waited for no swap: no X-Llamaswap-Swap header
            router.release(second)
            await wait_for(lambda: observer.count("served", "a") == 2, "both responses served")
            assert await router.call(lambda s: s.in_flight("a")) == 0
            assert router.swaps_started == 1
            assert observer.calls[:3] == [
                ("swap_started", "a", "alias-of-a"),
                ("granted", "a"),
                ("swap_finished", "a", None),
            ]

    run_async(scenario())


def test_a_second_request_joins_the_swap_in_progress():
    async def scenario():
        async with running_router() as (router, procs, observer):
            # Submitted together: the owner sees both before the swap task ever runs.
            first, second = router.submit("a"), router.submit("a")
            assert await first.admission is Admission.WAITING
            assert await second.admission is Admission.WAITING
            one, two = await granted(first), await granted(second)
            assert one.swap is two.swap is not None
            assert sorted(one.swap.requests_waited) == sorted([one.waited, two.waited])
            assert router.swaps_started == 1
            assert observer.count("swap_started", "a", "a") == 1
            assert await router.call(lambda s: s.in_flight("a")) == 2
            router.release(first)
            router.release(second)
            await wait_for(lambda: observer.count("served", "a") == 2, "both responses served")

    run_async(scenario())


def test_a_request_for_a_conflicting_model_queues_until_the_busy_one_is_done():
    async def scenario():
        async with running_router(EXCLUSIVE) as (router, procs, observer):
            holder = router.submit("a")
            await granted(holder)
            pid_a = procs["a"].pid

            waiting = router.submit("b")
            assert await waiting.admission is Admission.QUEUED  # a is in flight: b may not evict it
            await wait_for(lambda: waiting.position == 1, "queue position 1")
            assert router.waiting_tickets() == [waiting]
            assert await router.call(lambda s: s.queued()) == (waiting.req_id,)
            assert procs["a"].state is ProcessState.READY and not waiting.outcome.done()

            router.release(holder)  # a drains: b's swap evicts it
            got = await granted(waiting)
            assert got.swap is not None and got.swap.decision.evict == ("a",)
            assert got.swap.requests_waited == [got.waited]  # queued, then served by this swap
            assert procs["a"].state is ProcessState.STOPPED and not pid_alive(pid_a)
            assert procs["b"].state is ProcessState.READY
            assert observer.count("evicted", "a", "swap") == 1
            router.release(waiting)

    run_async(scenario())


def test_a_client_that_gives_up_before_the_grant_holds_nothing():
    async def scenario():
        async with running_router(EXCLUSIVE, startup_delay={"b": 0.3}) as (router, procs, observer):
            # Given up while queued: nothing starts for it.
            holder = router.submit("a")
            await granted(holder)
            queued = router.submit("b")
            assert await queued.admission is Admission.QUEUED
            router.release(queued)
            assert queued.outcome.cancelled()
            assert await router.call(lambda s: (s.queued(), s.reserved("b"))) == ((), 0)
            assert router.waiting_tickets() == []
            router.release(holder)
            await wait_for(lambda: observer.count("served", "a") == 1, "a served")
            assert router.swaps_started == 1 and procs["b"].state is ProcessState.STOPPED

            # Given up while waiting on a swap: the swap finishes, the grant finds nobody.
            leaver = router.submit("b")
            assert await leaver.admission is Admission.WAITING
            router.release(leaver)
            await wait_for(lambda: observer.count("swap_finished", "b", None) == 1, "b's swap to finish")
            assert observer.count("granted", "b") == 0
            assert await router.call(lambda s: (s.state("b"), s.in_flight("b"))) == (ModelState.READY, 0)
            after = router.submit("b")
            assert await after.admission is Admission.GRANTED
            router.release(after)

    run_async(scenario())


def test_a_ready_model_is_granted_inside_submit_and_its_ttl_still_counts_from_the_last_request():
    async def scenario():
        ttl = 0.6
        async with running_router(ttl={"a": ttl}) as (router, procs, observer):
            first = router.submit("a")
            await granted(first)
            router.release(first)  # a is idle: the owner now sleeps until a's TTL
            assert await router.call(lambda s: s.in_flight("a")) == 0  # the owner is asleep again

            # The owner is idle and a has room: the scheduler decides inside submit().
            second = router.submit("a")
            assert second.admission.done() and second.admission.result() is Admission.GRANTED
            assert second.outcome.done() and isinstance(second.outcome.result(), Granted)
            assert await router.call(lambda s: s.in_flight("a")) == 1
            released = asyncio.get_running_loop().time()
            router.release(second)  # its TTL starts again from here, not from the first release
            assert observer.count("served", "a") == 2
            await wait_for(lambda: procs["a"].state is ProcessState.STOPPED, "a unloaded by its TTL")
            assert asyncio.get_running_loop().time() - released >= ttl * 0.9
            assert observer.count("evicted", "a", "ttl") == 1

    run_async(scenario())


def test_a_crashed_upstream_is_reported_and_the_next_request_restarts_it():
    async def scenario():
        async with running_router() as (router, procs, observer):
            ticket = router.submit("a")
            await granted(ticket)
            router.release(ticket)
            old_pid = procs["a"].pid
            assert old_pid is not None

            os.kill(old_pid, signal.SIGKILL)
            await wait_for(lambda: observer.count("evicted", "a", "crash") == 1, "the crash report")
            assert await scheduler_state(router, "a") is ModelState.STOPPED

            again = router.submit("a")
            assert await again.admission is Admission.WAITING  # a new swap, not the fast path
            got = await granted(again)
            assert got.swap is not None and router.swaps_started == 2
            assert procs["a"].pid not in (None, old_pid) and pid_alive(procs["a"].pid)
            router.release(again)

    run_async(scenario())


def test_unload_returns_once_the_model_is_stopped():
    async def scenario():
        async with running_router() as (router, procs, observer):
            for model in ("a", "b"):
                ticket = router.submit(model)
                await granted(ticket)
                router.release(ticket)
            pid_a = procs["a"].pid
            await asyncio.wait_for(router.unload(["a"]), TIMEOUT)
            assert procs["a"].state is ProcessState.STOPPED and not pid_alive(pid_a)
            assert procs["b"].state is ProcessState.READY
            assert observer.count("evicted", "a", "unload") == 1
            assert await scheduler_state(router, "a") is ModelState.STOPPED

            await asyncio.wait_for(router.unload(), TIMEOUT)  # None: all
            assert procs["b"].state is ProcessState.STOPPED
            assert await scheduler_state(router, "b") is ModelState.STOPPED

    run_async(scenario())


def test_shutdown_rejects_the_waiting_stops_every_model_and_refuses_new_work():
    async def scenario():
        async with running_router(EXCLUSIVE) as (router, procs, observer):
            holder = router.submit("a")
            await granted(holder)
            pid_a = procs["a"].pid
            waiting = router.submit("b")
            assert await waiting.admission is Admission.QUEUED

            await asyncio.wait_for(router.shutdown(5), TIMEOUT)
            outcome = waiting.outcome.result()
            assert isinstance(outcome, Rejected) and outcome.status == 503
            assert outcome.message == "stub is shutting down"
            assert not pid_alive(pid_a) and procs["a"].state is ProcessState.SHUTDOWN
            assert router.owner is not None and router.owner.done()

            late = router.submit("a")
            assert late.admission.result() is Admission.REJECTED
            assert late.outcome.result() == Rejected(503, "stub is shutting down", {})
            router.release(holder)  # after shutdown: harmless

    run_async(scenario())
