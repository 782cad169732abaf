"""Dispatch: the path of one model-dispatched request, from "which model?" to a granted,
proxied response.

  read the body once -> find the model (JSON `model`, form field, `?model=`, or the
  `/upstream/<model>/` path) -> resolve aliases -> ticket through the Router (admission
  first: 404/429/503 before anything is streamed) -> optional loading-state SSE while waiting
  -> grant -> rewrite the body (useModelName, stripParams, setParams, setParamsByID) ->
  forward and stream -> release the ticket (serve_done), also when the client went away.

Every request is counted in `llamaswap_requests_total{model, status}`, is in the in-flight
table (the UI's `inflight` events) while it runs, and leaves one activity record (status,
wait, duration, the tokens the upstream reported in the tail of its answer). A request that waited
for a swap gets `X-Llamaswap-Swap: model=M; evicted=a,b; set=S; waited=1.234s`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode

from aiohttp import web

from llamaswap.compiler.plan import Plan
from llamaswap.compiler.resolution import Resolution, upstream_pin
from llamaswap.compiler.virtual import PeerRoute
from llamaswap.runtime import websocket
from llamaswap.runtime.activity import (
    ACTIVITY,
    ResponseTap,
    make_record,
    resolution_text,
    session_headers,
    session_of,
)
from llamaswap.runtime.auth import upstream_auth
from llamaswap.runtime.body import (
    Body,
    BodyError,
    BodyLimits,
    StreamBody,
    body_limits,
    check_declared,
    read_all,
    read_multipart_head,
    upstream_body,
)
from llamaswap.runtime.events import EVENTS, INFLIGHT, InflightTracker
from llamaswap.runtime.filters import (
    multipart_boundary,
    needs_rewrite,
    replace_multipart_head_model,
    rewrite_body,
)
from llamaswap.runtime.keys import (
    LIMITS,
    LIVE,
    METRICS,
    PROCESSES,
    REDACT,
    ROUTER,
    SELECTORS,
    SESSION,
    UPSTREAM_TIMEOUTS,
    UPSTREAMS,
)
from llamaswap.runtime.limits import UpstreamTimeouts, upstream_timeouts
from llamaswap.runtime.passthrough import ignored_path, ignores_websockets, is_ready
from llamaswap.runtime.peers import forward_to_peer
from llamaswap.runtime.proxy import (
    ENDED_BY,
    ENDED_FOR,
    MOUNT,
    STARTED_RESPONSE,
    UpstreamBroke,
    UpstreamError,
    UpstreamTimedOut,
    error_response,
    forward,
    sse_error,
)
from llamaswap.runtime.redact import Redactor
from llamaswap.runtime.router import Granted, Rejected, Ticket
from llamaswap.runtime.scheduler import Admission
from llamaswap.runtime.settings import COMFYUI_MODEL
from llamaswap.runtime.upstream import UpstreamConnectError

# Request key: the path a passthrough is mounted at (`/upstream/<model>`, `/comfyui`).
MOUNT_PREFIX = "llamaswap.mount_prefix"

logger = logging.getLogger("llamaswap.serve")

LOADING_TICK = 0.75


class BadBody(Exception):
    """The request body cannot be read for a model name (answered with 400)."""


def _parse_json(raw: bytes) -> object:
    try:
        if raw[:1] == b"{" and raw[1:2] != b"\x00":
            # UTF-8 for sure (json.loads would detect the encoding first, costing as much
            # as parsing a small body).
            return json.loads(raw.decode("utf-8", "surrogatepass"))
        return json.loads(raw)
    except RecursionError:
        raise BadBody("invalid JSON body: nested too deeply") from None
    except ValueError as exc:
        if raw[:2] == b"\x1f\x8b":  # a gzip member: a client that compresses its requests
            raise BadBody(
                "invalid JSON body: it is gzip-compressed; request bodies are not decompressed "
                "(as in llama-swap): send it uncompressed"
            ) from None
        raise BadBody(f"invalid JSON body: {_json_error(exc)}") from None


def _json_error(exc: ValueError) -> str:
    """Where and why a body is not JSON (json's own message has line, column and offset)."""
    if isinstance(exc, json.JSONDecodeError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid {exc.encoding.upper()} (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
    return str(exc) or type(exc).__name__


# Content types read whole for their model field (a multipart body's head is read too; any
# other body is streamed on unread).
_READ_WHOLE = frozenset(
    {"application/json", "application/x-www-form-urlencoded", "", "application/octet-stream"}
)


async def read_body(request: web.Request) -> Body:
    """Read as much of the body as routing needs (see Body)."""
    ctype = request.content_type
    limits, key = hot(request.app).body_limits(ctype)
    check_declared(request, limits, key)
    body = Body()
    if not request.body_exists:
        body.raw = b""
    elif ctype in _READ_WHOLE:
        raw = body.raw = await read_all(request, limits, key)
        if ctype == "application/json" or (raw[:1] == b"{" and ctype != "application/x-www-form-urlencoded"):
            if raw[:1] == b"{" or raw.strip():  # (no copy of the body for the usual one)
                parsed = _parse_json(raw)
                if isinstance(parsed, dict):
                    body.json = parsed
                    model = parsed.get("model")
                    if isinstance(model, str):
                        body.model = model
        elif ctype == "application/x-www-form-urlencoded":
            values = parse_qs(raw.decode("utf-8", "replace")).get("model")
            if values:
                body.model = values[0]
    elif ctype == "multipart/form-data" and (
        boundary := multipart_boundary(request.headers.get("Content-Type", ""))
    ):
        body.head, body.model, body.model_end, ended = await read_multipart_head(
            request, limits, key, boundary
        )
        body.rest = not ended
    else:
        body.rest = True
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
    return _sse(
        {
            "id": "llamaswap-loading",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "reasoning_content": text}, "finish_reason": None}
            ],
        }
    )


