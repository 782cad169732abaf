"""Cross-site: keep web pages on other sites from controlling a server that has no `apiKeys`.

A browser lets any page send "simple" requests (GET, or a POST of text/plain or a form) to
any address, localhost included, without asking anyone; and a page whose DNS name is
re-pointed at 127.0.0.1 (DNS rebinding) even reads the answers. Without `apiKeys` nothing
else stands in the way, so with no `apiKeys`:

- Host: a request whose `Host` is not this server is refused (403) on every path except
  the health probes. This server's names are IP literals, `localhost` (and `*.localhost`),
  this machine's host name, and `server.allowedHosts` (`"*"` allows any).
- Origin: a request that can change state (a model-dispatched route, which may start a
  model; `/upstream/...`; `/unload`; `/api/models/unload...`) is refused (403) when the
  browser says it comes from another site: an `Origin` that is not this server's own
  (`http://<Host>`) and not in `server.allowedOrigins` (`"*"` allows any), or, with no
  `Origin`, `Sec-Fetch-Site: cross-site` / `same-site`. Clients that are not browsers send
  neither header and are never affected.

With `apiKeys` set (llama-swap's way to protect a server, and the llama-swap-compatible way
to let other origins in: a page must present a key), none of this applies.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

from aiohttp import web

from llamaswap.runtime.proxy import error_response

FOREIGN_FETCH = frozenset({"cross-site", "same-site"})


def _split_host(value: str) -> str:
    """The host part of a Host header value, lower-case, without brackets or port."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


@lru_cache(maxsize=1)
def _machine_names() -> frozenset[str]:
    name = socket.gethostname().lower()
    return frozenset({name, name + ".local", name.split(".")[0]})


@lru_cache(maxsize=256)
def host_allowed(host_header: str | None, allowed: tuple[str, ...]) -> bool:
    """Cached: clients send the same few Host values on every request."""
    if not host_header:
        return True  # HTTP/1.0 clients; browsers always send Host
    if "*" in allowed:
        return True
    host = _split_host(host_header)
    if host in allowed or host_header.strip().lower() in allowed:
        return True
    if host == "localhost" or host.endswith(".localhost") or host in _machine_names():
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> tuple[bool, str]:
    """(allowed?, what the browser said) for a request that can change state."""
    origin = request.headers.get("Origin")
    if origin is not None:
        origin = origin.strip().lower().rstrip("/")
        own = f"{request.scheme}://{request.headers.get('Host', '')}".lower()
        if origin == own or "*" in allowed or origin in (o.lower().rstrip("/") for o in allowed):
            return True, origin
        return False, f"Origin {origin}"
    fetch = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if fetch in FOREIGN_FETCH and "*" not in allowed:
        return False, f"Sec-Fetch-Site: {fetch}"
    return True, ""


def host_refusal(request: web.Request, allowed_hosts: tuple[str, ...]) -> web.Response | None:
    host = request.headers.get("Host")
    if host_allowed(host, allowed_hosts):
        return None
    return error_response(
        request,
        403,
        f"request refused: Host {host!r} is not this server "
        "(DNS rebinding guard; allow it with server.allowedHosts, or set apiKeys)",
    )


def origin_refusal(request: web.Request, allowed_origins: tuple[str, ...]) -> web.Response | None:
    ok, said = origin_allowed(request, allowed_origins)
    if ok:
        return None
    return error_response(
        request,
        403,
        f"cross-site request refused ({said}): allow the origin with server.allowedOrigins, or set apiKeys",
    )
