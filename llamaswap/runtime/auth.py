"""Auth: the API key a request carries (Basic password, Bearer token or `x-api-key`) and the
check against the config's `apiKeys`, which the app's gate middleware runs on every request.

With no `apiKeys` every request passes; the open paths (health probes, favicon) always pass,
and so do the web UI's static files and the redirects to them: they hold no data, and the
pages ask for the key and send it with every call. A 401 to one of the pages' own calls
(`X-Requested-With: llamaswap-ui`) carries no Basic challenge, which would make the browser
show its login prompt over the page's own.
"""

from __future__ import annotations

import base64

from aiohttp import web

from llamaswap.runtime.keys import LIVE
from llamaswap.runtime.proxy import error_response

OPEN_PATHS = frozenset({"/health", "/wol-health", "/favicon.ico", "/", "/ui", "/upstream"})
UI_PREFIX = "/ui/"
UI_CLIENT = "llamaswap-ui"


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
    keys = request.app[LIVE].api_keys
    if not keys:
        return None
    path = request.path
    if path in OPEN_PATHS or path.startswith(UI_PREFIX) or api_key_of(request) in keys:
        return None
    challenge = ({} if request.headers.get("X-Requested-With") == UI_CLIENT
                 else {"WWW-Authenticate": 'Basic realm="llama-swap"'})
    return error_response(request, 401, "unauthorized: invalid or missing API key", headers=challenge)
