"""Auth: the API key a request carries (Basic password, Bearer token or `x-api-key`) and the
check against the config's `apiKeys`, which the app's gate middleware runs on every request.

With no `apiKeys` every request passes; the open paths (health probes, favicon) always pass.
"""

from __future__ import annotations

import base64

from aiohttp import web

from llamaswap.runtime.keys import API_KEYS
from llamaswap.runtime.proxy import error_response

OPEN_PATHS = frozenset({"/health", "/wol-health", "/favicon.ico"})


def api_key_of(request: web.Request) -> str | None:
    """The key a request carries: the Basic password, the Bearer token, or `x-api-key`."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip()).decode("utf-8", "replace")
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        if ":" in decoded:
            return decoded.split(":", 1)[1]
    if auth.startswith("Bearer "):
        return auth[7:].strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


def refusal(request: web.Request) -> web.Response | None:
    """The 401 for a request without a valid API key; None when it may pass."""
    keys = request.app[API_KEYS]
    if keys and request.path not in OPEN_PATHS and api_key_of(request) not in keys:
        return error_response(request, 401, "unauthorized: invalid or missing API key",
                              headers={"WWW-Authenticate": 'Basic realm="llama-swap"'})
    return None
