"""API: llama-swap's and llamaswap's own non-dispatched endpoints — the model list,
`/running`, unloading, `/health`, `/metrics`, `/api/scheduler`, `/api/decisions`,
`/api/plan` (what-if), the logs (`/logs`, `/logs/stream[/<which>]`), `/api/version`, and
the in-flight requests (`GET /api/inflight`, `POST /api/inflight/{id}/cancel`).

They read process and scheduler state for people and probes, never to decide anything;
a consistent scheduler view is read inside the router's owner task (`Router.call`).

Extensions beyond llama-swap's API: `GET /v1/models/{model}` (OpenAI's model retrieve, the
SDK's `models.retrieve`) answers one record of the list; `/running` entries carry `pid` and `state_seconds` (and
`devices` where the scheduler placed the model, with resources); with resources `/api/plan`
answers with the placer (and `devices`); `GET /api/scheduler` is a consistent snapshot of
the scheduler (per-model state, in-flight, reserved and waiting counts, the queue, swaps in
progress); `GET /api/inflight` lists the in-flight table (the ids
`POST /api/inflight/{id}/cancel` takes, as the UI's `inflight` events carry them).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from aiohttp import web

from llamaswap.buildinfo import build_info
from llamaswap.compiler.explain import explain
from llamaswap.compiler.resolution import resolve
from llamaswap.runtime.events import INFLIGHT
from llamaswap.runtime.keys import (
    DECISIONS,
    LIVE,
    LOG_STREAMS,
    LOGS,
    METRICS,
    PROCESSES,
    REDACT,
    ROUTER,
    SELECTORS,
    STARTED,
)
from llamaswap.runtime.listing import model_records
from llamaswap.runtime.observe import health as health_check
from llamaswap.runtime.processes import ProcessState
from llamaswap.runtime.proxy import error_response
from llamaswap.runtime.reload import draining
from llamaswap.runtime.reload import health_detail as reload_health
from llamaswap.runtime.scheduler import ModelState
from llamaswap.runtime.settings import effective_ttl, stall_timeout


def _model_records(request: web.Request) -> list[dict]:
    plan = request.app[LIVE].plan
    procs = request.app[PROCESSES]

    def state(m: str) -> ProcessState:  # a model a reload just added gets its process a moment later
        proc = procs.get(m)
        return proc.state if proc is not None else ProcessState.STOPPED

    data = model_records(
        plan,
        int(request.app[STARTED]),
        loaded=lambda m: state(m) not in (ProcessState.STOPPED, ProcessState.SHUTDOWN),
        active=lambda m: state(m) in (ProcessState.STARTING, ProcessState.READY),
        profile=request.app[ROUTER].profile,
    )
    return data


def _cors(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    return {"Access-Control-Allow-Origin": origin} if origin is not None else {}


async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": _model_records(request)}, headers=_cors(request))


async def get_model(request: web.Request) -> web.Response:
    """`GET /v1/models/{model}` (OpenAI's model retrieve, e.g. the SDK's `models.retrieve`):
    the record `/v1/models` lists under that ID, or the record of the model it is an alias of."""
    name = request.match_info["model"]
    records = _model_records(request)
    found = next((r for r in records if r["id"] == name), None)
    if found is None:
        found = next(
            (r for r in records if name in r.get("meta", {}).get("llamaswap", {}).get("aliases", ())), None
        )
    if found is None:
        return error_response(request, 404, f"model not found: {name}", headers=_cors(request))
    return web.json_response(found, headers=_cors(request))


async def running(request: web.Request) -> web.Response:
    plan = request.app[LIVE].plan
    c = plan.config
    assert c is not None
    now = time.monotonic()
    out = []
    procs = request.app[PROCESSES]
    for mid, proc in sorted(procs.items()):
        if proc.state is ProcessState.STOPPED:
            continue
        m = c.models.get(mid) if mid in plan.models else None  # None: a reload removed it
        redact = request.app[REDACT].of(plan)
        out.append(
            {
                "model": mid,
                "state": proc.state.value,
                "cmd": redact(proc.spec.cmd),
                "proxy": redact(proc.spec.proxy),
                "ttl": int(effective_ttl(plan, mid)) if m is not None else 0,
                "name": m.name if m is not None else "",
                "description": m.description if m is not None else "",
                "pid": proc.pid,
                "state_seconds": round(now - proc.state_since, 3),
                **({} if proc.placement is None else {"devices": list(proc.placement.devices)}),
                **({} if m is not None else {"removed": True}),
            }
        )
    return web.json_response({"running": out})


async def unload_all(request: web.Request) -> web.Response:
    await request.app[ROUTER].unload(None)
    if request.method == "POST":
        return web.json_response({"msg": "ok"})
    return web.Response(text="OK")


async def unload_one(request: web.Request) -> web.Response:
    plan = request.app[LIVE].plan
    name = request.match_info["model"]
    real = plan.resolve_model(name)
    if real is None:
        return error_response(request, 404, "model not found")
    await request.app[ROUTER].unload([real])
    return web.Response(text="OK")


async def scheduler_state(request: web.Request) -> web.Response:
    """A consistent snapshot of the scheduler, taken inside its owner task."""
    router = request.app[ROUTER]
    plan = request.app[LIVE].plan

    def snapshot(sched) -> dict:
        return {
            "engine": plan.engine,
            "shutting_down": sched.shutting_down,
            "models": {
                m: {
                    "state": sched.state(m).value,
                    "in_flight": sched.in_flight(m),
                    "reserved": sched.reserved(m),
                    "waiting": len(sched.waiting(m)),
                }
                for m in plan.models
                if sched.knows(m)
            },
            "retiring": dict(sched.retiring()),  # models a reload restarts, evicts or removes
            "draining": draining(sched, router.now()),  # ...with requests in flight, until when
            "queue": [{"id": rid, "model": router.ticket_model(rid)} for rid in sched.queued()],
            "swaps": list(sched.swaps()),
            "swaps_started": router.swaps_started,
            "protected": sched.protected,
        }

    try:
        return web.json_response(await router.call(snapshot))
    except RuntimeError as exc:
        return error_response(request, 503, str(exc))


async def missing_v1(request: web.Request) -> web.Response:
    """An OpenAI path without its /v1 (app.MISSING_V1): 404, as llama-swap answers it, but
    saying what to send instead (and in the error envelope the client reads, not aiohttp's
    `404: Not Found`)."""
    return error_response(
        request,
        404,
        f"no route for {request.path}: did you mean /v1{request.path}? "
        "(an OpenAI client's base_url ends in /v1: http://HOST:PORT/v1)",
    )


async def health(request: web.Request) -> web.Response:
    """200 while the scheduler task is alive and making progress; 503 with the reason."""
    ok, reason = health_check(request.app[ROUTER], stall_timeout(request.app[LIVE].plan))
    if ok:
        detail = reload_health(request.app)  # a failed reload: still serving, but say so
        return web.Response(text=f"OK ({detail})" if detail else "OK")
    return web.Response(status=503, text=reason)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def decisions(request: web.Request) -> web.Response:
    """The most recent committed swaps, newest first (`?limit=N`, default 50)."""
    raw = request.query.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError:
        return error_response(request, 400, f"limit must be a whole number, got {raw!r}")
    if limit < 0:
        return error_response(request, 400, "limit must be >= 0")
    return web.json_response({"decisions": request.app[DECISIONS].recent(limit)})


async def what_if(request: web.Request) -> web.Response:
    """What would happen if `?model=X` were requested now, against the live running set (a
    profile pin or selector is resolved as a request would be now, reserving nothing)."""
    plan = request.app[LIVE].plan
    name = request.query.get("model", "").strip()
    if not name:
        return error_response(request, 400, "give the model to plan for: /api/plan?model=NAME")
    tracker = request.app[SELECTORS]
    procs = request.app[PROCESSES]
    via = resolve(
        plan,
        name,
        profile=request.app[ROUTER].profile,
        state_of=lambda m: procs[m].state.value if m in procs else "stopped",
        inflight=tracker.inflight,
        turns=tracker.rr,
    )
    if via.status:
        return error_response(request, via.status, via.message)
    real = plan.resolve_model(via.name)
    if real is None:
        return error_response(request, 404, f"no local server found for requested model {name!r}")

    def running_now(sched) -> tuple[tuple[str, tuple[str, ...]], ...]:
        live = {m for m in plan.models if sched.knows(m) and sched.state(m) is not ModelState.STOPPED}
        live.update(sched.swaps())
        return tuple((m, sched.devices(m) or ()) for m in sorted(live))  # with their devices

    try:
        placed = await request.app[ROUTER].call(running_now)
    except RuntimeError as exc:
        return error_response(request, 503, str(exc))
    running_set = tuple(m for m, _ in placed)
    decision = plan.policy.decide(real, running_set, explain=True)
    placer = getattr(plan.policy, "placer", None)
    if placer is not None:  # resources: what the scheduler would do, with the device
        decision = replace(placer.decide(real, placed), candidates=decision.candidates)
    extra = {"resolution": via.to_json()} if via.steps else {}
    return web.json_response(
        {**decision.to_json(request=name), "explanation": explain(decision, plan.engine, via.name), **extra}
    )


async def logs(request: web.Request) -> web.StreamResponse:
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPFound("/ui/logs")  # a browser: the web UI's log page
    return web.Response(text="\n".join(request.app[LOGS].combined.history()) + "\n")


async def logs_stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[LOGS]
    which = request.match_info.get("which", "")
    if which in ("", "combined"):
        buf = hub.combined
    elif which == "proxy":
        buf = hub.proxy
    elif which == "upstream":
        buf = hub.upstream
    else:
        real = request.app[LIVE].plan.resolve_model(which)
        if real is None:
            return web.Response(status=400, text="invalid logger. Use 'proxy', 'upstream' or a model's ID")
        buf = hub.model(real)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "X-Accel-Buffering": "no",
            "Cache-Control": "no-cache",
        }
    )
    await resp.prepare(request)
    streams = request.app[LOG_STREAMS]
    closing = asyncio.Event()
    streams.add(closing)
    lines = buf.follow(history="no-history" not in request.query)
    ended = asyncio.ensure_future(closing.wait())
    nxt: asyncio.Future | None = None
    try:
        while True:
            nxt = asyncio.ensure_future(anext(lines))
            await asyncio.wait([nxt, ended], return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                break  # the server is shutting down
            await resp.write(nxt.result().encode("utf-8", "replace") + b"\n")
    finally:
        streams.discard(closing)
        ended.cancel()
        if nxt is not None and not nxt.done():
            nxt.cancel()  # ends the generator (its finally unsubscribes)
            await asyncio.gather(nxt, return_exceptions=True)
        else:
            await lines.aclose()
    await resp.write_eof()
    return resp


async def end_log_streams(app: web.Application) -> None:
    """on_shutdown: end every live log stream, so none holds the exit up."""
    for closing in app[LOG_STREAMS].copy():
        closing.set()


async def version(request: web.Request) -> web.Response:
    """llama-swap's build metadata: {"version", "commit", "build_date"} (as `serve -version`)."""
    return web.json_response(await asyncio.to_thread(build_info))


