"""`llamaswap trace export`: the activity store's recorded requests as a trace, and back."""

from __future__ import annotations

import json
import sqlite3

from click.testing import CliRunner

from llamaswap.cli import cli
from llamaswap.runtime.activity import ActivityStore, make_record
from llamaswap.runtime.simulate import TraceRequest, parse_trace, trace_from_activity

T0 = 1_764_000_000.0  # some epoch second

# (arrival offset s, model, wait s, total s), recorded in completion order, not arrival order.
RECORDED = [
    (0.0, "a", 0.0, 1.5),
    (30.0, "b", 2.0, 3.0),
    (10.0, "a", 0.0, 2.0),
    (45.5, "a", 1.0, 4.0),
    (60.0, "b", 0.5, 1.0),
    (60.0, "a", 0.25, 0.75),
]


def record_activity(path) -> None:
    store = ActivityStore(path)
    store.open()
    for at, model, wait, total in RECORDED:
        store.record(
            make_record(
                model=model,
                requested=model,
                req_path="/v1/chat/completions",
                status=200,
                content_type="application/json",
                arrived_wall=T0 + at,
                wait_s=wait,
                duration_s=total,
                tap=None,
            )
        )
    store.record(
        make_record(
            model="(unknown)",
            requested="ghost",
            req_path="/v1/chat/completions",
            status=404,
            content_type="application/json",
            arrived_wall=T0 + 5,
            wait_s=0,
            duration_s=0.01,
            tap=None,
        )
    )
    assert store.flush()
    store.close()


CONFIG = """\
models:
  a: {cmd: "llamaswap fake-upstream --port ${PORT}"}
  b: {cmd: "llamaswap fake-upstream --port ${PORT}"}
groups:
  g: {swap: true, exclusive: true, members: [a, b]}
"""


def test_trace_from_activity_is_relative_and_in_arrival_order():
    rows = [(T0 + at, m, w * 1000, t * 1000) for at, m, w, t in RECORDED]
    assert trace_from_activity(rows) == [
        TraceRequest(0.0, "a", 1.5),
        TraceRequest(10.0, "a", 2.0),
        TraceRequest(30.0, "b", 1.0),
        TraceRequest(45.5, "a", 3.0),
        TraceRequest(60.0, "b", 0.5),
        TraceRequest(60.0, "a", 0.5),
    ]
    assert trace_from_activity([]) == []


