"""In-process micro-benchmark of one proxied request through the fast path (fastserver ->
dispatch -> router -> upstream client -> relay), with real sockets: what issue 18's sixth
pass iterated on.

Usage: .venv/bin/python bench/fastpath.py [--requests 20000] [--conns 1,16] [--repeat 5]
           [--only llamaswap|direct] [--warmup 2000] [--profile FILE] [--sample FILE] [--stream 200]

Instructions per request (deterministic, unlike any timing on a shared machine; what the
sixth pass compared trees by, bench/README.md): the "Collected" total of
  valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/fastpath.py \
      --only llamaswap --requests 1500 --repeat 1 --warmup 200 --conns 16
for two trees (same start-up; ~1,700 requests), or of two request counts for one tree.

`serve()` runs in this process (uvloop) on bench/proxy.py's config (nginx as the upstream,
started by serve as usual); a raw keep-alive client in the same loop sends the bench's
POST /v1/chat/completions, `conns` connections at a time. The figure is this process's CPU
time (all threads: the activity writer too) per request through llamaswap minus the same
client's CPU per request straight to nginx (the client's own share), best of `repeat`
runs each: llamaswap's CPU per request, far steadier than wrk's figure on a busy machine
(CPU time, not wall time; no other process in the figure). `--profile FILE` writes a
cProfile of the loop thread over one proxied run at the largest `conns` (pstats format).
`--sample FILE` writes a sampled CPU-time profile (ITIMER_PROF) of the proxied runs in
py-spy's raw format. `--stream N`: N streamed requests (the fake SSE upstream, 20 events) one at a time, through
llamaswap and direct, alternating: the wall time from the request's write to the first
body byte, median, and llamaswap's added part (the client shares the loop with serve, so
this is the serve's critical path plus the client's, not bench/proxy.py's figure).
Writes nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import proxy as bench_proxy


class _Client(asyncio.Protocol):
    """One keep-alive connection: send a request, wait for its whole answer (Content-Length or
    chunked, as nginx / llamaswap / the fake upstream send them)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.first: float | None = None
        self.want_first = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.want_first and self.first is None:
            self.first = time.perf_counter()
        self.buf += data
        if self.waiter is not None and not self.waiter.done() and self._complete():
            self.waiter.set_result(None)

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    def _complete(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"content-length:")
        if at >= 0:
            n = int(head[at + 15 :].split(b"\r\n", 1)[0])
            if len(self.buf) >= end + 4 + n:
                if not head.startswith(b"http/1.1 200"):
                    raise SystemExit(f"fastpath: answer {bytes(self.buf[:200])!r}")
                del self.buf[: end + 4 + n]
                return True
            return False
        if self.buf.endswith(b"0\r\n\r\n"):
            self.buf.clear()
            return True
        return False

    async def send(self, payload: bytes) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(payload)
        await self.waiter


