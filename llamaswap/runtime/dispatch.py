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
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from aiohttp import web

from llamaswap.compiler.plan import Plan
from llamaswap.runtime.filters import (multipart_boundary, multipart_field, needs_rewrite,
                                       replace_multipart_field, rewrite_body)
from llamaswap.runtime.activity import ACTIVITY, ResponseTap, make_record
from llamaswap.runtime.events import EVENTS, INFLIGHT
from llamaswap.runtime.keys import LIVE, METRICS, PROCESSES, ROUTER, SELECTORS, SESSION, UPSTREAMS
from llamaswap.runtime.proxy import UpstreamBroke, UpstreamError, error_response, forward
from llamaswap.runtime.router import Granted, Rejected, Ticket
from llamaswap.runtime.scheduler import Admission

logger = logging.getLogger("llamaswap.serve")

LOADING_TICK = 0.75


class BadBody(Exception):
    """The request body cannot be read for a model name (answered with 400)."""


@dataclass
class Body:
    raw: bytes
    json: dict | None = None
    model: str | None = None


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


class Measure:
    """What one request's path measures for its activity record."""

    __slots__ = ("rid", "waited", "tap")

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.waited = 0.0
        self.tap = ResponseTap()


async def dispatch(request: web.Request, body: Body, requested: str, upstream_path: str,
                   apply_filters: bool) -> web.StreamResponse:
    """The request path, counted in `llamaswap_requests_total{model, status}`. A selector ID
    is first resolved to one of its targets (the body's model is rewritten to it)."""
    plan = request.app[LIVE].plan
    selectors = request.app[SELECTORS]
    selector = requested if requested in selectors.by_id else None
    if selector is not None:
        procs = request.app[PROCESSES]
        target = selectors.choose(selector, lambda m: procs[m].state.value if m in procs else "stopped")
        assert target is not None
        logger.debug("selector: id=%s target=%s", selector, target)
        if body.json is not None and body.json.get("model") == requested:
            body.json["model"] = target
            body.raw = json.dumps(body.json).encode()
        requested = target
    model = plan.resolve_model(requested) or "(unknown)"
    status = "cancelled"
    app = request.app
    arrived_wall, began = time.time(), time.monotonic()
    tracker = app[INFLIGHT]
    measure = Measure(tracker.begin(model, requested, request.method, request.path, request.remote))
    resp: web.StreamResponse | None = None
    try:
        resp = await _dispatch(request, body, requested, upstream_path, apply_filters, measure)
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
        tracker.end(measure.rid)
        code = int(status) if status.isdigit() else 499
        duration = time.monotonic() - began
        ctype = resp.content_type if resp is not None else ""
        asked = requested

        def record() -> None:
            app[ACTIVITY].record(make_record(
                model=model, requested=asked, req_path=request.path, status=code, content_type=ctype,
                arrived_wall=arrived_wall, wait_s=measure.waited, duration_s=duration, tap=measure.tap,
                error="" if code != 499 else "the client went away"))

        # After this handler returns (a small response is then already on its way out):
        # reading the usage from the tail must not delay the answer.
        asyncio.get_running_loop().call_soon(record)
        if selector is not None:
            selectors.release(selector, requested)


async def _dispatch(request: web.Request, body: Body, requested: str, upstream_path: str,
                    apply_filters: bool, measure: Measure) -> web.StreamResponse:
    app = request.app
    plan = app[LIVE].plan
    router = app[ROUTER]
    model = plan.resolve_model(requested)
    if model is None:
        if requested in plan.virtual.peer_fqns() or any(requested in p.models for p in plan.virtual.peers):
            return error_response(request, 502, f"{requested} is a peer model: llamaswap does not forward to peers "
                                                "yet")
        return error_response(request, 404, "no local server found for requested model")
    cfg = plan.config.models[model]  # type: ignore[union-attr]
    ticket = router.submit(model, requested)
    app[EVENTS].queue_changed()
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
        current = app[LIVE].plan
        if current is not plan or outcome.model != model:
            # A reload came while it waited: it may be served by another model (its alias
            # moved) or by a restarted process: use what the config says now.
            model = outcome.model
            cfg = _model_config(current, model) or _model_config(plan, model) or cfg
        measure.waited = outcome.waited
        app[INFLIGHT].serving(measure.rid)
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
                                 extra_headers=swap_header(outcome), tap=measure.tap)
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
        app[EVENTS].queue_changed()


def _model_config(plan: Plan, model: str):
    c = plan.config
    return c.models.get(model) if c is not None else None


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
        waiter: asyncio.Future[Any] = asyncio.ensure_future(ticket.position_changed())
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
    plan = request.app[LIVE].plan
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
