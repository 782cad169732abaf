"""App: the aiohttp application behind `llamaswap serve` — routes, auth, the request path
from "which model?" to a granted, proxied response, and the app's lifecycle.

Request path for a model-dispatched route:
  auth -> read the body once -> find the model (JSON `model`, form field, `?model=`, or the
  `/upstream/<model>/` path) -> resolve aliases -> ticket through the Router (admission
  first: 404/429/503 before anything is streamed) -> optional loading-state SSE while waiting
  -> grant -> rewrite the JSON body (useModelName, stripParams, setParams, setParamsByID) ->
  forward and stream -> release the ticket (serve_done), also when the client went away.

Lifecycle (cleanup_ctx): one ClientSession; the process supervisors; the Router's owner
task; preload hooks. On shutdown, live log streams end (so they do not hold the exit up);
on cleanup the router shuts down (waiting requests get 503, every upstream process group is
stopped), then the session closes.

Extensions beyond llama-swap's API: `/running` entries carry `pid` and `state_seconds`;
`GET /api/scheduler` is a consistent snapshot of the scheduler (per-model state, in-flight,
reserved and waiting counts, the queue, swaps in progress), read inside its owner task;
granted requests that waited for a swap get `X-Llamaswap-Swap: model=M; evicted=a,b; set=S;
waited=1.234s`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, unquote

import aiohttp
from aiohttp import web

from llamaswap.compiler.plan import Plan
from llamaswap.runtime.filters import (multipart_boundary, multipart_field, needs_rewrite,
                                       replace_multipart_field, rewrite_body)
from llamaswap.runtime.logs import HubHandler, LogHub
from llamaswap.runtime.processes import ModelProcess, ProcessSpec, ProcessState
from llamaswap.runtime.proxy import UpstreamBroke, UpstreamError, error_response, forward
from llamaswap.runtime.observe import AppObserver, DecisionLog, Metrics, health as health_check
from llamaswap.runtime.upstream import UpstreamClient
from llamaswap.runtime.router import Granted, Rejected, Router, Ticket
from llamaswap.runtime.scheduler import Admission
from llamaswap.runtime.settings import (effective_ttl, effective_unload_timeout, health_check_timeout,
                                        scheduler_settings, stall_timeout)

logger = logging.getLogger("llamaswap.serve")

PLAN = web.AppKey("plan", Plan)
ROUTER = web.AppKey("router", Router)
PROCESSES = web.AppKey("processes", dict)
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAMS = web.AppKey("upstreams", UpstreamClient)
LOGS = web.AppKey("logs", LogHub)
STARTED = web.AppKey("started", float)
API_KEYS = web.AppKey("api_keys", frozenset)
DECISIONS = web.AppKey("decisions", DecisionLog)
METRICS = web.AppKey("metrics", Metrics)
LOG_STREAMS = web.AppKey("log_streams", set)

# Routes whose JSON body names the model (POST).
JSON_ROUTES = (
    "/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/messages",
    "/v1/messages/count_tokens", "/v1/embeddings", "/v1/rerank", "/v1/reranking", "/rerank",
    "/reranking", "/infill", "/completion", "/v1/audio/speech", "/v1/audio/voices",
    "/v1/images/generations", "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/audioapi/v1/tasks/run",
    "/v/chat/completions", "/v/responses", "/v/completions", "/v/messages", "/v/messages/count_tokens",
    "/v/embeddings", "/v/rerank", "/v/reranking",
)
# Routes whose multipart form names the model (POST).
FORM_ROUTES = ("/v1/audio/transcriptions", "/v1/images/edits")
# Routes whose query string names the model (GET).
QUERY_ROUTES = ("/v1/audio/voices", "/sdapi/v1/loras", "/props")

LOADING_TICK = 0.75


class BadBody(Exception):
    """The request body cannot be read for a model name (answered with 400)."""


@dataclass
class Body:
    raw: bytes
    json: dict | None = None
    model: str | None = None


# -- helpers -----------------------------------------------------------------------------------

def process_specs(plan: Plan) -> dict[str, ProcessSpec]:
    c = plan.config
    assert c is not None
    hct = health_check_timeout(plan)
    return {
        m: ProcessSpec(
            model=m, cmd=c.models[m].cmd, proxy=c.models[m].proxy, cmd_stop=c.models[m].cmd_stop,
            env=tuple(c.models[m].env), check_endpoint=c.models[m].check_endpoint,
            health_check_timeout=hct, unload_timeout=effective_unload_timeout(plan, m),
        )
        for m in plan.models
    }


def api_key_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip()).decode("utf-8", "replace")
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        if ":" in decoded:
            return decoded.split(":", 1)[1]
    if auth.startswith("Bearer "):
        return auth[7:].strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


OPEN_PATHS = frozenset({"/health", "/wol-health", "/favicon.ico"})


@web.middleware
async def gate_middleware(request: web.Request, handler):
    """CORS preflight (204), then apiKeys (401): one middleware layer, as cheap as possible
    on the proxy's hot path."""
    if request.method == "OPTIONS":
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
            "Access-Control-Max-Age": "86400",
        })
    keys = request.app[API_KEYS]
    if keys and request.path not in OPEN_PATHS and api_key_of(request) not in keys:
        return error_response(request, 401, "unauthorized: invalid or missing API key",
                              headers={"WWW-Authenticate": 'Basic realm="llama-swap"'})
    return await handler(request)


