"""`ui.activity.session_id`, as in llama-swap: the request headers whose value the Activity
page shows as the session ID (names trimmed, empty and repeated ones dropped; unset means
X-Session-ID and X-Litellm-Session-Id)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from serve_support import free_port_block, start_serve, upstream_cmd

from llamaswap.compiler.plan import compile_text
from llamaswap.runtime.activity import session_headers, ui_config


def config_of(text: str):
    plan = compile_text(text, "c.yaml")
    assert plan.ok, plan.diagnostics
    return plan.config


def test_session_headers_are_read_as_llama_swap_reads_them() -> None:
    base = "models:\n  a: {cmd: 'x --port ${PORT}'}\n"
    assert session_headers(config_of(base)) == ("X-Session-ID", "X-Litellm-Session-Id")
    configured = config_of(
        base + "ui:\n  activity:\n    session_id: [' X-Trace-ID ', '', x-trace-id, X-Session-ID]\n"
    )
    assert session_headers(configured) == ("X-Trace-ID", "X-Session-ID")
    assert session_headers(config_of(base + "ui: {activity: {session_id: []}}\n")) == ()
    assert ui_config(configured) == {"activity": {"session_id": ["X-Trace-ID", "X-Session-ID"]}}


@pytest.mark.e2e
def test_activity_records_carry_the_session_id(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "startPort": free_port_block(1),  # not 5800: a demo may be running
                "store": {"path": ":memory:"},
                "ui": {"activity": {"session_id": ["X-Trace-ID", "X-Session-ID"]}},
                "models": {"a": {"cmd": upstream_cmd("a")}},
            }
        )
    )
    server = start_serve(config, cwd=tmp_path)
    try:

        def chat(headers: dict[str, str]) -> int:
            body = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
            return server.post("/v1/chat/completions", body, headers=headers).status

        assert chat({"X-Session-ID": "s-1"}) == 200
        assert chat({"x-trace-id": "t-2", "X-Session-ID": "s-2"}) == 200
        assert chat({}) == 200

        def records():
            data = server.get("/api/metrics/activity?sort=id&order=asc").json()["data"]
            return data if len(data) == 3 else None

        data = server.wait(records, "three activity records")
        assert [r.get("session_id") for r in data] == ["s-1", "t-2", None]
    finally:
        assert server.terminate() == 0


def test_a_store_written_before_session_ids_opens_and_keeps_them(tmp_path: Path) -> None:
    import sqlite3

    from llamaswap.runtime.activity import ActivityStore, make_record

    db = tmp_path / "old.sqlite3"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE activity (id INTEGER PRIMARY KEY, ts REAL NOT NULL, model TEXT NOT NULL, requested TEXT "
        "NOT NULL, req_path TEXT NOT NULL, status INTEGER NOT NULL, content_type TEXT NOT NULL, wait_ms REAL NOT "
        "NULL, duration_ms REAL NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, "
        "cache_tokens INTEGER NOT NULL, draft_tokens INTEGER NOT NULL, draft_acc_tokens INTEGER NOT NULL, "
        "prompt_per_second REAL NOT NULL, tokens_per_second REAL NOT NULL, error TEXT NOT NULL)"
    )
    con.execute(
        "INSERT INTO activity VALUES (1, 1.0, 'a', 'a', '/v1/x', 200, '', 0, 1, 0, 0, -1, -1, -1, -1, -1, '')"
    )
    con.commit()
    con.close()

    def new(session: str):
        return make_record(
            model="a",
            requested="a",
            req_path="/v1/chat/completions",
            status=200,
            content_type="application/json",
            arrived_wall=2.0,
            wait_s=0.0,
            duration_s=0.1,
            tap=None,
            session_id=session,
        )

    store = ActivityStore(db)
    store.open()
    store.record(new("s-9"))
    assert store.flush()
    store.close()
    again = ActivityStore(db)
    again.open()
    try:
        assert [(r.id, r.session_id) for r in again.records()] == [(1, ""), (2, "s-9")]
    finally:
        again.close()
