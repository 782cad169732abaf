"""Peers: a request for a peer model, forwarded to the peer's server (another llamaswap or
llama-swap, vLLM, OpenRouter: anything OpenAI-compatible), as llama-swap's peer router does.

  routing name (`peer/model`, or a bare name exactly one peer lists: compiler/virtual.py)
  -> the peer's filters on a JSON body (stripParams, setParams, setParamsByID[requested])
  -> the model the body (JSON, form field) or `?model=` names is renamed to the peer's own
     name for it; `/upstream/<peer/model>/<path>` goes to the peer as `/upstream/<model>/<path>`
  -> forwarded by the same proxy and pooled client as a local model's request, under the
     peer's timeouts, the answer streamed back as it arrives; through the forward proxy that
     HTTP_PROXY / HTTPS_PROXY name unless NO_PROXY (or a loopback peer) says direct, as Go's
     ProxyFromEnvironment does for llama-swap (envproxy.py).

Invariants:
- No scheduler: a peer request takes no ticket, starts no swap, waits in no queue and counts
  toward no concurrency limit; so local models never wait on a peer, nor a peer on a swap.
  (Body limits, auth and the connection cap apply before dispatch, as for every request.)
- The client's credentials never leave: `Authorization` and `x-api-key` are always dropped;
  the peer's `apiKey`, when set, is sent as `Authorization: Bearer` and `x-api-key`.
- A forward proxy is only ever http:// or https://; another scheme (socks5) answers 502 and
  never goes direct behind the operator's back.
- A failure answers as soon as it is known and names the peer: unreachable -> 502
  `peer proxy error: ...` (e.g. connection refused to host:port); a bounded wait that ran out
  -> 504 (its key: `peers.<id>.timeouts.connect`, `responseHeader` or `streamIdle`); a failure
  after the answer started aborts the client connection (proxy.py), never a clean end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qsl, quote, unquote_plus, urlencode

from aiohttp import web

from llamaswap.compiler.virtual import PeerRoute
from llamaswap.runtime import envproxy, websocket
from llamaswap.runtime.body import Body, StreamBody, upstream_body
from llamaswap.runtime.filters import (
    apply_filters,
    filters_apply,
    multipart_boundary,
    replace_multipart_head_model,
)
from llamaswap.runtime.keys import SESSION, UPSTREAMS
from llamaswap.runtime.limits import peer_timeouts
from llamaswap.runtime.proxy import UpstreamBroke, UpstreamError, UpstreamTimedOut, error_response, forward
from llamaswap.runtime.redact import Redactor

logger = logging.getLogger("llamaswap.serve")

CLIENT_CREDENTIALS = frozenset({"authorization", "x-api-key"})
# What Go's URL path escaping leaves as it is (besides letters, digits and "-._~").
_PATH_SAFE = "/:@!$&'()*+,;="


def peer_auth(api_key: str) -> tuple[frozenset[str], dict[str, str]]:
    """(headers never forwarded, headers sent in their place) for a peer request."""
    if not api_key:
        return CLIENT_CREDENTIALS, {}
    return CLIENT_CREDENTIALS, {"Authorization": f"Bearer {api_key}", "x-api-key": api_key}


class BadPeerBody(Exception):
    """The body cannot be rewritten for the peer (answered with 400)."""


def peer_body(
    request: web.Request, body: Body, route: PeerRoute, requested: str, asked: str | None = None
) -> bytes | StreamBody:
    """The body for the peer: filtered, and its model renamed to the peer's name for it.
    `asked`: the ID the client named when a profile pin or selector resolved it to
    `requested` (a multipart body still names it: its head is rewritten only as it is sent)."""
    rename = requested != route.model
    if body.raw is not None:
        if body.json is not None:
            f = route.peer.filters
            out = body.json
            if filters_apply(f, requested):
                out = apply_filters(out, f, requested)
            if rename and out.get("model") == requested:
                out = {**out, "model": route.model}
            if out is body.json:
                return body.raw
            try:
                return json.dumps(out).encode()
            except RecursionError:
                raise BadPeerBody("invalid JSON body: nested too deeply") from None
        if rename and request.content_type == "application/x-www-form-urlencoded" and body.model == requested:
            pairs = parse_qsl(body.raw.decode("utf-8", "replace"), keep_blank_values=True)
            return urlencode([(k, route.model if k == "model" else v) for k, v in pairs]).encode()
        return body.raw
    head = body.head
    if body.model_end is not None and body.model != route.model and body.model in (requested, asked):
        boundary = multipart_boundary(request.headers.get("Content-Type", ""))
        assert boundary is not None
        head = replace_multipart_head_model(head, boundary, body.model_end, route.model.encode())
    return upstream_body(request, body, head)


def peer_target(
    request: web.Request, route: PeerRoute, requested: str, target: str, passthrough: bool
) -> str:
    """The path and query to send to the peer (`target` is still percent-encoded)."""
    if passthrough:
        return f"/upstream/{quote(route.model, safe=_PATH_SAFE)}{target}"
    path, sep, query = target.partition("?")
    if request.method != "GET" or requested == route.model or not sep:
        return target
    items = query.split("&")
    for i, item in enumerate(items):
        key, eq, value = item.partition("=")
        if unquote_plus(key) == "model" and unquote_plus(value) == requested:
            items[i] = "model=" + quote(route.model, safe="")
    return path + sep + "&".join(items)


async def forward_to_peer(
    request: web.Request,
    route: PeerRoute,
    requested: str,
    body: Body,
    target: str,
    passthrough: bool,
    tap: Callable[[bytes], None],
    redact: Redactor,
    asked: str | None = None,
) -> web.StreamResponse:
    """Forward one request to its peer and relay the answer (see the module's invariants).
    `passthrough`: an `/upstream/...` request (no filters, the path names the model).
    A body that fails while it streams raises BodyError for the caller to answer."""
    peer = route.peer
    try:
        data = (
            upstream_body(request, body, body.head)
            if passthrough
            else peer_body(request, body, route, requested, asked)
        )
    except BadPeerBody as exc:
        return error_response(request, 400, str(exc))
    url = peer.proxy.rstrip("/") + peer_target(request, route, requested, target, passthrough)
    drop, add = peer_auth(peer.api_key)
    via = envproxy.from_environment().proxy_for(url)
    logger.debug(
        "peer: routing model %s to peer %s as %s%s",
        requested,
        peer.id,
        route.model,
        f" via proxy {redact(envproxy.shown(via))}" if via else "",
    )
    if via is not None and not via.lower().startswith(("http://", "https://")):
        message = redact(
            f"peer proxy error: peer {peer.id}: proxy {envproxy.shown(via)} from the environment: "
            "only http:// and https:// proxies are supported"
        )
        logger.warning("%s", message)
        return error_response(request, 502, message)
    app = request.app
    if passthrough and websocket.is_upgrade(request):
        return await websocket.proxy(
            request,
            app[SESSION],
            url,
            drop_headers=drop,
            add_headers=add,
            handshake_timeout=websocket.handshake_timeout(peer_timeouts(peer.timeouts)),
            via=via,
        )
    try:
        return await forward(
            request,
            app[UPSTREAMS],
            app[SESSION],
            url,
            data,
            drop_headers=drop,
            add_headers=add,
            timeouts=peer_timeouts(peer.timeouts),
            tap=tap,
            via=via,
        )
    except UpstreamTimedOut as exc:
        message = redact(f"peer proxy error: peer {peer.id}: {_peer_keys(exc, peer.id)}")
        logger.warning("%s", message)
        return error_response(request, 504, message)
    except UpstreamError as exc:
        message = redact(f"peer proxy error: peer {peer.id}: {exc}")
        logger.warning("%s", message)
        return error_response(request, 502, message)
    except UpstreamBroke as exc:
        logger.warning(
            "peer %s failed mid-response (%s); aborting the client connection", peer.id, redact(str(exc))
        )
        if request.transport is not None:
            request.transport.abort()
        return exc.response


def _peer_keys(exc: Exception, peer_id: str) -> str:
    """The timeout's message with its config key as a peer's (`peers.<id>.timeouts.X`)."""
    return str(exc).replace("(timeouts.", f"(peers.{peer_id}.timeouts.")