async def _loading_failed(
    stream: web.StreamResponse, requested: str, status: int, message: str
) -> web.StreamResponse:
    """End a loading-state stream whose request failed before the upstream answered. Its 200
    is out, so the failure is an error frame carrying the envelope a non-streamed request
    would have had as its body (an SSE client such as the openai SDK raises it; llama-swap's
    loadingWriter.sendError), then [DONE]. The loading text says it first, for a UI that
    shows the reasoning box."""
    await stream.write(_loading_chunk(requested, f"\nerror: {message}\n"))
    await stream.write(sse_error(status, message) + b"data: [DONE]\n\n")
    return stream


NAME_ECHO = 200  # characters of an unknown model name a 404 repeats
SUGGEST_CUTOFF = 0.75  # stricter than the compiler's: a wrong guess sends a client astray


def not_found_message(plan: Plan, requested: str) -> str:
    """llama-swap's 404 for a model it does not know, with the name asked for and what to
    do: the listed name (ID or alias, as GET /v1/models shows them) it most likely meant, or
    where the names are. Only the error path pays for it."""
    from llamaswap.compiler.suggest import closest
    from llamaswap.runtime.listing import model_records

    guess = None
    if len(requested) <= NAME_ECHO:  # (difflib's cost grows with the name's length)
        known: list[str] = []
        for rec in model_records(plan, 0, loaded=lambda m: False):
            known.append(rec["id"])
            known.extend(rec.get("meta", {}).get("llamaswap", {}).get("aliases", ()))
        guess = closest(requested, known, cutoff=SUGGEST_CUTOFF, fold=True)
    else:
        requested = requested[:NAME_ECHO] + "..."
    hint = f"did you mean {guess!r}?" if guess else "GET /v1/models lists the models"
    return f"no local server found for requested model {requested!r} ({hint})"


def swap_header(granted: Granted, via: Resolution | None = None) -> dict[str, str]:
    """`X-Llamaswap-Swap` for a request that waited for a swap, and `X-Llamaswap-Resolution`
    for one a profile pin or a selector resolved; {} otherwise."""
    out = {"X-Llamaswap-Resolution": via.header()} if via is not None else {}
    swap = granted.swap
    if swap is None:
        return out
    out["X-Llamaswap-Swap"] = (
        f"model={swap.model}; evicted={','.join(swap.decision.evict)}; "
        f"set={swap.decision.set or ''}; waited={granted.waited:.3f}s"
    )
    return out


