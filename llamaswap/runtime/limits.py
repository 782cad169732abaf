"""Limits: every bound on the request path, read off a compiled Plan. Pure.

One place for the defaults, so that docs/guarantees.md ("Request-path limits") and the code
cannot drift apart. In every key, 0 turns the limit off; unset means the default below.

Server (`server:` block, a llamaswap extension; nginx's defaults where nginx has one):
- maxBodyBytes       32 MiB   request bodies other than multipart/form-data
- maxMultipartBytes  256 MiB  multipart/form-data bodies (audio uploads, image edits)
- headerTimeout      60 s     from the first byte of a request head to its end
- bodyTimeout        60 s     between two reads of a request body
- keepaliveTimeout   75 s     an idle kept-alive connection
- maxConnections     2048     open client connections; more are refused with 503
- allowedHosts / allowedOrigins: see runtime/crosssite.py

Upstream (per model `timeouts:`, llama-swap's keys):
- connect 30 s; responseHeader 600 s when unset (llama-swap: 0, no limit); streamIdle 300 s
  (a llamaswap extension: the longest gap between two body bytes of a response);
  idleConn 90 s (idle pooled connections are closed); keepalive 30 s (TCP keep-alive idle).
  A peer's `timeouts:` are the same keys with the same defaults, except responseHeader:
  60 s when unset, as in llama-swap.

Queue (`routing.scheduler.settings.fifo.queue_timeout`): 600 s from admission to grant.

A hot reload changes them all for the next request (`PlanMemo`), except the connection
bounds (header and keep-alive timeouts, the connection cap), which are set at start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from llamaswap.compiler.config import Timeouts
from llamaswap.compiler.plan import Plan

T = TypeVar("T")

MiB = 1 << 20

DEFAULT_MAX_BODY = 32 * MiB
DEFAULT_MAX_MULTIPART = 256 * MiB
DEFAULT_HEADER_TIMEOUT = 60.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
DEFAULT_MAX_CONNECTIONS = 2048
DEFAULT_RESPONSE_HEADER_TIMEOUT = 600.0
DEFAULT_STREAM_IDLE_TIMEOUT = 300.0
PEER_RESPONSE_HEADER_TIMEOUT = 60.0
DEFAULT_QUEUE_TIMEOUT = 600.0


def _bound(value: float | None, default: float) -> float | None:
    """Unset -> default; 0 -> None (off); otherwise the value."""
    if value is None:
        return float(default)
    return None if value == 0 else float(value)


@dataclass(frozen=True)
class ServerLimits:
    max_body: int | None
    max_multipart: int | None
    header_timeout: float | None
    body_timeout: float | None
    keepalive_timeout: float | None
    max_connections: int | None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    queue_timeout: float | None = DEFAULT_QUEUE_TIMEOUT

    def body_limit(self, content_type: str) -> tuple[int | None, str]:
        """The size limit for a body of this (lower-case, parameter-free) content type, and
        the key that sets it."""
        if content_type == "multipart/form-data":
            return self.max_multipart, "maxMultipartBytes"
        return self.max_body, "maxBodyBytes"


@dataclass(frozen=True)
class UpstreamTimeouts:
    connect: float | None
    response_header: float | None
    stream_idle: float | None
    idle_conn: float | None
    keepalive: float | None


def server_limits(plan: Plan) -> ServerLimits:
    c = plan.config
    assert c is not None
    s = c.server

    def size(value: int | None, default: int) -> int | None:
        bound = _bound(value, default)
        return None if bound is None else int(bound)

    return ServerLimits(
        max_body=size(s.max_body_bytes, DEFAULT_MAX_BODY),
        max_multipart=size(s.max_multipart_bytes, DEFAULT_MAX_MULTIPART),
        header_timeout=_bound(s.header_timeout, DEFAULT_HEADER_TIMEOUT),
        body_timeout=_bound(s.body_timeout, DEFAULT_BODY_TIMEOUT),
        keepalive_timeout=_bound(s.keepalive_timeout, DEFAULT_KEEPALIVE_TIMEOUT),
        max_connections=size(s.max_connections, DEFAULT_MAX_CONNECTIONS),
        allowed_hosts=tuple(s.allowed_hosts),
        allowed_origins=tuple(s.allowed_origins),
        queue_timeout=queue_timeout(plan),
    )


def upstream_timeouts(plan: Plan, model: str) -> UpstreamTimeouts:
    c = plan.config
    assert c is not None
    return read_timeouts(c.models[model].timeouts, DEFAULT_RESPONSE_HEADER_TIMEOUT)


def peer_timeouts(t: Timeouts) -> UpstreamTimeouts:
    """A peer's timeouts: a model's defaults, but 60 s for the response head (llama-swap's)."""
    return read_timeouts(t, PEER_RESPONSE_HEADER_TIMEOUT)


def read_timeouts(t: Timeouts, response_header: float) -> UpstreamTimeouts:
    return UpstreamTimeouts(
        connect=_bound(t.connect, 30),
        response_header=_bound(t.response_header, response_header),
        stream_idle=_bound(t.stream_idle, DEFAULT_STREAM_IDLE_TIMEOUT),
        idle_conn=_bound(t.idle_conn, 90),
        keepalive=_bound(t.keepalive, 30),
    )


def queue_timeout(plan: Plan) -> float | None:
    """Seconds a request may wait from admission to grant before it gets 503 (None: off)."""
    c = plan.config
    assert c is not None
    return _bound(c.routing.scheduler.settings.fifo.queue_timeout, DEFAULT_QUEUE_TIMEOUT)


class PlanMemo(Generic[T]):
    """A value derived from the live plan, made again only when a hot reload swaps the plan
    (compared by identity: plans are immutable)."""

    __slots__ = ("_make", "_plan", "_value")

    def __init__(self, make: Callable[[Plan], T]) -> None:
        self._make = make
        self._plan: Plan | None = None
        self._value: T | None = None

    def of(self, plan: Plan) -> T:
        if plan is not self._plan or self._value is None:
            self._value = self._make(plan)
            self._plan = plan
        return self._value


def all_upstream_timeouts(plan: Plan) -> dict[str, UpstreamTimeouts]:
    return {m: upstream_timeouts(plan, m) for m in plan.models}
