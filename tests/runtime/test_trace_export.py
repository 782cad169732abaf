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
    r = CliRunner().invoke(cli, ["trace", "export"])
    assert r.exit_code == 2 and "give CONFIG" in r.output
