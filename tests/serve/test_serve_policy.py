"""The same policy decides in `serve` and in `plan --trace`: a short trace replayed against a
real server (real fake upstreams, real sockets) makes the swaps the simulator predicts.

Each trace is built so that the policy and FIFO differ, and every decision has slack against
real load times and timer jitter.

`lookahead` (any two of a, b, c fit; one matrix set per pair): b is asked for ten times, a
once; loading c, FIFO evicts b (set "ac" comes first in solver order) and b's next request
costs a reload, 4 swaps; lookahead evicts a, 3 swaps.

`hold` (a, b exclusive):

- `a` is asked every 1.5 s (0.1 s each), so its return gaps are ~1.4 s;
- `b` arrives 0.4 s after `a`'s last request ended: `a` is hot for ~1 s more, so `hold` keeps
  it; `a`'s next request (0.5 s later) is served at once, and `b` loads after that.
FIFO swaps to `b` at once and back to `a` for its next request: 3 swaps. `hold`: 2.
The replay keeps the trace's own clock (each request is sent at its offset from the start).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest
import yaml
from click.testing import CliRunner
from serve_support import free_port_block, model, upstream_cmd

from llamaswap.cli import cli
from llamaswap.runtime.activity import load_times

pytestmark = pytest.mark.e2e

# (at s, model, duration s)
PAIRS_TRACE = [
    (0.0, "a", 0.1),
    *((0.5 + 0.3 * i, "b", 0.1) for i in range(10)),
    (4.0, "c", 0.1),
    (5.0, "b", 0.1),
]
TRACE = [(0.0, "a", 0.1), (2.5, "a", 0.1), (4.0, "a", 0.1), (5.5, "a", 0.1), (6.0, "b", 0.1), (6.5, "a", 0.1)]
# The hold cap (budget x a's load time) must not bind, however fast a real load is.
POLICY = {"use": "hold", "quantile": 0.5, "min_history": 3, "budget": 20.0}


def plan_swaps(config: dict, trace: list[tuple[float, str, float]], policy: str, tmp_path) -> int:
    """`plan --trace --compare POLICY`'s swaps for the config and trace (1 s loads)."""
    config_path, trace_path = tmp_path / "planned.yaml", tmp_path / "trace.jsonl"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    trace_path.write_text(
        "".join(json.dumps({"at": at, "model": m, "duration": d}) + "\n" for at, m, d in trace)
    )
    args = ["plan", str(config_path), "--trace", str(trace_path), "--compare", policy, "--format", "json"]
    for m in config["models"]:
        args += ["--load-time", f"{m}=1"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["policies"][policy]["swaps"]


def replay(server, trace: list[tuple[float, str, float]]) -> None:
    """Send each request at its offset from now (the trace's clock); all must succeed."""
    statuses: list[int] = []
    start = time.monotonic() + 0.2

    def send(at: float, name: str, duration: float) -> None:
        threading.Event().wait(max(0.0, start + at - time.monotonic()))
        statuses.append(server.chat(name, delay=duration).status)

    threads = [threading.Thread(target=send, args=entry) for entry in trace]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * len(trace)


def test_serve_runs_lookahead_and_makes_the_swaps_plan_predicts(serve, tmp_path):
    config = {
        "healthCheckTimeout": 30,
        "models": {m: model(upstream_cmd(m)) for m in ("a", "b", "c")},
        "matrix": {"sets": {"ab": "a & b", "ac": "a & c", "bc": "b & c"}},
        # A 2 s horizon: a's one request, 4 s old, is cold; b's ten are hot. min_trials 0:
        # act on the first decision (the self-check has no trial yet).
        "routing": {
            "scheduler": {"policy": {"use": "lookahead", "horizon": 2, "margin": 0.5, "min_trials": 0}}
        },
    }
    expected = plan_swaps(config, PAIRS_TRACE, "lookahead", tmp_path)
    assert (expected, plan_swaps(config, PAIRS_TRACE, "fifo", tmp_path)) == (3, 4)
    server = serve(config)
    replay(server, PAIRS_TRACE)
    assert server.scheduler()["swaps_started"] == expected


def test_serve_runs_hold_and_makes_the_swaps_plan_predicts(serve, tmp_path):
    config = {
        "healthCheckTimeout": 30,
        "models": {"a": model(upstream_cmd("a")), "b": model(upstream_cmd("b"))},
        "groups": {"gpu": {"swap": True, "exclusive": True, "members": ["a", "b"]}},
        "routing": {"scheduler": {"policy": POLICY}},
    }
    expected = plan_swaps(config, TRACE, "hold", tmp_path)
    assert (expected, plan_swaps(config, TRACE, "fifo", tmp_path)) == (2, 3)
    server = serve(config)
    replay(server, TRACE)
    assert server.scheduler()["swaps_started"] == expected


def test_serve_records_its_loads_and_trace_export_replays_with_them(serve, tmp_path):
    # What a user does before switching policy: serve, export last week's traffic, replay it.
    # The replay costs each load what the server measured (spawn to ready), not a guess.
    db = tmp_path / "activity.sqlite3"
    config = {
        "healthCheckTimeout": 30,
        "models": {"a": model(upstream_cmd("a", startup_delay=0.6)), "b": model(upstream_cmd("b"))},
        "groups": {"gpu": {"swap": True, "exclusive": True, "members": ["a", "b"]}},
        "store": {"path": str(db)},
    }
    server = serve(config)
    for name in ("a", "b", "a"):
        assert server.chat(name).status == 200
    assert server.scheduler()["swaps_started"] == 3
    config_path = tmp_path / "served.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    trace = tmp_path / "week.jsonl"

    def exported() -> dict | None:  # the writer thread keeps records ~50 ms behind
        r = CliRunner().invoke(
            cli, ["trace", "export", str(config_path), "-o", str(trace)], catch_exceptions=False
        )
        assert r.exit_code == 0, r.output
        lines = [json.loads(line) for line in trace.read_text().splitlines() if line.startswith("{")]
        loads = next((line["load_times"] for line in lines if "load_times" in line), {})
        return loads if len(lines) == 4 and set(loads) == {"a", "b"} else None

    loads = server.wait(exported, "the export of three requests and both models' loads")
    assert 0.6 <= loads["a"] < 30 and 0 < loads["b"] < 30
    r = CliRunner().invoke(
        cli, ["plan", str(config_path), "--trace", str(trace), "--compare", "fifo", "--format", "json"]
    )
    assert r.exit_code == 0, r.output
    fifo = json.loads(r.output)["policies"]["fifo"]
    assert fifo["swaps"] == 3
    assert fifo["load_seconds"] == pytest.approx(2 * loads["a"] + loads["b"], abs=0.01)


# -- load times recorded before a policy existed ------------------------------------------------
# Any two of a, b, c fit; loading c with a and b running, FIFO evicts b (set "ac" comes first).
# `a` is asked four times, `b` once: by request rates alone (every load time equal, the
# `load_time` default) b is the cheaper one to lose, and lookahead evicts b too. When the policy
# knows that b loads far slower than a, losing b costs more: it evicts a instead. Which one
# `/running` shows next to c says which load times the policy decided with.
SEEDED = {"use": "lookahead", "horizon": 600, "min_trials": 0}


def pairs_config(port: int, db: str, b_delay: float, policy: object = "fifo") -> dict:
    return {
        "healthCheckTimeout": 30,
        "startPort": port,
        "models": {
            "a": model(upstream_cmd("a")),
            "b": model(upstream_cmd("b", startup_delay=b_delay)),
            "c": model(upstream_cmd("c")),
        },
        "matrix": {"sets": {"ab": "a & b", "ac": "a & c", "bc": "b & c"}},
        "store": {"path": db},
        "routing": {"scheduler": {"policy": policy}},
    }


def load_c_after_a_and_b(server) -> str:
    """a four times, b once (both running), then c: the model kept beside c."""
    for name in ("a", "b", "a", "a", "a"):
        assert server.chat(name).status == 200
    assert set(server.running()) == {"a", "b"}
    assert server.chat("c").status == 200
    running = server.wait(
        lambda: (
            (r := {m for m, e in server.running().items() if e["state"] == "ready"}) and len(r) == 2 and r
        ),
        "one of a and b to be evicted for c",
    )
    assert "c" in running
    return (running - {"c"}).pop()


@pytest.mark.parametrize(("store", "kept"), [("activity.sqlite3", "b"), (":memory:", "a")])
def test_a_policy_made_by_a_reload_starts_from_the_recorded_load_times(serve, tmp_path, store, kept):
    # Serve with FIFO; b's loads take 1.5 s, a's a fraction of that. Switching the policy to
    # lookahead makes a fresh one (it saw no load): with a store it is told what the store
    # recorded and keeps the slow b; without one it knows no load time and keeps a.
    port, db = free_port_block(3), str(tmp_path / store) if store != ":memory:" else store
    server = serve(pairs_config(port, db, 1.5))
    for name in ("a", "b"):
        assert server.chat(name).status == 200
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(pairs_config(port, db, 1.5, SEEDED), sort_keys=False)
    )
    record = server.post("/api/config/reload").json()
    assert record["ok"] and record["changes"]["restarted"] == [], record
    assert load_c_after_a_and_b(server) == kept


def test_serve_starts_its_policy_from_the_load_times_its_store_recorded(serve, tmp_path):
    # A first serve records b's loads at 3 s. After a restart b happens to load fast (a warm
    # disk cache); the policy weighs that one load with the history (each counts as a load
    # seen) and still treats b as the costlier model to lose: it keeps b. Knowing only the
    # loads of this run, it would keep a (the unseeded case of the reload test above).
    port, db = free_port_block(3), str(tmp_path / "activity.sqlite3")
    first = serve(pairs_config(port, db, 3.0))
    for name in ("a", "b"):
        assert first.chat(name).status == 200

    def recorded() -> dict | None:  # the writer thread keeps loads ~50 ms behind
        with sqlite3.connect(db) as con:
            times = load_times(con)
        return times if set(times) == {"a", "b"} else None

    times = first.wait(recorded, "both loads in the store")
    assert times["b"] >= 3.0 > times["a"]
    assert first.terminate() == 0
    second = serve(pairs_config(port, db, 0.0, SEEDED))
    assert load_c_after_a_and_b(second) == "b"
