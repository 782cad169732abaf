"""Swap benchmark: two mutually exclusive models, upstreams ready 0.5 s after spawn, requests
alternating a, b, a, b, ... so that every request swaps.

Usage: .venv/bin/python bench/swap.py [--swaps 10] [--startup-delay 0.5] [--engine both]

What is subtracted, precisely:
- "upstream start" is measured first, without llamaswap: the very same command
  (`llamaswap fake-upstream --startup-delay 0.5 ...`) is spawned `--probes` times and the time
  from spawn to its readiness is taken. Readiness is the instant the upstream's /health starts
  answering 200, which the fake upstream reports exactly (`healthy_monotonic` in /debug/info,
  on the same CLOCK_MONOTONIC as ours), so no polling interval is added. It is the 0.5 s
  delay plus the interpreter's own start-up (spawn -> `started_monotonic`, reported as
  "interpreter start").
- A swapped request's time is measured by the client: POST sent -> complete response.
- overhead = swapped request time - median upstream start. It is everything llamaswap adds:
  stopping the evicted upstream, spawning, noticing readiness, proxying the request.
- The evicted upstream's own stop (SIGTERM -> reaped, with an idle keep-alive connection
  open as llamaswap has one) is measured in the same probes. llamaswap must wait for it
  before it starts the next model, so it is inside the overhead; the table also shows the
  overhead less that median stop, which is llamaswap's own share.
- The overhead is split with the new upstream's own timestamps: "before start" = from the
  request to the upstream's `started_monotonic`, minus the median interpreter start (stop of
  the evicted model + spawn); "after ready" = from `healthy_monotonic` to the response
  (readiness detection by health polling + proxying the request and response).

Engines: the same two models as a group with `swap: true, exclusive: true` (group engine)
and as a matrix with two single-model sets (matrix engine).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import md_table, ms, verdict

TARGET_OVERHEAD = 0.050
LLAMA_SWAP = {"startup_delay_s": 0.5, "swapped_request_s": 1.26, "overhead_s": 0.7}


FAST_EXIT = False  # --fast-upstream-exit: the what-if upstream of bench/whatif.py


def upstream_argv(port: int, name: str, startup_delay: float) -> list[str]:
    head = (
        [common.python_exe(), str(common.BENCH / "whatif.py"), "upstream"]
        if FAST_EXIT
        else [common.llamaswap_exe(), "fake-upstream"]
    )
    return [*head, "--port", str(port), "--name", name, "--startup-delay", f"{startup_delay:g}"]


def probe_upstream_start(startup_delay: float, probes: int, tmp: Path) -> dict[str, Any]:
    """Spawn the upstream directly `probes` times: spawn -> ready, spawn -> interpreter started,
    and its own stop: SIGTERM (with an idle keep-alive connection open, as llamaswap has) -> reaped."""
    starts, interps, stops = [], [], []
    for i in range(probes):
        port = common.free_port()
        proc = common.Proc(
            upstream_argv(port, f"probe{i}", startup_delay),
            name="fake upstream probe",
            stderr_path=tmp / f"probe{i}.log",
        )
        t_spawn = proc.spawned  # taken right before Popen
        keepalive = None
        try:
            common.wait_http(f"http://127.0.0.1:{port}/health", timeout=30, interval=0.002)
            _, _, raw = common.http("GET", f"http://127.0.0.1:{port}/debug/info")
            info = json.loads(raw)
            keepalive = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            keepalive.request("GET", "/health")
            keepalive.getresponse().read()
            t_term = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            proc.popen.wait(30)
            stops.append(time.monotonic() - t_term)
        finally:
            if keepalive is not None:
                keepalive.close()
            proc.stop()
        starts.append(info["healthy_monotonic"] - t_spawn)
        interps.append(info["started_monotonic"] - t_spawn)
    return {
        "spawn_to_ready": starts,
        "interpreter_start": interps,
        "sigterm_to_exit": stops,
        "spawn_to_ready_median": common.median(starts),
        "interpreter_start_median": common.median(interps),
        "sigterm_to_exit_median": common.median(stops),
    }


def write_config(tmp: Path, engine: str, ports: dict[str, int], startup_delay: float) -> Path:
    lines = ["# Written by bench/swap.py.", "healthCheckTimeout: 30", "models:"]
    for name, port in ports.items():
        argv = " ".join(upstream_argv(port, name, startup_delay))
        lines += [f"  {name}:", f"    cmd: {argv}", f"    proxy: http://127.0.0.1:{port}"]
    if engine == "group":
        lines += [
            "groups:",
            "  pair:",
            "    swap: true",
            "    exclusive: true",
            f"    members: [{', '.join(ports)}]",
        ]
    else:
        lines += ["matrix:", "  sets:"] + [f'    only-{name}: "{name}"' for name in ports]
    path = tmp / f"swap-{engine}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Watcher:
    """Polls, every millisecond, when the evicted upstream exits and when the new one is spawned."""

    def __init__(self, serve_pid: int, old_pid: int | None) -> None:
        self.serve_pid, self.old_pid = serve_pid, old_pid
        self.before = set(common.children(serve_pid))
        self.old_exit: float | None = None
        self.new_spawn: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _gone(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except OSError:
            return True

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            if self.old_exit is None and self.old_pid and self._gone(self.old_pid):
                self.old_exit = now
            if self.new_spawn is None and set(common.children(self.serve_pid)) - self.before - {self.old_pid}:
                self.new_spawn = now
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_engine(
    engine: str, swaps: int, startup_delay: float, tmp: Path, launcher: list[str] | None = None
) -> dict[str, Any]:
    ports = {"model-a": common.free_port(), "model-b": common.free_port()}
    config = write_config(tmp, engine, ports, startup_delay)
    records: list[dict[str, Any]] = []
    with common.Serve(config, stderr_path=tmp / f"serve-{engine}.log", launcher=launcher) as serve:
        url = f"{serve.url}/v1/chat/completions"
        sequence = ["model-a"] + [("model-b", "model-a")[i % 2] for i in range(swaps)]
        old_pid: int | None = None
        for i, model in enumerate(sequence):
            watcher = Watcher(serve.pid, old_pid)
            t0 = time.monotonic()
            status, headers, raw = common.http(
                "POST", url, {"model": model, "messages": [{"role": "user", "content": "swap"}]}, timeout=60
            )
            t1 = time.monotonic()
            watcher.stop()
            if status != 200:
                raise SystemExit(f"bench: request {i} for {model} answered {status}: {raw[:300]!r}")
            _, _, info_raw = common.http("GET", f"http://127.0.0.1:{ports[model]}/debug/info")
            info = json.loads(info_raw)
            records.append(
                {
                    "model": model,
                    "cold": i == 0,
                    "request_s": t1 - t0,
                    "to_started_s": info["started_monotonic"] - t0,
                    "ready_to_response_s": t1 - info["healthy_monotonic"],
                    "upstream_pid": int(headers.get("X-Upstream-Pid", "0")),
                    "swap_header": headers.get("X-Llamaswap-Swap"),
                    # Observed by polling every ms (+-1 ms): evicted upstream gone, new one spawned.
                    "old_exit_s": None if watcher.old_exit is None else watcher.old_exit - t0,
                    "new_spawn_s": None if watcher.new_spawn is None else watcher.new_spawn - t0,
                    "interpreter_start_s": (
                        None if watcher.new_spawn is None else info["started_monotonic"] - watcher.new_spawn
                    ),
                    "own_start_s": (
                        None if watcher.new_spawn is None else info["healthy_monotonic"] - watcher.new_spawn
                    ),
                }
            )
            old_pid = int(headers.get("X-Upstream-Pid", "0")) or None
            common.log(f"{engine}: {model} {'cold start' if i == 0 else 'swap'} {t1 - t0:.3f}s")
    return {"records": records}


def _median_known(xs) -> float | None:
    known = [x for x in xs if x is not None]
    return common.median(known) if known else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--swaps", type=int, default=10, help="swapped requests per engine (default 10)")
    ap.add_argument(
        "--startup-delay", type=float, default=0.5, help="upstream start-up delay (default 0.5 s)"
    )
    ap.add_argument("--probes", type=int, default=10, help="direct upstream starts measured (default 10)")
    ap.add_argument("--engine", choices=("group", "matrix", "both"), default="both")
    common.add_nice_option(ap)
    ap.add_argument(
        "--fast-upstream-exit",
        action="store_true",
        help="what-if: upstreams leave with os._exit() after cleanup (bench/whatif.py)",
    )
    ap.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="what-if: serve with this health poll interval, seconds (bench/whatif.py)",
    )
    args = ap.parse_args()
    global FAST_EXIT
    FAST_EXIT = args.fast_upstream_exit
    launcher = None
    if args.poll_interval is not None:
        launcher = [
            common.python_exe(),
            str(common.BENCH / "whatif.py"),
            "serve",
            "--poll-interval",
            f"{args.poll_interval:g}",
        ]
    variant = "-".join(
        v
        for v in (
            "fast-exit" if args.fast_upstream_exit else "",
            f"poll-{args.poll_interval:g}" if args.poll_interval is not None else "",
        )
        if v
    )
    nice = common.raise_priority(args.nice)
    load_before = common.machine()["loadavg"]
    engines = ("group", "matrix") if args.engine == "both" else (args.engine,)
    with tempfile.TemporaryDirectory(prefix="llamaswap-bench-swap-") as tmpdir:
        tmp = Path(tmpdir)
        probe = probe_upstream_start(args.startup_delay, args.probes, tmp)
        runs = {e: run_engine(e, args.swaps, args.startup_delay, tmp, launcher) for e in engines}
    load_after = common.machine()["loadavg"]

    start, interp = probe["spawn_to_ready_median"], probe["interpreter_start_median"]
    stop = probe["sigterm_to_exit_median"]
    rows, summary, targets = [], {}, []
    for engine, run in runs.items():
        swapped = [r for r in run["records"] if not r["cold"]]
        if any(r["new_spawn_s"] is None or r["old_exit_s"] is None for r in swapped):
            raise SystemExit("bench: a swap's spawn or evicted exit was not observed; see the JSON records")
        for r in swapped:
            # Everything but this swap's own upstream start (spawn -> ready, observed): the primary figure.
            r["overhead_s"] = r["request_s"] - r["own_start_s"]
            r["exit_to_spawn_s"] = r["new_spawn_s"] - r["old_exit_s"]
            r["overhead_less_stop_s"] = r["overhead_s"] - r["old_exit_s"]
            # The recipe: minus the median of the upstream's start measured without llamaswap.
            r["overhead_vs_probe_s"] = r["request_s"] - start
        med = lambda key: common.median(r[key] for r in swapped)  # noqa: E731
        s = {"swaps": len(swapped), "cold_start_s": run["records"][0]["request_s"]}
        for key in (
            "request_s",
            "own_start_s",
            "overhead_s",
            "old_exit_s",
            "exit_to_spawn_s",
            "ready_to_response_s",
            "overhead_less_stop_s",
            "overhead_vs_probe_s",
            "interpreter_start_s",
        ):
            s[key.removesuffix("_s") + "_median_s"] = med(key)
            s[key.removesuffix("_s") + "_max_s"] = max(r[key] for r in swapped)
        summary[engine] = s
        rows.append(
            [
                engine,
                s["swaps"],
                ms(s["request_median_s"], 1),
                ms(s["request_max_s"], 1),
                ms(s["own_start_median_s"], 1),
                ms(s["overhead_median_s"], 1),
                ms(s["overhead_max_s"], 1),
                ms(s["old_exit_median_s"], 1),
                ms(s["exit_to_spawn_median_s"], 1),
                ms(s["ready_to_response_median_s"], 1),
                ms(s["overhead_less_stop_median_s"], 1),
                ms(s["overhead_vs_probe_median_s"], 1),
            ]
        )
        targets.append(
            [
                f"swap overhead beyond the upstream's own start, median ({engine})",
                ms(s["overhead_median_s"], 1),
                f"<= {TARGET_OVERHEAD * 1000:g} ms",
                "~700 ms",
                verdict(s["overhead_median_s"] <= TARGET_OVERHEAD),
            ]
        )
        targets.append(
            [
                f"same, less the evicted upstream's own stop ({engine}; information)",
                ms(s["overhead_less_stop_median_s"], 1),
                f"<= {TARGET_OVERHEAD * 1000:g} ms",
                "—",
                verdict(s["overhead_less_stop_median_s"] <= TARGET_OVERHEAD),
            ]
        )

    print(
        f"### swap: two exclusive models, upstream ready {args.startup_delay:g} s after spawn, "
        f"alternating requests (nice {nice}, load {load_before[0]} -> {load_after[0]})"
        + (f" — WHAT-IF: {variant}" if variant else "")
        + "\n"
    )
    print(
        f"The upstream alone ({args.probes} direct spawns): spawn -> ready median {ms(start, 1)} "
        f"(min {ms(min(probe['spawn_to_ready']), 1)}, max {ms(max(probe['spawn_to_ready']), 1)}), of which "
        f"interpreter start {ms(interp, 1)}; its own stop (SIGTERM -> reaped, an idle keep-alive connection "
        f"open) median {ms(stop, 1)} (max {ms(max(probe['sigterm_to_exit']), 1)}).\n"
    )
    print(
        md_table(
            [
                "engine",
                "swaps",
                "request p50",
                "request max",
                "own start p50",
                "overhead p50",
                "overhead max",
                "evicted stop p50",
                "exit->spawn p50",
                "ready->response p50",
                "overhead less stop p50",
                "request - probe start p50",
            ],
            rows,
        )
    )
    print(
        "\nPer swap, with the processes observed every ms: own start = the new upstream's spawn -> ready "
        "(its /health turns 200 at `healthy_monotonic`); overhead = request time - own start = evicted stop "
        "+ exit->spawn + ready->response; evicted stop = request sent -> evicted upstream reaped; "
        "exit->spawn = llamaswap's reaction; ready->response = readiness polling + proxying. The last "
        "column is the issue's recipe (request - median spawn->ready of the direct spawns), noisy when the "
        "upstream's interpreter start varies.\n"
    )
    print(md_table(["target", "measured", "goal", "llama-swap", "result"], targets, align="lrrrl"))

    common.write_result(
        "swap-whatif-" + variant if variant else "swap",
        {
            "variant": variant or None,
            "settings": vars(args),
            "nice": nice,
            "load_before": load_before,
            "load_after": load_after,
            "upstream_start": probe,
            "engines": summary,
            "runs": runs,
            "targets": targets,
            "llama_swap": LLAMA_SWAP,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
