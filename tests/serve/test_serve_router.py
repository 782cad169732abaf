"""llama-swap's router scenarios, end to end: real `llamaswap serve`, real fake upstreams.

- models sharing a combination load in parallel and stay loaded together, then a model
  that conflicts with them evicts both;
- a request for an incompatible model waits for the swap in flight, then evicts;
- request collation (ABCABC is served AABBCC with one swap per model);
- the group policy: no groups means one model at a time, and a `swap: false` group loads
  its members together.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_support import model, upstream_cmd
from support.upstream import pid_alive

pytestmark = pytest.mark.e2e

SWAP_HEADER = re.compile(
    r"^model=(?P<model>[^;]*); evicted=(?P<evicted>[^;]*); set=(?P<set>[^;]*); "
    r"waited=(?P<waited>\d+\.\d{3})s$"
)


def swap_of(resp) -> dict[str, str]:
    value = resp.headers.get("X-Llamaswap-Swap")
    assert value is not None, f"no X-Llamaswap-Swap header: {resp.headers}"
    match = SWAP_HEADER.match(value)
    assert match, f"malformed X-Llamaswap-Swap: {value!r}"
    return match.groupdict()


def answer_of(resp) -> str:
    assert resp.status == 200, (resp.status, resp.body[:500])
    return resp.json()["choices"][0]["message"]["content"]


def test_models_sharing_a_combination_load_in_parallel_then_a_conflicting_one_evicts_them(serve):
    gate = serve.gate()
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {
                "a": model(gate.wrap(upstream_cmd("a"))),
                "b": model(gate.wrap(upstream_cmd("b"))),
                "c": model(upstream_cmd("c")),
            },
            "matrix": {"sets": {"pair": "a & b", "alone": "c"}},
        }
    )
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(server.chat, "a")
        fb = pool.submit(server.chat, "b")
        # Neither can become ready before the gate opens: seeing both starting at once
        # proves the second swap did not wait for the first.
        server.wait(
            lambda: (
                {m: e["state"] for m, e in server.running().items()} == {"a": "starting", "b": "starting"}
            ),
            "a and b both starting",
        )
        assert sorted(server.scheduler()["swaps"]) == ["a", "b"]
        gate.open()
        ra, rb = fa.result(), fb.result()
    assert answer_of(ra).startswith(f"[a:{ra.headers['X-Upstream-Pid']}]")
    assert answer_of(rb).startswith(f"[b:{rb.headers['X-Upstream-Pid']}]")
    for resp, name in ((ra, "a"), (rb, "b")):
        swap = swap_of(resp)
        assert (swap["model"], swap["evicted"], swap["set"]) == (name, "", "pair")
    assert {m: e["state"] for m, e in server.running().items()} == {"a": "ready", "b": "ready"}
    pids = {m: e["pid"] for m, e in server.running().items()}
    # Both stay loaded: more requests are fast-path grants to the same processes, with no
    # swap header.
    for name, first in (("a", ra), ("b", rb)):
        resp = server.chat(name)
        assert resp.headers["X-Upstream-Pid"] == first.headers["X-Upstream-Pid"]
        assert "X-Llamaswap-Swap" not in resp.headers
    # The model outside the combination evicts both.
    rc = server.chat("c")
    assert answer_of(rc).startswith("[c:")
    swap = swap_of(rc)
    assert (swap["model"], swap["evicted"], swap["set"]) == ("c", "a,b", "alone")
    assert set(server.running()) == {"c"}
    assert not pid_alive(pids["a"]) and not pid_alive(pids["b"])
    assert server.scheduler()["swaps_started"] == 3


def test_incompatible_request_waits_for_the_swap_in_flight_then_evicts(serve):
    gate = serve.gate()
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {"a": model(gate.wrap(upstream_cmd("a"))), "c": model(upstream_cmd("c"))},
            "matrix": {"sets": {"only_a": "a", "only_c": "c"}},
        }
    )
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(server.chat, "a")
        server.wait_state("a", "starting")
        fc = pool.submit(server.chat, "c")
        snap = server.wait_queued("c")
        # c collides with a's swap: queued, not started, a's swap undisturbed.
        assert snap["swaps"] == ["a"]
        assert snap["models"]["c"]["state"] == "stopped"
        assert server.state("c") == "stopped"
        gate.open()
        ra, rc = fa.result(), fc.result()
    # a was served by the process its swap started, before c evicted it.
    assert answer_of(ra).startswith("[a:")
    assert swap_of(ra)["evicted"] == ""
    assert answer_of(rc).startswith("[c:")
    swap = swap_of(rc)
    assert (swap["model"], swap["evicted"]) == ("c", "a")
    # c's wait covers a's whole load, so it is at least as long as a's.
    assert float(swap["waited"]) > 0
    assert set(server.running()) == {"c"}
    assert server.scheduler()["swaps_started"] == 2


def test_request_collation_serves_abcabc_as_aabbcc(serve):
    gate = serve.gate()
    models = {
        "a": model(gate.wrap(upstream_cmd("a"))),
        "b": model(upstream_cmd("b")),
        "c": model(upstream_cmd("c")),
    }
    server = serve(
        {"healthCheckTimeout": 30, "models": models, "matrix": {"sets": {"sa": "a", "sb": "b", "sc": "c"}}}
    )
    order = ["a", "b", "c", "a", "b", "c"]
    with ThreadPoolExecutor(len(order)) as pool:
        futures = []
        for i, name in enumerate(order):
            futures.append(pool.submit(server.chat, name, f"request {i}"))
            # Submit in this exact order: each is admitted before the next is sent.
            server.wait_reserved(name, order[: i + 1].count(name))
        snap = server.scheduler()
        assert snap["swaps"] == ["a"]
        assert [q["model"] for q in snap["queue"]] == ["b", "c", "b", "c"]
        assert snap["models"]["a"]["waiting"] == 2
        gate.open()
        responses = [f.result() for f in futures]
    pids = [r.headers["X-Upstream-Pid"] for r in responses]
    for r in responses:
        assert r.status == 200
    # One process per model served both of its requests: one swap each.
    assert pids[0] == pids[3] and pids[1] == pids[4] and pids[2] == pids[5]
    assert len(set(pids)) == 3
    assert server.scheduler()["swaps_started"] == 3
    # Served in the order AABBCC: b's swap evicted a, c's evicted b.
    assert swap_of(responses[1])["evicted"] == swap_of(responses[4])["evicted"] == "a"
    assert swap_of(responses[2])["evicted"] == swap_of(responses[5])["evicted"] == "b"


def test_groups_default_runs_one_model_at_a_time_and_swap_false_group_runs_together(serve):
    gate = serve.gate()
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {
                "x": model(upstream_cmd("x")),
                "p": model(gate.wrap(upstream_cmd("p"))),
                "q": model(gate.wrap(upstream_cmd("q"))),
            },
            "groups": {"team": {"swap": False, "exclusive": True, "members": ["p", "q"]}},
        }
    )
    with ThreadPoolExecutor(2) as pool:
        fp = pool.submit(server.chat, "p")
        fq = pool.submit(server.chat, "q")
        server.wait(
            lambda: (
                {m: e["state"] for m, e in server.running().items()} == {"p": "starting", "q": "starting"}
            ),
            "p and q both starting",
        )
        gate.open()
        rp, rq = fp.result(), fq.result()
    assert swap_of(rp)["evicted"] == swap_of(rq)["evicted"] == ""
    assert set(server.running()) == {"p", "q"}
    rx = server.chat("x")  # (default) is exclusive: it evicts the whole team
    assert sorted(swap_of(rx)["evicted"].split(",")) == ["p", "q"]
    assert set(server.running()) == {"x"}