class _Hot:
    """What the request path reads on every request, built once per app and plan (kept on
    `app[LIVE].hot`; a reload's new plan builds a new one)."""

    __slots__ = (
        "plan",
        "selectors",
        "procs",
        "router",
        "tracker",
        "metrics",
        "activity",
        "events",
        "session_headers",
        "queue_timeout",
        "redact",
        "upstreams",
        "session",
        "timeouts",
        "rewrites",
        "_body_limits",
        "_multipart_limits",
    )

    def __init__(self, app: web.Application, plan: Plan) -> None:
        self.plan = plan
        self.selectors = app[SELECTORS]
        self.procs = app[PROCESSES]
        self.router = app[ROUTER]
        self.tracker = app[INFLIGHT]
        self.metrics = app[METRICS]
        self.activity = app[ACTIVITY]
        self.events = app[EVENTS]
        self.session_headers = session_headers(plan.config)
        limits = app[LIMITS].of(plan)
        self.queue_timeout = limits.queue_timeout
        # body.body_limits' answer for the two kinds of body (the same BodyLimits each time).
        size, key = limits.body_limit("")
        self._body_limits = (BodyLimits(size, limits.body_timeout), key)
        size, key = limits.body_limit("multipart/form-data")
        self._multipart_limits = (BodyLimits(size, limits.body_timeout), key)
        self.redact = app[REDACT].of(plan)
        self.upstreams = app[UPSTREAMS]
        self.session = app[SESSION]
        self.timeouts = app[UPSTREAM_TIMEOUTS].of(plan)
        # (model, ID asked for) -> does its body need rewriting (filters.needs_rewrite)
        self.rewrites: dict[tuple[str, str], bool] = {}

    def body_limits(self, content_type: str) -> tuple[BodyLimits, str]:
        """body.body_limits for a body of this content type, made once per plan."""
        return self._multipart_limits if content_type == "multipart/form-data" else self._body_limits

    def needs_rewrite(self, model: str, cfg: Any, requested: str) -> bool:
        key = (model, requested)
        found = self.rewrites.get(key)
        if found is None:
            if len(self.rewrites) > 4096:  # IDs asked for come from clients: stay bounded
                self.rewrites.clear()
            found = self.rewrites[key] = needs_rewrite(cfg, requested)
        return found


def hot(app: web.Application) -> _Hot:
    live = app[LIVE]
    found = live.hot
    if not isinstance(found, _Hot) or found.plan is not live.plan:
        found = live.hot = _Hot(app, live.plan)
    return found


class Measure:
    """What one request's path measures for its activity record."""

    __slots__ = ("rid", "waited", "tap")

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.waited = 0.0
        self.tap = ResponseTap()


async def dispatch(
    request: web.Request, body: Body, requested: str, upstream_target: str, apply_filters: bool
) -> web.StreamResponse:
    """The request path, counted in `llamaswap_requests_total{model, status}`. The ID asked
    for is first resolved through the active profile's pins and the selectors
    (compiler/resolution.py; the model a JSON or urlencoded body, or a GET's `?model=`, names
    is rewritten to the result; a multipart body's when it is sent: _multipart_model).
    `upstream_target` is the path and query to send upstream, still percent-encoded."""
    app = request.app
    h = hot(app)
    plan = h.plan
    selectors = h.selectors
    asked = requested
    procs = h.procs
    via = selectors.resolve(
        requested,
        h.router.profile,
        lambda m: procs[m].state.value if m in procs else "stopped",
    )
    if via is not None:
        request["llamaswap.via"] = via
        logger.debug("resolved %s: %s", asked, via.header())
        if via.name and body.json is not None and body.json.get("model") == requested:
            body.json["model"] = via.name
            body.raw = json.dumps(body.json).encode()
        elif (
            apply_filters
            and via.name
            and body.raw is not None
            and request.content_type == "application/x-www-form-urlencoded"
            and body.model == asked
        ):
            body.raw = _form_model(body.raw, asked, via.name)
            body.model = via.name
        elif apply_filters and via.name and body.json is None and request.query.get("model") == asked:
            upstream_target = _query_model(upstream_target, asked, via.name)
        requested = via.name or requested
    refused = via is not None and via.status != 0
    local = None if refused else plan.resolve_model(requested)
    peer = plan.virtual.route(requested) if local is None and not refused else None
    model = local or (peer.fqn if peer is not None else "(unknown)")
    request["llamaswap.model"] = requested if model == "(unknown)" else model  # for the access line
    if "Upgrade" in request.headers and ignores_websockets(plan, model) and websocket.is_upgrade(request):
        if via is not None:  # an unscheduled websocket does not count for its selector
            selectors.done(via)
        return await _unscheduled_websocket(request, model, upstream_target)
    status = "cancelled"
    arrived_wall, began = time.time(), time.monotonic()
    tracker = h.tracker
    measure = Measure(tracker.begin(model, asked, request.method, request.path, request.remote))
    resp: web.StreamResponse | None = None
    try:
        if via is not None and via.status:
            resp = error_response(request, via.status, via.message)
        elif peer is not None:
            resp = await _peer(
                request,
                peer,
                requested,
                body,
                upstream_target,
                apply_filters,
                measure,
                via.requested if via else None,
            )
        else:
            resp = await _dispatch(request, h, body, requested, upstream_target, apply_filters, measure)
        status = str(resp.status)
        return resp
    except web.HTTPException as exc:
        status = str(exc.status)
        raise
    except asyncio.CancelledError:
        if not tracker.cancelled(measure.rid):  # the client went away: nobody to answer
            raise
        # Cancelled through the in-flight table (its ticket is released, its upstream closed).
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        resp = await cancelled_response(request, measure.rid, tracker.waiting(measure.rid))
        status = str(resp.status)
        return resp
    except Exception:
        status = "500"
        raise
    finally:
        h.metrics.count_request(model, status)
        tracker.end(measure.rid)
        code = int(status) if status.isdigit() else 499
        # After this handler returns (a small response is then already on its way out):
        # reading the usage from the tail must not delay the answer.
        asyncio.get_running_loop().call_soon(
            _record,
            h.activity,
            model,
            asked,
            request.path,
            code,
            resp.content_type if resp is not None else "",
            arrived_wall,
            measure,
            time.monotonic() - began,
            "" if peer is None else peer.peer.id,
            session_of(request.headers, h.session_headers),
            via,
        )
        if via is not None:
            selectors.done(via)


