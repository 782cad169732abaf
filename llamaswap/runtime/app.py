"""App: the aiohttp application behind `llamaswap serve` — the route table, the gate
middleware (CORS preflight; without apiKeys the Host and cross-site checks of crosssite.py;
then auth), and the lifecycle.

Lifecycle (cleanup_ctx): one ClientSession; the process supervisors; the activity store;
the Router's owner task (its observer feeds the UI's event hub); preload hooks; the config
watcher (`--watch-config`). Hot reload (runtime/reload.py) swaps the live plan and hands the
rest to the router. On shutdown, live log and event streams end (so they do not hold the
exit up); on cleanup the router shuts down (waiting requests get 503, every upstream process
group is stopped), the session closes, and the activity store writes what it still holds.

The handlers live elsewhere: the model-dispatched path in dispatch.py, the operator
endpoints in api.py, the web UI's files, JSON and event feed in webui.py; the app's state is
the typed keys of keys.py (and the activity/events modules' own keys).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from llamaswap.compiler.plan import Plan
from llamaswap.runtime import api, profiles, reload, websocket, webui
from llamaswap.runtime.activity import ACTIVITY, ActivityStore, store_path
from llamaswap.runtime.auth import OPEN_PATHS, refusal
from llamaswap.runtime.crosssite import host_refusal, origin_refusal
from llamaswap.runtime.dispatch import comfyui_redirect, comfyui_route, model_route, upstream_route
from llamaswap.runtime.events import EVENTS, INFLIGHT, EventHub, EventsObserver, InflightTracker
from llamaswap.runtime.keys import (
    DECISIONS,
    LIMITS,
    LIVE,
    LOG_STREAMS,
    LOGS,
    METRICS,
    PROCESSES,
    REDACT,
    ROUTER,
    SELECTORS,
    SESSION,
    STARTED,
    TRACKER,
    UPSTREAM_TIMEOUTS,
    UPSTREAMS,
    LiveConfig,
)
from llamaswap.runtime.limits import PlanMemo, all_upstream_timeouts, server_limits
from llamaswap.runtime.logs import UPSTREAM, HubHandler, LogHub
from llamaswap.runtime.observe import DecisionLog, Metrics
from llamaswap.runtime.processes import ModelProcess, ProcessSpec, ProcessTracker
from llamaswap.runtime.redact import RedactFilter, Redactor
from llamaswap.runtime.reload import RELOADER, ConfigSource, ConfigWatcher, Reloader, process_specs
from llamaswap.runtime.router import Rejected, Router
from llamaswap.runtime.selectors import SelectorTracker
from llamaswap.runtime.settings import scheduler_settings, scheduling_policy
from llamaswap.runtime.upstream import UpstreamClient

logger = logging.getLogger("llamaswap.serve")

# Routes whose JSON body names the model (POST).
JSON_ROUTES = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/reranking",
    "/rerank",
    "/reranking",
    "/infill",
    "/completion",
    "/v1/audio/speech",
    "/v1/audio/voices",
    "/v1/images/generations",
    "/sdapi/v1/txt2img",
    "/sdapi/v1/img2img",
    "/audioapi/v1/tasks/run",
    "/v/chat/completions",
    "/v/responses",
    "/v/completions",
    "/v/messages",
    "/v/messages/count_tokens",
    "/v/embeddings",
    "/v/rerank",
    "/v/reranking",
)
# Routes whose multipart form names the model (POST).
FORM_ROUTES = ("/v1/audio/transcriptions", "/v1/images/edits")
# Routes whose query string names the model (GET).
QUERY_ROUTES = ("/v1/audio/voices", "/sdapi/v1/loras", "/props")
# The model routes' /v1 paths without their /v1, where that is no route itself: what a client
# whose base_url lacks /v1 asks for (openai.OpenAI(base_url="http://127.0.0.1:8080") posts
# /chat/completions); api.missing_v1 says what to send instead.
MISSING_V1 = tuple(
    sorted(
        {p[3:] for p in (*JSON_ROUTES, *FORM_ROUTES) if p.startswith("/v1/")}
        - {*JSON_ROUTES, *FORM_ROUTES, *QUERY_ROUTES}
    )
)


def make_process(app: web.Application, spec: ProcessSpec) -> ModelProcess:
    """The supervisor of one model's upstream (at startup, and for a model a reload adds).
    Its loads are kept in the activity store (for `trace export`)."""
    proc = ModelProcess(spec, session=app[SESSION], log=app[LOGS].model(spec.model), tracker=app.get(TRACKER))
    proc.add_listener(app[ACTIVITY].process_changed)
    return proc


def make_added_process(app: web.Application, spec: ProcessSpec) -> ModelProcess:
    """The process of a model a reload added: watched by the UI's feed like the others."""
    proc = make_process(app, spec)
    webui.watch_process(app, proc)
    return proc


