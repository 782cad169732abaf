"""Profiles over HTTP, as llama-swap HEAD serves them:

- `GET /api/profiles`: `{"active": name|null, "profiles": [{id, description, pins}]}`, sorted
  by id (a pin whose target is empty shows as "");
- `PUT /api/profiles/active` with `{"name": "<profile>"}` activates it, `{"name": null}` (or
  "") deactivates; answers `{"active": ...}`; an unknown name is 404 and changes nothing;
- `GET /api/profiles/active` (llamaswap): `{"active": ...}`.

Activating a profile loads and stops nothing (llama-swap neither): from then on its pins
rewrite the model IDs requests ask for. The change is one `ProfileSelected` event through
the router (the owner task holds the active profile), logged, and published on
`/api/events` as `profileChanged`. llamaswap starts with none active.
"""

from __future__ import annotations

import json

from aiohttp import web

from llamaswap.runtime.keys import LIVE, ROUTER
from llamaswap.runtime.proxy import error_response

MAX_BODY = 64 * 1024


def _active(request: web.Request) -> str | None:
    return request.app[ROUTER].profile


async def list_profiles(request: web.Request) -> web.Response:
    plan = request.app[LIVE].plan
    profiles = [
        {"id": p.name, "description": p.description, "pins": dict(sorted(p.pins))}
        for p in sorted(plan.virtual.profiles, key=lambda p: p.name)
    ]
    return web.json_response({"active": _active(request), "profiles": profiles})


async def active_profile(request: web.Request) -> web.Response:
    return web.json_response({"active": _active(request)})


async def set_active_profile(request: web.Request) -> web.Response:
    raw = bytearray()
    while len(raw) <= MAX_BODY:
        chunk = await request.content.read(MAX_BODY + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > MAX_BODY:
        return error_response(request, 413, f"profile request over {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        return error_response(request, 400, "invalid profile request")
    if "name" not in body:
        return error_response(request, 400, "profile name is required")
    name = body["name"]
    if name is not None and not isinstance(name, str):
        return error_response(request, 400, "profile name must be a string or null")
    live = request.app[LIVE]

    def known(wanted: str) -> bool:  # asked in the owner task, against the config serving then
        return any(p.name == wanted for p in live.plan.virtual.profiles)

    try:
        await request.app[ROUTER].select_profile(name or None, known)
    except LookupError as exc:
        return error_response(request, 404, str(exc))
    except RuntimeError as exc:
        return error_response(request, 503, str(exc))
    return web.json_response({"active": _active(request)})
