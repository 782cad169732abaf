"""Auth: the API key a request carries (Basic password, Bearer token or `x-api-key`) and the
check against the config's `apiKeys`, which the app's gate middleware runs on every request.

With no `apiKeys` every request passes; the open paths (health probes, favicon) always pass,
and so do the web UI's static files and the redirects to them: they hold no data, and the
pages ask for the key and send it with every call. A 401 to one of the pages' own calls
(`X-Requested-With: llamaswap-ui`) carries no Basic challenge, which would make the browser
show its login prompt over the page's own. Auth schemes are case-insensitive (RFC 9110
§11.1: `bearer` is `Bearer`).

llamaswap's own key never goes upstream: a header that carries one of the `apiKeys` is
dropped from the forwarded request, and a model's own `apiKey`, where configured, is sent
instead (`Authorization: Bearer <key>` and `x-api-key`, like a llama-swap peer's apiKey).
"""

from __future__ import annotations

import base64

from aiohttp import web

from llamaswap.runtime.keys import LIVE
from llamaswap.runtime.proxy import error_response

OPEN_PATHS = frozenset({"/health", "/wol-health", "/favicon.ico", "/", "/ui", "/upstream"})
UI_PREFIX = "/ui/"
UI_CLIENT = "llamaswap-ui"


def _authorization_key(value: str) -> str | None:
    """The key in an Authorization header value: a Basic password or a Bearer token."""
    scheme, _, rest = value.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(rest.strip()).decode("utf-8", "replace")
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        if ":" in decoded:
            return decoded.split(":", 1)[1]
    elif scheme == "bearer":
        return rest.strip()
    return None


def api_key_of(request: web.Request) -> str | None:
    """The key a request carries: the Basic password, the Bearer token, or `x-api-key`."""
    key = _authorization_key(request.headers.get("Authorization", ""))
    if key is not None:
        return key
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


def upstream_auth(request: web.Request, model_key: str) -> tuple[frozenset[str], dict[str, str]]:
    """(headers not to forward, headers to send instead) for the upstream request."""
    if model_key:
        return (
            frozenset({"authorization", "x-api-key"}),
            {"Authorization": f"Bearer {model_key}", "x-api-key": model_key},
        )
    keys = request.app[LIVE].api_keys
    if not keys:
        return frozenset(), {}
    drop = set()
    if _authorization_key(request.headers.get("Authorization", "")) in keys:
        drop.add("authorization")
    if (request.headers.get("x-api-key") or "").strip() in keys:
        drop.add("x-api-key")
    return frozenset(drop), {}


def refusal(request: web.Request) -> web.Response | None:
    """The 401 for a request without a valid API key; None when it may pass."""
    keys = request.app[LIVE].api_keys
    if not keys:
        return None
    path = request.path
    if path in OPEN_PATHS or path.startswith(UI_PREFIX) or api_key_of(request) in keys:
        return None
    challenge = (
        {}
        if request.headers.get("X-Requested-With") == UI_CLIENT
        else {"WWW-Authenticate": 'Basic realm="llama-swap"'}
    )
    return error_response(request, 401, "unauthorized: invalid or missing API key", headers=challenge)
