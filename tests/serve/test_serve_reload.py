"""Hot reload end to end: a real `llamaswap serve`, real fake-upstream processes, real files.

Each test serves a config, changes the file, reloads (POST /api/config/reload, SIGHUP or
--watch-config) and checks which processes survived by their PIDs."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from serve_support import (
    Serve,
    ServeFactory,
    descendants,
    free_port_block,
    in_groups,
    model,
    upstream_cmd,
)
from support.upstream import pid_alive

pytestmark = pytest.mark.e2e

STREAM = {"stream": True, "tokens": 120, "token_delay": 0.05}  # about 6 s of tokens


def config(models: dict, start_port: int, **top) -> dict:
    return {"startPort": start_port, "healthCheckTimeout": 30, "models": models, **top}


def together(*names: str, **extra) -> dict:
    """Models that may all run at once (one non-swapping group)."""
    return {"groups": {"all": {"swap": False, "exclusive": False, "members": list(names)}}, **extra}


def write(path: Path, cfg: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)


def pids(server: Serve) -> dict[str, int]:
    return {m: e["pid"] for m, e in server.running().items() if e["state"] == "ready"}


def reload(server: Serve) -> dict:
    resp = server.post("/api/config/reload")
    assert resp.status in (200, 422), resp
    return resp.json()


def wait_settled(server: Serve) -> dict:
    """Until no model is retiring (restarts, removals and evictions are done)."""
    return server.wait(
        lambda: (s := server.scheduler())["retiring"] == {} and not s["swaps"] and s,
        "the reload's restarts and stops to finish",
    )


def start_stream(server: Serve, model_id: str):
    call = server.chat_call(model_id, **STREAM)
    events = call.events()
    first = next(events)
    assert json.loads(first)["choices"][0]["delta"]["content"]
    return call, events


def finish_stream(events) -> list[str]:
    rest = list(events)
    assert rest and rest[-1] == "[DONE]", rest[-3:]
    return rest


def test_editing_one_models_cmd_restarts_only_that_model(serve: ServeFactory, tmp_path: Path):
    port = free_port_block(3)
    models = {m: model(upstream_cmd(m)) for m in ("a", "b", "c")}
    server = serve(config(models, port, **together("a", "b", "c")))
    path = tmp_path / "config.yaml"
    for m in ("a", "b", "c"):
        assert server.chat(m).status == 200
    before = pids(server)
    assert set(before) == {"a", "b", "c"}
    call, events = start_stream(server, "a")  # in flight through an unchanged model

    models["b"] = model(upstream_cmd("b", token_delay=0.001))
    write(path, config(models, port, **together("a", "b", "c")))
    record = reload(server)
    assert record["ok"], record
    changes = record["changes"]
    assert changes["restarted"] == ["b"] and changes["unchanged"] == ["a", "c"]
    assert changes["fields"] == {"b": ["cmd"]}

    after = server.wait(
        lambda: (p := pids(server)).get("b") not in (None, before["b"]) and p,
        "b to run again with its new cmd",
    )
    assert after["a"] == before["a"] and after["c"] == before["c"]
    assert not pid_alive(before["b"])
    assert "--token-delay" in server.running()["b"]["cmd"]
    finish_stream(events)  # the stream through a survived the reload
    call.disconnect()
    assert server.chat("b").status == 200
    assert pids(server)["a"] == before["a"]
    assert "config reloaded (api" in server.log() and "restarted [b]" in server.log()


def test_a_broken_config_changes_nothing_and_says_why(serve: ServeFactory, tmp_path: Path):
    port = free_port_block(2)
    models = {m: model(upstream_cmd(m)) for m in ("a", "b")}
    server = serve(config(models, port, **together("a", "b")))
    path = tmp_path / "config.yaml"
    assert server.chat("a").status == 200
    before = pids(server)

    good = path.read_text()
    path.write_text(good.replace("members:\n    - a", "members:\n    - ghost"))
    record = reload(server)
    assert not record["ok"] and "error" in record["error"]
    text = record["diagnostics_text"]
    assert "config.yaml:" in text and "ghost" in text and "error[" in text

    view = server.get("/api/config").json()
    assert view["last_reload"]["ok"] is False and view["last_reload"]["error"] == record["error"]
    assert [m["id"] for m in view["models"]] == ["a", "b"]
    health = server.get("/health")
    assert health.status == 200 and b"last config reload failed" in health.body
    metrics = server.get("/metrics").body.decode()
    assert 'llamaswap_reloads_total{outcome="failed"} 1.0' in metrics
    # The old plan still serves, with the same process.
    resp = server.chat("a")
    assert resp.status == 200 and resp.headers["X-Upstream-Pid"] == str(before["a"])
    assert server.chat("b").status == 200
    assert (
        "config reload failed (api)" in server.log() and "still serving the previous config" in server.log()
    )

    path.write_text(good)  # fixed: the next reload works and /health forgets the failure
    assert reload(server)["ok"]
    assert server.get("/health").body == b"OK"
    assert len(server.get("/api/reloads").json()["reloads"]) == 2


def test_removing_a_running_model_mid_stream_stops_it_after_the_stream(serve: ServeFactory, tmp_path: Path):
    port = free_port_block(2)
    models = {m: model(upstream_cmd(m)) for m in ("a", "b")}
    server = serve(config(models, port, **together("a", "b")))
    path = tmp_path / "config.yaml"
    assert server.chat("a").status == 200
    call, events = start_stream(server, "b")
    before = pids(server)

    del models["b"]
    write(path, config(models, port, **together("a")))
    server.send(signal.SIGHUP)  # the signal trigger
    record = server.wait(
        lambda: (r := server.get("/api/reloads").json()["reloads"]) and r[0],
        "the SIGHUP reload to be recorded",
    )
    assert record["ok"] and record["trigger"] == "SIGHUP" and record["changes"]["removed"] == ["b"]
    # Still streaming: the process lives, marked removed; new requests for b get 404.
    assert pid_alive(before["b"])
    assert server.running()["b"].get("removed") is True
    assert server.chat("b").status == 404
    assert server.chat("a").status == 200
    rest = finish_stream(events)
    assert len(rest) >= 100  # the whole stream, not a cut one
    call.disconnect()
    server.wait(lambda: not pid_alive(before["b"]), "b's process to stop after its stream")
    # The process exits before serve has reaped it and dropped it from /running.
    server.wait(lambda: "b" not in server.running(), "b to leave /running once stopped")
    assert pids(server)["a"] == before["a"]


MATRIX_MODELS = ("a", "b", "c")


def matrix(sets: dict, costs: dict) -> dict:
    return {"matrix": {"evict_costs": costs, "sets": sets}}


def test_a_new_matrix_that_forbids_the_running_pair_evicts_the_cheapest(serve: ServeFactory, tmp_path: Path):
    port = free_port_block(3)
    models = {m: model(upstream_cmd(m)) for m in MATRIX_MODELS}
    costs = {"a": 5, "b": 2, "c": 1}
    server = serve(config(models, port, **matrix({"all": "a & b & c"}, costs)))
    path = tmp_path / "config.yaml"
    for m in MATRIX_MODELS:
        assert server.chat(m).status == 200
    before = pids(server)
    assert set(before) == set(MATRIX_MODELS)

    # [a, b, c] no longer allowed. Dropping c (1) leaves [a, b]: not allowed; dropping b
    # (2) leaves [a, c]: allowed. So b, and only b, goes.
    write(path, config(models, port, **matrix({"ab": "a | b", "ac": "a & c"}, costs)))
    record = reload(server)
    assert record["ok"], record
    assert record["changes"]["evict"] == ["b"], record["changes"]
    assert "does not allow [a, b, c]" in record["changes"]["evict_reason"]
    wait_settled(server)
    server.wait(lambda: not pid_alive(before["b"]), "b to be evicted")
    after = pids(server)
    assert after == {"a": before["a"], "c": before["c"]}
    assert "evicting b" in server.log()


def test_the_watcher_notices_a_change_and_waits_out_partial_writes(serve: ServeFactory, tmp_path: Path):
    port = free_port_block(3)
    models = {m: model(upstream_cmd(m)) for m in ("a", "b")}
    server = serve(config(models, port, **together("a", "b")), args=("--watch-config",))
    path = tmp_path / "config.yaml"
    assert server.chat("a").status == 200
    assert "watching" in server.log()

    models["c"] = model(upstream_cmd("c"))
    text = yaml.safe_dump(config(models, port, **together("a", "b", "c")), sort_keys=False)
    changed = time.monotonic()
    with open(path, "w") as f:  # an editor writing in two steps, the first one broken
        f.write(text[: len(text) // 2] + "\n  [")
        f.flush()
        f.seek(0)
        f.write(text)
        f.truncate()
    record = server.wait(
        lambda: (r := server.get("/api/reloads").json()["reloads"]) and r[0], "the watcher to reload"
    )
    noticed = time.monotonic() - changed
    assert record["ok"] and record["trigger"] == "watch" and record["changes"]["added"] == ["c"]
    assert noticed < 4.0, f"the change took {noticed:.2f}s to be noticed"
    assert server.chat("c").status == 200
    assert len(server.get("/api/reloads").json()["reloads"]) == 1  # the partial write was not compiled


def fake_upstreams_named(server: Serve, name: str) -> list[int]:
    """PIDs of this server's live fake upstreams started with `--name NAME` (other test runs
    on the machine have theirs)."""
    out = []
    for pid in sorted(descendants(server.proc.pid)):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"fake-upstream" in argv and b"--name" in argv:
            i = argv.index(b"--name")
            if i + 1 < len(argv) and argv[i + 1] == name.encode():
                out.append(pid)
    return out


def test_fifty_reloads_under_traffic_leave_no_orphan_or_duplicate(serve: ServeFactory, tmp_path: Path):
    port = free_port_block(3)
    base = {"a": model(upstream_cmd("a")), "b": model(upstream_cmd("b"))}
    server = serve(config(base, port, **together("a", "b")))
    path = tmp_path / "config.yaml"
    for m in ("a", "b"):
        assert server.chat(m).status == 200
    a_pid = pids(server)["a"]
    statuses: dict[str, list[int]] = {"a": [], "b": []}
    stop = threading.Event()

    def traffic(model_id: str) -> None:
        while not stop.is_set():
            statuses[model_id].append(server.chat(model_id, tokens=3).status)

    threads = [threading.Thread(target=traffic, args=(m,), daemon=True) for m in ("a", "b")]
    for t in threads:
        t.start()
    started = time.monotonic()
    seen_b: set[int] = set()
    try:
        for i in range(50):
            models = dict(base)
            # Every other reload changes b's cmd (a restart); every third adds c.
            models["b"] = model(upstream_cmd("b", token_delay=0.001 * (i % 2)))
            if i % 3 == 0:
                models["c"] = model(upstream_cmd("c"))
            write(path, config(models, port, **together(*models)))
            record = reload(server)
            assert record["ok"], record
            seen_b.update(fake_upstreams_named(server, "b"))
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    elapsed = time.monotonic() - started
    wait_settled(server)
    # Every request was served (a restart drains first: nobody gets an error).
    assert statuses["a"] and statuses["b"]
    assert set(statuses["a"]) == {200} and set(statuses["b"]) == {200}, {
        m: sorted(set(s)) for m, s in statuses.items()
    }
    # The unchanged model never restarted; b has exactly one process; the old ones are gone.
    assert pids(server)["a"] == a_pid
    assert fake_upstreams_named(server, "a") == [a_pid]
    live_b = server.wait(
        lambda: len(fake_upstreams_named(server, "b")) <= 1 and fake_upstreams_named(server, "b"),
        "one process for b",
    )
    assert len(live_b) == 1
    assert not [p for p in seen_b if p not in live_b and pid_alive(p)]
    assert not in_groups({p for p in seen_b if p not in live_b})
    assert elapsed < 30, f"50 reloads took {elapsed:.1f}s"


def test_a_config_dir_is_watched_and_a_new_file_adds_its_models(serve: ServeFactory, tmp_path: Path):
    port = free_port_block(3)
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "b.yaml").write_text(yaml.safe_dump({"models": {"b": model(upstream_cmd("b"))}}))
    server = serve(
        config({"a": model(upstream_cmd("a"))}, port), args=("--config-dir", str(conf_d), "--watch-config")
    )
    assert server.chat("b").status == 200
    write(conf_d / "c.yaml", {"models": {"c": model(upstream_cmd("c"))}})
    record = server.wait(
        lambda: (r := server.get("/api/reloads").json()["reloads"]) and r[0],
        "the watcher to reload the directory",
    )
    assert record["ok"] and record["changes"]["added"] == ["c"], record
    assert record["changes"]["unchanged"] == ["a", "b"]
    assert server.chat("c").status == 200
    view = server.get("/api/config").json()
    assert sorted(Path(f).name for f in view["source"]) == ["b.yaml", "c.yaml", "config.yaml"]
