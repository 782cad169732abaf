"""Activity: one record per model-dispatched request, kept in memory and in SQLite.

What a record holds: when, which model (and the name asked for), path, status, content type,
time waited for a grant, total duration, and the token counts and rates the upstream
reported (`usage` of OpenAI-style bodies, llama-server's `timings`), read from the tail of
the response by `ResponseTap` without holding the body.

Invariants:
- Recording never blocks or fails the request path: `ActivityStore.record` appends to the
  in-memory window and puts the row on a bounded queue; one writer thread owns the SQLite
  connection and writes in batches. A full queue drops the row from disk (not from memory)
  with one warning.
- The in-memory window holds the newest `max_in_memory` records (llama-swap's
  `metricsMaxInMemory`); the API reads it. The database keeps at most `max_rows` rows and
  at most `max_db_bytes` (SQLite's page cap); at startup the window is refilled from it, and
  ids continue after the largest stored one, so activity survives a restart.
- A database that cannot be opened or written (unwritable directory, full disk, corrupt
  file) degrades the store to memory only, with exactly one warning (logged from the event
  loop, whose log handlers are not thread-safe). Serving goes on.
- `path=None` (or ":memory:") keeps activity in memory only, on purpose: no warning.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import functools
import json
import logging
import math
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp import web

if TYPE_CHECKING:
    from llamaswap.compiler.resolution import Resolution

logger = logging.getLogger("llamaswap.activity")

DEFAULT_MAX_IN_MEMORY = 1000
DEFAULT_MAX_ROWS = 100_000
DEFAULT_MAX_DB_BYTES = 256 << 20
QUEUE_SIZE = 10_000
BATCH = 256
# The writer sleeps this long after each batch instead of waking for every record: a put with
# no waiting reader costs no thread switch (measured: ~10 % of a proxied request's CPU at 16
# connections went to waking the writer per record).
BATCH_DELAY = 0.05
# Rows per INSERT statement the writer uses (largest first; 1 must be last).
INSERT_SIZES = (64, 16, 4, 1)
# The writer's SQLite page cache, KiB. It only appends rows (the rightmost pages of the table)
# and trims the oldest (the leftmost), so a few pages suffice; SQLite's default (2 MiB)
# filled up over a long run and was most of what serve grew by under load.
PAGE_CACHE_KIB = 256
# The tail of a response kept for the usage/timings scan. llama-server's last SSE event
# (with `timings`) is well under 2 KiB; 64 KiB leaves room for long final chunks.
TAIL_BYTES = 64 << 10
SCHEMA_VERSION = 5  # 2: the `peer` column; 3: `session_id`; 4: `resolution`; 5: the `loads` table
# Model loads kept (the oldest go first): what `trace export` turns into load times.
MAX_LOAD_ROWS = 10_000

# API sort keys -> record fields (the same keys as llama-swap's activity table).
SORT_KEYS: dict[str, Callable[[ActivityRecord], Any]] = {
    "id": lambda r: r.id,
    "time": lambda r: r.timestamp,
    "model": lambda r: r.model,
    "req_path": lambda r: r.req_path,
    "resp_status_code": lambda r: r.status,
    "resp_content_type": lambda r: r.content_type,
    "cached": lambda r: r.cache_tokens,
    "prompt": lambda r: r.input_tokens,
    "generated": lambda r: r.output_tokens,
    "drafted": lambda r: r.draft_tokens,
    "prompt_speed": lambda r: r.prompt_per_second,
    "gen_speed": lambda r: r.tokens_per_second,
    "duration": lambda r: r.duration_ms,
    "wait": lambda r: r.wait_ms,
}

_COLUMNS = (
    "id",
    "ts",
    "model",
    "requested",
    "req_path",
    "status",
    "content_type",
    "wait_ms",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "cache_tokens",
    "draft_tokens",
    "draft_acc_tokens",
    "prompt_per_second",
    "tokens_per_second",
    "error",
    "peer",
    "session_id",
    "resolution",
)

# llama-swap's default `ui.activity.session_id`: request headers that carry a session ID.
DEFAULT_SESSION_HEADERS = ("X-Session-ID", "X-Litellm-Session-Id")


def default_path() -> Path:
    """`$XDG_DATA_HOME/llamaswap/activity.sqlite3` (XDG default: ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "llamaswap" / "activity.sqlite3"


def iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """An RFC 3339 timestamp as epoch seconds; ValueError when it is not one."""
    value = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    return value.timestamp()


# -- token counts from a response tail -------------------------------------------------------


class Tokens(NamedTuple):
    """What the upstream reported; -1 where it reported nothing. (A NamedTuple: as immutable
    as a frozen dataclass, and made in one C call instead of one object.__setattr__ per field,
    once per request.)"""

    input: int = 0
    output: int = 0
    cache: int = -1
    draft: int = -1
    draft_accepted: int = -1
    prompt_per_second: float = -1.0
    tokens_per_second: float = -1.0
    upstream_ms: float = -1.0  # prompt_ms + predicted_ms from timings
    reported: bool = False


_DECODER = json.JSONDecoder()
# How much text after a key is decoded: usage and timings objects are a few hundred bytes.
_OBJECT_WINDOW = 4096


def _last_object(tail: bytes | bytearray, needle: bytes) -> dict | None:
    """The last `"key": {...}` object in `tail` that decodes (a cut-off one is skipped);
    `needle`: the key with its quotes."""
    decoder = _DECODER
    end = len(tail)
    while True:
        at = tail.rfind(needle, 0, end)
        if at < 0:
            return None
        end = at
        colon = at + len(needle)
        while colon < len(tail) and tail[colon] in b" \t\r\n":
            colon += 1
        if colon >= len(tail) or tail[colon] != ord(":"):
            continue
        try:
            text = tail[colon + 1 : colon + 1 + _OBJECT_WINDOW].decode("utf-8", "replace").lstrip()
            value, _ = decoder.raw_decode(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value


def _num(obj: dict, key: str, default: float) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def _num_or(obj: dict, key: str, other: str, default: float) -> float:
    """`_num(obj, key, _num(obj, other, default))`, reading `other` only when `key` is no number."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _num(obj, other, default)
    return float(value)


def tokens_from_tail(tail: bytes | bytearray) -> Tokens:
    """Token counts from the end of a JSON or SSE response body. llama-server's `timings`
    win over `usage` (they also give the rates), as in llama-swap."""
    usage = _last_object(tail, b'"usage"')
    timings = _last_object(tail, b'"timings"')
    if usage is None and timings is None:
        return _NOTHING
    inp = out = 0
    cache = -1
    if usage is not None:
        inp = int(_num_or(usage, "prompt_tokens", "input_tokens", 0))
        out = int(_num_or(usage, "completion_tokens", "output_tokens", 0))
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            cache = int(_num(details, "cached_tokens", -1))
        elif "cache_read_input_tokens" in usage:
            cache = int(_num(usage, "cache_read_input_tokens", -1))
    if timings is None:
        return Tokens(input=inp, output=out, cache=cache, reported=True)
    return Tokens(
        input=int(_num(timings, "prompt_n", inp)),
        output=int(_num(timings, "predicted_n", out)),
        cache=int(_num(timings, "cache_n", cache)),
        draft=int(_num(timings, "draft_n", -1)),
        draft_accepted=int(_num(timings, "draft_n_accepted", -1)),
        prompt_per_second=_num(timings, "prompt_per_second", -1.0),
        tokens_per_second=_num(timings, "predicted_per_second", -1.0),
        upstream_ms=_num(timings, "prompt_ms", 0.0) + _num(timings, "predicted_ms", 0.0),
        reported=True,
    )


_NOTHING = Tokens()


class ResponseTap:
    """Sees every chunk the proxy relays: keeps the last TAIL_BYTES and when the first and
    last bytes went by. Cheap enough for the hot path (a bounded bytearray)."""

    __slots__ = ("tail", "size", "first_at", "last_at", "_limit")

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.tail = bytearray()
        self.size = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._limit = limit

    def __call__(self, chunk: bytes) -> None:
        if not chunk:
            return
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.size += len(chunk)
        tail = self.tail
        tail += chunk
        if len(tail) > 2 * self._limit:
            del tail[: len(tail) - self._limit]

    def tokens(self) -> Tokens:
        tail = self.tail
        return tokens_from_tail(tail if len(tail) <= self._limit else tail[-self._limit :])


# -- records ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ActivityRecord:
    id: int
    timestamp: float  # epoch seconds at arrival
    model: str
    requested: str
    req_path: str
    status: int
    content_type: str
    wait_ms: float
    duration_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    cache_tokens: int = -1
    draft_tokens: int = -1
    draft_acc_tokens: int = -1
    prompt_per_second: float = -1.0
    tokens_per_second: float = -1.0
    error: str = ""
    peer: str = ""  # the peer that served it (runtime/peers.py); "" for a local model
    session_id: str = ""  # from the first `ui.activity.session_id` header the request had
    # How a profile pin or selector resolved the ID asked for: compact JSON
    # {"profile", "selector", "target", "reason"} (resolution_text); "" when nothing did.
    resolution: str = ""

    def to_json(self) -> dict[str, Any]:
        """llama-swap's ActivityLogEntry shape, plus `requested` and `wait_ms`."""
        out: dict[str, Any] = {
            "id": self.id,
            "timestamp": iso(self.timestamp),
            "model": self.model,
            "requested": self.requested,
            "req_path": self.req_path,
            "resp_content_type": self.content_type,
            "resp_status_code": self.status,
            "tokens": {
                "cache_tokens": self.cache_tokens,
                "draft_tokens": self.draft_tokens,
                "draft_acc_tokens": self.draft_acc_tokens,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "prompt_per_second": round(self.prompt_per_second, 3),
                "tokens_per_second": round(self.tokens_per_second, 3),
            },
            "duration_ms": int(round(self.duration_ms)),
            "wait_ms": int(round(self.wait_ms)),
            "has_capture": False,
        }
        if self.error:
            out["error_msg"] = self.error
        if self.peer:
            out["peer"] = self.peer
        if self.session_id:
            out["session_id"] = self.session_id
        if self.resolution:
            try:
                out["resolution"] = json.loads(self.resolution)
            except ValueError:
                pass
        return out

    def row(self) -> tuple:
        return _ROW(self)


# A record's row in _COLUMNS' order, in one C call (the writer thread builds one per record
# while it holds the GIL).
_ROW = operator.attrgetter(*("timestamp" if c == "ts" else c for c in _COLUMNS))


def make_record(
    *,
    model: str,
    requested: str,
    req_path: str,
    status: int,
    content_type: str,
    arrived_wall: float,
    wait_s: float,
    duration_s: float,
    tap: ResponseTap | None,
    error: str = "",
    peer: str = "",
    session_id: str = "",
    resolution: str = "",
) -> ActivityRecord:
    """A record (id 0 until stored) from what the request path measured."""
    t = tap.tokens() if tap is not None else _NOTHING
    duration_ms = max(duration_s * 1000.0, t.upstream_ms)
    tps = t.tokens_per_second
    if tps < 0 and t.output > 0 and tap is not None and tap.first_at is not None:
        # No llama-server timings: derive the rate from the time the body took to arrive
        # (the whole upstream answer when it came in one piece).
        span = (tap.last_at or tap.first_at) - tap.first_at
        if span <= 0:
            span = max(duration_s - wait_s, 0.0)
        if span > 0:
            tps = t.output / span
    # Positional, in the fields' order (a third of the keyword call's cost, once per request).
    return ActivityRecord(
        0,  # id
        arrived_wall,  # timestamp
        model,
        requested,
        req_path,
        status,
        content_type,
        wait_s * 1000.0,  # wait_ms
        duration_ms,
        t.input,  # input_tokens
        t.output,  # output_tokens
        t.cache,  # cache_tokens
        t.draft,  # draft_tokens
        t.draft_accepted,  # draft_acc_tokens
        t.prompt_per_second,
        tps,  # tokens_per_second
        error,
        peer,
        session_id,
        resolution,
    )


def resolution_text(via: Resolution | None) -> str:
    """A compiler.resolution.Resolution as a record keeps it: compact JSON of its profile,
    selector, target and reason (the last step's: pinned, warm-ready, spillover, ...)."""
    if via is None:
        return ""
    full = via.to_json()
    return json.dumps(
        {k: full[k] for k in ("profile", "selector", "target", "reason")}, separators=(",", ":")
    )


# -- statistics ------------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    """Linear interpolation between closest ranks of an ascending list."""
    if not ordered:
        return 0.0
    rank = p / 100.0 * (len(ordered) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (rank - lo) * (ordered[hi] - ordered[lo])


def histogram(values: list[float]) -> dict[str, Any] | None:
    """Bins (Sturges' rule, 5..20 of them), range and p50/p95/p99; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    lo, hi = ordered[0], ordered[-1]
    out: dict[str, Any] = {
        "min": lo,
        "max": hi,
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
    }
    if lo == hi:
        return {"bins": [len(ordered)], "binSize": 0, **out}
    count = min(20, max(5, math.ceil(math.log2(len(ordered))) + 1))
    size = (hi - lo) / count
    bins = [0] * count
    for v in ordered:
        bins[min(int((v - lo) / size), count - 1)] += 1
    return {"bins": bins, "binSize": size, **out}


# -- the store -------------------------------------------------------------------------------

_STOP = object()


class _Handoff:
    """What the event loop hands the writer thread: a deque (append and popleft are atomic
    under the GIL, no lock) and an Event the writer waits on only once it found nothing, set
    by the loop only while it waits. A record costs the loop one append, not queue.Queue's
    lock and condition (~1.4 us per record on both sides, at ~5,000 records a second)."""

    __slots__ = ("items", "size", "_wake", "_waiting")

    def __init__(self, size: int) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.size = size
        self._wake = threading.Event()
        self._waiting = False

    def offer(self, item: Any) -> bool:
        """Hand `item` over, unless `size` items are waiting already (False: dropped)."""
        items = self.items
        if len(items) >= self.size:
            return False
        items.append(item)
        if self._waiting:
            self._wake.set()
        return True

    def put(self, item: Any) -> None:
        """Hand over a control item (flush, stop), whatever is waiting."""
        self.items.append(item)
        self._wake.set()

    def get(self) -> Any:
        """The next item, waiting for one (the writer thread)."""
        items = self.items
        while not items:
            # Announce the wait, then look again: an item appended before the flag was
            # seen is found here; one appended after it sets the Event.
            self._wake.clear()
            self._waiting = True
            if not items:
                self._wake.wait()
            self._waiting = False
        return items.popleft()

    def get_nowait(self) -> Any:
        """The next item, or None."""
        items = self.items
        return items.popleft() if items else None


class ActivityStore:
    """The activity window in memory, persisted to SQLite by a writer thread."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        *,
        max_in_memory: int = DEFAULT_MAX_IN_MEMORY,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_db_bytes: int = DEFAULT_MAX_DB_BYTES,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.path = None if path in (None, "", ":memory:") else Path(path)
        self.max_in_memory = max(1, max_in_memory)
        self.max_rows = max(self.max_in_memory, max_rows)
        self.max_db_bytes = max_db_bytes
        self._window: collections.deque[ActivityRecord] = collections.deque(maxlen=self.max_in_memory)
        self._queue = _Handoff(queue_size)
        self._listeners: list[Callable[[ActivityRecord], None]] = []
        self._next_id = 1
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self.degraded: str | None = None  # why the store is in memory only
        self._dropped = 0
        self._warned_drop = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: dict[str, float] = {}  # model -> monotonic time its start began

    # lifecycle (event-loop side) ------------------------------------------------------------
    @property
    def persistent(self) -> bool:
        return self.path is not None and self.degraded is None

    def open(self) -> None:
        """Open the database and refill the window from it (startup; bounded work)."""
        if self.path is None:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
            try:
                self._prepare(db)
                rows = db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM activity ORDER BY id DESC LIMIT ?",
                    (self.max_in_memory,),
                ).fetchall()
                top = db.execute("SELECT COALESCE(MAX(id), 0) FROM activity").fetchone()[0]
            except BaseException:
                db.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            self._degrade(f"cannot open {self.path}: {exc}")
            return
        for row in reversed(rows):
            self._window.append(_from_row(row))
        self._next_id = int(top) + 1
        self._db = db
        self._thread = threading.Thread(target=self._write_loop, name="llamaswap:activity", daemon=True)
        self._thread.start()

    def _prepare(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        page = db.execute("PRAGMA page_size").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={max(16, self.max_db_bytes // page)}")
        db.execute(
            "CREATE TABLE IF NOT EXISTS activity ("
            "id INTEGER PRIMARY KEY, ts REAL NOT NULL, model TEXT NOT NULL, requested TEXT NOT NULL, "
            "req_path TEXT NOT NULL, status INTEGER NOT NULL, content_type TEXT NOT NULL, "
            "wait_ms REAL NOT NULL, duration_ms REAL NOT NULL, input_tokens INTEGER NOT NULL, "
            "output_tokens INTEGER NOT NULL, cache_tokens INTEGER NOT NULL, draft_tokens INTEGER NOT NULL, "
            "draft_acc_tokens INTEGER NOT NULL, prompt_per_second REAL NOT NULL, "
            "tokens_per_second REAL NOT NULL, error TEXT NOT NULL, peer TEXT NOT NULL DEFAULT '', "
            "session_id TEXT NOT NULL DEFAULT '', resolution TEXT NOT NULL DEFAULT '')"
        )
        # Every model load seen (spawn to ready, in seconds): `trace export` gives a replay the
        # load times this machine really had.
        db.execute(
            "CREATE TABLE IF NOT EXISTS loads ("
            "id INTEGER PRIMARY KEY, ts REAL NOT NULL, model TEXT NOT NULL, seconds REAL NOT NULL)"
        )
        columns = {row[1] for row in db.execute("PRAGMA table_info(activity)")}
        if "peer" not in columns:  # a version 1 database
            db.execute("ALTER TABLE activity ADD COLUMN peer TEXT NOT NULL DEFAULT ''")
        if "session_id" not in columns:  # a store written before session IDs were kept
            db.execute("ALTER TABLE activity ADD COLUMN session_id TEXT NOT NULL DEFAULT ''")
        if "resolution" not in columns:  # a store written before resolutions were kept
            db.execute("ALTER TABLE activity ADD COLUMN resolution TEXT NOT NULL DEFAULT ''")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by `timeout`), then close the database."""
        thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)
            self._thread = None

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until every record queued so far is written (tests, shutdown)."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    # recording (event-loop side, the request path) -------------------------------------------
    def record(self, rec: ActivityRecord) -> ActivityRecord:
        rec.id = self._next_id
        self._next_id += 1
        self._window.append(rec)
        if self._thread is not None and self.degraded is None:
            if not self._queue.offer(rec):
                self._dropped += 1
                if not self._warned_drop:
                    self._warned_drop = True
                    logger.warning(
                        "activity store: the writer is behind; records are kept in "
                        "memory but not written to %s",
                        self.path,
                    )
        for listener in tuple(self._listeners):
            try:
                listener(rec)
            except Exception:
                logger.exception("activity listener failed")
        return rec

    def process_changed(self, event: Any) -> None:
        """A process state change (runtime/processes.py StateChanged): a `starting ->
        ready` transition is a load, kept with its seconds from spawn to ready."""
        new, old = str(event.new), str(event.old)
        if new == "starting":
            self._starting[event.model] = event.at
        elif new == "ready" and old == "starting":
            began = self._starting.pop(event.model, None)
            if began is not None and self._thread is not None and self.degraded is None:
                # Dropped as a request record is when the writer is behind.
                self._queue.offer(_Load(time.time(), event.model, max(0.0, event.at - began)))
        else:
            self._starting.pop(event.model, None)

    def subscribe(self, listener: Callable[[ActivityRecord], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # reading ---------------------------------------------------------------------------------
    def load_times(self, models: Iterable[str] = (), *, flush: bool = False) -> dict[str, float]:
        """Each of `models`' median recorded load (every model's when empty; see `load_times`
        below), read through a connection of its own. {} without a database. `flush` first
        writes what the writer still holds (blocking: call it off the event loop)."""
        if not self.persistent or self.path is None:
            return {}
        if flush:
            self.flush()
        try:
            con = sqlite3.connect(self.path, timeout=5.0)
            try:
                return load_times(con, models=models)
            finally:
                con.close()
        except sqlite3.Error as exc:
            logger.warning("activity store: cannot read load times from %s: %s", self.path, exc)
            return {}

    def records(self) -> list[ActivityRecord]:
        return list(self._window)

    def models(self) -> list[str]:
        return sorted({r.model for r in self._window})

    def page(
        self,
        *,
        models: Iterable[str] = (),
        start: float | None = None,
        end: float | None = None,
        min_id: int = 0,
        max_id: int = 0,
        limit: int = 25,
        page: int = 1,
        sort: str = "id",
        order: str = "desc",
    ) -> dict[str, Any]:
        """llama-swap's ActivityPage: {data, page, limit, total, total_pages}."""
        rows = self._filtered(models, start, end, min_id, max_id)
        key = SORT_KEYS[sort]
        rows.sort(key=lambda r: (key(r), r.id), reverse=(order == "desc"))
        total = len(rows)
        first = (page - 1) * limit
        return {
            "data": [r.to_json() for r in rows[first : first + limit]],
            "page": page,
            "limit": limit,
            "total": total,
            "total_pages": math.ceil(total / limit) if total and limit else 0,
        }

    def stats(self, model: str = "") -> dict[str, Any]:
        """llama-swap's ActivityStats, plus the store's state and a wait histogram."""
        rows = self._filtered([model] if model else (), None, None, 0, 0)
        return {
            "total_requests": len(rows),
            "total_input_tokens": sum(max(0, r.input_tokens) for r in rows),
            "total_output_tokens": sum(max(0, r.output_tokens) for r in rows),
            "total_cache_tokens": sum(max(0, r.cache_tokens) for r in rows),
            "prompt_histogram": histogram([r.prompt_per_second for r in rows if r.prompt_per_second > 0]),
            "gen_histogram": histogram([r.tokens_per_second for r in rows if r.tokens_per_second > 0]),
            "wait_histogram": histogram([r.wait_ms for r in rows]),
            "store": self.describe(),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "path": None if self.path is None else str(self.path),
            "persistent": self.persistent,
            "degraded": self.degraded,
            "in_memory": len(self._window),
            "max_in_memory": self.max_in_memory,
            "max_rows": self.max_rows,
            "dropped": self._dropped,
        }

    def _filtered(
        self, models: Iterable[str], start: float | None, end: float | None, min_id: int, max_id: int
    ) -> list[ActivityRecord]:
        wanted = set(models)
        return [
            r
            for r in self._window
            if (not wanted or r.model in wanted)
            and (start is None or r.timestamp >= start)
            and (end is None or r.timestamp <= end)
            and (not min_id or r.id >= min_id)
            and (not max_id or r.id <= max_id)
        ]

    # the writer thread -------------------------------------------------------------------------
    def _degrade(self, reason: str) -> None:
        if self.degraded is None:
            self.degraded = reason
            warn = "activity store: %s; keeping activity in memory only"
            loop = self._loop
            if loop is not None and threading.current_thread() is self._thread and not loop.is_closed():
                # The log's handlers (the UI's log feed among them) belong to the event loop.
                loop.call_soon_threadsafe(logger.warning, warn, reason)
            else:
                logger.warning(warn, reason)

    def _write_loop(self) -> None:
        db = self._db
        assert db is not None
        stop = False
        written = 0
        # A few fixed statement sizes, not one per batch length: the connection caches every
        # prepared statement, and a prepared many-row INSERT is large (one per length 1..BATCH
        # grew serve by ~25 MB under load).
        limit = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(_COLUMNS)
        sizes = [n for n in INSERT_SIZES if n <= limit] or [1]
        while not stop:
            item = self._queue.get()
            batch: list[ActivityRecord] = []
            flags: list[threading.Event] = []
            loads: list[_Load] = []
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    flags.append(item)
                elif isinstance(item, _Load):
                    loads.append(item)
                else:
                    batch.append(item)
                if stop or len(batch) >= BATCH:
                    break
                item = self._queue.get_nowait()
                if item is None:
                    break
            if batch and self.degraded is None:
                try:
                    with db:
                        db.execute("BEGIN")
                        # One multi-row statement, not executemany: the sqlite3 module
                        # releases and retakes the GIL around every step, and under load each
                        # retake waits for the event loop's thread (one handoff per batch, not
                        # per row).
                        i = 0
                        while i < len(batch):
                            rows = next(n for n in sizes if n <= len(batch) - i)
                            part = batch[i : i + rows]
                            db.execute(_insert_sql(rows), [v for r in part for v in r.row()])
                            i += rows
                        written += len(batch)
                        if written >= BATCH:
                            written = 0
                            db.execute("DELETE FROM activity WHERE id <= ?", (batch[-1].id - self.max_rows,))
                except sqlite3.Error as exc:
                    self._degrade(f"cannot write {self.path}: {exc}")
            if loads and self.degraded is None:
                try:
                    with db:
                        db.executemany("INSERT INTO loads (ts, model, seconds) VALUES (?, ?, ?)", loads)
                        db.execute(
                            "DELETE FROM loads WHERE id <= (SELECT MAX(id) FROM loads) - ?", (MAX_LOAD_ROWS,)
                        )
                except sqlite3.Error as exc:
                    self._degrade(f"cannot write {self.path}: {exc}")
            for flag in flags:
                flag.set()
            if not stop and len(batch) < BATCH:
                # Sleep only once the queue is drained: after a full batch more rows are
                # waiting, and a writer that slept anyway stored at most BATCH rows per
                # BATCH_DELAY (~5,000 a second) while the queue filled, dropping rows past
                # QUEUE_SIZE.
                time.sleep(BATCH_DELAY)
        try:
            if self.degraded is None:
                db.execute(
                    "DELETE FROM activity WHERE id <= (SELECT MAX(id) FROM activity) - ?", (self.max_rows,)
                )
        except sqlite3.Error:
            pass
        db.close()
        self._db = None


class _Load(tuple):
    """One model load for the writer: (wall-clock time it became ready, model, seconds)."""

    __slots__ = ()

    def __new__(cls, ts: float, model: str, seconds: float) -> _Load:
        return super().__new__(cls, (ts, model, seconds))


def load_times(
    con: sqlite3.Connection,
    since: float | None = None,
    until: float | None = None,
    models: Iterable[str] = (),
) -> dict[str, float]:
    """Each model's median load time (seconds from spawn to ready) over the loads recorded
    between `since` and `until` (epoch seconds, either open); a model with no load in that
    window gets the median of all its recorded loads. {} for a store without loads (written
    before schema version 5)."""
    try:
        rows = con.execute("SELECT ts, model, seconds FROM loads ORDER BY model, seconds").fetchall()
    except sqlite3.OperationalError:  # no such table
        return {}
    wanted = set(models)
    inside: dict[str, list[float]] = {}
    every: dict[str, list[float]] = {}
    for ts, model, seconds in rows:
        if wanted and model not in wanted:
            continue
        every.setdefault(model, []).append(seconds)
        if (since is None or ts >= since) and (until is None or ts < until):
            inside.setdefault(model, []).append(seconds)
    out = {}
    for model, all_ in sorted(every.items()):
        values = inside.get(model) or all_  # ascending (the query's order)
        out[model] = round((values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2, 3)
    return out


@functools.lru_cache(maxsize=8)
def _insert_sql(rows: int) -> str:
    """INSERT OR REPLACE of `rows` records in one statement (the writer keeps rows x columns
    within the connection's bound-parameter limit)."""
    one = f"({', '.join('?' * len(_COLUMNS))})"
    return f"INSERT OR REPLACE INTO activity ({', '.join(_COLUMNS)}) VALUES {', '.join([one] * rows)}"


def _from_row(row: tuple) -> ActivityRecord:
    values = dict(zip(_COLUMNS, row))
    values["timestamp"] = values.pop("ts")
    return ActivityRecord(**values)


ACTIVITY = web.AppKey("activity", ActivityStore)


_SESSION_MEMO: list[Any] = [None, DEFAULT_SESSION_HEADERS]  # [config, its headers]: one per plan


def session_headers(config: Any) -> tuple[str, ...]:
    """`ui.activity.session_id` as llama-swap reads it: names trimmed, empty ones dropped,
    repeats (any case) dropped; unset means the defaults, an empty list means none."""
    if config is not None and _SESSION_MEMO[0] is config:
        return _SESSION_MEMO[1]
    names = _session_headers(config)
    _SESSION_MEMO[:] = [config, names]
    return names


def _session_headers(config: Any) -> tuple[str, ...]:
    ui = getattr(config, "ui", None) or {}
    activity = ui.get("activity") if isinstance(ui, dict) else None
    names = activity.get("session_id") if isinstance(activity, dict) else None
    if not isinstance(names, (list, tuple)):
        return DEFAULT_SESSION_HEADERS
    out: list[str] = []
    for name in names:
        name = str(name).strip()
        if name and name.lower() not in {n.lower() for n in out}:
            out.append(name)
    return tuple(out)


def session_of(headers: Any, names: tuple[str, ...]) -> str:
    """The first session header the request carries (aiohttp's headers ignore case)."""
    for name in names:
        value = headers.get(name)
        if value:
            return value[:200]
    return ""


def ui_config(config: Any) -> dict[str, Any]:
    """The `uiConfig` the web UI gets: the config's `ui`, with the session headers in effect."""
    ui = dict(getattr(config, "ui", None) or {})
    activity = dict(ui.get("activity") or {}) if isinstance(ui.get("activity"), dict) else {}
    activity["session_id"] = list(session_headers(config))
    ui["activity"] = activity
    return ui


def store_path(config: Any) -> Path | None:
    """Where `serve` keeps activity: `store.path` (":memory:" = nowhere), else the default."""
    store = getattr(config, "store", None)
    raw = store.path.strip() if store is not None and store.path else ""
    if raw == ":memory:":
        return None
    return Path(os.path.expanduser(raw)) if raw else default_path()
