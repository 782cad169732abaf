"""Serve's metrics keep plain numbers and import prometheus_client only to expose them: the
exposition must be what prometheus_client's own Counter, Gauge and Histogram give for the same
updates, and a fresh serve must not load the library before the first scrape."""

from __future__ import annotations

import re
import subprocess
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from llamaswap.runtime.observe import LOAD_BUCKETS, WAIT_BUCKETS, Metrics, _live

CREATED = re.compile(r"^(\S+_created(?:\{[^}]*\})?) \S+$", re.M)


class _Ticket:
    def __init__(self, arrived: float) -> None:
        self.arrived = arrived


class _Router:
    def waiting_tickets(self):
        return [_Ticket(10.0), _Ticket(12.5)]

    def now(self) -> float:
        return 14.0


class _Proc:
    def __init__(self, state: str) -> None:
        self.state = type("S", (), {"value": state})()


def reference(models: tuple[str, ...]):
    """The same metrics built from prometheus_client's classes (what serve used before)."""
    r = CollectorRegistry(auto_describe=True)
    ref = {
        "requests": Counter(
            "llamaswap_requests",
            "Model-dispatched requests by model and HTTP status.",
            ["model", "status"],
            registry=r,
        ),
        "in_flight": Gauge(
            "llamaswap_requests_in_flight", "Requests being served, by model.", ["model"], registry=r
        ),
        "swaps": Counter(
            "llamaswap_swaps",
            "Committed swaps by target model and outcome.",
            ["model", "outcome"],
            registry=r,
        ),
        "evictions": Counter(
            "llamaswap_evictions",
            "Models stopped, by model and reason (swap, ttl, unload, shutdown, crash).",
            ["model", "reason"],
            registry=r,
        ),
        "load_duration": Histogram(
            "llamaswap_load_duration_seconds",
            "Time from a swap's start of loading to the upstream being ready.",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=r,
        ),
        "queue_wait": Histogram(
            "llamaswap_queue_wait_seconds",
            "Time from a request's arrival to its grant.",
            ["model"],
            buckets=WAIT_BUCKETS,
            registry=r,
        ),
        "reloads": Counter(
            "llamaswap_reloads", "Config reloads by outcome (ok, failed).", ["outcome"], registry=r
        ),
    }
    for outcome in ("ok", "failed"):
        ref["reloads"].labels(outcome)
    for m in models:
        ref["in_flight"].labels(m).set(0)
    return r, ref


def test_exposition_matches_prometheus_clients_own_metrics():
    models = ("a", "b/c", 'q"uote')
    ours = Metrics(models)
    registry, ref = reference(models)
    live_source = Metrics(models)  # the scrape-time values, for the reference registry
    for m in (ours, live_source):
        m.bind({"a": _Proc("ready"), "b/c": _Proc("starting")}, _Router())
    registry.register(
        type("Live", (), {"collect": lambda self: _live(live_source), "describe": lambda self: []})()
    )

    def both(name: str, *labels: str):
        return getattr(ours, name).labels(*labels), ref[name].labels(*labels)

    for model, status in [("a", "200"), ("a", "200"), ("b/c", "502"), ("a", "429"), ('q"uote', "200")]:
        ours.count_request(model, status)
        ref["requests"].labels(model, status).inc()
    for x, y in [both("in_flight", "a"), both("in_flight", "a"), both("in_flight", "b/c")]:
        x.inc()
        y.inc()
    x, y = both("in_flight", "a")
    x.dec()
    y.dec()
    for x, y in [both("swaps", "a", "ok"), both("swaps", "b/c", "error"), both("evictions", "a", "ttl")]:
        x.inc()
        y.inc()
    for value in (0.0, 0.05, 0.07, 3.0, 599.9, 600.0, 601.0, 1e9):
        x, y = both("load_duration", "a")
        x.observe(value)
        y.observe(value)
    for value in (0.0, 0.0005, 0.001, 0.02, 299.0, 1000.0):
        x, y = both("queue_wait", "b/c")
        x.observe(value)
        y.observe(value)
    x, y = both("reloads", "failed")
    x.inc()
    y.inc()

    got = ours.exposition().decode()
    want = generate_latest(registry).decode()
    assert CREATED.sub(r"\1 T", got) == CREATED.sub(r"\1 T", want)
    assert 'llamaswap_requests_total{model="a",status="200"} 2.0' in got
    assert 'llamaswap_load_duration_seconds_bucket{le="+Inf",model="a"} 8.0' in got
    assert "llamaswap_oldest_waiting_seconds 4.0" in got
    # A second scrape sees later updates (the registry is built once, the values read each time).
    ours.count_request("a", "200")
    assert 'llamaswap_requests_total{model="a",status="200"} 3.0' in ours.exposition().decode()


def test_a_label_child_is_the_same_object_for_the_same_values():
    m = Metrics(["a"])
    assert m.swaps.labels("a", "ok") is m.swaps.labels("a", "ok")
    assert m.child(m.requests, "a", "200") is m.requests.labels("a", "200")


SERVE_START = """
import os, sys, threading, time, urllib.request
port = sys.argv[1]

def report():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:  # /running is aiohttp's: the whole app is built and attached
            urllib.request.urlopen(f"http://127.0.0.1:{port}/running", timeout=5).read()
            break
        except OSError:
            time.sleep(0.02)
    lazy = ("prometheus_client", "difflib", "importlib.resources", "importlib.metadata", "zipfile")
    print("LOADED", *[m for m in lazy if m in sys.modules], flush=True)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    print("SCRAPED", b"llamaswap_requests_in_flight" in metrics, "prometheus_client" in sys.modules, flush=True)
    os._exit(0)

threading.Thread(target=report, daemon=True).start()
sys.argv = ["llamaswap", "serve", sys.argv[2], "--listen", f"127.0.0.1:{port}", "--log-level", "warn"]
from llamaswap.cli import main
main()
"""


def test_serve_loads_prometheus_client_and_other_rare_modules_only_when_used(tmp_path):
    # Up and serving, serve has not imported what only a rare path needs (the first scrape,
    # a misspelt name, the demo config or UI files, pydantic's plugin scan); /metrics works.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "c.yaml"
    config.write_text(
        "models:\n  a:\n    cmd: never-started --port ${PORT}\n    proxy: http://127.0.0.1:${PORT}\n"
        f"llamaswap:\n  runtimeDir: {tmp_path}\nstore:\n  path: ':memory:'\n",
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-c", SERVE_START, str(port), str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("LOADED", "SCRAPED"))]
    assert lines == ["LOADED", "SCRAPED True True"], (out.stdout, out.stderr)
