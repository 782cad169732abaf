"""Forward proxies from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), with the rules of
Go's `http.ProxyFromEnvironment`, which llama-swap's peer transport uses.

- `HTTP_PROXY` (else `http_proxy`) is for http URLs, `HTTPS_PROXY` (else `https_proxy`) for
  https URLs; a value without a scheme means `http://`. Under CGI (`REQUEST_METHOD` set)
  `HTTP_PROXY` is ignored, as Go does.
- Never proxied: `localhost` and loopback addresses, whatever `NO_PROXY` says.
- `NO_PROXY` (else `no_proxy`): comma-separated; `*` matches everything; an IP or CIDR matches
  addresses; `name` matches the name and its subdomains, `.name` and `*.name` only subdomains;
  any entry may end in `:port`, matching that port only.

Pure: the environment is passed in (read once per process, as Go does, by `from_environment`).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": "80", "https": "443"}
_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def _first(environ: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = environ.get(name, "")
        if value:
            return value
    return ""


def _parse_proxy(value: str) -> str | None:
    """The proxy URL for a variable's value; `http://` when it names no scheme."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme and parts.netloc:
        return value
    parts = urlsplit("http://" + value)
    return "http://" + value if parts.netloc else None


def _idna(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _split_host_port(entry: str) -> tuple[str, str]:
    """("host", "port") of `host:port` / `[v6]:port`, else (entry, "")."""
    if entry.startswith("["):
        end = entry.find("]")
        if end != -1 and entry[end + 1 : end + 2] == ":":
            return entry[1:end], entry[end + 2 :]
        return entry.strip("[]"), ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


def _ip(host: str) -> _Addr | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class ProxyEnv:
    http_proxy: str | None = None
    https_proxy: str | None = None
    match_all: bool = False
    networks: tuple[_Net, ...] = ()
    ips: tuple[tuple[_Addr, str], ...] = ()
    # (".suffix", port, the bare name matches too)
    domains: tuple[tuple[str, str, bool], ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyEnv:
        http = _parse_proxy(_first(environ, "HTTP_PROXY", "http_proxy"))
        if environ.get("REQUEST_METHOD"):
            http = None
        https = _parse_proxy(_first(environ, "HTTPS_PROXY", "https_proxy"))
        networks: list[_Net] = []
        ips: list[tuple[_Addr, str]] = []
        domains: list[tuple[str, str, bool]] = []
        for raw in _first(environ, "NO_PROXY", "no_proxy").split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                return cls(http, https, match_all=True)
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    pass
                continue
            host, port = _split_host_port(entry)
            if not host:
                continue
            ip = _ip(host)
            if ip is not None:
                ips.append((ip, port))
                continue
            if host.startswith("*."):
                host = host[1:]
            bare = not host.startswith(".")
            if bare:
                host = "." + host
            domains.append((_idna(host), port, bare))
        return cls(http, https, False, tuple(networks), tuple(ips), tuple(domains))

    def bypass(self, host: str, port: str) -> bool:
        """True when a request to host:port goes direct."""
        host = host.strip().lower()
        if host == "localhost":
            return True
        ip = _ip(host)
        if ip is not None and ip.is_loopback:
            return True
        if self.match_all:
            return True
        if ip is not None:
            if any(ip in net for net in self.networks):
                return True
            if any(ip == want and (not p or p == port) for want, p in self.ips):
                return True
        return ip is None and any(
            (host.endswith(suffix) or (bare and host == suffix[1:])) and (not p or p == port)
            for suffix, p, bare in self.domains
        )

    def proxy_for(self, url: str) -> str | None:
        """The proxy URL a request to `url` goes through, or None (direct)."""
        parts = urlsplit(url)
        proxy = {"http": self.http_proxy, "https": self.https_proxy}.get(parts.scheme)
        if proxy is None or parts.hostname is None:
            return None
        try:
            port = str(parts.port) if parts.port is not None else _DEFAULT_PORTS[parts.scheme]
        except ValueError:
            return None
        return None if self.bypass(_idna(parts.hostname), port) else proxy


@cache
def from_environment() -> ProxyEnv:
    """This process's proxy settings, read on first use."""
    return ProxyEnv.from_environ(os.environ)


def shown(proxy: str) -> str:
    """A proxy URL fit for logs and error messages: its credentials left out."""
    scheme, sep, rest = proxy.partition("://")
    if not sep:
        return proxy
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
