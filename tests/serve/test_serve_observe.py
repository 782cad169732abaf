"""Observability, end to end: decision records, the swap header, /api/plan, Prometheus
metrics that move with the traffic, the swap log line, and a /health that turns 503 when
the scheduler is wedged (and says why)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from serve_support import model, upstream_cmd

from llamaswap.compiler.plan import CompileOptions, compile_text
from llamaswap.runtime.app import build_app
from llamaswap.runtime.keys import ROUTER

pytestmark = pytest.mark.e2e

PLAN_KEYS = {
    "request",
    "model",
    "running",
    "evict",
    "set",
    "dsl",
    "target_set",
    "cost",
    "candidates",
    "explanation",
}
RECORD_KEYS = {
    "id",
    "time",
    "model",
    "requested",
    "running_before",
    "evicted",
    "set",
    "dsl",
    "rule",
    "cost",
    "target_set",
    "candidates",
    "waited",
    "load_seconds",
    "status",
    "error",
    "explanation",
    "resolution",  # the profile pin / selector choice (null: asked by name)
}


def samples(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = server.get("/metrics")
    assert resp.status == 200, resp
    assert resp.headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_records_header_plan_and_metrics_follow_the_swaps(serve):
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {
                "a": model(upstream_cmd("a"), aliases=["alpha"]),
                "b": model(upstream_cmd("b")),
                "c": model(upstream_cmd("c")),
            },
            "matrix": {"evict_costs": {"b": 5}, "sets": {"pair": "a & b", "alone": "c"}},
        }
    )
    before = samples(server)
    assert value(before, "llamaswap_queue_depth") == 0
    assert value(before, "llamaswap_model_state", model="a", state="stopped") == 1

    first = server.chat("alpha")
    assert first.status == 200
    assert first.headers["X-Llamaswap-Swap"].startswith("model=a; evicted=; set=pair; waited=")

    # What-if against the live running set: c would evict a, from set "alone".
    plan = server.get("/api/plan?model=c")
    assert plan.status == 200, plan
    body = plan.json()
    assert set(body) == PLAN_KEYS
    assert (body["request"], body["model"], body["running"], body["evict"]) == ("c", "c", ["a"], ["a"])
    assert (body["set"], body["dsl"], body["target_set"], body["cost"]) == ("alone", "c", ["c"], 1)
    assert body["candidates"] == [{"set": "alone", "combination": ["c"], "cost": 1}]
    assert body["explanation"] == "Start c in set 'alone' (c), combination [c]: stop a (eviction cost 1)."
    # Asking is speculative: no record, no swap.
    assert len(server.get("/api/decisions").json()["decisions"]) == 1
    assert server.get("/api/plan?model=nope").status == 404
    assert server.get("/api/plan").status == 400

    second = server.chat("c")
    assert second.status == 200
    assert second.headers["X-Llamaswap-Swap"].startswith("model=c; evicted=a; set=alone; waited=")

    records = server.get("/api/decisions?limit=10").json()["decisions"]
    assert [r["model"] for r in records] == ["c", "a"]  # newest first
    newest, oldest = records
    assert set(newest) == RECORD_KEYS and newest["resolution"] is None
    assert (oldest["requested"], oldest["running_before"], oldest["evicted"], oldest["set"]) == (
        "alpha",
        [],
        [],
        "pair",
    )
    assert oldest["target_set"] == ["a", "b"] and oldest["cost"] == 0
    assert (newest["requested"], newest["running_before"], newest["evicted"]) == ("c", ["a"], ["a"])
    assert (newest["set"], newest["dsl"], newest["cost"], newest["rule"]) == (
        "alone",
        "c",
        1,
        "cheapest combination",
    )
    assert newest["candidates"] == []  # c fits one set only: no runner-up
    for record in records:
        assert record["status"] == "ok" and record["error"] is None
        assert record["load_seconds"] > 0
        assert len(record["waited"]) == 1 and record["waited"][0] >= record["load_seconds"]
    assert [r["id"] for r in server.get("/api/decisions?limit=1").json()["decisions"]] == [newest["id"]]
    assert server.get("/api/decisions?limit=x").status == 400

    # One JSON log line per committed swap, with the record's fields.
    logged = [
        json.loads(line.split("llamaswap.swaps: swap ", 1)[1])
        for line in server.get("/logs").body.decode().splitlines()
        if "llamaswap.swaps: swap " in line
    ]
    assert [r["id"] for r in logged] == [oldest["id"], newest["id"]]
    assert logged[1] == newest

    after = samples(server)
    assert value(after, "llamaswap_requests_total", model="a", status="200") == 1
    assert value(after, "llamaswap_requests_total", model="c", status="200") == 1
    assert value(after, "llamaswap_swaps_total", model="a", outcome="ok") == 1
    assert value(after, "llamaswap_swaps_total", model="c", outcome="ok") == 1
    assert value(after, "llamaswap_evictions_total", model="a", reason="swap") == 1
    assert value(after, "llamaswap_load_duration_seconds_count", model="c") == 1
    assert value(after, "llamaswap_queue_wait_seconds_count", model="a") == 1
    assert value(after, "llamaswap_requests_in_flight", model="a") == 0
    assert value(after, "llamaswap_model_state", model="c", state="ready") == 1
    assert value(after, "llamaswap_model_state", model="a", state="stopped") == 1
    assert value(after, "llamaswap_oldest_waiting_seconds") == 0

    # An unknown model is counted too, and leaves no record.
    assert server.chat("nope").status == 404
    assert value(samples(server), "llamaswap_requests_total", model="(unknown)", status="404") == 1
    assert len(server.get("/api/decisions").json()["decisions"]) == 2


def test_health_turns_503_with_the_reason_while_the_scheduler_makes_no_progress(serve):
    gate = serve.gate()
    server = serve(
        {
            "healthCheckTimeout": 120,
            "routing": {"scheduler": {"settings": {"fifo": {"stall_timeout": 1}}}},
            "models": {"stuck": model(gate.wrap(upstream_cmd("stuck")))},
        }
    )
    assert server.get("/health").status == 200
    result: dict = {}
    waiter = threading.Thread(target=lambda: result.update(resp=server.chat("stuck")))
    waiter.start()
    try:
        health = server.wait(
            lambda: (r := server.get("/health")).status == 503 and r, "/health to report the stall"
        )
        reason = health.body.decode()
        assert "stalled" in reason and "1 request(s) waiting" in reason, reason
        gauges = samples(server)
        assert value(gauges, "llamaswap_queue_depth") == 1
        assert value(gauges, "llamaswap_oldest_waiting_seconds") >= 1
    finally:
        gate.open()
        waiter.join(60)
    assert result["resp"].status == 200
    server.wait(lambda: server.get("/health").status == 200, "/health to recover")


def test_health_reports_a_dead_scheduler_task():
    plan = compile_text(
        "models:\n  m:\n    cmd: sleep 1000\n    checkEndpoint: none\n    proxy: http://127.0.0.1:9\n",
        "inline.yaml",
        CompileOptions(),
    )
    assert plan.ok, plan.diagnostics

    async def scenario() -> tuple[int, str, int, str]:
        app = build_app(plan)
        async with TestClient(TestServer(app)) as client:
            ok = await client.get("/health")
            ok_text = await ok.text()
            owner = app[ROUTER].owner
            owner.cancel()  # wedge it for good: the owner task is gone
            await asyncio.gather(owner, return_exceptions=True)
            dead = await client.get("/health")
            return ok.status, ok_text, dead.status, await dead.text()

    ok_status, ok_text, dead_status, dead_text = asyncio.run(scenario())
    assert (ok_status, ok_text) == (200, "OK")
    assert dead_status == 503
    assert "scheduler task" in dead_text and "cancelled" in dead_text