def gate(request: web.Request, handler: Any) -> web.StreamResponse | None:
    """CORS preflight (204), then apiKeys (401) or, without them, the Host and cross-site
    checks (403): the answer for a request that may not reach `handler` (the route's own
    handler), or None. The middleware runs it for aiohttp's routes, the fast front
    (fastserver.py) for its own."""
    if request.method == "OPTIONS":
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
                "Access-Control-Max-Age": "86400",
            },
        )
    app = request.app
    live = app[LIVE]
    if not live.api_keys and request.path not in OPEN_PATHS:
        limits = app[LIMITS].of(live.plan)
        refused = host_refusal(request, limits.allowed_hosts)
        if refused is None and handler in STATE_CHANGING:
            refused = origin_refusal(request, limits.allowed_origins)
        return refused
    return refusal(request)


@web.middleware
async def gate_middleware(request: web.Request, handler):
    """`gate`, as one middleware layer, as cheap as possible on the proxy's hot path."""
    refused = gate(request, request.match_info.handler)
    if refused is not None:
        return refused
    return await handler(request)


async def gated_expect(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` on aiohttp's routes (aiohttp answers it before any middleware
    runs): a request `gate` refuses (401, 403) is answered at its head, before the client
    uploads its body, and that answer closes the connection (the client may never send the
    body it announced, RFC 9110 10.1.1); one that may pass is told to continue, as aiohttp
    would. The fast front (fastserver.py) does the same for its own routes."""
    refused = gate(request, request.match_info.handler)
    if refused is not None:
        refused.force_close()
        return refused
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {request.headers.get('Expect')}")
    if request.version >= aiohttp.HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


class _GatedRoutes:
    """The app's router, adding every route with `gated_expect` as its Expect handler."""

    def __init__(self, router: web.UrlDispatcher) -> None:
        self._router = router

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("add_"):
            raise AttributeError(name)
        add = getattr(self._router, name)
        return functools.partial(add, expect_handler=gated_expect)


# Handlers that can change the server's state (start or stop models): cross-site checked.
STATE_CHANGING = frozenset(
    {
        model_route,
        upstream_route,
        comfyui_route,
        api.unload_all,
        api.unload_one,
        api.cancel_inflight,
        webui.load_model,
    }
)


# Handlers the fast front (fastserver.py) runs itself, on the plain (GET/POST) routes that
# name them: the model-dispatched routes, the model list, the health check.
FAST_HANDLERS = frozenset({model_route, api.list_models, api.health})


def fast_routes(app: web.Application) -> dict[tuple[str, str], Any]:
    """(method, path) -> handler for the fast front, read off the app's own route table (so a
    route added or re-pointed there is followed, and anything else stays aiohttp's)."""
    routes: dict[tuple[str, str], Any] = {}
    seen: set[tuple[str, str]] = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path")
        if path is None or (route.method, path) in seen:
            continue  # not a plain path; or an earlier route for it wins, as in aiohttp
        seen.add((route.method, path))
        if route.method in ("GET", "POST") and route.handler in FAST_HANDLERS:
            routes[(route.method, path)] = route.handler
    return routes


# -- lifecycle ---------------------------------------------------------------------------------


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    plan = app[LIVE].plan
    hub = app[LOGS]
    handler = HubHandler(hub)
    logging.getLogger("llamaswap").addHandler(handler)
    unsubscribe = None
    if plan.config is not None and plan.config.log_to_stdout in ("upstream", "both"):
        upstream_log = logging.getLogger(UPSTREAM)

        def to_terminal(line: str) -> None:
            model, _, text = line[1:].partition("] ") if line.startswith("[") else ("", "", line)
            upstream_log.info("%s", line, extra={"model": model, "line": text})

        unsubscribe = hub.upstream.subscribe(to_terminal)
    # The terminal's handlers too (runtime/logs.configure: on `llamaswap` and UPSTREAM, not propagated).
    redacting = [
        h
        for h in dict.fromkeys(
            (
                handler,
                *logging.getLogger().handlers,
                *logging.getLogger("llamaswap").handlers,
                *logging.getLogger(UPSTREAM).handlers,
            )
        )
    ]
    redact_filter = RedactFilter(lambda text: app[REDACT].of(app[LIVE].plan)(text))
    for h in redacting:
        h.addFilter(redact_filter)
    session = aiohttp.ClientSession(
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30),
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
    )
    app[SESSION] = session
    app[UPSTREAMS] = UpstreamClient()
    processes = {m: make_process(app, spec) for m, spec in process_specs(plan).items()}
    observer = EventsObserver(app[DECISIONS], app[METRICS], app[EVENTS])
    scheduling = scheduling_policy(plan)
    router = Router(
        plan.policy,
        scheduler_settings(plan),
        processes,
        observer=observer,
        scheduling=scheduling,
    )
    # The router's own table: a reload adds and removes processes there.
    app[PROCESSES] = router.processes
    app[METRICS].bind(router.processes, router)
    app[ROUTER] = router
    app[ACTIVITY].open()
    # The policy starts from the loads recorded before this start (its scheduler is not running yet).
    from llamaswap.runtime.policies import seed_load_times

    seed_load_times(scheduling, app[ACTIVITY].load_times(plan.models), asyncio.get_running_loop().time())
    webui.attach_sources(app)
    await router.start()
    preload = asyncio.create_task(_preload(app), name="llamaswap:preload") if plan.preload else None
    reloader = app[RELOADER]
    watcher = None
    if app[WATCH] and reloader.source is not None and reloader.source.paths:
        watch = ConfigWatcher(reloader.source.paths, lambda: reloader.reload("watch"))
        watcher = asyncio.create_task(watch.run(), name="llamaswap:watch-config")
        logger.info("watching %s for changes", ", ".join(reloader.source.paths))
    try:
        yield
    finally:
        if preload is not None and not preload.done():
            preload.cancel()
        if watcher is not None:
            watcher.cancel()
        await reloader.close()
        await router.shutdown()
        app[UPSTREAMS].close()
        await session.close()
        await asyncio.to_thread(app[ACTIVITY].close)
        logging.getLogger("llamaswap").removeHandler(handler)
        for h in redacting:
            h.removeFilter(redact_filter)
        if unsubscribe is not None:
            unsubscribe()


async def _preload(app: web.Application) -> None:
    """hooks.on_startup.preload: request every listed model at once; the scheduler lets the
    ones that may run together load in parallel."""
    plan = app[LIVE].plan
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


WATCH = web.AppKey("watch_config", bool)


def build_app(
    plan: Plan,
    source: ConfigSource | None = None,
    watch: bool = False,
    *,
    tracker: ProcessTracker | None = None,
) -> web.Application:
    """The serve application for a compiled, error-free plan. `source`: where the config
    comes from, for hot reload (SIGHUP, `POST /api/config/reload`, and with `watch`, every
    change on disk); None: nothing to reload. `tracker` is told about every upstream
    process group (serve's reaper)."""
    if not plan.ok:
        raise ValueError("cannot serve a plan with errors")
    limits = PlanMemo(server_limits)
    # Model-dispatched bodies are read under their own limits (body.py); this bounds the
    # few other handlers that read one.
    app = web.Application(middlewares=[gate_middleware], client_max_size=limits.of(plan).max_body or 1 << 30)
    app[LIVE] = LiveConfig(plan)
    app[LIMITS] = limits
    app[UPSTREAM_TIMEOUTS] = PlanMemo(all_upstream_timeouts)
    app[REDACT] = PlanMemo(Redactor.for_plan)
    if tracker is not None:
        app[TRACKER] = tracker
    app[LOGS] = LogHub(redact=lambda line: app[REDACT].of(app[LIVE].plan)(line))
    app[STARTED] = time.time()
    app[RELOADER] = Reloader(app, source, make_added_process)
    app[WATCH] = watch
    app[DECISIONS] = DecisionLog(plan.policy)
    app[SELECTORS] = SelectorTracker(plan)
    app[METRICS] = Metrics(plan.models)
    app[LOG_STREAMS] = set()
    app[EVENTS] = events = EventHub()
    app[INFLIGHT] = InflightTracker(events)
    app[ACTIVITY] = ActivityStore(
        store_path(plan.config), max_in_memory=plan.config.metrics_max_in_memory if plan.config else 1000
    )
    app[webui.UI_FILES] = webui.UiFiles()
    app[websocket.OPEN_WEBSOCKETS] = set()
    app.on_shutdown.append(websocket.close_all)
    app.on_shutdown.append(api.end_log_streams)
    app.on_shutdown.append(webui.end_event_streams)
    app.cleanup_ctx.append(_lifecycle)
    r = _GatedRoutes(app.router)
    for path in JSON_ROUTES:
        r.add_post(path, model_route)
    for path in FORM_ROUTES:
        r.add_post(path, model_route)
    for path in QUERY_ROUTES:
        r.add_get(path, model_route)
    for path in MISSING_V1:
        r.add_route("*", path, api.missing_v1)
    r.add_get("/v1/models", api.list_models)
    r.add_get("/models", api.list_models)
    r.add_get("/v1/models/{model:.+}", api.get_model)
    r.add_get("/running", api.running)
    r.add_get("/unload", api.unload_all)
    r.add_post("/api/models/unload", api.unload_all)
    r.add_post("/api/models/unload/{model:.+}", api.unload_one)
    r.add_route("*", "/upstream/{tail:.+}", upstream_route)
    r.add_route("*", "/comfyui", comfyui_redirect)
    r.add_route("*", "/comfyui/{tail:.*}", comfyui_route)
    r.add_get("/api/scheduler", api.scheduler_state)
    r.add_get("/api/version", api.version)
    r.add_get("/api/inflight", api.inflight)
    r.add_get("/api/performance", api.performance)
    r.add_get("/api/hardware", api.hardware)
    r.add_get("/api/captures/{id}", api.capture)
    r.add_post("/api/inflight/{id}/cancel", api.cancel_inflight)
    r.add_get("/health", api.health)
    r.add_get("/metrics", api.metrics)
    r.add_get("/api/decisions", api.decisions)
    r.add_get("/api/profiles", profiles.list_profiles)
    r.add_get("/api/profiles/active", profiles.active_profile)
    r.add_put("/api/profiles/active", profiles.set_active_profile)
    r.add_get("/api/plan", api.what_if)
    r.add_post("/api/config/reload", reload.reload_now)
    r.add_get("/api/reloads", reload.reloads_view)
    r.add_get("/wol-health", api.health)
    r.add_get("/logs", api.logs)
    r.add_get("/logs/stream", api.logs_stream)
    r.add_get("/logs/stream/{which:.+}", api.logs_stream)
    r.add_get("/api/metrics/activity", webui.activity)
    r.add_get("/api/metrics/stats", webui.activity_stats)
    r.add_get("/api/events", webui.events)
    # The web UI: static files, the redirects to them, and the JSON its pages read.
    r.add_get("/", webui.to_ui)
    r.add_get("/upstream", webui.upstream_to_ui)
    r.add_get("/ui", webui.ui_page)
    r.add_get("/ui/{rest:.*}", webui.ui_page)
    r.add_get("/favicon.ico", webui.favicon)
    r.add_get("/api/models", webui.models_status)
    r.add_post("/api/models/load/{model:.+}", webui.load_model)
    r.add_get("/api/live", webui.live)
    r.add_get("/api/graph", webui.graph)
    r.add_get("/api/config", webui.config_summary)
    return app