def _form_model(content_type: str, raw: bytes) -> str | None:
    """The `model` field of a multipart/form-data body."""
    boundary = multipart_boundary(content_type)
    value = multipart_field(raw, boundary, "model") if boundary else None
    return None if value is None else value.decode("utf-8", "replace").strip()


async def read_body(request: web.Request) -> Body:
    raw = await request.read()
    body = Body(raw)
    ctype = request.content_type
    if ctype == "application/json" or (raw[:1] in (b"{",) and ctype in ("", "application/octet-stream")):
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except ValueError:
                raise BadBody("invalid JSON body") from None
            if isinstance(parsed, dict):
                body.json = parsed
                model = parsed.get("model")
                if isinstance(model, str):
                    body.model = model
    elif ctype == "multipart/form-data":
        body.model = _form_model(request.headers.get("Content-Type", ""), raw)
    elif ctype == "application/x-www-form-urlencoded":
        values = parse_qs(raw.decode("utf-8", "replace")).get("model")
        if values:
            body.model = values[0]
    if body.model is None and request.query.get("model"):
        body.model = request.query["model"]
    return body


def _is_streaming(request: web.Request, body: Body) -> bool:
    if body.json is not None and body.json.get("stream") is True:
        return True
    return request.query.get("stream", "").lower() == "true"


def _sse(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _loading_chunk(model: str, text: str) -> bytes:
    return _sse({
        "id": "llamaswap-loading", "object": "chat.completion.chunk", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": text},
                     "finish_reason": None}],
    })


def swap_header(granted: Granted) -> dict[str, str]:
    """`X-Llamaswap-Swap` for a request that waited for a swap; {} otherwise."""
    swap = granted.swap
    if swap is None:
        return {}
    return {"X-Llamaswap-Swap": f"model={swap.model}; evicted={','.join(swap.decision.evict)}; "
                                f"set={swap.decision.set or ''}; waited={granted.waited:.3f}s"}


# -- the model-dispatched request path ---------------------------------------------------------

async def dispatch(request: web.Request, body: Body, requested: str, upstream_path: str,
                   apply_filters: bool) -> web.StreamResponse:
    """The request path, counted in `llamaswap_requests_total{model, status}`."""
    plan = request.app[PLAN]
    model = plan.resolve_model(requested) or "(unknown)"
    status = "cancelled"
    try:
        resp = await _dispatch(request, body, requested, upstream_path, apply_filters)
        status = str(resp.status)
        return resp
    except web.HTTPException as exc:
        status = str(exc.status)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        status = "500"
        raise
    finally:
        request.app[METRICS].count_request(model, status)


