"""Proxy benchmark: what `llamaswap serve` costs in front of an upstream, and its memory.

Usage: .venv/bin/python bench/proxy.py [--duration 4] [--rounds 3] [--streams 20]

One `llamaswap serve` runs a config with two models in one non-swapping group:
- `bench-nginx`: nginx (bench/nginx.conf.template) answering every request with a fixed chat
  completion JSON. llamaswap owns its lifecycle (it is the model's `cmd`, `daemon off`).
- `bench-sse`: the project's fake upstream, streaming one SSE event per token, `token_delay`
  apart.

1. Throughput and latency (wrk, POST /v1/chat/completions with a JSON body naming the model):
   direct to nginx vs through llamaswap, at 1 and 16 connections, and through the two minimal
   proxies of bench/floor_proxy.py (aiohttp server + aiohttp client; aiohttp server + a raw
   keep-alive client), which show how much of the cost is the framework's. All paths are
   measured in the same run, alternating, `--rounds` times; each figure is the median over the
   rounds. Percentiles come from wrk's own histogram (Lua `done()`), in microseconds; CPU per
   request is the serving process's user+system time over the requests it served.
2. Streaming (aiohttp client, same upstream both ways, alternating direct/proxied streams):
   time to first body byte, gaps between consecutive events, and coalescing: an event that the
   upstream sent `token_delay` after the previous one but that the client received in the same
   read as the previous one was coalesced somewhere on the way. Events received must equal
   events sent.
3. Memory (written to results/memory.json too): VmRSS of the `llamaswap serve` process itself
   (children such as nginx are not counted), idle after start, after the first request started
   nginx, after the wrk runs ("after the proxy run", the target) and after the streaming runs;
   then, idle, of a second serve with the same models under the other routing engine.

The two models may run together: by default one matrix set holds both (`--engine matrix`;
the matrix engine is the heavier one: resolving its sets imports networkx); `--engine group`
puts them in one non-swapping group instead.

wrk, nginx, llamaswap and the client share the machine's cores in both the direct and the
proxied runs; the result records the core count and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import md_table, ms, verdict

NGINX_MODEL = "bench-nginx"
SSE_MODEL = "bench-sse"
BODY = {"model": NGINX_MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}

# Issue 18's targets, and llama-swap's figures on a 2-core machine.
TARGET_CPU_16_US = 150.0  # CPU per proxied request at 16 connections
TARGET_ADDED_P50_1 = 0.2e-3
TARGET_ADDED_TTFB = 0.5e-3
TARGET_RSS_MB = 60.0
LLAMA_SWAP = {
    "ratio_16": 0.093,
    "added_p50_1_ms": 0.28,
    "direct_16_rps": 78644,
    "proxy_16_rps": 7297,
    "p50_direct_ms": 0.149,
    "p50_proxy_ms": 2.08,
    "rss_mb": 37,
}

WRK_LUA = """\
wrk.method = "POST"
wrk.body = '@BODY@'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d,\\"p50_us\\":%d,\\"p90_us\\":%d," ..
    "\\"p99_us\\":%d,\\"max_us\\":%d,\\"mean_us\\":%.3f,\\"errors\\":{\\"connect\\":%d,\\"read\\":%d," ..
    "\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d}}\\n",
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def routing(engine: str) -> str:
    """The two models may run together: one matrix set holding both, or one non-swapping group."""
    if engine == "matrix":
        return f"""matrix:
  sets:
    bench: "{NGINX_MODEL} & {SSE_MODEL}"
"""
    return f"""groups:
  bench:
    swap: false
    exclusive: false
    members: [{NGINX_MODEL}, {SSE_MODEL}]
"""


