"""Router.reconfigure over real fake-upstream processes: waiting tickets follow their alias or
get 404, a restarted model gets a new process only after its request in flight, a removed
model's process is shut down and forgotten once idle, an added one serves at once."""

from __future__ import annotations

import asyncio

from support.policies import StubPolicy
from support.upstream import (
    fake_upstream_cmd,
    free_port,
    pid_alive,
    run_async,
    wait_until_async,
)

from llamaswap.runtime.processes import ModelProcess, ProcessSpec, ProcessState
from llamaswap.runtime.router import Granted, Rejected, Router
from llamaswap.runtime.scheduler import SchedulerSettings

TIMEOUT = 10.0
EXCLUSIVE = {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}


def spec(model: str, port: int | None = None, **extra) -> ProcessSpec:
    port = port or free_port()
    return ProcessSpec(
        model=model,
        cmd=fake_upstream_cmd(port, name=model, **extra),
        proxy=f"http://127.0.0.1:{port}",
        check_endpoint="/health",
        health_check_timeout=20,
        unload_timeout=5,
    )


async def outcome(ticket):
    return await asyncio.wait_for(ticket.outcome, TIMEOUT)


def test_waiting_tickets_follow_their_alias_or_get_404():
    async def scenario():
        procs = {m: ModelProcess(spec(m)) for m in ("a", "b", "c")}
        router = Router(StubPolicy(EXCLUSIVE), SchedulerSettings(("a", "b", "c"), max_wait=None), procs)
        await router.start()
        try:
            first = router.submit("a")
            assert isinstance(await outcome(first), Granted)  # a serves; b and c must wait
            to_b = router.submit("b", "fast")  # "fast" is an alias of b for now
            to_c = router.submit("c")
            await wait_until_async(
                lambda: len(router.scheduler.queued()) == 2, TIMEOUT, message="both to queue"
            )
            aliases = {"fast": "a"}  # the new config: "fast" points at a, c is gone

            def resolve(name: str) -> str | None:
                return name if name in ("a", "b") else aliases.get(name)

            evict, _ = await router.reconfigure(
                StubPolicy(EXCLUSIVE),
                SchedulerSettings(("a", "b"), max_wait=None),
                {"a": procs["a"].spec, "b": procs["b"].spec},
                resolve=resolve,
                make_process=ModelProcess,
            )
            assert evict == ()
            moved = await outcome(to_b)
            assert isinstance(moved, Granted) and moved.model == "a"  # a is ready: served at once
            gone = await outcome(to_c)
            assert isinstance(gone, Rejected) and gone.status == 404
            for t in (first, to_b, to_c):
                router.release(t)
            # c was never started; the router forgets its process.
            await wait_until_async(lambda: "c" not in router.processes, TIMEOUT, message="c to be forgotten")
        finally:
            await router.shutdown(5)
        assert all(p.pid is None or not pid_alive(p.pid) for p in procs.values())

    run_async(scenario())


def test_restart_removal_and_addition_with_real_processes():
    async def scenario():
        procs = {m: ModelProcess(spec(m)) for m in ("a", "b")}
        router = Router(StubPolicy(), SchedulerSettings(("a", "b"), max_wait=None), procs)
        await router.start()
        try:
            ta, tb = router.submit("a"), router.submit("b")
            assert isinstance(await outcome(ta), Granted) and isinstance(await outcome(tb), Granted)
            old_a, old_b = procs["a"].pid, procs["b"].pid
            new_a = spec("a", token_delay=0.001)  # another cmd (and port)
            await router.reconfigure(
                StubPolicy(),
                SchedulerSettings(("a", "c"), max_wait=None),
                {"a": new_a, "c": spec("c")},
                restart=("a",),
                resolve=lambda n: n if n in ("a", "c") else None,
                make_process=ModelProcess,
            )
            # In flight on both: nothing stopped yet; c is there and starts at once.
            tc = router.submit("c")
            assert isinstance(await outcome(tc), Granted)
            assert pid_alive(old_a) and pid_alive(old_b)
            router.release(tc)
            router.release(ta)  # a drains: its old process stops, the new one starts
            await wait_until_async(
                lambda: (
                    router.processes["a"].pid not in (None, old_a)
                    and router.processes["a"].state is ProcessState.READY
                ),
                TIMEOUT,
                message="a to run again with its new spec",
            )
            assert not pid_alive(old_a)
            assert router.processes["a"].spec.cmd == new_a.cmd
            assert pid_alive(old_b) and "b" in router.processes  # still serving its request
            router.release(tb)
            await wait_until_async(lambda: "b" not in router.processes, TIMEOUT, message="b to be forgotten")
            assert not pid_alive(old_b)
            assert not router.scheduler.knows("b")
        finally:
            await router.shutdown(5)

    run_async(scenario())