def _record(
    activity: Any,
    model: str,
    asked: str,
    path: str,
    code: int,
    ctype: str,
    arrived_wall: float,
    measure: Measure,
    duration: float,
    peer: str,
    session: str,
    via: Resolution | None,
) -> None:
    """One request's activity record (called soon after its handler returned)."""
    activity.record(
        make_record(
            model=model,
            requested=asked,
            req_path=path,
            status=code,
            content_type=ctype,
            arrived_wall=arrived_wall,
            wait_s=measure.waited,
            duration_s=duration,
            tap=measure.tap,
            error="" if code != 499 else "the client went away",
            peer=peer,
            session_id=session,
            resolution=resolution_text(via),
        )
    )


async def _dispatch(
    request: web.Request,
    h: _Hot,
    body: Body,
    requested: str,
    upstream_target: str,
    apply_filters: bool,
    measure: Measure,
) -> web.StreamResponse:
    app = request.app
    plan = h.plan
    router = h.router
    model = plan.resolve_model(requested)
    if model is None:
        return error_response(request, 404, not_found_message(plan, requested))
    cfg = plan.config.models[model]  # type: ignore[union-attr]
    queue_timeout = h.queue_timeout
    redact = h.redact
    via = request.get("llamaswap.via")
    ticket = router.submit(model, requested, via)
    events = h.events
    events.queue_changed()
    deadline = None if queue_timeout is None else time.monotonic() + queue_timeout
    stream: web.StreamResponse | None = None
    try:
        admission = await ticket.admission
        outcome: Granted | Rejected | None = ticket.outcome.result() if ticket.outcome.done() else None
        loading = (
            outcome is None
            and admission in (Admission.WAITING, Admission.QUEUED)
            and _wants_loading_state(plan, model, request, body)
        )
        if loading:
            stream = await _loading_stream(request, ticket, requested, deadline)
        elif outcome is None:
            try:
                async with asyncio.timeout_at(None if deadline is None else _loop_time(deadline)):
                    await asyncio.shield(ticket.outcome)
            except TimeoutError:
                pass
        outcome = ticket.outcome.result() if ticket.outcome.done() else None
        if outcome is None:  # the queue deadline passed first; `finally` cancels the ticket
            message = (
                f"request for {requested!r} waited {queue_timeout:g}s without being served "
                "(routing.scheduler.settings.fifo.queue_timeout); try again later"
            )
            logger.warning("%s: %s", model, message)
            if stream is not None:
                return await _loading_failed(stream, requested, 503, message)
            return error_response(request, 503, message, headers={"Retry-After": "1"})
        if isinstance(outcome, Rejected):
            if stream is not None:
                message = client_message(redact, outcome.message, ticket.model)
                return await _loading_failed(stream, requested, outcome.status, message)
            return error_response(
                request,
                outcome.status,
                client_message(redact, outcome.message, ticket.model),
                code="concurrency_limit" if outcome.status == 429 else None,
                headers=outcome.headers,
            )
        current = app[LIVE].plan
        reloaded = current is not plan or outcome.model != model
        if reloaded:
            # A reload came while it waited: it may be served by another model (its alias
            # moved) or by a restarted process: use what the config says now.
            model = outcome.model
            cfg = _model_config(current, model) or _model_config(plan, model) or cfg
        measure.waited = outcome.waited
        h.tracker.serving(measure.rid)
        ticket.on_end = functools.partial(_end, request, h.tracker, measure.rid)
        if ticket.end_reason is not None:  # ended before this task resumed (a drain of 0 s)
            ticket.on_end(*ticket.end_reason)
        if body.raw is not None:
            data: bytes | StreamBody = body.raw
            if (
                apply_filters
                and body.json is not None
                and (needs_rewrite(cfg, requested) if reloaded else h.needs_rewrite(model, cfg, requested))
            ):
                try:
                    data = json.dumps(rewrite_body(body.json, cfg, requested)).encode()
                except RecursionError:
                    return error_response(request, 400, "invalid JSON body: nested too deeply")
        else:
            head = body.head
            new_model = _multipart_model(cfg, body, via, apply_filters)
            if new_model is not None and body.model_end is not None:
                boundary = multipart_boundary(request.headers.get("Content-Type", ""))
                assert boundary is not None
                head = replace_multipart_head_model(head, boundary, body.model_end, new_model.encode())
            data = upstream_body(request, body, head)
        url = cfg.proxy.rstrip("/") + upstream_target
        if (prefix := request.get(MOUNT_PREFIX)) is not None:
            request[MOUNT] = (cfg.proxy.rstrip("/"), prefix)
        drop, add = upstream_auth(request, cfg.api_key)
        if websocket.is_upgrade(request):  # holds its ticket (in flight) until it closes
            return await websocket.proxy(
                request,
                app[SESSION],
                url,
                drop_headers=drop,
                add_headers=add,
                handshake_timeout=websocket.handshake_timeout(_timeouts(app, current, plan, model)),
            )
        try:
            return await forward(
                request,
                h.upstreams,
                h.session,
                url,
                data,
                response=stream,
                extra_headers=swap_header(outcome, via),
                drop_headers=drop,
                add_headers=add,
                timeouts=_timeouts(app, current, plan, model) if reloaded else h.timeouts.get(model),
                tap=measure.tap,
            )
        except BodyError as exc:
            if stream is not None:
                return await _loading_failed(stream, requested, exc.status, str(exc))
            return await body_error_response(request, exc)
        except UpstreamTimedOut as exc:
            message = f"upstream timeout ({model}): {exc}"
            logger.warning("%s", message)
            if stream is not None:
                await stream.write(sse_error(504, message))
                return stream
            return error_response(request, 504, message)
        except UpstreamError as exc:
            message = f"upstream error ({model}): {exc}{_not_listening_yet(cfg, exc)}"
            if stream is not None:
                return await _loading_failed(stream, requested, 502, message)
            return error_response(request, 502, message)
        except UpstreamBroke as exc:
            logger.warning(
                "%s: upstream failed mid-response (%s); aborting the client connection", model, exc
            )
            if request.transport is not None:
                request.transport.abort()
            return exc.response
    finally:
        # Also on cancellation (the client left) and on any error: a waiting ticket is
        # cancelled, a granted one reports serve_done.
        router.release(ticket)
        events.queue_changed()


