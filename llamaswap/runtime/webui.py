"""Web UI: the static files under `/ui`, the JSON the pages read, the live feed's sources,
and the activity endpoints (`/api/metrics/activity`, `/api/metrics/stats`).

- The static files ship in the package (`llamaswap/ui/`, no build step) and are read once,
  when the first one is asked for (serve's start-up and memory do not pay for them). They are public (they hold no data; the pages ask for the API key
  and send it with every call); every endpoint they call stays behind the key.
- `/ui`, `/ui/` and `/ui/<page>` answer the page shell; the script picks the page from the
  path. `/` and `GET /upstream` redirect to the UI, as in llama-swap.
- JSON of ours: `/api/models` (the `modelStatus` list), `POST /api/models/load/<model>`,
  `/api/live` (the `queue` event: queue, in-flight, swaps in progress), `/api/graph` (the
  compiler's coexist view as nodes and edges), `/api/config` (the plan in brief).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from llamaswap.runtime.activity import ACTIVITY, SORT_KEYS, iso, parse_time, ui_config
from llamaswap.runtime.events import EVENTS, INFLIGHT, EventHub, stream
from llamaswap.runtime.keys import DECISIONS, LIVE, LOGS, PROCESSES, ROUTER
from llamaswap.runtime.processes import ModelProcess
from llamaswap.runtime.proxy import error_response
from llamaswap.runtime.reload import reload_state
from llamaswap.runtime.router import Rejected
from llamaswap.runtime.settings import effective_ttl


class UiFiles:
    """The shipped UI files by path under /ui/ -> (bytes, content type), read at first use."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, str]] | None = None

    def files(self) -> dict[str, tuple[bytes, str]]:
        if self._files is None:
            self._files = load_ui_files()
        return self._files


UI_FILES = web.AppKey("ui_files", UiFiles)
PAGES = ("models", "live", "decisions", "activity", "logs", "playground", "config")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def load_ui_files() -> dict[str, tuple[bytes, str]]:
    """Every shipped UI file by its path under /ui/ -> (bytes, content type)."""
    from importlib import resources

    out: dict[str, tuple[bytes, str]] = {}

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            name = prefix + child.name
            if child.is_dir():
                if not child.name.startswith("__"):
                    walk(child, name + "/")
                continue
            ext = "." + child.name.rsplit(".", 1)[-1] if "." in child.name else ""
            if ext in _TYPES:
                out[name] = (child.read_bytes(), _TYPES[ext])

    walk(resources.files("llamaswap.ui"), "")
    return out


# -- static files and redirects ----------------------------------------------------------------


