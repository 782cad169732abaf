"""WebSocket: an upgraded `/upstream/<model>/…` (or `/comfyui/…`) connection proxied to the
model's upstream, frame by frame, until either side closes.

Lifecycle (llama-swap HEAD's meaning; a peer model's `/upstream/<peer>/<model>/…` upgrade
goes to the peer's own `/upstream/<model>/…`, outside the local scheduler, as every peer
request does):
- Scheduled (the default): the upgrade goes through the scheduler like any request (load or
  swap first, concurrency limit, queue) and, once granted, holds its ticket while it is
  open: it is in flight, so no swap evicts its model under it (a swap that must evict it
  waits, as for a long request) and TTL does not run. It is in the in-flight table and can
  be cancelled there.
- `compat.ignoreWebsockets` (per model; always on for comfyui_auto): the upgrade skips the
  scheduler: it never starts, queues or counts; a model that is not ready answers 409. An
  eviction may stop the model under it (the connection then ends), as in llama-swap.

Proxying: the upstream handshake happens first (a refusal is relayed with its status, an
unreachable upstream is a 502), then the client's upgrade is accepted with the subprotocol
the upstream chose. Text and binary frames are relayed as they come; pings are answered on
each side. A close from either side is passed on with its code and reason; a side that goes
away without a close frame closes the other with 1011 (upstream lost) or 1001 (client gone).
Auth, the Host/Origin checks and the connection cap apply to the upgrade as to any request;
the upstream gets the same headers a proxied request gets (hop-by-hop and the handshake's own
headers excepted). On shutdown every open websocket is closed with 1001; one whose model a
reload's drain ends is closed with 1012 (service restart), one whose model is unloaded with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import aiohttp
import yarl
from aiohttp import WSMsgType, web

from llamaswap.runtime.limits import UpstreamTimeouts
from llamaswap.runtime.passthrough import is_ready
from llamaswap.runtime.proxy import ENDED_FOR, STARTED_RESPONSE, error_response, upstream_headers

logger = logging.getLogger("llamaswap.serve")

CLOSE_TIMEOUT = 5.0  # seconds a close handshake may take on either side
MAX_MESSAGE = 64 << 20  # bytes in one (reassembled) message, per direction
_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)

OPEN_WEBSOCKETS = web.AppKey("open_websockets", set)


def _has_token(values: list[str], token: str) -> bool:
    return any(part.strip().lower() == token for value in values for part in value.split(","))


def is_upgrade(request: web.Request) -> bool:
    """A WebSocket upgrade request (`Connection: upgrade` and `Upgrade: websocket`, as tokens,
    case-insensitive)."""
    headers = request.headers
    return (
        "Upgrade" in headers
        and _has_token(headers.getall("Upgrade", []), "websocket")
        and _has_token(headers.getall("Connection", []), "upgrade")
    )


def handshake_timeout(t: UpstreamTimeouts | None) -> float | None:
    """A websocket handshake is bounded as a request's head is: connect + response header."""
    if t is None or t.response_header is None:
        return None
    return (t.connect or 0.0) + t.response_header


def _sendable(code: int | None, fallback: int) -> int:
    """A close code that may go on the wire (1005, 1006 and 1015 are only ever reported)."""
    if code is None or code in (1004, 1005, 1006, 1015) or not (1000 <= code <= 4999):
        return fallback
    return code


