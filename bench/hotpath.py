"""In-process micro-benchmark of one proxied request's scheduler, router, observer, metrics,
in-flight table and activity work (no HTTP): what issue 18's fifth pass iterated on.

Usage: .venv/bin/python bench/hotpath.py [router] [all] [tap] [writer]

- router: `Router.submit` of a READY model (granted inline) then `release`, with serve's
  observer (decision log, metrics, the UI feed with no subscriber).
- all: the same plus the in-flight table (begin, serving, end), the request counter, the
  response tap and its usage scan, `make_record` and `ActivityStore.record` (in memory).
- tap: the response tap, the usage scan and `make_record` alone.
- writer: the activity writer thread's CPU per row stored, records coming at ~5,000 a
  second (about what serve proxies at 16 connections), to a SQLite file in a temp dir.

Figures are the best of 7 loops of 20,000 requests (writer: one 4 s run), in microseconds.
The model is made READY by setting the scheduler's state directly: the process layer is not
involved. Prints one line per case; writes no JSON (compare trees by running it in each).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time

from llamaswap.compiler.plan import compile_text
from llamaswap.runtime.activity import ActivityStore, ResponseTap, make_record
from llamaswap.runtime.events import EventHub, EventsObserver, InflightTracker
from llamaswap.runtime.observe import DecisionLog, Metrics
from llamaswap.runtime.router import Router
from llamaswap.runtime.scheduler import ModelState
from llamaswap.runtime.settings import scheduler_settings, scheduling_policy

CONFIG = """
models:
  bench-nginx:
    cmd: /bin/true
    proxy: http://127.0.0.1:1
    concurrencyLimit: 1000
  bench-sse:
    cmd: /bin/true
    proxy: http://127.0.0.1:2
matrix:
  sets:
    both: "bench-nginx & bench-sse"
"""
# bench/nginx.conf.template's answer
BODY = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench",'
    b'"system_fingerprint":"nginx","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Hello! How can I help you today?"},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}'
)
MODEL = "bench-nginx"
PATH = "/v1/chat/completions"


def record(tap: ResponseTap):
    return make_record(
        model=MODEL,
        requested=MODEL,
        req_path=PATH,
        status=200,
        content_type="application/json",
        arrived_wall=time.time(),
        wait_s=0.0,
        duration_s=0.001,
        tap=tap,
        error="",
        peer="",
        session_id="",
        resolution="",
    )


async def loops(which: str, n: int = 20_000) -> float:
    plan = compile_text(CONFIG, "hotpath.yaml")
    hub = EventHub()
    metrics = Metrics(plan.models)
    observer = EventsObserver(DecisionLog(plan.policy), metrics, hub)
    router = Router(
        plan.policy, scheduler_settings(plan), {}, observer=observer, scheduling=scheduling_policy(plan)
    )
    await router.start()
    await asyncio.sleep(0)  # the owner task is idle: submits are handled inline
    router.scheduler._state[MODEL] = ModelState.READY
    router.scheduler._running_memo = None
    tracker = InflightTracker(hub)
    store = ActivityStore(None)

    def one_router() -> None:
        ticket = router.submit(MODEL, MODEL, None)
        assert ticket.outcome.done()
        router.release(ticket)

    def one_all() -> None:
        rid = tracker.begin(MODEL, MODEL, "POST", PATH, "127.0.0.1")
        ticket = router.submit(MODEL, MODEL, None)
        hub.queue_changed()
        ticket.outcome.result()
        tracker.serving(rid)
        tap = ResponseTap()
        tap(BODY)
        router.release(ticket)
        hub.queue_changed()
        metrics.count_request(MODEL, "200")
        tracker.end(rid)
        store.record(record(tap))

    def one_tap() -> None:
        tap = ResponseTap()
        tap(BODY)
        record(tap)

    fn = {"router": one_router, "all": one_all, "tap": one_tap}[which]
    for _ in range(2000):
        fn()
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    await router.shutdown(1)
    return best * 1e6


async def writer(seconds: float = 4.0) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = ActivityStore(os.path.join(tmp, "activity.db"))
        store.open()
        assert store._thread is not None and store._thread.ident is not None
        clock = time.pthread_getcpuclockid(store._thread.ident)
        tap = ResponseTap()
        tap(BODY)
        rows, began, t0 = 0, time.clock_gettime(clock), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(50):
                store.record(record(tap))
                rows += 1
            await asyncio.sleep(0.01)
        store.flush()
        used = time.clock_gettime(clock) - began
        store.close()
    return used / rows * 1e6


def main() -> int:
    for which in sys.argv[1:] or ["router", "all", "tap", "writer"]:
        if which == "writer":
            print(f"writer: {asyncio.run(writer()):.2f} us of the writer thread's CPU per row")
        else:
            print(f"{which}: {asyncio.run(loops(which)):.2f} us per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