async def _peer(
    request: web.Request,
    route: PeerRoute,
    requested: str,
    body: Body,
    upstream_target: str,
    apply_filters: bool,
    measure: Measure,
    asked: str | None,
) -> web.StreamResponse:
    """A peer model's request: straight to the peer, no ticket, no swap (runtime/peers.py).
    `asked`: the ID the client named, when a pin or selector resolved it to `requested`."""
    app = request.app
    app[INFLIGHT].serving(measure.rid)
    redact = app[REDACT].of(app[LIVE].plan)
    try:
        return await forward_to_peer(
            request, route, requested, body, upstream_target, not apply_filters, measure.tap, redact, asked
        )
    except BodyError as exc:
        return await body_error_response(request, exc)


def _end(request: web.Request, tracker: InflightTracker, rid: str, reason: str, why: str) -> None:
    """The router ends this served request (`reason`: its model's reload drain ran out, or an
    unload or a shutdown stops the model): as a cancel through the in-flight table, with
    `why` for the client."""
    request[ENDED_BY] = why
    request[ENDED_FOR] = reason
    tracker.cancel(rid)


async def cancelled_response(request: web.Request, rid: str, waiting: bool) -> web.StreamResponse:
    """The answer to a request cancelled through `POST /api/inflight/{id}/cancel` (its upstream
    connection is already closed and its ticket released), as llama-swap answers it:
    - still waiting for its model (queued, or waiting on a swap): an empty 200 (llama-swap's
      handler returns without writing), or, with a loading-state stream under way, the stream
      ends cleanly with nothing more written;
    - granted, nothing sent yet: 502 (llama-swap's reverse proxy answers 502);
    - an event stream under way: an error event, then a clean end (llama-swap ends it
      cleanly too); any other response under way: the connection is aborted, so a
      truncated body never passes for a whole one.
    A request the server ended (`ENDED_BY`: a reload's drain ran out, an unload or a shutdown
    stopped its model) is answered the same way with that reason, and 503 + Retry-After when
    nothing was sent yet (a retry is served by the new process, or starts the model again, or
    goes to the server that replaces this one); a WebSocket was closed with 1012 or 1001
    (websocket.py)."""
    ended: str | None = request.get(ENDED_BY)
    status = 502 if ended is None else 503
    message = f"request {rid} was cancelled (POST /api/inflight/{rid}/cancel)"
    if ended is not None:
        message = f"request {rid} ended: {ended}"
    started: web.StreamResponse | None = request.get(STARTED_RESPONSE)
    if waiting:
        logger.info("%s while it waited for its model", message)
        if started is None:
            return web.Response(status=200)
        try:
            await started.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return started
    logger.info("%s", message)
    if started is None:
        return error_response(request, status, message, headers={"Retry-After": "1"} if ended else None)
    if isinstance(started, web.WebSocketResponse):
        return started
    if started.content_type == "text/event-stream":
        try:
            await started.write(sse_error(status, message))
            await started.write_eof()
        except (ConnectionError, RuntimeError):
            pass
    elif request.transport is not None:
        request.transport.abort()
    return started