async def _dispatch(request: web.Request, body: Body, requested: str, upstream_path: str,
                    apply_filters: bool) -> web.StreamResponse:
    app = request.app
    plan = app[PLAN]
    router = app[ROUTER]
    model = plan.resolve_model(requested)
    if model is None:
        return error_response(request, 404, "no local server found for requested model")
    cfg = plan.config.models[model]  # type: ignore[union-attr]
    ticket = router.submit(model, requested)
    stream: web.StreamResponse | None = None
    try:
        admission = await ticket.admission
        outcome: Granted | Rejected | None = ticket.outcome.result() if ticket.outcome.done() else None
        loading = (outcome is None and admission in (Admission.WAITING, Admission.QUEUED)
                   and _wants_loading_state(plan, model, request, body))
        if loading:
            stream = await _loading_stream(request, ticket, requested)
            outcome = ticket.outcome.result()
        elif outcome is None:
            outcome = await ticket.outcome
        if isinstance(outcome, Rejected):
            if stream is not None:
                await stream.write(_loading_chunk(requested, f"\nerror: {outcome.message}\n"))
                await stream.write(b"data: [DONE]\n\n")
                return stream
            return error_response(request, outcome.status, outcome.message,
                                  code="concurrency_limit" if outcome.status == 429 else None,
                                  headers=outcome.headers)
        data = body.raw
        if apply_filters and body.json is not None and needs_rewrite(cfg, requested):
            data = json.dumps(rewrite_body(body.json, cfg, requested)).encode()
        elif apply_filters and cfg.use_model_name and request.content_type == "multipart/form-data":
            data = _rewrite_form_model(request, body.raw, cfg.use_model_name)
        url = cfg.proxy.rstrip("/") + upstream_path
        if request.query_string:
            url += "?" + request.query_string
        try:
            return await forward(request, app[UPSTREAMS], app[SESSION], url, data, response=stream,
                                 extra_headers=swap_header(outcome))
        except UpstreamError as exc:
            if stream is not None:
                await stream.write(_loading_chunk(requested, f"\nupstream error: {exc}\n"))
                return stream
            return error_response(request, 502, f"upstream error ({model}): {exc}")
        except UpstreamBroke as exc:
            logger.warning("%s: upstream failed mid-response (%s); aborting the client connection",
                           model, exc)
            if request.transport is not None:
                request.transport.abort()
            return exc.response
    finally:
        # Also on cancellation (the client left) and on any error: a waiting ticket is
        # cancelled, a granted one reports serve_done.
        router.release(ticket)


def _wants_loading_state(plan: Plan, model: str, request: web.Request, body: Body) -> bool:
    c = plan.config
    assert c is not None
    enabled = c.models[model].send_loading_state
    if enabled is None:
        enabled = c.send_loading_state
    path = request.path
    return bool(enabled) and _is_streaming(request, body) and (
        path.startswith("/v1/chat/completions") or path.startswith("/v/chat/completions"))


