"""Passthrough rules: when `/upstream/<model>/…` and `/comfyui/…` answer 409 instead of
loading a model (llama-swap HEAD's `handleUpstream` and `handleComfyUI`).

- `upstream.ignorePaths`: RE2 patterns searched in the path after `/upstream/<model>`; when
  one matches and the model's process is not ready, 409 (no load, no queue). Unset or empty:
  llama-swap's default, static-asset suffixes (so a browser's stale asset requests never
  start a model). A ready model is proxied as usual.
- `comfyui_auto`: the fixed model behind `/comfyui/`; only `/comfyui/` itself may start it,
  any other path of it gets 409 while it is not ready. llama-swap also gives it at least 50
  concurrent requests (settings.py) and `compat.ignoreWebsockets: true`.
- `compat.ignoreWebsockets`: a model's WebSocket upgrades skip the scheduler (websocket.py).

"Ready" is the model's process state (as llama-swap reads it), not the scheduler's view.
"""

from __future__ import annotations

import functools
import re

from aiohttp import web

from llamaswap.compiler import goregexp
from llamaswap.compiler.plan import Plan
from llamaswap.runtime.keys import PROCESSES
from llamaswap.runtime.processes import ProcessState
from llamaswap.runtime.settings import COMFYUI_MODEL

# llama-swap's DefaultUpstreamIgnorePathsPattern (applied when ignorePaths is unset or empty).
DEFAULT_IGNORE_PATHS = (r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$",)


@functools.lru_cache(maxsize=16)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    out = []
    for p in patterns:
        python = goregexp.translate(p)
        if isinstance(python, str):  # the compiler refused the others: a served plan has none
            out.append(re.compile(python, re.ASCII))
    return tuple(out)


def ignore_patterns(plan: Plan) -> tuple[re.Pattern[str], ...]:
    c = plan.config
    configured = c.upstream.ignore_paths if c is not None else ()
    return _compiled(tuple(configured) or DEFAULT_IGNORE_PATHS)


def is_ready(app: web.Application, model: str) -> bool:
    proc = app[PROCESSES].get(model)
    return proc is not None and proc.state is ProcessState.READY


def ignored_path(plan: Plan, path: str) -> bool:
    """Whether `path` (the part after /upstream/<model>, from its `/`) matches ignorePaths."""
    return any(p.search(path) for p in ignore_patterns(plan))


def ignores_websockets(plan: Plan, model: str) -> bool:
    """`compat.ignoreWebsockets` of a local model (always on for comfyui_auto, as llama-swap)."""
    c = plan.config
    cfg = c.models.get(model) if c is not None else None
    return cfg is not None and (cfg.compat.ignore_websockets or model == COMFYUI_MODEL)