async def _unscheduled_websocket(request: web.Request, model: str, target: str) -> web.StreamResponse:
    """compat.ignoreWebsockets: straight to a ready upstream, outside the scheduler."""
    app = request.app
    plan = app[LIVE].plan
    cfg = plan.config.models[model]  # type: ignore[union-attr]
    drop, add = upstream_auth(request, cfg.api_key)
    return await websocket.unscheduled(
        request,
        app[SESSION],
        model,
        cfg.proxy.rstrip("/") + target,
        drop_headers=drop,
        add_headers=add,
        handshake_timeout=websocket.handshake_timeout(app[UPSTREAM_TIMEOUTS].of(plan).get(model)),
    )


def _multipart_model(cfg, body: Body, via: Resolution | None, apply_filters: bool) -> str | None:
    """The value a multipart body's `model` field is sent upstream with (None: as it is):
    useModelName, else what a profile pin or selector resolved the asked ID to."""
    if apply_filters and cfg.use_model_name:
        return cfg.use_model_name
    if via is not None and via.name and body.model == via.requested:
        return via.name
    return None


def _form_model(raw: bytes, asked: str, name: str) -> bytes:
    """An urlencoded body whose (first) `model` field is `asked`, with one `model` field,
    `name`, in its place (as llama-swap's `PostForm.Set`); the other fields as they were."""
    pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    out, named = [], False
    for key, value in pairs:
        if key == "model":
            if named:
                continue
            value, named = name, True
        out.append((key, value))
    return urlencode(out).encode()


def _query_model(target: str, asked: str, name: str) -> str:
    """`target` (path and query) with `?model=asked` replaced by `name`, as llama-swap rewrites
    a GET request's model; unchanged when the query names another model."""
    path, sep, query = target.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not sep or ("model", asked) not in pairs:
        return target
    return path + "?" + urlencode([(k, name if k == "model" and v == asked else v) for k, v in pairs])


def _timeouts(app: web.Application, current: Plan, plan: Plan, model: str) -> UpstreamTimeouts | None:
    """The model's upstream timeouts under the live plan (or, if a reload removed it, the
    plan the request was admitted under)."""
    found = app[UPSTREAM_TIMEOUTS].of(current).get(model)
    if found is None and model in plan.models:
        found = upstream_timeouts(plan, model)
    return found


def _model_config(plan: Plan, model: str):
    c = plan.config
    return c.models.get(model) if c is not None else None


def _not_listening_yet(cfg: Any, exc: UpstreamError) -> str:
    """Why a model without a health check refused the connection, or "": with
    `checkEndpoint: none` (or empty) it counts as ready as soon as its process starts, so the
    first request usually comes before the server listens (llama-swap answers it 502 too)."""
    endpoint = (getattr(cfg, "check_endpoint", None) or "").strip()
    if endpoint and endpoint.lower() != "none":
        return ""
    if not isinstance(exc.__cause__, UpstreamConnectError):
        return ""
    return (
        f" (checkEndpoint is {endpoint or 'empty'}: the model counts as ready once its process"
        " starts, before its server listens; give checkEndpoint a path that answers 200 when it"
        " is ready, e.g. /health, and requests wait for it)"
    )


# A failed start's message carries the upstream's last output lines (for the logs); the
# client gets the reason only (the format is processes.py's `_on_exited`).
# (One level of nested parentheses: a signal's exit is "(exit code -9 (SIGKILL))".)
_START_OUTPUT = re.compile(r"(upstream command exited prematurely \((?:[^()]|\([^()]*\))*\)): .*", re.DOTALL)