def _file(request: web.Request, name: str) -> web.Response:
    got = request.app[UI_FILES].files().get(name)
    if got is None:
        return error_response(request, 404, f"no such UI file: /ui/{name}")
    body, ctype = got
    return web.Response(
        body=body,
        headers={"Content-Type": ctype, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


async def ui_page(request: web.Request) -> web.Response:
    rest = request.match_info.get("rest", "")
    if rest in request.app[UI_FILES].files() and rest != "index.html":
        return _file(request, rest)
    if rest == "" or rest.split("/")[0] in PAGES:
        return _file(request, "index.html")
    return error_response(request, 404, f"no such UI page: /ui/{rest}")


async def favicon(request: web.Request) -> web.Response:
    return _file(request, "favicon.svg")


async def to_ui(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


async def upstream_to_ui(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/models")


# -- what the pages read -----------------------------------------------------------------------


def model_status(app: web.Application) -> list[dict[str, Any]]:
    """Every model with its process state: llama-swap's modelStatus entries, plus pid, TTL,
    since when the model is in its state, and the last decision that started it."""
    plan = app[LIVE].plan
    c = plan.config
    assert c is not None
    procs = app.get(PROCESSES, {})
    decisions = app[DECISIONS].latest_by_model(plan.models)
    now_wall, now = time.time(), time.monotonic()
    out = []
    for mid in plan.models:
        m = c.models[mid]
        proc = procs.get(mid)
        last = decisions.get(mid)
        state = proc.state.value if proc is not None else "stopped"
        out.append(
            {
                "id": mid,
                "name": m.name,
                "description": m.description,
                "state": state,
                "unlisted": m.unlisted,
                "peerID": "",
                "aliases": sorted(a for a, real in plan.aliases.items() if real == mid),
                "ttl": int(effective_ttl(plan, mid)),
                "pid": proc.pid if proc is not None and state != "stopped" else None,
                "state_since": iso(now_wall - (now - proc.state_since)) if proc is not None else None,
                "last_decision": None
                if last is None
                else {
                    k: v
                    for k, v in last.to_json().items()
                    if k in ("id", "time", "explanation", "status", "evicted", "load_seconds")
                },
            }
        )
    for peer in plan.virtual.peers:  # as llama-swap lists them: no process here, nothing to load
        for name in peer.models:
            out.append(
                {
                    "id": peer.fqn(name),
                    "name": name,
                    "description": "",
                    "state": "peer",
                    "unlisted": False,
                    "peerID": peer.id,
                    "aliases": [],
                    "ttl": 0,
                    "pid": None,
                    "state_since": None,
                    "last_decision": None,
                }
            )
    return out


async def models_status(request: web.Request) -> web.Response:
    return web.json_response({"models": model_status(request.app)})


async def load_model(request: web.Request) -> web.Response:
    """Start a model (as a request for it would) and answer when it is ready."""
    plan = request.app[LIVE].plan
    name = request.match_info["model"]
    real = plan.resolve_model(name)
    if real is None:
        return error_response(request, 404, "model not found")
    router = request.app[ROUTER]
    ticket = router.submit(real, name)
    try:
        outcome = await ticket.outcome
    finally:
        router.release(ticket)
    if isinstance(outcome, Rejected):
        return error_response(request, outcome.status, outcome.message, headers=outcome.headers)
    return web.json_response({"msg": "ok", "model": real, "waited": round(outcome.waited, 3)})


async def live_snapshot(app: web.Application) -> dict[str, Any]:
    """The queue, per-model counts and swaps in progress, read inside the scheduler's task."""
    plan = app[LIVE].plan
    router = app[ROUTER]

    def read(sched) -> tuple:
        counts = {
            m: {
                "state": sched.state(m).value,
                "in_flight": sched.in_flight(m),
                "waiting": len(sched.waiting(m)),
            }
            for m in plan.models
            if sched.knows(m)
        }
        return counts, tuple(sched.queued()), tuple(sched.swaps())

    counts, queued, swaps = await router.call(read)
    now, now_wall = router.now(), time.time()
    tickets = {t.req_id: t for t in router.waiting_tickets()}
    queue = []
    for i, rid in enumerate(queued):
        t = tickets.get(rid)
        if t is not None:
            queue.append(
                {
                    "id": rid,
                    "model": t.model,
                    "requested": t.requested,
                    "position": t.position or i + 1,
                    "waited_s": round(max(0.0, now - t.arrived), 3),
                }
            )
    decisions = app[DECISIONS]
    in_swaps = []
    for m in swaps:
        rec = router.swap_in_progress(m)
        if rec is None:
            continue
        record = decisions.for_swap(rec.id)
        in_swaps.append(
            {
                "model": m,
                "requested": record.requested if record else m,
                "evict": list(rec.decision.evict),
                "set": rec.decision.set,
                "decision_id": rec.id,
                "started": iso(rec.started_wall),
                "elapsed_s": round(max(0.0, now_wall - rec.started_wall), 3),
            }
        )
    return {"time": iso(now_wall), "models": counts, "queue": queue, "swaps": in_swaps}


async def live(request: web.Request) -> web.Response:
    try:
        return web.json_response(await live_snapshot(request.app))
    except RuntimeError as exc:
        return error_response(request, 503, str(exc))


def graph_json(plan) -> dict[str, Any]:
    """The compiler's coexist view as JSON nodes and edges (the UI draws it)."""
    # Here, not at the top: networkx is a slow import (~0.2-0.4 s, 13 MB) only this page needs.
    from llamaswap.compiler.graph import build_graph

    g = build_graph(plan, "coexist")
    nodes = [
        {
            "model": a["model"],
            "label": a["label"],
            "aliases": a["aliases"],
            "alone": a["alone"],
            **({"evict_cost": a["evict_cost"]} if "evict_cost" in a else {"group": a.get("group")}),
        }
        for _, a in g.nodes(data=True)
    ]
    edges = [
        {
            "a": g.nodes[u]["model"],
            "b": g.nodes[v]["model"],
            "weight": a.get("weight"),
            "label": a.get("label", ""),
            "sets": a.get("sets", []),
        }
        for u, v, a in g.edges(data=True)
    ]
    return {"engine": plan.engine, "notes": list(g.graph.get("notes", [])), "nodes": nodes, "edges": edges}


async def graph(request: web.Request) -> web.Response:
    plan = request.app[LIVE].plan
    cached = request.app.get(_GRAPH)
    if cached is None or cached["plan"] is not plan:  # a reload brings a new plan
        cached = {"plan": plan, "json": graph_json(plan)}
        request.app[_GRAPH] = cached
    return web.json_response(cached["json"])


_GRAPH = web.AppKey("ui_graph", dict)


async def config_summary(request: web.Request) -> web.Response:
    app = request.app
    plan = app[LIVE].plan
    art = plan.artifact_json()
    c = plan.config
    assert c is not None
    group_of = {m: g.name for g in plan.groups for m in g.members}
    models = [
        {
            **m,
            "ttl": int(effective_ttl(plan, m["id"])),
            "group": group_of.get(m["id"]),
            "concurrency_limit": c.models[m["id"]].concurrency_limit or 10,
        }
        for m in art["models"]
    ]
    store = app.get(ACTIVITY)
    return web.json_response(
        {
            "file": plan.file,
            "engine": plan.engine,
            "models": models,
            "sets": art["sets"],
            "groups": art["groups"],
            "preload": art["preload"],
            "diagnostics": art["diagnostics"],
            "api_keys": bool(app[LIVE].api_keys),
            **(await reload_state(app)),
            "store": store.describe() if store is not None else None,
        }
    )


# -- activity (llama-swap's shapes) ------------------------------------------------------------


class _BadQuery(ValueError):
    pass


def _int(query, name: str, default: int, low: int, high: int | None = None) -> int:
    raw = query.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadQuery(f"{name} must be a whole number, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        raise _BadQuery(f"{name} must be between {low} and {high}" if high else f"{name} must be >= {low}")
    return value


def _time(query, name: str) -> float | None:
    raw = query.get(name, "").strip()
    if not raw:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise _BadQuery(f"invalid '{name}' timestamp, use RFC3339 format") from None


async def activity(request: web.Request) -> web.Response:
    q = request.query
    try:
        start, end = _time(q, "start"), _time(q, "end")
        if start is not None and end is not None and start > end:
            raise _BadQuery("start must be before end")
        min_id, max_id = _int(q, "min_id", 0, 1), _int(q, "max_id", 0, 1)
        if min_id and max_id and min_id > max_id:
            raise _BadQuery("min_id must be <= max_id")
        limit = _int(q, "limit", 25, 1, 999)
        page = _int(q, "page", 1, 1)
        sort = q.get("sort", "id").strip() or "id"
        if sort not in SORT_KEYS:
            raise _BadQuery(f"invalid sort column {sort!r} (one of {', '.join(SORT_KEYS)})")
        order = (q.get("order", "desc").strip() or "desc").lower()
        if order not in ("asc", "desc"):
            raise _BadQuery("order must be asc or desc")
    except _BadQuery as exc:
        return error_response(request, 400, str(exc))
    models = [m.strip() for m in q.getall("model", []) if m.strip()]
    return web.json_response(
        request.app[ACTIVITY].page(
            models=models,
            start=start,
            end=end,
            min_id=min_id,
            max_id=max_id,
            limit=limit,
            page=page,
            sort=sort,
            order=order,
        )
    )


async def activity_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[ACTIVITY].stats(request.query.get("model", "").strip()))


# -- the live feed -----------------------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    app = request.app
    hub = app[EVENTS]
    logs = app[LOGS]
    initial: list[tuple[str, Any]] = [
        ("logData", {"source": "proxy", "data": "".join(line + "\n" for line in logs.proxy.history())}),
        ("logData", {"source": "upstream", "data": "".join(line + "\n" for line in logs.upstream.history())}),
        ("modelStatus", model_status(app)),
        ("uiConfig", ui_config(app[LIVE].plan.config)),
        ("inflight", app[INFLIGHT].snapshot()),
    ]
    router = app.get(ROUTER)
    initial.append(("profileChanged", {"active": router.profile if router is not None else None}))
    try:
        initial.append(("queue", await live_snapshot(app)))
    except RuntimeError:
        pass
    return await stream(request, hub, initial)


_STATE_LISTENER = web.AppKey("ui_state_listener", object)


def watch_process(app: web.Application, proc: ModelProcess) -> None:
    """A process a reload added: its state changes feed the hub too."""
    listener = app.get(_STATE_LISTENER)
    if listener is not None:
        proc.add_listener(listener)  # type: ignore[arg-type]


def attach_sources(app: web.Application) -> None:
    """Feed the hub: process state changes, log lines, activity records (the observer feeds
    decisions and queue changes; the request path, in-flight entries)."""
    hub: EventHub = app[EVENTS]

    def state_changed(_event) -> None:
        hub.publish_soon("modelStatus", lambda: model_status(app))
        hub.queue_changed()

    app[_STATE_LISTENER] = state_changed
    for proc in app[PROCESSES].values():
        proc.add_listener(state_changed)
    logs = app[LOGS]
    logs.proxy.subscribe(lambda line: hub.publish("logData", {"source": "proxy", "data": line + "\n"}))
    logs.upstream.subscribe(lambda line: hub.publish("logData", {"source": "upstream", "data": line + "\n"}))

    def recorded(rec) -> None:
        if hub.active:
            hub.publish("activity", {"id": rec.id, "record": rec.to_json()})

    app[ACTIVITY].subscribe(recorded)
    hub.set_queue_source(lambda: live_snapshot(app))


async def end_event_streams(app: web.Application) -> None:
    app[EVENTS].close_all()
