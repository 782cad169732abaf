"""The activity store on a real SQLite file: records, the window, restart, retention, the
usage/timings scan of response tails, and degrading to memory on an unwritable or full disk."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import threading

import pytest
from support.upstream import wait_until

from llamaswap.runtime.activity import (
    PAGE_CACHE_KIB,
    ActivityRecord,
    ActivityStore,
    ResponseTap,
    Tokens,
    default_path,
    histogram,
    make_record,
    percentile,
    tokens_from_tail,
)


def rec(model: str = "m", **kw) -> ActivityRecord:
    base = dict(
        id=0,
        timestamp=1_700_000_000.0,
        model=model,
        requested=model,
        req_path="/v1/chat/completions",
        status=200,
        content_type="application/json",
        wait_ms=1.0,
        duration_ms=10.0,
        input_tokens=3,
        output_tokens=5,
        tokens_per_second=50.0,
    )
    base.update(kw)
    return ActivityRecord(**base)


def test_records_survive_a_restart_and_ids_continue(tmp_path):
    path = tmp_path / "deep" / "activity.sqlite3"
    store = ActivityStore(path)
    store.open()
    for i in range(3):
        store.record(rec(output_tokens=i))
    assert store.flush()
    store.close()
    again = ActivityStore(path)
    again.open()
    assert [r.output_tokens for r in again.records()] == [0, 1, 2]
    assert [r.id for r in again.records()] == [1, 2, 3]
    assert again.record(rec()).id == 4
    again.close()
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM activity").fetchone()[0] == 4


def test_window_is_bounded_and_the_database_keeps_at_most_max_rows(tmp_path):
    path = tmp_path / "a.sqlite3"
    store = ActivityStore(path, max_in_memory=5, max_rows=300)
    store.open()
    for _ in range(700):
        store.record(rec())
    store.close()
    assert [r.id for r in store.records()] == [696, 697, 698, 699, 700]
    ids = [row[0] for row in sqlite3.connect(path).execute("SELECT id FROM activity ORDER BY id")]
    assert len(ids) == 300 and ids[-1] == 700
    reopened = ActivityStore(path, max_in_memory=5, max_rows=300)
    reopened.open()
    assert [r.id for r in reopened.records()] == [696, 697, 698, 699, 700]
    reopened.close()


def test_unwritable_path_degrades_to_memory_with_one_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = ActivityStore(blocker / "activity.sqlite3")
    with caplog.at_level(logging.WARNING, logger="llamaswap.activity"):
        store.open()
        store.record(rec())
        store.record(rec())
    assert not store.persistent and "cannot open" in store.degraded
    assert [r.id for r in store.records()] == [1, 2]
    assert len([r for r in caplog.records if r.name == "llamaswap.activity"]) == 1
    store.close()


def test_a_full_database_degrades_to_memory_with_one_warning(tmp_path, caplog):
    path = tmp_path / "small.sqlite3"
    store = ActivityStore(path, max_db_bytes=64 << 10, max_rows=1_000_000, max_in_memory=10_000)
    store.open()
    with caplog.at_level(logging.WARNING, logger="llamaswap.activity"):
        for _ in range(20):
            for _ in range(300):
                store.record(rec(error="x" * 200))
            store.flush()
    assert store.degraded is not None and "full" in store.degraded
    assert len(store.records()) == 6000  # serving (and the window) went on
    assert len([r for r in caplog.records if r.name == "llamaswap.activity"]) == 1
    store.close()


def test_in_memory_store_on_purpose_has_no_warning(caplog):
    store = ActivityStore(None)
    with caplog.at_level(logging.WARNING):
        store.open()
        store.record(rec())
    assert store.describe()["persistent"] is False and store.degraded is None
    assert not caplog.records


def test_default_path_follows_xdg_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_path() == tmp_path / "llamaswap" / "activity.sqlite3"


def test_page_filters_sorts_and_paginates():
    store = ActivityStore(None)
    for i in range(7):
        store.record(rec("a" if i % 2 else "b", duration_ms=float(100 - i)))
    page = store.page(models=["a"], limit=2, page=1)
    assert [r["id"] for r in page["data"]] == [6, 4]
    assert (page["total"], page["total_pages"], page["page"], page["limit"]) == (3, 2, 1, 2)
    asc = store.page(sort="duration", order="asc", limit=3)
    assert [r["duration_ms"] for r in asc["data"]] == [94, 95, 96]
    first = store.page()["data"][0]
    assert set(first) >= {
        "id",
        "timestamp",
        "model",
        "req_path",
        "resp_content_type",
        "resp_status_code",
        "tokens",
        "duration_ms",
        "has_capture",
        "wait_ms",
    }
    assert set(first["tokens"]) == {
        "cache_tokens",
        "draft_tokens",
        "draft_acc_tokens",
        "input_tokens",
        "output_tokens",
        "prompt_per_second",
        "tokens_per_second",
    }
    assert first["timestamp"].endswith("Z")


def test_stats_and_histograms():
    store = ActivityStore(None)
    for tps in (10.0, 20.0, 30.0, 40.0):
        store.record(rec(tokens_per_second=tps, prompt_per_second=-1.0, cache_tokens=2))
    stats = store.stats()
    assert stats["total_requests"] == 4
    assert (stats["total_input_tokens"], stats["total_output_tokens"], stats["total_cache_tokens"]) == (
        12,
        20,
        8,
    )
    assert stats["prompt_histogram"] is None
    gen = stats["gen_histogram"]
    assert sum(gen["bins"]) == 4 and gen["min"] == 10.0 and gen["max"] == 40.0 and gen["p50"] == 25.0
    assert store.stats("other")["total_requests"] == 0
    assert histogram([5.0, 5.0]) == {
        "bins": [2],
        "binSize": 0,
        "min": 5.0,
        "max": 5.0,
        "p50": 5.0,
        "p95": 5.0,
        "p99": 5.0,
    }
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)


# -- the response-tail scan -------------------------------------------------------------------

TIMINGS = {
    "cache_n": 1,
    "prompt_n": 4,
    "prompt_ms": 20.0,
    "prompt_per_second": 200.0,
    "predicted_n": 9,
    "predicted_ms": 300.0,
    "predicted_per_second": 30.0,
}


def sse(*events: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def test_timings_from_a_streamed_response_win_over_usage():
    body = sse(
        {"choices": [{"delta": {"content": "hi"}}], "usage": None},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 8}},
        {"choices": [{"delta": {}, "finish_reason": "stop"}], "timings": TIMINGS},
    )
    t = tokens_from_tail(body)
    assert (t.input, t.output, t.cache, t.prompt_per_second, t.tokens_per_second, t.upstream_ms) == (
        4,
        9,
        1,
        200.0,
        30.0,
        320.0,
    )


def test_usage_of_a_json_response_and_of_anthropic_style_bodies():
    body = json.dumps(
        {
            "choices": [{"message": {"content": "usage"}}],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": 8,
                "prompt_tokens_details": {"cached_tokens": 2},
            },
        }
    ).encode()
    t = tokens_from_tail(body)
    assert (t.input, t.output, t.cache, t.tokens_per_second) == (3, 8, 2, -1.0)
    anthropic = tokens_from_tail(b'{"usage": {"input_tokens": 5, "output_tokens": 6}}')
    assert (anthropic.input, anthropic.output) == (5, 6)
    assert not tokens_from_tail(b'{"data": []}').reported


def test_tap_keeps_a_bounded_tail_and_finds_usage_at_the_end():
    tap = ResponseTap(limit=1024)
    for _ in range(1000):
        tap(b"data: " + json.dumps({"choices": [{"delta": {"content": "x" * 50}}]}).encode() + b"\n\n")
    tap(sse({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1000}}))
    assert len(tap.tail) <= 2048 and tap.size > 50_000
    assert tap.tokens().output == 1000


def test_a_cut_off_usage_object_is_skipped_for_an_earlier_whole_one():
    body = sse({"usage": {"prompt_tokens": 1, "completion_tokens": 2}}) + b'data: {"usage": {"prompt_tok'
    assert tokens_from_tail(body).output == 2


def test_make_record_derives_a_rate_without_timings():
    tap = ResponseTap()
    tap(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 10}}')
    r = make_record(
        model="m",
        requested="alias",
        req_path="/v1/chat/completions",
        status=200,
        content_type="application/json",
        arrived_wall=1.0,
        wait_s=0.5,
        duration_s=1.5,
        tap=tap,
    )
    assert r.tokens_per_second == pytest.approx(10.0)
    assert (r.wait_ms, r.duration_ms, r.requested) == (500.0, 1500.0, "alias")


def test_a_disk_full_warning_from_the_writer_is_logged_in_the_event_loop(tmp_path):
    async def main() -> list[str]:
        store = ActivityStore(
            tmp_path / "small.sqlite3", max_db_bytes=64 << 10, max_rows=1_000_000, max_in_memory=10_000
        )
        store.open()
        threads: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: threads.append(threading.current_thread().name)
        logging.getLogger("llamaswap.activity").addHandler(handler)
        try:
            while store.degraded is None:
                for _ in range(300):
                    store.record(rec(error="x" * 200))
                await asyncio.to_thread(store.flush)
            for _ in range(100):
                if threads:
                    break
                await asyncio.sleep(0.01)
        finally:
            logging.getLogger("llamaswap.activity").removeHandler(handler)
            await asyncio.to_thread(store.close)
        return threads

    assert asyncio.run(main()) == [threading.main_thread().name]  # once, in the loop's thread


_V1_TABLE = (
    "CREATE TABLE activity (id INTEGER PRIMARY KEY, ts REAL NOT NULL, model TEXT NOT NULL, "
    "requested TEXT NOT NULL, req_path TEXT NOT NULL, status INTEGER NOT NULL, "
    "content_type TEXT NOT NULL, wait_ms REAL NOT NULL, duration_ms REAL NOT NULL, "
    "input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cache_tokens INTEGER NOT NULL, "
    "draft_tokens INTEGER NOT NULL, draft_acc_tokens INTEGER NOT NULL, "
    "prompt_per_second REAL NOT NULL, tokens_per_second REAL NOT NULL, error TEXT NOT NULL"
)
V1_COLUMNS = (
    "id, ts, model, requested, req_path, status, content_type, wait_ms, duration_ms, input_tokens, "
    "output_tokens, cache_tokens, draft_tokens, draft_acc_tokens, prompt_per_second, "
    "tokens_per_second, error"
)
OLD_SCHEMAS = {
    1: _V1_TABLE + ")",
    3: _V1_TABLE + ", peer TEXT NOT NULL DEFAULT '', session_id TEXT NOT NULL DEFAULT '')",
}


@pytest.mark.parametrize("version", sorted(OLD_SCHEMAS))
def test_a_store_in_an_older_schema_opens_keeps_its_rows_and_gains_resolutions_and_loads(tmp_path, version):
    path = tmp_path / "activity.sqlite3"
    db = sqlite3.connect(path)
    db.execute(OLD_SCHEMAS[version])
    values = (1_700_000_000.0, "m", "m", "/v1/chat/completions", 200, "application/json")
    numbers = (2.0, 20.0, 3, 5, -1, -1, -1, -1.0, 40.0, "")
    for rid in (7, 8):
        db.execute(f"INSERT INTO activity ({V1_COLUMNS}) VALUES (?{', ?' * 16})", (rid, *values, *numbers))
    db.execute(f"PRAGMA user_version={version}")
    db.commit()
    db.close()

    store = ActivityStore(path)
    store.open()
    assert store.persistent
    old = store.records()
    assert [(r.id, r.model, r.output_tokens, r.resolution) for r in old] == [(7, "m", 5, ""), (8, "m", 5, "")]
    assert "resolution" not in old[0].to_json()
    reason = '{"profile":null,"selector":"fast","target":"a","reason":"warm-ready"}'
    new = store.record(rec(model="a", requested="fast", resolution=reason))
    assert new.id == 9
    assert new.to_json()["resolution"] == {
        "profile": None,
        "selector": "fast",
        "target": "a",
        "reason": "warm-ready",
    }
    assert store.flush()
    store.close()

    again = ActivityStore(path)
    again.open()
    assert [(r.id, r.resolution) for r in again.records()] == [(7, ""), (8, ""), (9, reason)]
    again.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 5
    assert db.execute("SELECT COUNT(*) FROM loads").fetchone()[0] == 0  # the table is there, empty
    db.close()


def test_batches_of_every_shape_reach_the_database_whole_and_in_order(tmp_path):
    # The writer splits a batch into INSERTs of a few fixed sizes (64, 16, 4, 1 rows): batches
    # just below, at and above each size must all land, each record once.
    path = tmp_path / "shapes.sqlite3"
    store = ActivityStore(path, max_in_memory=10, max_rows=10_000)
    store.open()
    total = 0
    for size in (1, 3, 4, 5, 15, 16, 17, 63, 64, 65, 85, 200, 256):
        for _ in range(size):
            store.record(rec(model=f"m{size}"))
        store.flush()
        total += size
    store.close()
    rows = sqlite3.connect(path).execute("SELECT id, model FROM activity ORDER BY id").fetchall()
    assert [r[0] for r in rows] == list(range(1, total + 1))
    assert [r[1] for r in rows][-256:] == ["m256"] * 256


def test_the_writer_keeps_a_small_page_cache_and_still_trims_to_max_rows(tmp_path):
    # SQLite's default page cache (2 MiB) filled up as the table grew and stayed resident in
    # serve; the writer's connection caps it, and appends and trims still work under the cap.
    path = tmp_path / "cache.sqlite3"
    store = ActivityStore(path, max_in_memory=10, max_rows=300)
    store.open()
    assert store._db is not None
    assert store._db.execute("PRAGMA cache_size").fetchone()[0] == -PAGE_CACHE_KIB
    for i in range(2000):
        store.record(rec(model=f"m{i % 7}", error="x" * (i % 50)))
    store.close()
    db = sqlite3.connect(path)
    ids = [r[0] for r in db.execute("SELECT id FROM activity ORDER BY id")]
    assert ids == list(range(1701, 2001))


def test_make_record_puts_every_value_in_its_own_field():
    timings = {
        "prompt_n": 11,
        "predicted_n": 12,
        "cache_n": 13,
        "draft_n": 14,
        "draft_n_accepted": 15,
        "prompt_per_second": 16.5,
        "predicted_per_second": 17.5,
        "prompt_ms": 100.0,
        "predicted_ms": 2000.0,
    }
    tap = ResponseTap()
    tap(sse({"choices": [], "timings": timings}))
    r = make_record(
        model="m",
        requested="alias",
        req_path="/v1/completions",
        status=201,
        content_type="text/event-stream",
        arrived_wall=7.0,
        wait_s=0.25,
        duration_s=1.0,
        tap=tap,
        error="e",
        peer="p",
        session_id="s",
        resolution='{"profile":"x"}',
    )
    assert dataclasses.asdict(r) == {
        "id": 0,
        "timestamp": 7.0,
        "model": "m",
        "requested": "alias",
        "req_path": "/v1/completions",
        "status": 201,
        "content_type": "text/event-stream",
        "wait_ms": 250.0,
        "duration_ms": 2100.0,  # the upstream's own timings are longer than ours
        "input_tokens": 11,
        "output_tokens": 12,
        "cache_tokens": 13,
        "draft_tokens": 14,
        "draft_acc_tokens": 15,
        "prompt_per_second": 16.5,
        "tokens_per_second": 17.5,
        "error": "e",
        "peer": "p",
        "session_id": "s",
        "resolution": '{"profile":"x"}',
    }


def test_usage_counts_fall_back_to_the_other_key_only_when_the_first_is_no_number():
    both = tokens_from_tail(b'{"usage": {"prompt_tokens": 3, "input_tokens": 5, "completion_tokens": 0}}')
    assert (both.input, both.output, both.reported) == (3, 0, True)
    odd = tokens_from_tail(b'{"usage": {"prompt_tokens": true, "input_tokens": 5, "output_tokens": "7"}}')
    assert (odd.input, odd.output) == (5, 0)
    assert tokens_from_tail(b'{"x": 1}') == tokens_from_tail(b"") == Tokens()
    assert not Tokens().reported and Tokens().cache == -1


def test_a_writer_held_up_drops_records_past_its_queue_and_keeps_the_rest(tmp_path, caplog):
    path = tmp_path / "a.db"
    store = ActivityStore(path, queue_size=4)
    store.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the writer's next INSERT waits for this lock
        store.record(rec())
        wait_until(lambda: not store._queue.items, message="the writer took the first record")
        with caplog.at_level(logging.WARNING, logger="llamaswap.activity"):
            for _ in range(4 + 3):
                store.record(rec())
        assert store.describe()["dropped"] == 3
        assert len(store.records()) == 8  # the window keeps every record
        assert sum("the writer is behind" in r.getMessage() for r in caplog.records) == 1
        blocker.execute("ROLLBACK")
        assert store.flush()
        ids = [row[0] for row in blocker.execute("SELECT id FROM activity ORDER BY id")]
        assert ids == [1, 2, 3, 4, 5]  # the first, then the four that fitted
    finally:
        blocker.close()
        store.close()


def test_the_writer_wakes_for_a_record_that_comes_while_it_waits(tmp_path):
    store = ActivityStore(tmp_path / "a.db")
    store.open()
    try:
        for i in range(1, 4):
            wait_until(lambda: store._queue._waiting, message="the writer waiting for work")
            store.record(rec())
            with sqlite3.connect(tmp_path / "a.db") as con:
                wait_until(
                    lambda: con.execute("SELECT COUNT(*) FROM activity").fetchone()[0] == i,
                    message=f"record {i} written without a flush",
                )
    finally:
        store.close()