def write_files(tmp: Path, nginx: str, sse_token_delay: float, engine: str) -> tuple[Path, int, int]:
    nginx_port, sse_port = common.free_port(), common.free_port()
    prefix = tmp / "nginx"
    prefix.mkdir()
    conf = (common.BENCH / "nginx.conf.template").read_text(encoding="utf-8")
    conf = conf.replace("@PREFIX@", str(prefix)).replace("@PORT@", str(nginx_port))
    (prefix / "nginx.conf").write_text(conf, encoding="utf-8")
    config = tmp / "proxy-bench.yaml"
    config.write_text(
        f"""\
# Written by bench/proxy.py.
healthCheckTimeout: 30
models:
  {NGINX_MODEL}:
    cmd: {nginx} -p {prefix} -c {prefix}/nginx.conf -e {prefix}/error.log
    proxy: http://127.0.0.1:{nginx_port}
    checkEndpoint: /health
    # Above wrk's connection count, so no request is answered 429 (the default limit is 10).
    concurrencyLimit: 1000
  {SSE_MODEL}:
    cmd: {common.llamaswap_exe()} fake-upstream --port {sse_port} --name {SSE_MODEL} --token-delay {sse_token_delay}
    proxy: http://127.0.0.1:{sse_port}
# A store of its own in the bench's temporary directory: the real path, recording on.
store:
  path: {tmp / "activity.db"}
"""
        + routing(engine),
        encoding="utf-8",
    )
    (tmp / "post.lua").write_text(
        WRK_LUA.replace("@BODY@", json.dumps(BODY, separators=(",", ":"))), encoding="utf-8"
    )
    return config, nginx_port, sse_port


def run_wrk(
    wrk: str, lua: Path, url: str, connections: int, threads: int, duration: float, cpu_pid: int | None = None
) -> dict[str, Any]:
    """One wrk run; with `cpu_pid`, also that process's CPU time per request."""
    argv = [
        wrk,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
    ]
    cpu0 = common.cpu_seconds(cpu_pid) if cpu_pid else None
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    cpu1 = common.cpu_seconds(cpu_pid) if cpu_pid else None
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(
            f"bench: wrk failed (exit {proc.returncode}): {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}"
        )
    data = json.loads(line[len("BENCHJSON ") :])
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    data["error_count"] = sum(data["errors"].values())
    if cpu0 is not None and cpu1 is not None and data["requests"]:
        data["cpu_us_per_request"] = (cpu1 - cpu0) / data["requests"] * 1e6
    return data


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return common.median(values) if values else None


# -- streaming ---------------------------------------------------------------------------------