# llama-swap's UI-data endpoints for features llamaswap leaves out (compile warns LS400 for
# `performance` and `captureBuffer`): each answers what llama-swap answers when the feature
# is off, saying why, instead of a bare 404 that reads as a wrong URL.


async def performance(request: web.Request) -> web.Response:
    """llama-swap's answer with `performance.disabled: true`: 503 {"enabled": false}."""
    return web.json_response({"enabled": False}, status=503)


async def hardware(request: web.Request) -> web.Response:
    return error_response(request, 503, "hardware detection unavailable: llamaswap does not detect hardware")


async def capture(request: web.Request) -> web.Response:
    if not request.match_info["id"].lstrip("-").isdigit():
        return error_response(request, 400, "invalid capture ID")
    return error_response(
        request, 404, "capture not found: llamaswap does not capture requests (captureBuffer has no effect)"
    )


async def inflight(request: web.Request) -> web.Response:
    """The in-flight table: {"requests": [{id, model, requested, req_path, method, remote_ip,
    state, timestamp, elapsed_ms}]}, oldest first."""
    return web.json_response({"requests": request.app[INFLIGHT].snapshot()["requests"]})


async def cancel_inflight(request: web.Request) -> web.Response:
    """Cancel one in-flight request: its upstream connection is closed, the scheduler releases
    it, and its client gets the answer dispatch.cancelled_response gives. Unknown id: 404."""
    if not request.app[INFLIGHT].cancel(request.match_info["id"]):
        return error_response(request, 404, "inflight request not found")
    return web.json_response({"msg": "ok"})
