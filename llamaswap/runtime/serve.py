"""Serve: run the app on uvloop until SIGINT/SIGTERM, then shut down cleanly.

Shutdown order: stop accepting connections; the router answers every waiting request with
503 and stops every upstream process group; then the remaining connections are closed and
the app's cleanup runs. No upstream process outlives this function.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from importlib import resources
from typing import Callable

from aiohttp import web

from llamaswap.compiler.plan import Plan
from llamaswap.runtime.app import ROUTER, build_app

DEMO_NAME = "<built-in demo>"


def demo_config_text() -> str:
    """The built-in demo config, wired to this interpreter's `llamaswap fake-upstream`."""
    text = resources.files("llamaswap.runtime").joinpath("demo.yaml").read_text(encoding="utf-8")
    python = sys.executable.replace("\\", "\\\\").replace('"', '\\"')
    return text.replace("@PYTHON@", python)


async def serve(plan: Plan, host: str, port: int, on_ready: Callable[[str, int], None],
                stop: asyncio.Event | None = None) -> None:
    app = build_app(plan)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
    bound_port = sockets[0].getsockname()[1] if sockets else port
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        on_ready(host, bound_port)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await site.stop()
        router = app.get(ROUTER)
        if router is not None:
            await router.shutdown()
        await runner.cleanup()
