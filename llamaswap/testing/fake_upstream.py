"""The fake OpenAI-compatible upstream used by tests, the built-in demo and users' CI.

It owns one aiohttp server that behaves like a small llama-server: `/health` (503 while
"loading"), chat/text completions (streaming and not), embeddings and `/v1/models`, plus
debug endpoints that let a test see what the upstream received and hold requests in flight.

Contract a test can rely on:
- stdout carries exactly one line, `listening on http://HOST:PORT`, flushed once the socket
  is bound (`--port 0` picks a free port); everything else goes to stderr.
- Every response carries `X-Upstream-Name` and `X-Upstream-Pid`; JSON bodies carry
  `"system_fingerprint": "NAME:PID"`; assistant text starts with `[NAME:PID]`.
- `model` is echoed back as received.
- Request fields (JSON body, or query string for `delay`): `delay` seconds before answering
  (so a large one hangs before the response head), `tokens` = exact number of generated
  tokens, `token_delay` per-request override, `stall_after` = send that many stream chunks,
  then stall (never end) until the client goes away, and the usual `max_tokens` /
  `max_completion_tokens` bound.
- Chat completions report `usage` (words as tokens) and llama-server-style `timings`
  measured on the fake (on the final chunk of a stream, as llama-server does). A
  non-streamed reply takes as long as its stream would (`token_delay` between tokens).
- Every request is recorded with its raw target (`raw_path`: path and query exactly as
  received, still percent-encoded) and headers. Bodies are read as a stream, so uploads of
  any size work with bounded memory: bodies up to RECORD_BODY bytes are kept (`body`,
  `json`); every body is counted (`body_length`) and hashed (`body_sha256`).
- `GET /props`: llama-server's props shape (`default_generation_settings.n_ctx`, `total_slots`,
  `model_path`), plus the name and the `model` query it was asked with.
- `/ws` (and `/ws/<anything>`): a WebSocket echo. It first sends one text frame
  `{"hello": "NAME:PID", "path", "protocol"}` (subprotocols `echo` and `chat` are accepted),
  then echoes every text and binary frame; the text `close:CODE[:REASON]` makes it close
  with that code instead. An open websocket counts in `inflight` (`/debug/inflight`).
- `/debug/last-request`, `/debug/requests`, `/debug/inflight`, `/debug/info` never count as
  traffic and are never recorded; neither is `/health`.
- `/debug/info` echoes `CUDA_VISIBLE_DEVICES` and `HIP_VISIBLE_DEVICES` as its environment
  had them (`visible_devices`; null when unset), so a test can see where it was placed.
- Times in `/debug/info` are `time.monotonic()` values, which on Linux share one clock across
  processes, so a test can compare them with its own.
- SIGTERM/SIGINT: clean exit 0. `exit_after`: abrupt exit with CRASH_EXIT_CODE.

Start-up time matters (tests spawn it often), so it imports only aiohttp, the stdlib and
the project's one loop chooser (`runtime/loop.py`: uvloop when importable).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import json
import os
import re
import signal
import socket
import struct
import sys
import time
from typing import Any

from aiohttp import WSMsgType, web

from llamaswap.runtime.loop import loop_factory

CRASH_EXIT_CODE = 3
# Grace given to in-flight handlers on SIGTERM before they are cancelled.
SHUTDOWN_GRACE = 0.25
REQUEST_HISTORY = 100
RECORD_BODY = 1 << 20  # bodies up to this size are kept whole (handlers and the record)
EMBEDDING_DIM = 8
VISIBLE_DEVICES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")  # echoed by /debug/info

_NOT_RECORDED = ("/health", "/debug/")
_WORD = re.compile(r"\S+\s*")


class _State:
    """Everything the handlers share; one instance per server."""

    def __init__(
        self, name: str, startup_delay: float, fail_health: bool, token_delay: float, exit_after: float | None
    ) -> None:
        self.name = name
        self.pid = os.getpid()
        self.fingerprint = f"{name}:{self.pid}"
        self.started = time.monotonic()
        self.started_wall = int(time.time())
        self.healthy_at = None if fail_health else self.started + startup_delay
        self.startup_delay = startup_delay
        self.fail_health = fail_health
        self.token_delay = token_delay
        self.exit_after = exit_after
        self.inflight = 0
        self.total = 0
        self.cancelled = 0
        self.requests: collections.deque[dict] = collections.deque(maxlen=REQUEST_HISTORY)
        self.ids = 0

    def next_id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}-{self.pid}-{self.ids}"


STATE = web.AppKey("state", _State)
RAW_BODY = "fake_upstream.body"  # request key: the body, when it was small enough to keep


# --- recording and counting ----------------------------------------------------------------


@web.middleware
async def _observe(request: web.Request, handler):
    st = request.app[STATE]
    if request.path.startswith(_NOT_RECORDED):
        return await handler(request)
    raw, length, digest = await _read_streaming(request)
    request[RAW_BODY] = raw
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    st.requests.append(
        {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": dict(request.query),
            # Lower-cased names so a test can check hop-by-hop removal without caring about case.
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "json": parsed,
            "body": raw.decode("utf-8", "replace"),
            "body_length": length,
            "body_sha256": digest,
        }
    )
    request["arrived"] = time.monotonic()
    st.total += 1
    st.inflight += 1
    try:
        return await handler(request)
    except asyncio.CancelledError:
        st.cancelled += 1
        raise
    finally:
        st.inflight -= 1


async def _read_streaming(request: web.Request) -> tuple[bytes, int, str]:
    """(the body if at most RECORD_BODY bytes else b"", its length, its sha256), read chunk
    by chunk so that a large upload never sits in memory whole."""
    sha = hashlib.sha256()
    kept: list[bytes] = []
    length = 0
    async for chunk in request.content.iter_any():
        sha.update(chunk)
        length += len(chunk)
        if length <= RECORD_BODY:
            kept.append(chunk)
        else:
            kept.clear()
    return (b"".join(kept) if length <= RECORD_BODY else b""), length, sha.hexdigest()


async def _name_response(request: web.Request, response: web.StreamResponse) -> None:
    st = request.app[STATE]
    response.headers["X-Upstream-Name"] = st.name
    response.headers["X-Upstream-Pid"] = str(st.pid)


def _error(status: int, message: str, type_: str = "invalid_request_error") -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": type_, "param": None, "code": None}}, status=status
    )


async def _body(request: web.Request) -> dict:
    """The JSON object of a POST, or a 400 raised as an exception."""
    try:
        body = json.loads(request.get(RAW_BODY, b"") or b"{}")
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps(
                {
                    "error": {
                        "message": "invalid JSON body",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                }
            ),
            content_type="application/json",
        )
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps(
                {
                    "error": {
                        "message": "JSON body must be an object",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                }
            ),
            content_type="application/json",
        )
    return body


def _number(value: Any, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


async def _apply_delay(request: web.Request, body: dict) -> None:
    delay = _number(body.get("delay", request.query.get("delay")), 0.0)
    if delay > 0:
        await asyncio.sleep(delay)


# --- text generation ---------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _generate(st: _State, body: dict, prompt: str) -> tuple[list[str], str]:
    """Tokens of the reply and the finish reason."""
    reply = f"[{st.fingerprint}] You said: {prompt}" if prompt else f"[{st.fingerprint}] Hello!"
    tokens = _WORD.findall(reply)
    wanted = body.get("tokens")
    if isinstance(wanted, int) and wanted >= 0:
        tokens = (tokens + [f"t{i} " for i in range(len(tokens), wanted)])[:wanted]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(limit, int) and 0 <= limit < len(tokens):
        return tokens[:limit], "length"
    return tokens, "stop"


def _usage(prompt: str, completion: int) -> dict:
    p = len(prompt.split())
    return {"prompt_tokens": p, "completion_tokens": completion, "total_tokens": p + completion}


def _timings(prompt: str, completion: int, arrived: float, first_token: float, done: float) -> dict:
    """llama-server's `timings` object, measured on this fake: prompt time is from arrival
    to the first token (any `delay` included), generation time from there to the end."""
    p = len(prompt.split())
    prompt_ms = max((first_token - arrived) * 1000.0, 0.001)
    predicted_ms = max((done - first_token) * 1000.0, 0.001)
    return {
        "cache_n": 0,
        "prompt_n": p,
        "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / p, 3) if p else 0.0,
        "prompt_per_second": round(p * 1000.0 / prompt_ms, 3),
        "predicted_n": completion,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_token_ms": round(predicted_ms / completion, 3) if completion else 0.0,
        "predicted_per_second": round(completion * 1000.0 / predicted_ms, 3),
    }


async def _stream(request: web.Request, body: dict, chunks) -> web.StreamResponse:
    """Send an SSE stream: one `data:` event per chunk, token_delay apart, then [DONE]."""
    st = request.app[STATE]
    token_delay = _number(body.get("token_delay"), st.token_delay)
    stall_after = body.get("stall_after")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    for i, chunk in enumerate(chunks):
        if isinstance(stall_after, int) and i >= stall_after:
            await asyncio.Event().wait()  # until the client goes away (cancelled)
        if i and token_delay > 0:
            await asyncio.sleep(token_delay)
        if callable(chunk):  # made when it is sent (it reports timings)
            chunk = chunk()
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


# --- handlers ------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if st.healthy_at is not None and time.monotonic() >= st.healthy_at:
        return web.json_response({"status": "ok"})
    return web.json_response(
        {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}, status=503
    )


async def root(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.json_response({"name": st.name, "pid": st.pid, "system_fingerprint": st.fingerprint})


async def models(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.json_response(
        {
            "object": "list",
            "system_fingerprint": st.fingerprint,
            "data": [
                {"id": st.name, "object": "model", "created": st.started_wall, "owned_by": st.fingerprint}
            ],
        }
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    body = await _body(request)
    await _apply_delay(request, body)
    messages = body.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    prompt = _text_of(users[-1].get("content")) if users else ""
    tokens, finish = _generate(st, body, prompt)
    model = body.get("model", st.name)
    cid, created = st.next_id("chatcmpl"), int(time.time())

    arrived = request.get("arrived", time.monotonic())
    if not body.get("stream"):
        # As long as the stream would take: token_delay between tokens.
        first_at = time.monotonic()
        token_delay = _number(body.get("token_delay"), st.token_delay)
        if token_delay > 0 and len(tokens) > 1:
            await asyncio.sleep(token_delay * (len(tokens) - 1))
        now = time.monotonic()
        return web.json_response(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": st.fingerprint,
                "choices": [
                    {
                        "index": 0,
                        "logprobs": None,
                        "finish_reason": finish,
                        "message": {"role": "assistant", "content": "".join(tokens), "refusal": None},
                    }
                ],
                "usage": _usage(prompt, len(tokens)),
                "timings": _timings(prompt, len(tokens), arrived, first_at, now),
            }
        )
    first_token: list[float] = []

    def chunk(delta: dict, finish_reason: str | None, **extra) -> dict:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": st.fingerprint,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            **extra,
        }

    def first(delta: dict) -> dict:
        first_token.append(time.monotonic())
        return chunk(delta, None)

    def last() -> dict:
        # llama-server puts `timings` on the final chunk of a stream.
        start = first_token[0] if first_token else arrived
        return chunk({}, finish, timings=_timings(prompt, len(tokens), arrived, start, time.monotonic()))

    def chunks():
        # The role rides on the first token so that there is exactly one chunk per token.
        yield lambda: first({"role": "assistant", "content": tokens[0] if tokens else ""})
        for tok in tokens[1:]:
            yield chunk({"content": tok}, None)
        yield last
        if (body.get("stream_options") or {}).get("include_usage"):
            yield {**chunk({}, None), "choices": [], "usage": _usage(prompt, len(tokens))}

    return await _stream(request, body, chunks())


async def completions(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    body = await _body(request)
    await _apply_delay(request, body)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        prompt = " ".join(p for p in prompt if isinstance(p, str))
    prompt = prompt if isinstance(prompt, str) else ""
    tokens, finish = _generate(st, body, prompt)
    model = body.get("model", st.name)
    cid, created = st.next_id("cmpl"), int(time.time())

    def record(text: str, finish_reason: str | None) -> dict:
        return {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": st.fingerprint,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
        }

    if not body.get("stream"):
        return web.json_response({**record("".join(tokens), finish), "usage": _usage(prompt, len(tokens))})
    chunks = [record(t, None) for t in tokens] + [record("", finish)]
    return await _stream(request, body, chunks)


def _embedding(item: Any, dim: int) -> list[float]:
    seed = json.dumps(item, sort_keys=True).encode()
    out: list[float] = []
    counter = 0
    while len(out) < dim:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        out.extend(b / 127.5 - 1.0 for b in digest)
        counter += 1
    return out[:dim]


async def embeddings(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = await _body(request)
    await _apply_delay(request, body)
    inputs = body.get("input", "")
    # A list of token ids is one input; a list of strings or of id lists is several.
    if isinstance(inputs, str) or (
        isinstance(inputs, list) and inputs and all(isinstance(i, int) for i in inputs)
    ):
        inputs = [inputs]
    if not isinstance(inputs, list):
        return _error(400, "input must be a string or a list")
    dim = dims if isinstance(dims := body.get("dimensions"), int) else EMBEDDING_DIM
    data = []
    for i, item in enumerate(inputs):
        vec = _embedding(item, dim)
        if body.get("encoding_format") == "base64":
            encoded: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode()
        else:
            encoded = vec
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    n = sum(len(str(i).split()) for i in inputs)
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": body.get("model", st.name),
            "system_fingerprint": st.fingerprint,
            "usage": {"prompt_tokens": n, "total_tokens": n},
        }
    )


async def echo(request: web.Request) -> web.Response:
    """Any other path: say who answered and what was asked (for passthrough tests)."""
    st = request.app[STATE]
    return web.json_response(
        {
            "name": st.name,
            "pid": st.pid,
            "system_fingerprint": st.fingerprint,
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
        }
    )


async def props(request: web.Request) -> web.Response:
    """llama-server's GET /props (the fields clients read), and who answered."""
    st = request.app[STATE]
    return web.json_response(
        {
            "default_generation_settings": {"n_ctx": 4096, "params": {"temperature": 0.8}},
            "total_slots": 1,
            "model_path": f"/models/{st.name}.gguf",
            "name": st.name,
            "system_fingerprint": st.fingerprint,
            "model": request.query.get("model", ""),
        }
    )


