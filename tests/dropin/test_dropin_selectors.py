"""Selectors answer requests (pin, warm, spillover as llama-swap resolves them); a peer
model whose server is down answers 502 with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from serve_support import free_port_block, model, start_serve, upstream_cmd

from llamaswap.compiler.plan import CompileOptions, compile_text
from llamaswap.runtime.selectors import SelectorTracker


def tracker(text: str) -> SelectorTracker:
    plan = compile_text(text, "c.yaml", CompileOptions(env={}))
    assert plan.ok, plan.diagnostics
    return SelectorTracker(plan)


SPILL = """\
models:
  a: {cmd: "x --port ${PORT}"}
  b: {cmd: "x --port ${PORT}", aliases: [bee]}
groups:
  pool: {swap: false, members: [a, b]}
selectors:
  s: {strategy: spillover, targets: [a, bee], settings: {spillover: 2}}
  w: {strategy: warm, targets: [a, bee]}
"""


def test_spillover_fills_the_active_target_then_spills_to_a_cold_one_then_balances():
    t = tracker(SPILL)
    states = {"a": "stopped", "b": "stopped"}
    assert t.choose("s", states.get) == "a"  # nothing active: the first cold target
    states["a"] = "starting"
    assert t.choose("s", states.get) == "a"  # a has 1 < 2
    assert t.choose("s", states.get) == "bee"  # a is full: spill to cold b
    states["b"] = "ready"
    assert t.choose("s", states.get) == "bee"  # a 2, b 1: the least busy
    assert t.choose("s", states.get) in ("a", "bee")  # both at 2, nothing cold: round robin
    t.release("s", "a")
    t.release("s", "a")
    assert t.choose("s", states.get) == "a"
    assert t.choose("nope", states.get) is None


def test_warm_prefers_ready_then_starting_then_the_first():
    t = tracker(SPILL)
    assert t.choose("w", {"a": "stopped", "b": "stopped"}.get) == "a"
    assert t.choose("w", {"a": "starting", "b": "ready"}.get) == "bee"
    assert t.choose("w", {"a": "starting", "b": "stopped"}.get) == "a"


@pytest.mark.e2e
def test_selectors_answer_requests_and_a_down_peer_says_why(tmp_path: Path):
    config = {
        "healthCheckTimeout": 30,
        "startPort": free_port_block(2),
        "models": {"a": model(upstream_cmd("a")), "b": model(upstream_cmd("b"))},
        "selectors": {
            "pinned": {"strategy": "pin", "targets": ["b", "a"]},
            "warm": {"strategy": "warm", "targets": ["a", "b"]},
        },
        "peers": {"box": {"proxy": "http://127.0.0.1:9", "models": ["far"]}},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    server = start_serve(path, cwd=tmp_path)
    try:
        first = server.chat("pinned")
        assert first.status == 200, first
        assert first.json()["choices"][0]["message"]["content"].startswith("[b:")
        warm = server.chat("warm")  # b is the one loaded
        assert warm.json()["choices"][0]["message"]["content"].startswith("[b:")
        listed = {r["id"]: r for r in server.get("/v1/models").json()["data"]}
        assert listed["warm"]["status"] == {"value": "loaded"} and "box/far" in listed
        peer = server.chat("box/far")
        assert peer.status == 502 and "peer proxy error: peer box:" in peer.json()["error"]["message"]
    finally:
        assert server.terminate() == 0, server.log()