class _Sampler:
    """A CPU-time sampling profiler (ITIMER_PROF, every 200 us of process CPU): each sample
    is the main thread's Python stack where the signal is handled; written as lines of
    `frame;frame;... 1` (py-spy's raw format)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stacks: dict[str, int] = {}

    def _on(self, signum, frame) -> None:
        names = []
        while frame is not None:
            code = frame.f_code
            names.append(f"{code.co_qualname} ({code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
            frame = frame.f_back
        key = ";".join(reversed(names))
        self.stacks[key] = self.stacks.get(key, 0) + 1

    def __enter__(self) -> _Sampler:
        import signal

        signal.signal(signal.SIGPROF, self._on)
        signal.setitimer(signal.ITIMER_PROF, 0.0002, 0.0002)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        with open(self.path, "w") as f:
            for key, n in self.stacks.items():
                f.write(f"{key} {n}\n")


def _request(port: int, body: dict) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (port, len(data), data)
    )


async def _clients(port: int, n: int) -> list[_Client]:
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(n):
        _, c = await loop.create_connection(_Client, "127.0.0.1", port)
        out.append(c)
    return out


async def _run(clients: list[_Client], payload: bytes, total: int) -> float:
    """CPU seconds per request, `total` requests over the clients."""
    per = total // len(clients)

    async def one(c: _Client) -> None:
        for _ in range(per):
            await c.send(payload)

    t0 = time.process_time()
    await asyncio.gather(*(one(c) for c in clients))
    return (time.process_time() - t0) / (per * len(clients))


async def main_async(args, config: Path, nginx_port: int, sse_port: int) -> None:
    from llamaswap.compiler.plan import compile_text
    from llamaswap.runtime.serve import serve

    plan = compile_text(config.read_text(), str(config))
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(plan, "127.0.0.1", 0, lambda h, p: ready.set_result(p), stop))
    port = await ready
    try:
        # The first request starts nginx.
        c = (await _clients(port, 1))[0]
        await c.send(_request(port, bench_proxy.BODY))
        paths = {"llamaswap": port, "direct": nginx_port}
        if args.only:
            paths = {args.only: paths[args.only]}
        for conns in [int(x) for x in args.conns.split(",")]:
            clients = {name: await _clients(p, conns) for name, p in paths.items()}
            payloads = {name: _request(p, bench_proxy.BODY) for name, p in paths.items()}
            for name in paths:  # warm up
                await _run(clients[name], payloads[name], args.warmup)
            got: dict[str, list[float]] = {name: [] for name in paths}
            for r in range(args.repeat):
                for name in paths if r % 2 == 0 else list(paths)[::-1]:
                    got[name].append(await _run(clients[name], payloads[name], args.requests))
            best = {name: min(v) * 1e6 for name, v in got.items()}
            med = {name: statistics.median(v) * 1e6 for name, v in got.items()}
            if args.only:
                print(f"{conns:>2} conns: {args.only} {best[args.only]:.1f} us/request (best)", flush=True)
                continue
            print(
                f"{conns:>2} conns: llamaswap {best['llamaswap'] - best['direct']:6.1f} us/request "
                f"(best; median {med['llamaswap'] - med['direct']:.1f}; through {best['llamaswap']:.1f}, "
                f"client alone {best['direct']:.1f})",
                flush=True,
            )
            if args.profile and conns == max(int(x) for x in args.conns.split(",")):
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
                await _run(clients["llamaswap"], payloads["llamaswap"], args.requests)
                prof.disable()
                prof.dump_stats(args.profile)
            if args.sample and conns == max(int(x) for x in args.conns.split(",")):
                with _Sampler(args.sample):
                    for _ in range(args.repeat):
                        await _run(clients["llamaswap"], payloads["llamaswap"], args.requests)
            for cs in clients.values():
                for cl in cs:
                    assert cl.transport is not None
                    cl.transport.close()
        if args.stream:
            body = {
                "model": bench_proxy.SSE_MODEL,
                "stream": True,
                "tokens": 20,
                "token_delay": 0.002,
                "messages": [{"role": "user", "content": "stream please"}],
            }
            spaths = {"llamaswap": port, "direct": sse_port}
            sp = {name: _request(p, body) for name, p in spaths.items()}
            sc = {"llamaswap": (await _clients(port, 1))[0]}
            await sc["llamaswap"].send(sp["llamaswap"])  # starts the fake upstream
            sc["direct"] = (await _clients(sse_port, 1))[0]
            ttfb: dict[str, list[float]] = {name: [] for name in spaths}
            for i in range(args.stream):
                for name in spaths if i % 2 == 0 else list(spaths)[::-1]:
                    cl = sc[name]
                    cl.first, cl.want_first = None, True
                    t0 = time.perf_counter()
                    await cl.send(sp[name])
                    assert cl.first is not None
                    ttfb[name].append(cl.first - t0)
                    await asyncio.sleep(0.005)  # cold, as bench/proxy.py's streams are
            m = {name: statistics.median(v) * 1e6 for name, v in ttfb.items()}
            print(
                f"stream TTFB: llamaswap adds {m['llamaswap'] - m['direct']:.0f} us "
                f"(median; through {m['llamaswap']:.0f}, direct {m['direct']:.0f})",
                flush=True,
            )
    finally:
        stop.set()
        await task


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000, help="requests per run (default 20000)")
    ap.add_argument("--conns", default="1,16", help="connection counts (default 1,16)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per path (default 5)")
    ap.add_argument("--profile", help="write a cProfile of one proxied run here")
    ap.add_argument("--only", choices=("llamaswap", "direct"), help="run one path only")
    ap.add_argument("--warmup", type=int, default=2000, help="requests per path before the runs")
    ap.add_argument("--sample", help="write a sampled CPU profile of the proxied runs here (py-spy raw)")
    ap.add_argument("--stream", type=int, default=0, help="streamed requests per path (default 0)")
    args = ap.parse_args()
    tools = common.ensure_debian_tools({"nginx": "nginx-light"})
    import logging

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="llamaswap-bench-fastpath-") as tmpdir:
        config, nginx_port, sse_port = bench_proxy.write_files(Path(tmpdir), tools["nginx"], 0.01, "matrix")
        bench_proxy.run_async(main_async(args, config, nginx_port, sse_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
