"""Placement end to end (issue 17, Place): `llamaswap serve` on a config with resources,
real fake upstreams. Two models placed on different devices run together and each sees its
own CUDA_VISIBLE_DEVICES; a model that needs a whole device evicts the cheapest way and
takes that device; and `plan --trace` predicts every decision serve made on the same trace."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from serve_support import DEADLINE, model, upstream_cmd
from support.upstream import http

pytestmark = pytest.mark.e2e

CONFIG = {
    "resources": {"gpu0": {"vram": "24GiB"}, "gpu1": {"vram": "24GiB", "index": 5}},
    "models": {
        "a": model(upstream_cmd("a"), resources={"vram": "20GiB"}),
        "b": model(upstream_cmd("b") + " --name b-on-${GPU}", resources={"vram": "20GiB"}),
        "big": model(upstream_cmd("big"), resources={"vram": "24GiB"}),
    },
    "matrix": {"evict_costs": {"a": 5}, "sets": "auto"},
}
TRACE = [("a", 0), ("b", 10), ("big", 20)]  # far apart: each one done before the next


def visible(server, model_id: str) -> dict:
    info = http("GET", server.upstream_url(model_id) + "/debug/info", timeout=DEADLINE)
    assert info.status == 200, info
    return info.json()


def test_placed_models_see_their_own_devices_and_plan_predicts_serve(serve, tmp_path):
    server = serve(CONFIG)
    for m, _ in TRACE[:2]:
        assert server.chat(m).status == 200
    running = server.running()
    assert set(running) == {"a", "b"}  # together, one per device
    assert (running["a"]["devices"], running["b"]["devices"]) == (["gpu0"], ["gpu1"])
    assert visible(server, "a")["visible_devices"] == {
        "CUDA_VISIBLE_DEVICES": "0",
        "HIP_VISIBLE_DEVICES": "0",
    }
    b = visible(server, "b")
    assert b["visible_devices"] == {"CUDA_VISIBLE_DEVICES": "5", "HIP_VISIBLE_DEVICES": "5"}
    assert b["name"] == "b-on-5"  # ${GPU} in cmd, substituted at start

    # big needs a whole device: b (cost 1) goes rather than a (cost 5); big takes gpu1.
    what_if = server.get("/api/plan?model=big").json()
    assert (what_if["evict"], what_if["devices"]) == (["b"], ["gpu1"])
    assert server.chat("big").status == 200
    running = server.running()
    assert set(running) == {"a", "big"}
    assert running["big"]["devices"] == ["gpu1"]
    assert visible(server, "big")["visible_devices"]["CUDA_VISIBLE_DEVICES"] == "5"

    records = list(reversed(server.get("/api/decisions?limit=10").json()["decisions"]))
    served = [{k: r[k] for k in ("model", "running_before", "evicted", "set", "devices")} for r in records]
    assert [(d["model"], d["evicted"], d["devices"]) for d in served] == [
        ("a", [], ["gpu0"]),
        ("b", [], ["gpu1"]),
        ("big", ["b"], ["gpu1"]),
    ]

    # The same trace through `plan --trace` makes exactly these decisions.
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps({"at": at, "model": m, "duration": 0.5}) + "\n" for m, at in TRACE))
    config = tmp_path / "config.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "llamaswap", "plan", str(config), "--trace", str(trace), "--verbose"]
        + ["--format", "json"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["decisions"] == served


def test_a_reload_that_declares_resources_counts_the_running_models(serve, tmp_path):
    plain = {m: model(upstream_cmd(m)) for m in ("a", "b", "big")}
    sets = {"ab": "a & b", "a_big": "a & big", "b_big": "b & big"}
    server = serve({"models": plain, "matrix": {"evict_costs": {"a": 5}, "sets": sets}})
    assert server.chat("a").status == 200 and server.chat("b").status == 200
    path = tmp_path / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["resources"] = CONFIG["resources"]
    for m, need in (("a", "20GiB"), ("b", "20GiB"), ("big", "24GiB")):
        cfg["models"][m]["resources"] = {"vram": need}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    record = server.post("/api/config/reload").json()
    assert record["ok"], record
    assert set(server.running()) == {"a", "b"}  # both keep running
    log = server.wait(lambda: "counted on gpu1" in (text := server.log()) and text, "the placement log lines")
    assert "reload: a was running before resources were declared: counted on gpu0" in log
    assert "reload: b was running before resources were declared: counted on gpu1" in log
    # big needs a whole device: b (cost 1) goes, and big takes b's device, gpu1; uncounted,
    # both devices would have looked empty and big would have gone to gpu0, under a.
    what_if = server.get("/api/plan?model=big").json()
    assert (what_if["evict"], what_if["devices"]) == (["b"], ["gpu1"])
    assert server.chat("big").status == 200
    assert set(server.running()) == {"a", "big"}
    assert visible(server, "big")["visible_devices"]["CUDA_VISIBLE_DEVICES"] == "5"