async def proxy(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: str,
    *,
    drop_headers: frozenset[str] = frozenset(),
    add_headers: Mapping[str, str] | None = None,
    handshake_timeout: float | None = None,
    via: str | None = None,
) -> web.StreamResponse:
    """Open the upstream websocket at `url` (http[s]://…), accept the client's, relay until
    one side closes; the client's WebSocketResponse (or the error answered instead).
    `via`: a forward proxy's URL the handshake goes through."""
    headers = upstream_headers(request.headers, drop_headers | _HANDSHAKE)
    if add_headers:
        headers.extend(add_headers)
    protocols = [
        p.strip()
        for v in request.headers.getall("Sec-WebSocket-Protocol", [])
        for p in v.split(",")
        if p.strip()
    ]
    try:
        async with asyncio.timeout(handshake_timeout):
            upstream = await session.ws_connect(
                yarl.URL(url, encoded=True),
                headers=headers,
                protocols=protocols,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT),
                max_msg_size=MAX_MESSAGE,
                proxy=via,
            )
    except aiohttp.WSServerHandshakeError as exc:
        status = exc.status if exc.status >= 400 else 502
        return error_response(request, status, f"upstream refused the websocket upgrade ({exc.status})")
    except TimeoutError:
        return error_response(request, 504, f"upstream websocket handshake took over {handshake_timeout:g}s")
    except (aiohttp.ClientError, OSError) as exc:
        return error_response(request, 502, f"upstream websocket error: {type(exc).__name__}: {exc}")
    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        max_msg_size=MAX_MESSAGE,
        timeout=CLOSE_TIMEOUT,
    )
    open_set = request.app[OPEN_WEBSOCKETS]
    try:
        await client.prepare(request)
        request[STARTED_RESPONSE] = client
        open_set.add(client)
        await _relay(client, upstream)
    finally:
        # Relayed closes are done; what is left was interrupted (cancelled from the in-flight
        # table, shutdown, the client's connection dropped, an error): close both sides.
        open_set.discard(client)
        upstream_gone = upstream.closed
        with contextlib.suppress(Exception):
            if not client.closed:
                ended = request.get(ENDED_FOR)  # set with ENDED_BY by dispatch._end
                if ended == "reload":  # a reload's drain ran out: the model restarts
                    await client.close(code=1012, message=b"service restart: llamaswap config reload")
                elif ended == "unload":
                    await client.close(code=1001, message=b"model unloaded")
                elif ended == "shutdown":
                    await client.close(code=1001, message=b"server shutting down")
                elif upstream_gone:
                    await client.close(code=_sendable(upstream.close_code, 1011), message=b"upstream gone")
                else:
                    await client.close(code=1001, message=b"closed by llamaswap")
        with contextlib.suppress(Exception):
            if not upstream.closed:
                await upstream.close(code=_sendable(client.close_code, 1001), message=b"client gone")
    return client


async def _pump(src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, dst) -> aiohttp.WSMessage:
    """Relay data frames from `src` to `dst` until `src` closes; the closing message."""
    while True:
        msg = await src.receive()
        if msg.type is WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type in _CLOSED:
            return msg


async def _relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    down = asyncio.ensure_future(_pump(upstream, client))
    up = asyncio.ensure_future(_pump(client, upstream))
    try:
        done, _ = await asyncio.wait((down, up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
    first = down if down in done else up
    closing = first.result() if not first.cancelled() and first.exception() is None else None
    reason = closing.extra.encode() if closing is not None and isinstance(closing.extra, str) else b""
    if first is down:  # the upstream closed (or broke): close the client the same way
        await client.close(code=_sendable(upstream.close_code, 1011), message=reason or b"")
    else:
        await upstream.close(code=_sendable(client.close_code, 1001), message=reason or b"")


async def unscheduled(
    request: web.Request,
    session: aiohttp.ClientSession,
    model: str,
    url: str,
    *,
    drop_headers: frozenset[str] = frozenset(),
    add_headers: Mapping[str, str] | None = None,
    handshake_timeout: float | None = None,
) -> web.StreamResponse:
    """`compat.ignoreWebsockets`: proxy without the scheduler if the model is ready, else 409."""
    if not is_ready(request.app, model):
        return error_response(
            request, 409, f"model {model} is not loaded; ignored websocket requests cannot start it"
        )
    return await proxy(
        request,
        session,
        url,
        drop_headers=drop_headers,
        add_headers=add_headers,
        handshake_timeout=handshake_timeout,
    )


async def close_all(app: web.Application) -> None:
    """Close every open websocket with 1001 (at shutdown, before the drain)."""
    sockets = list(app.get(OPEN_WEBSOCKETS, ()))
    await asyncio.gather(
        *(ws.close(code=1001, message=b"server shutting down") for ws in sockets), return_exceptions=True
    )
