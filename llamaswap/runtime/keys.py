"""The serve app's state: one typed `web.AppKey` per thing the application holds.

`app.build_app` sets the plain values, its lifecycle the live ones (session, upstream client,
processes, router); handlers only read them. The plan is behind `LIVE` (a hot reload swaps
it); the processes are the router's own table (a reload adds and removes entries). Kept apart so that the app, the request path
and the operator API can share the keys without importing each other.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from llamaswap.compiler.plan import Plan
from llamaswap.runtime.limits import PlanMemo, ServerLimits, UpstreamTimeouts
from llamaswap.runtime.logs import LogHub
from llamaswap.runtime.observe import DecisionLog, Metrics
from llamaswap.runtime.processes import ModelProcess, ProcessTracker
from llamaswap.runtime.redact import Redactor
from llamaswap.runtime.router import Router
from llamaswap.runtime.selectors import SelectorTracker
from llamaswap.runtime.upstream import UpstreamClient


class LiveConfig:
    """What a hot reload replaces: the serving plan and the API keys it accepts. Handlers
    read `app[LIVE].plan` once per request; only the reloader (runtime/reload.py) writes."""

    __slots__ = ("plan", "api_keys", "hot")

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.api_keys: frozenset[str] = frozenset(plan.config.api_keys if plan.config else ())
        # What the request path reads on every request, built once per plan (dispatch._Hot).
        self.hot: object = None


LIVE = web.AppKey("live", LiveConfig)
ROUTER = web.AppKey("router", Router)
PROCESSES = web.AppKey("processes", dict[str, ModelProcess])
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAMS = web.AppKey("upstreams", UpstreamClient)
LOGS = web.AppKey("logs", LogHub)
STARTED = web.AppKey("started", float)  # time.time() when the app was built
DECISIONS = web.AppKey("decisions", DecisionLog)
SELECTORS = web.AppKey("selectors", SelectorTracker)
METRICS = web.AppKey("metrics", Metrics)
LOG_STREAMS = web.AppKey("log_streams", set[asyncio.Event])  # one per open /logs/stream
TRACKER = web.AppKey("tracker", ProcessTracker)  # told about every upstream group (optional)
# Derived from the live plan (a reload makes them again): body, connection and queue limits;
# per-model upstream timeouts; the redactor that hides ${env.X} values.
LIMITS = web.AppKey("limits", PlanMemo[ServerLimits])
UPSTREAM_TIMEOUTS = web.AppKey("upstream_timeouts", PlanMemo[dict[str, UpstreamTimeouts]])
REDACT = web.AppKey("redact", PlanMemo[Redactor])