async def _loading_stream(request: web.Request, ticket: Ticket, requested: str) -> web.StreamResponse:
    """Open the SSE response and report progress until the ticket has its outcome."""
    resp = web.StreamResponse(status=200, headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    started = time.monotonic()
    await resp.write(_loading_chunk(requested, f"━━━━━\nllamaswap loading model: {ticket.model}\n"))
    last_position: int | None = None
    shown_seconds = 0
    while not ticket.outcome.done():
        waiter = asyncio.ensure_future(ticket.position_changed())
        try:
            await asyncio.wait([ticket.outcome, waiter], timeout=LOADING_TICK,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if ticket.outcome.done():
            break
        seconds = int(time.monotonic() - started)
        if ticket.position is not None and ticket.position != last_position:
            last_position = ticket.position
            text = f"\nQueue position: #{ticket.position}\n"
        elif seconds > shown_seconds:  # elapsed time, once per whole second
            shown_seconds = seconds
            text = f" {seconds}s"
        else:
            text = "."
        await resp.write(_loading_chunk(requested, text))
    if isinstance(ticket.outcome.result(), Granted):
        await resp.write(_loading_chunk(requested, f"\nDone! ({time.monotonic() - started:.2f}s)\n━━━━━\n"))
    return resp


def _rewrite_form_model(request: web.Request, raw: bytes, new_model: str) -> bytes:
    """A multipart body with its `model` field replaced (useModelName)."""
    boundary = multipart_boundary(request.headers.get("Content-Type", ""))
    return replace_multipart_field(raw, boundary, "model", new_model.encode()) if boundary else raw


async def model_route(request: web.Request) -> web.StreamResponse:
    try:
        body = await read_body(request)
    except BadBody as exc:
        return error_response(request, 400, str(exc))
    if not body.model:
        return error_response(request, 404, "no model id could be identified")
    path = request.path
    if path.startswith("/v/"):
        path = path[2:]
    elif path.startswith("/audioapi/"):
        path = path[len("/audioapi"):]
    return await dispatch(request, body, body.model, path, apply_filters=True)


async def upstream_route(request: web.Request) -> web.StreamResponse:
    """/upstream/<model>/<path>: direct passthrough; the longest matching model prefix wins."""
    plan = request.app[PLAN]
    rest = request.match_info["tail"]
    names = sorted(set(plan.models) | set(plan.aliases), key=len, reverse=True)
    for name in names:
        if rest == name:
            location = f"/upstream/{name}/"
            if request.query_string:
                location += "?" + request.query_string
            raise (web.HTTPMovedPermanently if request.method in ("GET", "HEAD")
                   else web.HTTPPermanentRedirect)(location)
        if rest.startswith(name + "/"):
            body = Body(await request.read())
            return await dispatch(request, body, name, _raw_remainder(request, name, rest),
                                  apply_filters=False)
    return error_response(request, 404, f"no model found in path /upstream/{rest}")


def _raw_remainder(request: web.Request, name: str, rest: str) -> str:
    """The path after `/upstream/<name>` as the client sent it (still percent-encoded, so
    that e.g. `%2F` inside a segment stays one segment upstream)."""
    raw_segments = request.rel_url.raw_path[len("/upstream/"):].split("/")
    k = name.count("/") + 1
    if unquote("/".join(raw_segments[:k])) == name:
        return "/" + "/".join(raw_segments[k:])
    return rest[len(name):]  # the name itself was sent encoded: fall back to the decoded path


# -- llama-swap and operations endpoints -------------------------------------------------------

async def list_models(request: web.Request) -> web.Response:
    plan = request.app[PLAN]
    c = plan.config
    assert c is not None
    procs = request.app[PROCESSES]
    created = int(request.app[STARTED])
    data = []
    for mid in plan.models:
        m = c.models[mid]
        if m.unlisted:
            continue
        state = procs[mid].state
        record: dict[str, Any] = {
            "id": mid, "object": "model", "created": created, "owned_by": "llama-swap",
            "meta": {"llamaswap": {**m.metadata, "type": "model",
                                   "aliases": sorted(a for a, r in plan.aliases.items() if r == mid)}},
            "status": {"value": "unloaded" if state is ProcessState.STOPPED else "loaded"},
        }
        if m.name:
            record["name"] = m.name
        if m.description:
            record["description"] = m.description
        data.append(record)
        if c.include_aliases_in_list:
            for alias in sorted(a for a, r in plan.aliases.items() if r == mid):
                alias_record = dict(record, id=alias)
                alias_record["meta"] = {"llamaswap": {**m.metadata, "type": "alias", "aliases": []}}
                data.append(alias_record)
    data.sort(key=lambda r: r["id"])
    headers = {}
    if "Origin" in request.headers:
        headers["Access-Control-Allow-Origin"] = request.headers["Origin"]
    return web.json_response({"object": "list", "data": data}, headers=headers)


async def running(request: web.Request) -> web.Response:
    plan = request.app[PLAN]
    c = plan.config
    assert c is not None
    now = time.monotonic()
    out = []
    for mid in plan.models:
        proc = request.app[PROCESSES][mid]
        if proc.state is ProcessState.STOPPED:
            continue
        m = c.models[mid]
        out.append({
            "model": mid, "state": proc.state.value, "cmd": m.cmd, "proxy": m.proxy,
            "ttl": int(effective_ttl(plan, mid)), "name": m.name, "description": m.description,
            "pid": proc.pid, "state_seconds": round(now - proc.state_since, 3),
        })
    return web.json_response({"running": out})


async def unload_all(request: web.Request) -> web.Response:
    await request.app[ROUTER].unload(None)
    if request.method == "POST":
        return web.json_response({"msg": "ok"})
    return web.Response(text="OK")


async def unload_one(request: web.Request) -> web.Response:
    plan = request.app[PLAN]
    name = request.match_info["model"]
    real = plan.resolve_model(name)
    if real is None:
        return error_response(request, 404, "model not found")
    await request.app[ROUTER].unload([real])
    return web.Response(text="OK")


async def scheduler_state(request: web.Request) -> web.Response:
    """A consistent snapshot of the scheduler, taken inside its owner task."""
    router = request.app[ROUTER]
    plan = request.app[PLAN]

    def snapshot(sched) -> dict:
        return {
            "engine": plan.engine,
            "shutting_down": sched.shutting_down,
            "models": {m: {"state": sched.state(m).value, "in_flight": sched.in_flight(m),
                           "reserved": sched.reserved(m), "waiting": len(sched.waiting(m))}
                       for m in plan.models},
            "queue": [{"id": rid, "model": router.ticket_model(rid)} for rid in sched.queued()],
            "swaps": list(sched.swaps()),
            "swaps_started": router.swaps_started,
            "protected": sched.protected,
        }

    try:
        return web.json_response(await router.call(snapshot))
    except RuntimeError as exc:
        return error_response(request, 503, str(exc))


async def health(request: web.Request) -> web.Response:
    """200 while the scheduler task is alive and making progress; 503 with the reason."""
    ok, reason = health_check(request.app[ROUTER], stall_timeout(request.app[PLAN]))
    if ok:
        return web.Response(text="OK")
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
    """What would happen if `?model=X` were requested now, against the live running set."""
    from llamaswap.runtime.scheduler import ModelState

    plan = request.app[PLAN]
    name = request.query.get("model", "").strip()
    if not name:
        return error_response(request, 400, "give the model to plan for: /api/plan?model=NAME")
    real = plan.resolve_model(name)
    if real is None:
        return error_response(request, 404, f"no local server found for requested model {name!r}")

    def running_now(sched) -> tuple[str, ...]:
        live = {m for m in plan.models if sched.state(m) is not ModelState.STOPPED}
        live.update(sched.swaps())
        return tuple(sorted(live))

    try:
        running_set = await request.app[ROUTER].call(running_now)
    except RuntimeError as exc:
        return error_response(request, 503, str(exc))
    decision = plan.policy.decide(real, running_set, explain=True)
    return web.json_response(decision.to_json(request=name))


async def logs(request: web.Request) -> web.StreamResponse:
    if "text/html" in request.headers.get("Accept", ""):
        pass  # no web UI: always plain text
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
        real = request.app[PLAN].resolve_model(which)
        if real is None:
            return web.Response(status=400, text="invalid logger. Use 'proxy', 'upstream' or a model's ID")
        buf = hub.model(real)
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8", "X-Accel-Buffering": "no",
                                       "Cache-Control": "no-cache"})
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


