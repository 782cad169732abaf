"""What-if launchers for bench/swap.py: measure a proposed runtime change without editing the
package. Not used by default; `swap.py --fast-upstream-exit` / `--poll-interval S` select them.

  python bench/whatif.py upstream ARGS...     the fake upstream (same options as
                                              `llamaswap fake-upstream`), but it leaves with
                                              os._exit() once its server is cleaned up, skipping
                                              the interpreter's teardown
  python bench/whatif.py serve [--poll-interval S] [--first-poll S] [--raw-client] ARGS...
                                              `llamaswap serve ARGS...` with the health poll
                                              interval (processes.POLL_INTERVAL) and the first
                                              poll delay (FIRST_POLL_DELAY) set to S; with
                                              --raw-client, non-streaming requests go upstream
                                              through floor_proxy.RawPool (a minimal keep-alive
                                              HTTP/1.1 client) instead of aiohttp's ClientSession
"""

from __future__ import annotations

import os
import sys


def upstream(argv: list[str]) -> None:
    import click

    from llamaswap.cli import fake_upstream_cmd

    try:
        fake_upstream_cmd.main(argv, standalone_mode=False)
        code = 0
    except SystemExit as exc:  # the command ends with sys.exit(code)
        code = exc.code if isinstance(exc.code, int) else 1
    except click.ClickException as exc:
        exc.show()
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _use_raw_client() -> None:
    """Route non-streaming proxied requests through a RawPool per upstream (what-if only:
    Content-Length responses, Content-Type the only header forwarded each way)."""
    from urllib.parse import urlsplit

    from aiohttp import web
    from floor_proxy import RawPool

    from llamaswap.runtime import dispatch

    original = dispatch.forward
    pools: dict[str, RawPool] = {}

    async def forward(request, upstreams, session, url, body, *, response=None, extra_headers=None, **kw):
        if (
            response is not None
            or not isinstance(body, bytes)
            or b'"stream": true' in body
            or b'"stream":true' in body
        ):
            return await original(
                request, upstreams, session, url, body, response=response, extra_headers=extra_headers, **kw
            )
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        pool = pools.get(base) or pools.setdefault(base, RawPool(base))
        status, ctype, payload = await pool.post(
            parts.path + (f"?{parts.query}" if parts.query else ""), body, request.content_type
        )
        headers = {"Content-Type": ctype, **(extra_headers or {})}
        return web.Response(status=status, body=payload, headers=headers)

    dispatch.forward = forward


def serve(argv: list[str]) -> None:
    from llamaswap.runtime import processes

    if "--poll-interval" in argv:
        interval = float(argv[argv.index("--poll-interval") + 1])
        first = float(argv[argv.index("--first-poll") + 1]) if "--first-poll" in argv else interval
        processes.POLL_INTERVAL = interval
        processes.FIRST_POLL_DELAY = first
    for flag in ("--poll-interval", "--first-poll"):
        if flag in argv:
            i = argv.index(flag)
            del argv[i : i + 2]
    if "--raw-client" in argv:
        argv.remove("--raw-client")
        _use_raw_client()
    from llamaswap.cli import cli

    cli.main(["serve", *argv], prog_name="llamaswap")


if __name__ == "__main__":
    {"upstream": upstream, "serve": serve}[sys.argv[1]](sys.argv[2:])