def test_export_then_replay_reproduces_the_recorded_order(tmp_path):
    db = tmp_path / "activity.sqlite3"
    record_activity(db)
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG + f"store: {{path: {db}}}\n")
    out = tmp_path / "trace.jsonl"
    r = CliRunner().invoke(cli, ["trace", "export", str(config), "-o", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    recorded = sorted(RECORDED, key=lambda x: x[0])  # arrival order (ties: recording order)
    trace = parse_trace(out.read_text())
    assert [(t.at, t.model, t.duration) for t in trace] == [
        (at, m, total - wait) for at, m, wait, total in recorded
    ]
    # Replayed, the requests are served in the order they were recorded.
    r = CliRunner().invoke(
        cli,
        [
            "plan",
            str(config),
            "--trace",
            str(out),
            "--verbose",
            "--format",
            "json",
            "--default-load-time",
            "1",
        ],
        catch_exceptions=False,
    )
    replay = json.loads(r.output)
    assert [p["model"] for p in replay["per_request"]] == [m for _, m, _, _ in recorded]
    assert replay["served_order"] == [m for _, m, _, _ in recorded]
    # --db, time and model filters.
    r = CliRunner().invoke(
        cli,
        ["trace", "export", "--db", str(db), "--since", "1970-01-01T00:00:00Z", "--model", "b"],
        catch_exceptions=False,
    )
    assert [json.loads(line)["model"] for line in r.output.splitlines() if line.startswith("{")] == ["b", "b"]


def test_export_errors_are_clear(tmp_path):
    r = CliRunner().invoke(cli, ["trace", "export", "--db", str(tmp_path / "none.sqlite3")])
    assert r.exit_code == 1 and "no activity database there" in r.output
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    r = CliRunner().invoke(cli, ["trace", "export", "--db", str(other)])
    assert r.exit_code == 1 and "cannot read the activity table" in r.output
    r = CliRunner().invoke(cli, ["trace", "export", "--db", str(other), "--since", "yesterday"])
    assert r.exit_code == 2 and "not an RFC 3339 time" in r.output


def test_without_config_or_db_the_default_store_is_exported(tmp_path, monkeypatch):
    """`serve` without a config (the demo) or with no store.path writes the default store:
    `trace export` without CONFIG reads that one."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    r = CliRunner().invoke(cli, ["trace", "export"])
    assert (
        r.exit_code == 1
        and f"{tmp_path / 'data' / 'llamaswap' / 'activity.sqlite3'}: no activity" in r.output
    )
    (tmp_path / "data" / "llamaswap").mkdir(parents=True)
    record_activity(tmp_path / "data" / "llamaswap" / "activity.sqlite3")
    r = CliRunner().invoke(cli, ["trace", "export"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert len(parse_trace(r.output)) == len(RECORDED)


# -- load times: recorded by serve, exported, replayed -------------------------------------------


def changed(model: str, old: str, new: str, at: float):
    from llamaswap.runtime.processes import ProcessState, StateChanged

    return StateChanged(model, ProcessState(old), ProcessState(new), at, None, "")


def record_loads(path, loads: list[tuple[str, float]]) -> None:
    """Each (model, seconds) as the process table reports it: stopped -> starting -> ready."""
    store = ActivityStore(path)
    store.open()
    for model, seconds in loads:
        store.process_changed(changed(model, "stopped", "starting", 100.0))
        store.process_changed(changed(model, "starting", "ready", 100.0 + seconds))
        store.process_changed(changed(model, "ready", "stopping", 200.0))
        store.process_changed(changed(model, "stopping", "stopped", 201.0))
    # A start that failed is no load.
    store.process_changed(changed("b", "stopped", "starting", 300.0))
    store.process_changed(changed("b", "starting", "stopped", 330.0))
    assert store.flush()
    store.close()


def test_loads_are_kept_and_exported_as_median_load_times(tmp_path):
    from llamaswap.runtime.activity import load_times

    db = tmp_path / "activity.sqlite3"
    record_activity(db)
    record_loads(db, [("a", 4.0), ("a", 5.0), ("a", 9.0), ("b", 2.5)])
    with sqlite3.connect(db) as con:
        assert load_times(con) == {"a": 5.0, "b": 2.5}
        assert load_times(con, models=["b"]) == {"b": 2.5}
        # A window with no loads in it: every model's median over all its loads.
        assert load_times(con, since=0, until=1) == {"a": 5.0, "b": 2.5}
        assert con.execute("PRAGMA user_version").fetchone()[0] == 5
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG + f"store: {{path: {db}}}\n")
    out = tmp_path / "trace.jsonl"
    r = CliRunner().invoke(cli, ["trace", "export", str(config), "-o", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert '{"load_times": {"a": 5.0, "b": 2.5}}' in text.splitlines()
    assert len(parse_trace(text)) == len(RECORDED)  # the load times line is no request

    def replay(*extra: str) -> tuple[dict, str]:
        args = ["plan", str(config), "--trace", str(out), "--compare", "fifo", *extra]
        as_json = CliRunner().invoke(cli, [*args, "--format", "json"], catch_exceptions=False)
        as_text = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert as_json.exit_code == 0 and as_text.exit_code == 0, as_json.output + as_text.output
        return json.loads(as_json.output)["policies"]["fifo"], as_text.output

    fifo, shown = replay()
    # Swaps alternate a and b: every load of a costs 5 s, every load of b 2.5 s.
    assert fifo["load_seconds"] == 5.0 * fifo["loads"]["a"] + 2.5 * fifo["loads"]["b"]
    assert "load times from the trace: a=5s, b=2.5s" in shown
    # --load-time wins over the trace for the model it names.
    fifo, shown = replay("--load-time", "a=1")
    assert fifo["load_seconds"] == 1.0 * fifo["loads"]["a"] + 2.5 * fifo["loads"]["b"]
    assert "load times from the trace: b=2.5s" in shown


def test_a_bad_load_times_line_is_a_located_error(tmp_path):
    from llamaswap.runtime.simulate import TraceError, trace_load_times

    good = '{"load_times": {"a": 3}}\n{"at": 0, "model": "a"}\n{"load_times": {"a": 4, "b": 0}}\n'
    assert trace_load_times(good) == {"a": 4.0, "b": 0.0}
    bad = '{"at": 0, "model": "a"}\n{"load_times": {"a": -1}, "x": 1}\n{"load_times": [1]}\n'
    try:
        parse_trace(bad)
    except TraceError as exc:
        assert [(i.line, i.message) for i in exc.issues] == [
            (2, "unknown key 'x' beside \"load_times\""),
            (2, "\"load_times\": 'a' must be a model name with a number of seconds >= 0"),
            (3, '"load_times" must be an object of model: seconds'),
        ]
    else:
        raise AssertionError("a bad load_times line was accepted")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    trace = tmp_path / "t.jsonl"
    trace.write_text(bad)
    r = CliRunner().invoke(cli, ["plan", str(config), "--trace", str(trace)])
    assert r.exit_code == 1 and f"{trace}:3: error:" in r.output, r.output


def test_with_config_requests_for_models_it_lacks_are_left_out_and_counted(tmp_path):
    """A store that another config wrote to as well (the default store is shared): exported
    for CONFIG, the trace holds only CONFIG's models and replays against it."""
    db = tmp_path / "activity.sqlite3"
    record_activity(db)
    store = ActivityStore(db)
    store.open()
    for at in (1.0, 2.0, 3.0):
        store.record(
            make_record(
                model="other-config-model",
                requested="other-config-model",
                req_path="/v1/chat/completions",
                status=200,
                content_type="application/json",
                arrived_wall=T0 + at,
                wait_s=0,
                duration_s=1,
                tap=None,
            )
        )
    assert store.flush()
    store.close()
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    r = CliRunner().invoke(cli, ["trace", "export", str(config), "--db", str(db)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert f"# left out, for models {config} does not have: other-config-model (3)" in r.output
    assert [t.model for t in parse_trace(r.output)] == [
        m for _, m, _, _ in sorted(RECORDED, key=lambda x: x[0])
    ]
    # Without CONFIG nothing is left out: the trace is the store's.
    r = CliRunner().invoke(cli, ["trace", "export", "--db", str(db)], catch_exceptions=False)
    assert sum(t.model == "other-config-model" for t in parse_trace(r.output)) == 3