async def _end_log_streams(app: web.Application) -> None:
    for closing in list(app[LOG_STREAMS]):
        closing.set()


# -- lifecycle ---------------------------------------------------------------------------------

async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    plan = app[PLAN]
    hub = app[LOGS]
    handler = HubHandler(hub)
    logging.getLogger("llamaswap").addHandler(handler)
    session = aiohttp.ClientSession(
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30),
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
    )
    app[SESSION] = session
    app[UPSTREAMS] = UpstreamClient()
    processes = {m: ModelProcess(spec, session=session, log=hub.model(m)) for m, spec in process_specs(plan).items()}
    app[PROCESSES] = processes
    app[METRICS].bind(processes, None)  # type: ignore[arg-type]
    observer = AppObserver(app[DECISIONS], app[METRICS])
    router = Router(plan.policy, scheduler_settings(plan), processes, observer=observer)
    app[METRICS].bind(processes, router)
    app[ROUTER] = router
    await router.start()
    preload = asyncio.create_task(_preload(app), name="llamaswap:preload") if plan.preload else None
    try:
        yield
    finally:
        if preload is not None and not preload.done():
            preload.cancel()
        await router.shutdown()
        app[UPSTREAMS].close()
        await session.close()
        logging.getLogger("llamaswap").removeHandler(handler)


