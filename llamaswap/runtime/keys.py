"""The serve app's state: one typed `web.AppKey` per thing the application holds.

`app.build_app` sets the plain values, its lifecycle the live ones (session, upstream client,
processes, router); handlers only read them. Kept apart so that the app, the request path
and the operator API can share the keys without importing each other.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from llamaswap.compiler.plan import Plan
from llamaswap.runtime.logs import LogHub
from llamaswap.runtime.observe import DecisionLog, Metrics
from llamaswap.runtime.processes import ModelProcess
from llamaswap.runtime.router import Router
from llamaswap.runtime.selectors import SelectorTracker
from llamaswap.runtime.upstream import UpstreamClient

PLAN = web.AppKey("plan", Plan)
ROUTER = web.AppKey("router", Router)
PROCESSES = web.AppKey("processes", dict[str, ModelProcess])
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAMS = web.AppKey("upstreams", UpstreamClient)
LOGS = web.AppKey("logs", LogHub)
STARTED = web.AppKey("started", float)  # time.time() when the app was built
API_KEYS = web.AppKey("api_keys", frozenset[str])
DECISIONS = web.AppKey("decisions", DecisionLog)
SELECTORS = web.AppKey("selectors", SelectorTracker)
METRICS = web.AppKey("metrics", Metrics)
LOG_STREAMS = web.AppKey("log_streams", set[asyncio.Event])  # one per open /logs/stream