async def websocket_echo(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    ws = web.WebSocketResponse(protocols=("echo", "chat"))
    await ws.prepare(request)
    await ws.send_json({"hello": st.fingerprint, "path": request.path, "protocol": ws.ws_protocol})
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            if msg.data.startswith("close:"):
                _, code, reason = (msg.data + ":").split(":", 2)
                await ws.close(code=int(code), message=reason.rstrip(":").encode())
                break
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def debug_last_request(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not st.requests:
        return web.json_response({"error": "no request yet"}, status=404)
    return web.json_response(st.requests[-1])


async def debug_requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": list(request.app[STATE].requests)})


async def debug_inflight(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.json_response({"inflight": st.inflight, "total": st.total, "cancelled": st.cancelled})


async def debug_info(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.json_response(
        {
            "name": st.name,
            "pid": st.pid,
            "system_fingerprint": st.fingerprint,
            "started_monotonic": st.started,
            "healthy_monotonic": st.healthy_at,
            "startup_delay": st.startup_delay,
            "fail_health": st.fail_health,
            "token_delay": st.token_delay,
            "exit_after": st.exit_after,
            "inflight": st.inflight,
            "total": st.total,
            "cancelled": st.cancelled,
            # The devices its environment lets it see (resources: llamaswap sets them).
            "visible_devices": {name: os.environ.get(name) for name in VISIBLE_DEVICES},
        }
    )


def make_app(state: _State) -> web.Application:
    app = web.Application(middlewares=[_observe])
    app[STATE] = state
    app.on_response_prepare.append(_name_response)
    r = app.router
    r.add_get("/health", health)
    r.add_get("/", root)
    r.add_get("/v1/models", models)
    r.add_post("/v1/chat/completions", chat_completions)
    r.add_post("/v1/completions", completions)
    r.add_post("/v1/embeddings", embeddings)
    r.add_get("/props", props)
    r.add_get("/ws", websocket_echo)
    r.add_get("/ws/{tail:.*}", websocket_echo)
    r.add_get("/debug/last-request", debug_last_request)
    r.add_get("/debug/requests", debug_requests)
    r.add_get("/debug/inflight", debug_inflight)
    r.add_get("/debug/info", debug_info)
    r.add_route("*", "/{tail:.*}", echo)
    return app


# --- process -------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    # One socket, so `--port 0` on a name with several addresses still yields one port.
    family, type_, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


async def _serve(host: str, port: int, state: _State) -> int:
    loop = asyncio.get_running_loop()
    sock = _bind(host, port)
    runner = web.AppRunner(
        make_app(state), access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_GRACE
    )
    await runner.setup()
    await web.SockSite(runner, sock).start()

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if state.exit_after is not None:
        loop.call_later(max(0.0, state.exit_after - (time.monotonic() - state.started)), _crash, state)

    shown = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown}:{sock.getsockname()[1]}", flush=True)
    print(
        f"{state.name}: pid {state.pid} serving (startup delay {state.startup_delay:g}s)",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    print(f"{state.name}: shutting down", file=sys.stderr, flush=True)
    await runner.cleanup()
    return 0


def _crash(state: _State) -> None:
    print(
        f"{state.name}: exiting with code {CRASH_EXIT_CODE} after {state.exit_after:g}s (simulated crash)",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    os._exit(CRASH_EXIT_CODE)


def run(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = "fake",
    startup_delay: float = 0.0,
    fail_health: bool = False,
    exit_after: float | None = None,
    token_delay: float = 0.0,
) -> int:
    """Serve until SIGTERM/SIGINT (exit code 0) or `exit_after` (CRASH_EXIT_CODE)."""
    state = _State(name, startup_delay, fail_health, token_delay, exit_after)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(_serve(host, port, state))
    except OSError as exc:
        print(f"{name}: cannot listen on {host}:{port}: {exc}", file=sys.stderr, flush=True)
        return 1