def client_message(redact: Redactor, message: str, model: str) -> str:
    """A rejection's message as the client may see it: no upstream output (it names where
    `model`'s output is instead), no secrets."""
    message = _START_OUTPUT.sub(lambda m: f"{m.group(1)}; its output is in /logs/stream/{model}", message)
    return redact(message)


def _loop_time(deadline: float) -> float:
    """A time.monotonic() deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


async def body_error_response(request: web.Request, exc: BodyError) -> web.StreamResponse:
    """413/408 for a body that cannot be taken; the connection is closed after it. After a
    413 the rest of the body is read and dropped for a moment (so that the client sees the
    answer); after a 408 (the client is too slow) the connection closes at once."""
    resp = error_response(request, exc.status, str(exc))
    resp.force_close()
    if exc.status == 408:
        await resp.prepare(request)
        await resp.write_eof()
        if request.protocol is not None:
            request.protocol.force_close()
    return resp


def _wants_loading_state(plan: Plan, model: str, request: web.Request, body: Body) -> bool:
    c = plan.config
    assert c is not None
    enabled = c.models[model].send_loading_state
    if enabled is None:
        enabled = c.send_loading_state
    path = request.path
    return (
        bool(enabled)
        and _is_streaming(request, body)
        and (path.startswith("/v1/chat/completions") or path.startswith("/v/chat/completions"))
    )


async def _loading_stream(
    request: web.Request, ticket: Ticket, requested: str, deadline: float | None
) -> web.StreamResponse:
    """Open the SSE response and report progress until the ticket has its outcome or the
    queue deadline (time.monotonic()) passes."""
    resp = web.StreamResponse(
        status=200,
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    await resp.prepare(request)
    request[STARTED_RESPONSE] = resp
    started = time.monotonic()
    await resp.write(_loading_chunk(requested, f"━━━━━\nllamaswap loading model: {ticket.model}\n"))
    last_position: int | None = None
    shown_seconds = 0
    while not ticket.outcome.done():
        if deadline is not None and time.monotonic() >= deadline:
            return resp
        tick = LOADING_TICK if deadline is None else max(0.0, min(LOADING_TICK, deadline - time.monotonic()))
        waiter: asyncio.Future[Any] = asyncio.ensure_future(ticket.position_changed())
        try:
            await asyncio.wait([ticket.outcome, waiter], timeout=tick, return_when=asyncio.FIRST_COMPLETED)
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


def _no_model_why(request: web.Request, body: Body) -> str:
    """Why a body gave no model (a hand-made request's usual mistakes), or ""."""
    if request.query.get("model"):
        return ""
    if request.method == "GET":
        return ": a GET names its model in the query (?model=...)"
    if request.content_type == "application/x-www-form-urlencoded" and (body.raw or b"").lstrip()[:1] == b"{":
        return (
            ": the body is JSON but its Content-Type is application/x-www-form-urlencoded"
            " (what curl -d sends); send it with Content-Type: application/json"
        )
    if body.json is not None:
        model = body.json.get("model")
        if model is None and "model" not in body.json:
            return ': the JSON body has no "model" field (GET /v1/models lists the names it takes)'
        if model == "":
            return ": the JSON body's model is empty"
        return f": the JSON body's model is {json.dumps(model)[:40]}, not a string"
    if body.raw is not None and body.raw.lstrip()[:1] == b"[":
        return ": the JSON body is an array; send an object with a model field"
    ctype = request.content_type
    # text/plain: aiohttp's data=str, a browser's fetch() with a string body
    if ctype not in _READ_WHOLE and ctype != "multipart/form-data" and body.rest and request.body_exists:
        return (
            f": a {ctype} body is not read for a model; send JSON with Content-Type: "
            "application/json (or a form, or ?model=)"
        )
    if request.content_type != "multipart/form-data":
        return ""
    if multipart_boundary(request.headers.get("Content-Type", "")) is None:
        return ": the multipart/form-data Content-Type names no boundary"
    if body.model == "":
        return ": the multipart body's model field is empty"
    return ': the multipart body has no model field (a part with name="model" between the boundaries its Content-Type names)'


def _raw_target(request: web.Request) -> tuple[str, str]:
    """(path, "?query" or "") exactly as the client sent them, still percent-encoded. An
    absolute-form target (`POST http://host/v1/... HTTP/1.1`, which a server must accept)
    is its path and query: the scheme and authority name llamaswap, not the upstream."""
    target = request.raw_path
    if not target.startswith("/"):
        scheme, sep, rest = target.partition("://")
        if sep and scheme.lower() in ("http", "https"):
            at = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
            target = rest[at:]
            target = target if target.startswith("/") else "/" + target
    path, sep, query = target.partition("?")
    return path, sep + query


async def model_route(request: web.Request) -> web.StreamResponse:
    try:
        body = await read_body(request)
    except BadBody as exc:
        return error_response(request, 400, str(exc))
    except BodyError as exc:
        return await body_error_response(request, exc)
    if not body.model:
        return error_response(request, 400, "no model id could be identified" + _no_model_why(request, body))
    path, query = _raw_target(request)
    if path.startswith("/v/"):
        path = path[2:]
    elif path.startswith("/audioapi/"):
        path = path[len("/audioapi") :]
    return await dispatch(request, body, body.model, path + query, apply_filters=True)


async def upstream_route(request: web.Request) -> web.StreamResponse:
    """/upstream/<model>/<path>: direct passthrough; the longest matching model prefix wins.
    The body is never parsed: it streams through."""
    plan = request.app[LIVE].plan
    rest = request.match_info["tail"]
    _, query = _raw_target(request)
    # The active profile's pins first (the longest pin the path starts with, as llama-swap):
    # the pin is resolved like a requested model ID (its target, maybe a selector).
    pinned = upstream_pin(plan, request.app[ROUTER].profile, rest)
    names = (
        [pinned[0]]
        if pinned
        else sorted(set(plan.models) | set(plan.aliases) | set(plan.virtual.routes), key=len, reverse=True)
    )
    for name in names:
        if rest == name:
            location = f"/upstream/{name}/" + query
            raise (
                web.HTTPMovedPermanently if request.method in ("GET", "HEAD") else web.HTTPPermanentRedirect
            )(location)
        if rest.startswith(name + "/"):
            model = plan.resolve_model(name)
            if (
                model is not None
                and ignored_path(plan, rest[len(name) :])
                and not is_ready(request.app, model)
            ):
                return error_response(
                    request, 409, f"model {model} is not loaded; path matches upstream.ignorePaths"
                )
            return await _passthrough(request, name, _raw_remainder(request, name, rest) + query)
    return error_response(request, 404, f"no model found in path /upstream/{rest}")


async def _passthrough(request: web.Request, requested: str, target: str) -> web.StreamResponse:
    """Forward a request whose model is in its path; its body streams through unread."""
    limits, key = body_limits(request)
    try:
        check_declared(request, limits, key)
    except BodyError as exc:
        return await body_error_response(request, exc)
    body = Body(raw=None if request.body_exists else b"", rest=request.body_exists)
    raw_path, _ = _raw_target(request)
    path = target.partition("?")[0]
    request[MOUNT_PREFIX] = raw_path[: len(raw_path) - len(path)] if raw_path.endswith(path) else None
    return await dispatch(request, body, requested, target, apply_filters=False)


async def comfyui_redirect(request: web.Request) -> web.StreamResponse:
    """`/comfyui` -> `/comfyui/` (301 for GET and HEAD, 308 otherwise, as llama-swap)."""
    _, query = _raw_target(request)
    raise (web.HTTPMovedPermanently if request.method in ("GET", "HEAD") else web.HTTPPermanentRedirect)(
        "/comfyui/" + query
    )


async def comfyui_route(request: web.Request) -> web.StreamResponse:
    """`/comfyui/<path>`: passthrough to the fixed model comfyui_auto, without the prefix.
    Only `/comfyui/` itself may start it: other paths get 409 while it is not ready."""
    plan = request.app[LIVE].plan
    if COMFYUI_MODEL not in plan.models:
        return error_response(request, 404, f"local model {COMFYUI_MODEL} not found")
    raw_path, query = _raw_target(request)
    remaining = "/" + request.match_info["tail"].removeprefix("/")
    if remaining != "/" and not is_ready(request.app, COMFYUI_MODEL):
        return error_response(
            request, 409, f"model {COMFYUI_MODEL} is not loaded; only /comfyui/ can start it"
        )
    return await _passthrough(request, COMFYUI_MODEL, raw_path[len("/comfyui") :] + query)


def _raw_remainder(request: web.Request, name: str, rest: str) -> str:
    """The path after `/upstream/<name>` as the client sent it (still percent-encoded, so
    that e.g. `%2F` inside a segment stays one segment upstream)."""
    raw_path, _ = _raw_target(request)
    raw_segments = raw_path[len("/upstream/") :].split("/")
    k = name.count("/") + 1
    if unquote("/".join(raw_segments[:k])) == name:
        return "/" + "/".join(raw_segments[k:])
    return quote(rest[len(name) :])  # the name itself was sent encoded: re-encode the decoded rest
