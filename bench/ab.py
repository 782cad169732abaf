"""A/B of two trees' `llamaswap serve` in the same minutes: CPU per request (16 conns), p50 at
1 conn and streaming TTFB (and req/s at 16 conns), each pair of runs back to back, the order flipped every round.

Usage: .venv/bin/python bench/ab.py OTHER_TREE [--rounds 6] [--duration 3] [--streams 10]

OTHER_TREE is another checkout with its own .venv (e.g. a clone of main); "A" is that tree,
"B" this one. Each serve has its own config, nginx and fake SSE upstream (bench/proxy.py's
files). Prints one line per round and the medians; B-A per pair tells more than either
figure alone on a busy machine. Writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import proxy as bench_proxy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("other", type=Path, help="the other tree (A), with its own .venv")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    ap.add_argument("--streams", type=int, default=10, help="streams per tree per round (0: none)")
    ap.add_argument("--no-1", action="store_true", help="skip the 1-connection runs")
    args = ap.parse_args()
    tools = common.ensure_debian_tools({"nginx": "nginx-light", "wrk": "wrk"})
    other_exe = str(args.other.resolve() / ".venv" / "bin" / "llamaswap")
    rows: dict[str, dict[str, list[float]]] = {
        t: {"cpu16": [], "rps16": [], "p50_1": [], "ttfb": []} for t in "AB"
    }
    with tempfile.TemporaryDirectory(prefix="llamaswap-bench-ab-") as tmpdir:
        tmp = Path(tmpdir)
        serves, urls, streams = {}, {}, {}
        for tag, launcher in (("A", [other_exe, "serve"]), ("B", None)):
            (tmp / tag).mkdir()
            config, nginx_port, sse_port = bench_proxy.write_files(tmp / tag, tools["nginx"], 0.01, "matrix")
            serve = common.Serve(config, stderr_path=tmp / tag / "serve.log", launcher=launcher)
            serve.__enter__()
            serves[tag] = serve
            urls[tag] = f"{serve.url}/v1/chat/completions"
            streams[tag] = urls[tag]
            status, _, payload = common.http("POST", urls[tag], bench_proxy.BODY, timeout=60)
            if status != 200:
                raise SystemExit(f"ab: warm-up of {tag} answered {status}: {payload[:300]!r}")
        lua = tmp / "A" / "post.lua"
        try:
            for tag in "AB":
                bench_proxy.run_wrk(tools["wrk"], lua, urls[tag], 16, 1, 1.0)
            for r in range(args.rounds):
                order = "AB" if r % 2 == 0 else "BA"
                line = [f"round {r + 1} ({order}, load {common.machine()['loadavg'][0]})"]
                for tag in order:
                    run = bench_proxy.run_wrk(
                        tools["wrk"], lua, urls[tag], 16, 1, args.duration, cpu_pid=serves[tag].pid
                    )
                    rows[tag]["cpu16"].append(run["cpu_us_per_request"])
                    rows[tag]["rps16"].append(run["rps"])
                if not args.no_1:
                    for tag in order:
                        run = bench_proxy.run_wrk(tools["wrk"], lua, urls[tag], 1, 1, args.duration)
                        rows[tag]["p50_1"].append(run["p50_us"])
                if args.streams:
                    got = bench_proxy.run_async(
                        bench_proxy.streaming(
                            {"proxy": streams[order[0]], "other": streams[order[1]]}, args.streams, 20, 0.01
                        )
                    )
                    rows[order[0]]["ttfb"].append(got["proxy"]["ttfb_p50"] * 1e6)
                    rows[order[1]]["ttfb"].append(got["other"]["ttfb_p50"] * 1e6)
                for key in ("cpu16", "rps16", "p50_1", "ttfb"):
                    if rows["A"][key]:
                        a, b = rows["A"][key][-1], rows["B"][key][-1]
                        line.append(f"{key} A {a:.0f} B {b:.0f} ({b - a:+.0f})")
                common.log("  ".join(line))
        finally:
            for serve in serves.values():
                serve.__exit__(None, None, None)
    print("\nmedians (us; rps16: requests per second at 16 conns); B lower in k of n pairs")
    for key in ("cpu16", "rps16", "p50_1", "ttfb"):
        a, b = rows["A"][key], rows["B"][key]
        if a:
            lower = sum(1 for x, y in zip(a, b, strict=True) if y < x)
            diffs = [y - x for x, y in zip(a, b, strict=True)]
            print(
                f"{key:6} A {statistics.median(a):7.1f}  B {statistics.median(b):7.1f}  "
                f"median B-A {statistics.median(diffs):+6.1f}  B lower in {lower}/{len(a)}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