async def one_stream(session, url: str, body: dict, token_delay: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with session.post(url, json=body) as resp:
        t_headers = time.perf_counter()
        if resp.status != 200:
            raise SystemExit(f"bench: streaming request to {url} answered {resp.status}: {await resp.text()}")
        reads: list[tuple[float, bytes]] = []
        async for chunk in resp.content.iter_any():
            reads.append((time.perf_counter(), chunk))
    # Each SSE event gets the index and arrival time of the read in which it completed.
    events: list[tuple[int, float, bytes]] = []
    buf = b""
    for i, (t, chunk) in enumerate(reads):
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            events.append((i, t, event))
    # The upstream sleeps token_delay before every event after the first, except [DONE],
    # which follows the finish chunk at once (bench/README.md).
    delayed = [k for k in range(1, len(events)) if events[k][2] != b"data: [DONE]"]
    coalesced = sum(1 for k in delayed if events[k][0] == events[k - 1][0])
    gaps = [events[k][1] - events[k - 1][1] for k in delayed]
    return {
        "ttfb": reads[0][0] - t0 if reads else None,
        "headers": t_headers - t0,
        "total": reads[-1][0] - t0 if reads else None,
        "events": len(events),
        "reads": len(reads),
        "coalesced": coalesced,
        "gaps": gaps,
    }


async def streaming(urls: dict[str, str], streams: int, tokens: int, token_delay: float) -> dict[str, Any]:
    """Streams through each of `urls` ("direct", "proxy" and any floors), one at a time, the
    paths' order reversed every other round."""
    import aiohttp

    body = {
        "model": SSE_MODEL,
        "stream": True,
        "tokens": tokens,
        "token_delay": token_delay,
        "messages": [{"role": "user", "content": "stream please"}],
    }
    expected = tokens + 2  # one event per token, the finish chunk, [DONE]
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        # The proxied one first: it starts the upstream.
        for name in sorted(urls, key=lambda n: n != "proxy"):
            await one_stream(session, urls[name], dict(body, tokens=2), 0.0)
        order = list(urls.items())
        for i in range(streams):
            for name, url in order if i % 2 == 0 else order[::-1]:
                out[name].append(await one_stream(session, url, body, token_delay))
    summary: dict[str, Any] = {
        "expected_events": expected,
        "streams": streams,
        "tokens": tokens,
        "token_delay": token_delay,
    }
    for name, runs in out.items():
        gaps = [g for r in runs for g in r["gaps"]]
        summary[name] = {
            "ttfb_p50": common.median(r["ttfb"] for r in runs),
            "ttfb_max": max(r["ttfb"] for r in runs),
            "headers_p50": common.median(r["headers"] for r in runs),
            "gap_p50": common.median(gaps),
            "gap_p99": common.percentile(gaps, 99),
            "gap_min": min(gaps),
            "gap_max": max(gaps),
            "events_min": min(r["events"] for r in runs),
            "events_max": max(r["events"] for r in runs),
            "coalesced_total": sum(r["coalesced"] for r in runs),
            "runs": [{k: v for k, v in r.items() if k != "gaps"} for r in runs],
        }
    return summary


# The same request-path work (the fast front's head split and the body's JSON parse, as serve
# does them), timed in a fresh interpreter hot (back to back) and after the process slept:
# between streams llamaswap sleeps as long as a stream lasts (--tokens x --token-delay).
COLD_WORK = r"""
import json, select, statistics, sys, time
from llamaswap.runtime.fastserver import split_head
head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\n"
        b"Accept: */*\r\nContent-Type: application/json\r\nContent-Length: 120\r\n\r\n")
body = json.dumps({"model": "bench-sse", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
def work():
    t = time.perf_counter()
    split_head(head)
    json.loads(body)
    return time.perf_counter() - t
out = {}
for name, idle in (("hot", 0.0), ("idle_10ms", 0.01), ("idle_stream", float(sys.argv[1]))):
    runs = []
    for _ in range(int(sys.argv[2])):
        if idle:
            select.select([], [], [], idle)
        runs.append(work())
    out[name] = statistics.median(runs)
print(json.dumps(out))
"""


def cold_work(idle: float, runs: int = 25) -> dict[str, float]:
    """COLD_WORK's medians in seconds: hot, after 10 ms idle, after `idle` seconds idle."""
    done = subprocess.run(
        [sys.executable, "-c", COLD_WORK, str(idle), str(runs)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def run_async(coro):
    """Run on uvloop when available, like llamaswap and the fake upstream."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# -- main --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run (default 4)")
    ap.add_argument(
        "--rounds", type=int, default=3, help="rounds over the paths per connection count (default 3)"
    )
    ap.add_argument(
        "--connections", default="1,16", help="comma-separated wrk connection counts (default 1,16)"
    )
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1; see bench/README.md)")
    ap.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the two minimal proxies (bench/floor_proxy.py, aiohttp and raw upstream client)",
    )
    ap.add_argument("--streams", type=int, default=20, help="streams each way (default 20)")
    ap.add_argument("--tokens", type=int, default=20, help="tokens per stream (default 20)")
    ap.add_argument(
        "--token-delay", type=float, default=0.01, help="seconds between SSE events (default 0.01)"
    )
    common.add_nice_option(ap)
    ap.add_argument(
        "--engine",
        choices=("matrix", "group"),
        default="matrix",
        help="routing engine of the bench config (default matrix: it also loads networkx)",
    )
    ap.add_argument(
        "--whatif-raw-client",
        action="store_true",
        help="what-if: serve's non-streaming requests go upstream through floor_proxy.RawPool "
        "(bench/whatif.py); results go to results/proxy-whatif-raw-client.json",
    )
    args = ap.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    launcher = (
        [common.python_exe(), str(common.BENCH / "whatif.py"), "serve", "--raw-client"]
        if args.whatif_raw_client
        else None
    )

    tools = common.ensure_debian_tools({"nginx": "nginx-light", "wrk": "wrk"})
    nice = common.raise_priority(args.nice)
    load_before = common.machine()["loadavg"]
    memory: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="llamaswap-bench-proxy-") as tmpdir:
        tmp = Path(tmpdir)
        config, nginx_port, sse_port = write_files(tmp, tools["nginx"], args.token_delay, args.engine)
        lua = tmp / "post.lua"
        direct = f"http://127.0.0.1:{nginx_port}/v1/chat/completions"
        with common.Serve(config, stderr_path=tmp / "serve.log", launcher=launcher) as serve:
            proxied = f"{serve.url}/v1/chat/completions"
            time.sleep(0.5)
            memory["idle"] = common.rss(serve.pid)
            status, _, payload = common.http("POST", proxied, BODY, timeout=60)
            if status != 200:
                raise SystemExit(f"bench: warm-up through llamaswap answered {status}: {payload[:500]!r}")
            memory["after_first_request"] = common.rss(serve.pid)
            _, _, running = common.http("GET", f"{serve.url}/running")
            nginx_master = next(r["pid"] for r in json.loads(running)["running"] if r["model"] == NGINX_MODEL)
            nginx_worker = (common.children(nginx_master) or [nginx_master])[0]
            paths: list[tuple[str, str, int]] = [
                ("direct", direct, nginx_worker),
                ("llamaswap", proxied, serve.pid),
            ]
            floors: list[common.Proc] = []
            if not args.no_floor:
                for label, client in (("aiohttp floor", "aiohttp"), ("raw-client floor", "raw")):
                    floor_port = common.free_port()
                    floor = common.Proc(
                        [
                            common.python_exe(),
                            str(common.BENCH / "floor_proxy.py"),
                            str(floor_port),
                            f"http://127.0.0.1:{nginx_port}",
                            "--client",
                            client,
                        ],
                        name=label,
                        stderr_path=tmp / f"floor-{client}.log",
                    )
                    floors.append(floor)
                    common.wait_http(f"http://127.0.0.1:{floor_port}/v1/chat/completions", ok=(405,))
                    paths.append((label, f"http://127.0.0.1:{floor_port}/v1/chat/completions", floor.pid))
            try:
                common.log(f"llamaswap at {serve.url}, nginx at 127.0.0.1:{nginx_port}; warming up")
                for _, url, _ in paths:
                    run_wrk(tools["wrk"], lua, url, max(conns), args.threads, 1.0)
                results: dict[int, dict[str, list[dict[str, Any]]]] = {
                    c: {p[0]: [] for p in paths} for c in conns
                }
                for c in conns:
                    for r in range(args.rounds):
                        order = paths if r % 2 == 0 else paths[::-1]
                        for name, url, pid in order:
                            run = run_wrk(tools["wrk"], lua, url, c, args.threads, args.duration, cpu_pid=pid)
                            results[c][name].append(run)
                            common.log(
                                f"{c:>2} conn {name:<13} round {r + 1}: {run['rps']:>9.0f} req/s, "
                                f"p50 {run['p50_us']} us, p99 {run['p99_us']} us, "
                                f"cpu {run.get('cpu_us_per_request', 0):.0f} us/req, "
                                f"errors {run['error_count']}"
                            )
            finally:
                for floor in floors:
                    floor.stop()
            memory["after_proxy_run"] = common.rss(serve.pid)
            common.log("streaming")
            stream_urls = {"direct": f"http://127.0.0.1:{sse_port}/v1/chat/completions", "proxy": proxied}
            stream_floors: list[common.Proc] = []
            try:
                if not args.no_floor:
                    # The floors relay to the SSE upstream: a first request through llamaswap starts it.
                    sse_body = {
                        "model": SSE_MODEL,
                        "tokens": 1,
                        "messages": [{"role": "user", "content": "up"}],
                    }
                    status, _, payload = common.http("POST", proxied, sse_body, timeout=60)
                    if status != 200:
                        raise SystemExit(
                            f"bench: starting {SSE_MODEL} through llamaswap answered {status}: {payload[:300]!r}"
                        )
                    # Streaming floors: a TCP byte relay (any userspace proxy's floor) and the
                    # smallest aiohttp proxy that relays a stream as it arrives.
                    for label, client in (("relay floor", "relay"), ("aiohttp floor", "stream")):
                        floor_port = common.free_port()
                        stream_floors.append(
                            common.Proc(
                                [
                                    common.python_exe(),
                                    str(common.BENCH / "floor_proxy.py"),
                                    str(floor_port),
                                    f"http://127.0.0.1:{sse_port}",
                                    "--client",
                                    client,
                                ],
                                name=f"streaming {label}",
                                stderr_path=tmp / f"stream-floor-{client}.log",
                            )
                        )
                        stream_urls[label] = f"http://127.0.0.1:{floor_port}/v1/chat/completions"
                        common.wait_http(stream_urls[label], ok=range(100, 600))  # any answer: it is up
                stream = run_async(streaming(stream_urls, args.streams, args.tokens, args.token_delay))
            finally:
                for floor in stream_floors:
                    floor.stop()
            memory["after_streaming"] = common.rss(serve.pid)
            cold = cold_work(args.tokens * args.token_delay)
            serve_pid = serve.pid
        # The other engine's idle footprint, from a second serve of the same models (not started).
        other = "group" if args.engine == "matrix" else "matrix"
        (tmp / other).mkdir()
        other_config, _, _ = write_files(tmp / other, tools["nginx"], args.token_delay, other)
        with common.Serve(other_config, stderr_path=tmp / "serve-other.log") as idle_serve:
            time.sleep(0.5)
            memory[f"idle, {other} engine (other serve)"] = common.rss(idle_serve.pid)
    load_after = common.machine()["loadavg"]

    # -- tables ---------------------------------------------------------------------------------
    rows, cases = [], {}
    for c in conns:
        case: dict[str, Any] = {"connections": c}
        for name, _, _ in paths:
            runs = results[c][name]
            case[name] = {
                "rps": median_of(runs, "rps"),
                "p50_us": median_of(runs, "p50_us"),
                "p99_us": median_of(runs, "p99_us"),
                "cpu_us_per_request": median_of(runs, "cpu_us_per_request"),
                "errors": sum(r["error_count"] for r in runs),
                "runs": runs,
            }
        d = case["direct"]
        for name, _, _ in paths:
            x = case[name]
            x["share_of_direct"] = x["rps"] / d["rps"]
            x["added_p50_us"] = x["p50_us"] - d["p50_us"]
            rows.append(
                [
                    c,
                    name,
                    f"{x['rps']:,.0f}",
                    f"{x['share_of_direct']:.1%}",
                    f"{x['p50_us'] / 1000:.3f} ms",
                    "—" if name == "direct" else f"{x['added_p50_us'] / 1000:+.3f} ms",
                    f"{x['p99_us'] / 1000:.3f} ms",
                    f"{x['cpu_us_per_request']:.0f} us",
                    x["errors"],
                ]
            )
        cases[c] = case
    if args.whatif_raw_client:
        print("WHAT-IF: serve's non-streaming upstream requests go through a raw keep-alive client\n")
    print(
        f"### proxy: direct nginx vs through llamaswap ({args.engine} engine, wrk -t{args.threads}, {args.duration:g} s x "
        f"{args.rounds} rounds, median; {common.machine()['cpus']} cores, nice {nice}, "
        f"load {load_before[0]} -> {load_after[0]})\n"
    )
    print(
        md_table(
            [
                "conns",
                "path",
                "req/s",
                "share of direct",
                "p50",
                "added p50",
                "p99",
                "CPU per request",
                "non-2xx/errors",
            ],
            rows,
            align="llrrrrrrr",
        )
    )
    print(
        "\nCPU per request: user+system time of the serving process (nginx: its worker) over the run "
        "divided by the requests wrk completed."
    )

    sd, sp = stream["direct"], stream["proxy"]
    added_ttfb = sp["ttfb_p50"] - sd["ttfb_p50"]
    print(
        f"\n### streaming: {args.streams} streams each way, {args.tokens} tokens, "
        f"{args.token_delay * 1000:g} ms apart ({stream['expected_events']} SSE events per stream)\n"
    )
    stream_floors_added = {
        name: stream[name]["ttfb_p50"] - sd["ttfb_p50"]
        for name in ("relay floor", "aiohttp floor")
        if name in stream
    }
    srows = []
    shown = [("direct", sd), ("llamaswap", sp)] + [(n, stream[n]) for n in stream_floors_added]
    for name, s in shown:
        srows.append(
            [
                name,
                ms(s["ttfb_p50"], 3),
                ms(s["ttfb_max"], 3),
                ms(s["gap_p50"], 3),
                ms(s["gap_p99"], 3),
                ms(s["gap_min"], 3),
                ms(s["gap_max"], 3),
                f"{s['events_min']}..{s['events_max']} / {stream['expected_events']}",
                s["coalesced_total"],
            ]
        )
    print(
        md_table(
            [
                "path",
                "TTFB p50",
                "TTFB max",
                "gap p50",
                "gap p99",
                "gap min",
                "gap max",
                "events got / sent",
                "coalesced",
            ],
            srows,
        )
    )

    print(
        "\n### the same request-path work, hot and after sleeping (this machine; a fresh interpreter: "
        "the front's head split and the body's JSON parse)\n"
    )
    print(
        md_table(
            [
                "hot (back to back)",
                "after 10 ms asleep",
                f"after {args.tokens * args.token_delay * 1000:g} ms asleep (a stream)",
                "ratio",
            ],
            [
                [
                    f"{cold['hot'] * 1e6:.1f} us",
                    f"{cold['idle_10ms'] * 1e6:.1f} us",
                    f"{cold['idle_stream'] * 1e6:.1f} us",
                    f"{cold['idle_stream'] / cold['hot']:.1f}x",
                ]
            ],
            align="rrrr",
        )
    )
    print(
        "\nA proxied stream's request finds llamaswap asleep for that long (the direct stream ran "
        "meanwhile): its whole request path runs at the slower figure, and TTFB waits on it."
    )

    c16, c1 = cases.get(16), cases.get(1)
    lost = stream["expected_events"] * args.streams - sum(r["events"] for r in sp["runs"])
    chunks_ok = (
        sp["coalesced_total"] == 0 and sp["events_min"] == sp["events_max"] == stream["expected_events"]
    )
    mem_after = memory["after_proxy_run"]["VmRSS"]
    targets = []

    def floors(case: dict[str, Any], key: str, fmt) -> str:
        """The two minimal proxies' figures: what an aiohttp server costs by itself."""
        got = [
            f"{fmt(case[n][key])} ({n.split()[0]})"
            for n in ("aiohttp floor", "raw-client floor")
            if n in case
        ]
        return ", ".join(got) or "—"

    if c16:
        cpu = c16["llamaswap"]["cpu_us_per_request"]
        targets.append(
            [
                "CPU per proxied request at 16 conns",
                f"{cpu:.0f} us",
                f"<= {TARGET_CPU_16_US:.0f} us",
                floors(c16, "cpu_us_per_request", lambda v: f"{v:.0f} us"),
                "—",
                verdict(cpu <= TARGET_CPU_16_US and c16["llamaswap"]["errors"] == 0),
            ]
        )
    if c1:
        added = c1["llamaswap"]["added_p50_us"] / 1e6
        targets.append(
            [
                "added p50 latency at 1 conn",
                f"{added * 1000:.3f} ms",
                f"<= {TARGET_ADDED_P50_1 * 1000:.2f} ms",
                floors(c1, "added_p50_us", lambda v: f"{v / 1000:.3f} ms"),
                "0.28 ms",
                verdict(added <= TARGET_ADDED_P50_1),
            ]
        )
    targets.append(
        [
            "streaming: added TTFB (p50)",
            f"{added_ttfb * 1000:.3f} ms",
            f"<= {TARGET_ADDED_TTFB * 1000:g} ms",
            ", ".join(f"{v * 1000:.3f} ms ({n.split()[0]})" for n, v in stream_floors_added.items()) or "—",
            "—",
            verdict(added_ttfb <= TARGET_ADDED_TTFB),
        ]
    )
    targets.append(
        [
            "streaming: chunks coalesced / events lost",
            f"{sp['coalesced_total']} / {lost}",
            "0 / 0",
            "—",
            "—",
            verdict(chunks_ok),
        ]
    )
    targets.append(
        [
            "serve RSS after the proxy run",
            f"{mem_after:.1f} MB",
            f"<= {TARGET_RSS_MB:g} MB",
            "—",
            "37 MB",
            verdict(mem_after <= TARGET_RSS_MB),
        ]
    )
    if c16:
        share = c16["llamaswap"]["share_of_direct"]
        targets.append(
            [
                "(information) throughput at 16 conns, share of direct",
                f"{share:.1%}",
                "—",
                floors(c16, "share_of_direct", lambda v: f"{v:.1%}"),
                "9.3%",
                "—",
            ]
        )
    print("\n### proxy targets\n")
    print(md_table(["target", "measured", "goal", "floors", "llama-swap", "result"], targets, align="lrrrrl"))

    mrows = [
        [
            k.replace("_", " "),
            f"{v['VmRSS']:.1f} MB",
            f"{v['VmHWM']:.1f} MB",
            f"{v.get('RssAnon', 0):.1f} MB",
            f"{v.get('RssFile', 0):.1f} MB",
        ]
        for k, v in memory.items()
    ]
    print(
        f"\n### memory: the llamaswap serve process only (pid {serve_pid}, {args.engine} engine; nginx and "
        "the fake upstream are not counted)\n"
    )
    print(md_table(["when", "VmRSS", "VmHWM (peak)", "RssAnon", "RssFile"], mrows))
    print(
        f"\n| target | measured | goal | llama-swap | result |\n| --- | ---: | ---: | ---: | --- |\n"
        f"| serve RSS after the proxy run | {mem_after:.1f} MB | <= {TARGET_RSS_MB:g} MB | 37 MB | "
        f"{verdict(mem_after <= TARGET_RSS_MB)} |"
    )

    if args.whatif_raw_client:
        common.write_result(
            "proxy-whatif-raw-client",
            {
                "variant": "raw-client",
                "settings": vars(args),
                "nice": nice,
                "load_before": load_before,
                "load_after": load_after,
                "cases": {str(c): v for c, v in cases.items()},
                "streaming": stream,
                "memory": memory,
            },
        )
        return 0
    common.write_result(
        "proxy",
        {
            "settings": vars(args),
            "nice": nice,
            "load_before": load_before,
            "load_after": load_after,
            "cases": {str(c): v for c, v in cases.items()},
            "streaming": stream,
            "added_ttfb_s": added_ttfb,
            "cold_work_s": cold,
            "targets": targets,
            "llama_swap": LLAMA_SWAP,
        },
    )
    common.write_result(
        "memory",
        {
            "what": "VmRSS/VmHWM/RssAnon/RssFile of the llamaswap serve process itself, MiB (children excluded)",
            "points": memory,
            "target_mb": TARGET_RSS_MB,
            "after_proxy_run_mb": mem_after,
            "result": verdict(mem_after <= TARGET_RSS_MB),
            "llama_swap_mb": LLAMA_SWAP["rss_mb"],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
