"""Serve: run the app on uvloop until SIGINT/SIGTERM, then drain and shut down cleanly.

Before anything is spawned: the supervision (runtime/reaper.py) takes this config's state
file, stops the leftovers of an earlier llamaswap of the same config, and starts the
watchdog that kills every upstream process group if llamaswap itself is killed.

Shutdown order (first SIGINT/SIGTERM): stop accepting connections and close idle ones; the
router answers every waiting request, and every later one, with 503; requests in flight and
their streams (peer requests' too) go on until none is left or the shutdown timeout passes (`llamaswap.
shutdownTimeout`, `serve --shutdown-timeout`, default 30 s); then every upstream process
group stops (SIGTERM or cmdStop, SIGKILL after min(healthCheckTimeout, SHUTDOWN_GRACE)),
the remaining connections are closed and the app's cleanup runs. A second signal ends the
drain and SIGKILLs every upstream group at once. No upstream process outlives this function.

SIGHUP reloads the config as a diff (runtime/reload.py): what did not change keeps running.
Closing the terminal sends SIGHUP too: it reloads, it never stops anything or orphans it.

Start-up order (plain HTTP): the state file is taken (leftovers stopped, AlreadyServing
raised) and the listener (runtime/fastserver.py) bound, which answers `GET /v1/models` from
the plan at once; then the watchdog process is spawned (before anything that may spawn an
upstream); the rest of the app (aiohttp and every module on it,
~0.3-0.6 s of imports) is imported in a worker thread meanwhile, then built and started, and
the front is attached to it: from then on it serves the model-dispatched routes itself and
hands every other connection to aiohttp. Requests other than the early /v1/models wait for
that, held on their connections. With TLS, aiohttp's own site serves everything. Once it is
up, the C heap's free pages go back to the system (give_back_memory): the import thread's
malloc arena keeps the memory its imports freed (~3 MB), which glibc does not return by itself.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import re
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llamaswap.compiler.plan import Plan
from llamaswap.runtime import reaper
from llamaswap.runtime.fastserver import Front, early_models
from llamaswap.runtime.limits import server_limits
from llamaswap.runtime.sources import ConfigSource

if TYPE_CHECKING:
    from aiohttp import web

    from llamaswap.runtime.events import InflightTracker

logger = logging.getLogger("llamaswap.serve")
DEMO_NAME = "<built-in demo>"


SHUTDOWN_GRACE = 30.0
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
DEMO_MODELS = 3
DEMO_START_PORT = 5800


def _ports_free(host: str, first: int, count: int) -> bool:
    for port in range(first, first + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port_block(count: int, preferred: int = DEMO_START_PORT, host: str = "127.0.0.1") -> int:
    """The first port of `count` consecutive ports that are free now: `preferred` if it can
    be, else a random block below the usual ephemeral range."""
    if _ports_free(host, preferred, count):
        return preferred
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20000, 32000 - count)
        if _ports_free(host, first, count):
            return first
    return preferred  # let the upstreams report the clash


def demo_config_text(start_port: int | None = None) -> str:
    """The built-in demo config, wired to this interpreter's `llamaswap fake-upstream`, its
    upstreams on free ports (several demos, or llama-swap itself, may run on one machine)."""
    from importlib import resources  # only the demo reads it (importlib.resources pulls in zipfile, tempfile)

    text = resources.files("llamaswap.runtime").joinpath("demo.yaml").read_text(encoding="utf-8")
    python = sys.executable.replace("\\", "\\\\").replace('"', '\\"')
    first = free_port_block(DEMO_MODELS) if start_port is None else start_port
    text = re.sub(r"(?m)^startPort: \d+$", f"startPort: {first}", text)
    return text.replace("@PYTHON@", python)


def reload_requested(app: web.Application | None) -> None:
    """SIGHUP: reload the config (in the background; one reload at a time)."""
    from llamaswap.runtime.reload import RELOADER

    reloader = app.get(RELOADER) if app is not None else None
    if reloader is None:
        logger.warning("SIGHUP: not serving yet; nothing to reload")
        return
    logger.info("SIGHUP: reloading the config")
    reloader.trigger("SIGHUP")


async def serve(
    plan: Plan,
    host: str,
    port: int,
    on_ready: Callable[[str, int], None],
    stop: asyncio.Event | None = None,
    ssl_context: ssl.SSLContext | None = None,
    *,
    source: ConfigSource | None = None,
    watch: bool = False,
    shutdown_timeout: float | None = None,
) -> None:
    """Serve `plan` on host:port (HTTPS with `ssl_context`) until `stop` is set or SIGINT/SIGTERM
    arrives. `source`: where `plan` came from (for hot reload); `watch`: reload when it changes
    on disk; `shutdown_timeout` (seconds) overrides the config's `llamaswap.shutdownTimeout`.
    Raises reaper.AlreadyServing when another llamaswap serves the same config file."""
    stop = stop or asyncio.Event()
    kill = asyncio.Event()
    loop = asyncio.get_running_loop()
    app: web.Application | None = None
    killers: set[asyncio.Task] = set()
    settings = plan.config.llamaswap if plan.config is not None else None
    drain_timeout = (
        shutdown_timeout
        if shutdown_timeout is not None
        else settings.shutdown_timeout
        if settings is not None
        else DEFAULT_SHUTDOWN_TIMEOUT
    )

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            logger.info(
                "%s: shutting down: requests in flight may finish within %gs (again to stop at once)",
                sig.name,
                drain_timeout,
            )
            stop.set()
            return
        kill.set()
        router = _router(app)
        logger.warning("%s: killing every upstream process group now", sig.name)
        if router is not None:
            task = loop.create_task(router.kill())
            killers.add(task)
            task.add_done_callback(killers.discard)

    supervision = reaper.Supervision.begin(
        None if plan.file == DEMO_NAME else plan.file,
        settings.runtime_dir if settings is not None else "",
        log=lambda line: logger.warning("%s", line),
        watchdog=False,
    )
    # Installed before the app starts (preload may spawn upstreams) and kept until every
    # upstream is stopped: a signal must never kill llamaswap half-way and orphan them.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload_requested(app))
    front: Front | None = None
    listener: Any = None
    try:
        if ssl_context is None:
            limits = server_limits(plan)
            front = Front(
                header_timeout=limits.header_timeout,
                keepalive_timeout=limits.keepalive_timeout,
                max_connections=limits.max_connections,
                early=early_models(plan, time.time()),
            )
            listener = await loop.create_server(front, host, port, reuse_address=True)
        # Before anything can spawn an upstream (the app's preload, the first request).
        supervision.start_watchdog()
        # The web framework and the app's modules, in a thread: the listener answers meanwhile.
        await asyncio.to_thread(importlib.import_module, "llamaswap.runtime.app")
        from aiohttp import web
        from aiohttp.abc import AbstractAccessLogger

        from llamaswap.runtime import app as app_module
        from llamaswap.runtime import websocket
        from llamaswap.runtime.connections import GuardedRunner, raise_open_files_limit
        from llamaswap.runtime.events import INFLIGHT
        from llamaswap.runtime.keys import LIMITS, ROUTER
        from llamaswap.runtime.logs import AccessLog, access_logger

        AbstractAccessLogger.register(AccessLog)  # it has that interface; logs.py does not import aiohttp
        app = app_module.build_app(plan, source, watch, tracker=supervision)
        raise_open_files_limit()
        runner = GuardedRunner(
            app,
            app[LIMITS].of(plan),
            handler_cancellation=True,
            access_log_class=AccessLog,
            access_log=logging.getLogger("llamaswap.access"),
            shutdown_timeout=5.0,
        )
        site = None
        try:
            await runner.setup()
            if front is None:
                site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
                await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        if front is not None:
            front.attach(
                app,
                app_module.fast_routes(app),
                app_module.gate,
                runner.server,
                access_logger(),
                web.HTTPException,
            )
        give_back_memory()
        try:
            # typeshed's AbstractServer lacks `sockets`; asyncio's and uvloop's servers have it.
            server: Any = listener if site is None else site._server
            sockets = server.sockets if server is not None else []
            bound_port = sockets[0].getsockname()[1] if sockets else port
            if not stop.is_set():
                on_ready(host, bound_port)
                await stop.wait()
        finally:
            # Stop accepting connections; idle keep-alive connections close now.
            if site is not None:
                await site.stop()
            if listener is not None:
                listener.close()
            if front is not None:
                front.close_idle()
            if runner.server is not None:
                runner.server.pre_shutdown()
            await websocket.close_all(app)  # 1001 now: an open websocket would hold the drain up
            router = app.get(ROUTER)
            if router is not None:
                if not kill.is_set():
                    # Waiting and later requests get 503; in-flight ones may finish.
                    await _drain(router, app.get(INFLIGHT), drain_timeout, kill)
                await router.shutdown(min(router.settings.swap_stop_timeout, SHUTDOWN_GRACE))
            await runner.cleanup()
            if front is not None:
                front.close_all()
            if killers:
                await asyncio.gather(*killers, return_exceptions=True)
    finally:
        if listener is not None:
            listener.close()
        if front is not None:
            front.close_all()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        supervision.close()


def give_back_memory() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim; a no-op elsewhere).
    Called once the app is up: the import thread's malloc arena then holds ~3 MB that its
    imports allocated and freed, which glibc keeps until asked (bench/README.md, memory)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def _router(app: web.Application | None) -> Any:
    if app is None:
        return None
    from llamaswap.runtime.keys import ROUTER

    return app.get(ROUTER)


async def _drain(router, inflight: InflightTracker | None, timeout: float, kill: asyncio.Event) -> None:
    """Let the requests in flight finish within `timeout`: the router's (local models), then
    any still in the in-flight table (peer requests, which the router never sees)."""

    async def everything() -> bool:
        deadline = asyncio.get_running_loop().time() + max(0.0, timeout)
        if not await router.drain(timeout):
            return False
        if inflight is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    await inflight.idle()
            except TimeoutError:
                return False
        return True

    drained = asyncio.ensure_future(everything())
    killed = asyncio.ensure_future(kill.wait())
    try:
        await asyncio.wait((drained, killed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        killed.cancel()
    if drained.done() and not drained.cancelled() and drained.result():
        logger.info("every request in flight has finished")
    elif not kill.is_set():
        logger.warning(
            "shutdown timeout (%gs) reached with requests still in flight; stopping the upstreams", timeout
        )
    if not drained.done():
        drained.cancel()