async def _preload(app: web.Application) -> None:
    """hooks.on_startup.preload: request every listed model at once; the scheduler lets the
    ones that may run together load in parallel."""
    plan = app[PLAN]
    router = app[ROUTER]

    async def one(model: str) -> None:
        ticket = router.submit(model, model)
        try:
            outcome = await ticket.outcome
            if isinstance(outcome, Rejected):
                logger.error("PRELOAD FAILED for %s: %s (%s)", model, outcome.message, outcome.status)
            else:
                logger.info("preloaded %s", model)
        finally:
            router.release(ticket)

    await asyncio.gather(*(one(m) for m in plan.preload), return_exceptions=True)


def build_app(plan: Plan) -> web.Application:
    """The serve application for a compiled, error-free plan."""
    if not plan.ok:
        raise ValueError("cannot serve a plan with errors")
    app = web.Application(middlewares=[gate_middleware], client_max_size=1 << 30)
    app[PLAN] = plan
    app[LOGS] = LogHub()
    app[STARTED] = time.time()
    app[API_KEYS] = frozenset(plan.config.api_keys if plan.config else ())
    app[DECISIONS] = DecisionLog(plan.policy)
    app[METRICS] = Metrics(plan.models)
    app[LOG_STREAMS] = set()
    app.on_shutdown.append(_end_log_streams)
    app.cleanup_ctx.append(_lifecycle)
    r = app.router
    for path in JSON_ROUTES:
        r.add_post(path, model_route)
    for path in FORM_ROUTES:
        r.add_post(path, model_route)
    for path in QUERY_ROUTES:
        r.add_get(path, model_route)
    r.add_get("/v1/models", list_models)
    r.add_get("/models", list_models)
    r.add_get("/running", running)
    r.add_get("/unload", unload_all)
    r.add_post("/api/models/unload", unload_all)
    r.add_post("/api/models/unload/{model:.+}", unload_one)
    r.add_route("*", "/upstream/{tail:.+}", upstream_route)
    r.add_get("/api/scheduler", scheduler_state)
    r.add_get("/health", health)
    r.add_get("/metrics", metrics)
    r.add_get("/api/decisions", decisions)
    r.add_get("/api/plan", what_if)
    r.add_get("/wol-health", health)
    r.add_get("/logs", logs)
    r.add_get("/logs/stream", logs_stream)
    r.add_get("/logs/stream/{which:.+}", logs_stream)
    return app
