"""Events: the live feed behind `GET /api/events` (Server-Sent Events), and what feeds it.

Wire format, as llama-swap's UI feed: every event is `event:message` whose data is
`{"type": T, "data": "<JSON text>"}`. Types: llama-swap's `modelStatus` (the model list with
states), `logData` ({source: proxy|upstream, data}), `activity` ({id, record}), `inflight`
({operation: snapshot|upsert|remove, ...}), `profileChanged` ({active: name or null}); and ours: `decision` (a swap decision record,
when it is committed and when it ends) and `queue` (the scheduler's queue, in-flight counts
and swaps in progress, read inside its owner task).

Invariants:
- Publishing never blocks and costs one check when nobody listens. Each subscriber has a
  bounded queue; a slow one loses its oldest events, never grows memory.
- Publishing never logs (a log line is itself an event: logging here would loop).
- Bursts coalesce: `modelStatus` and `queue` are computed at most once per loop turn
  (and `queue` at most once at a time), whatever number of changes asked for them.
- On shutdown every stream ends, so none holds the exit up.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from llamaswap.runtime.activity import iso
from llamaswap.runtime.observe import AppObserver

SUBSCRIBER_QUEUE = 1024
KEEPALIVE = 15.0
QUEUE_MIN_INTERVAL = 0.1  # seconds between two `queue` snapshots under load


def frame(kind: str, data: Any) -> bytes:
    payload = json.dumps(
        {"type": kind, "data": json.dumps(data, separators=(",", ":"))}, separators=(",", ":")
    )
    return b"event:message\ndata:" + payload.encode() + b"\n\n"


class Subscription:
    __slots__ = ("_queue", "_wakeup", "closed")

    def __init__(self, size: int) -> None:
        self._queue: collections.deque[bytes] = collections.deque(maxlen=size)
        self._wakeup = asyncio.Event()
        self.closed = False

    def push(self, data: bytes) -> None:
        self._queue.append(data)
        self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    async def next_batch(self, timeout: float) -> list[bytes]:
        """What arrived since the last call (waits up to `timeout`; [] on timeout/close)."""
        if not self._queue and not self.closed:
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass
        self._wakeup.clear()
        out = list(self._queue)
        self._queue.clear()
        return out


class EventHub:
    """Fan-out of framed events to every subscriber."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._pending: dict[str, Callable[[], Any]] = {}
        self._flush_scheduled = False
        self._queue_source: Callable[[], Awaitable[Any]] | None = None
        self._queue_running = False
        self._queue_again = False

    @property
    def active(self) -> bool:
        return bool(self._subs)

    def subscribe(self, size: int = SUBSCRIBER_QUEUE) -> Subscription:
        sub = Subscription(size)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        sub.close()

    def close_all(self) -> None:
        for sub in list(self._subs):
            self.unsubscribe(sub)

    def publish(self, kind: str, data: Any) -> None:
        if not self._subs:
            return
        blob = frame(kind, data)
        for sub in self._subs:
            sub.push(blob)

    def publish_soon(self, kind: str, make: Callable[[], Any]) -> None:
        """Publish `make()` once at the end of this loop turn, however often asked."""
        if not self._subs:
            return
        self._pending[kind] = make
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for kind, make in pending.items():
            try:
                self.publish(kind, make())
            except Exception:  # a broken source must not break the feed (and must not log)
                pass

    # the queue snapshot needs an await (a read inside the scheduler's owner task)
    def set_queue_source(self, source: Callable[[], Awaitable[Any]]) -> None:
        self._queue_source = source

    def queue_changed(self) -> None:
        if not self._subs or self._queue_source is None:
            return
        if self._queue_running:
            self._queue_again = True
            return
        self._queue_running = True
        asyncio.get_running_loop().call_soon(self._start_queue_read)

    def _start_queue_read(self) -> None:
        task = asyncio.ensure_future(self._read_queue())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _read_queue(self) -> None:
        try:
            while True:
                self._queue_again = False
                began = time.monotonic()
                try:
                    assert self._queue_source is not None
                    self.publish("queue", await self._queue_source())
                except Exception:
                    return
                if not self._queue_again or not self._subs:
                    return
                await asyncio.sleep(max(0.0, QUEUE_MIN_INTERVAL - (time.monotonic() - began)))
        finally:
            self._queue_running = False


# The message of the CancelledError that `InflightTracker.cancel` throws into a request's task.
CANCELLED_BY_API = "llamaswap: cancelled through POST /api/inflight/{id}/cancel"


class InflightTracker:
    """Model-dispatched requests from arrival to the end of their response (llama-swap's
    in-flight table), with our `state`: waiting (for a grant) or serving.

    `begin` runs in the request's handler task and keeps it: `cancel(id)` cancels that task
    (with CANCELLED_BY_API), and the request's path answers the client (dispatch.py)."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self._ids = itertools.count(1)
        self._entries: dict[str, dict[str, Any]] = {}
        self._idle: asyncio.Event | None = None

    def begin(self, model: str, requested: str, method: str, path: str, remote: str | None) -> str:
        rid = str(next(self._ids))
        entry = {
            "id": rid,
            "_wall": time.time(),
            "model": model,
            "requested": requested,
            "req_path": path,
            "method": method,
            "remote_ip": remote or "",
            "state": "waiting",
            "_started": time.monotonic(),
            "_task": asyncio.current_task(),
        }
        self._entries[rid] = entry
        self._publish_upsert(entry)
        return rid

    def serving(self, rid: str) -> None:
        entry = self._entries.get(rid)
        if entry is not None:
            entry["state"] = "serving"
            self._publish_upsert(entry)

    def end(self, rid: str) -> None:
        if self._entries.pop(rid, None) is not None and self.hub.active:
            self.hub.publish("inflight", {"operation": "remove", "id": rid})
        if not self._entries and self._idle is not None:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no request is in the table (shutdown waits for peer requests here:
        they are in flight without the router knowing)."""
        while self._entries:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def cancel(self, rid: str) -> bool:
        """Cancel an in-flight request (False: no such request). Its handler sees a
        CancelledError carrying CANCELLED_BY_API; asking twice cancels once."""
        entry = self._entries.get(rid)
        if entry is None:
            return False
        task = entry["_task"]
        if not entry.get("_cancelled") and task is not None and not task.done():
            entry["_cancelled"] = True
            task.cancel(CANCELLED_BY_API)
        return True

    def waiting(self, rid: str) -> bool:
        """Whether the request is still waiting for its grant (not yet being served)."""
        entry = self._entries.get(rid)
        return entry is not None and entry["state"] == "waiting"

    def cancelled(self, rid: str) -> bool:
        """Whether `cancel` was called for this request (while it is in the table)."""
        entry = self._entries.get(rid)
        return entry is not None and bool(entry.get("_cancelled"))

    def _publish_upsert(self, entry: dict[str, Any]) -> None:
        if self.hub.active:
            self.hub.publish("inflight", {"operation": "upsert", "request": self._public(entry)})

    def _public(self, entry: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in entry.items() if not k.startswith("_")}
        out["timestamp"] = iso(entry["_wall"])  # formatted only when someone looks
        out["elapsed_ms"] = int((time.monotonic() - entry["_started"]) * 1000)
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"operation": "snapshot", "requests": [self._public(e) for e in self._entries.values()]}

    def __len__(self) -> int:
        return len(self._entries)


async def stream(request: web.Request, hub: EventHub, initial: list[tuple[str, Any]]) -> web.StreamResponse:
    """Serve one `/api/events` client: the initial payload, then every event until the client
    leaves or the server shuts down. A comment line every KEEPALIVE seconds keeps proxies
    from timing the stream out."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "X-Accel-Buffering": "no",
        }
    )
    sub = hub.subscribe()
    try:
        await resp.prepare(request)
        await resp.write(b"".join(frame(kind, data) for kind, data in initial))
        while not sub.closed:
            batch = await sub.next_batch(KEEPALIVE)
            await resp.write(b"".join(batch) if batch else b":\n\n")
    finally:
        hub.unsubscribe(sub)
    try:
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass
    return resp


class EventsObserver(AppObserver):
    """The router's observer in `serve` with the UI feed: decision records and metrics (as
    AppObserver), plus `decision` events and a `queue` refresh on every scheduling fact."""

    def __init__(self, decisions, metrics, hub: EventHub) -> None:
        super().__init__(decisions, metrics)
        self.hub = hub

    def _decision(self, swap_id: int) -> None:
        if self.hub.active:
            record = self.decisions.for_swap(swap_id)
            if record is not None:
                self.hub.publish("decision", record.to_json())

    def swap_started(self, record, requested: str) -> None:
        super().swap_started(record, requested)
        self._decision(record.id)
        self.hub.queue_changed()

    def swap_finished(self, record) -> None:
        super().swap_finished(record)
        self._decision(record.id)
        self.hub.queue_changed()

    def granted(self, model: str, waited: float) -> None:
        super().granted(model, waited)
        self.hub.queue_changed()

    def served(self, model: str) -> None:
        super().served(model)
        self.hub.queue_changed()

    def profile_changed(self, old: str | None, new: str | None, reason: str) -> None:
        super().profile_changed(old, new, reason)
        self.hub.publish("profileChanged", {"active": new})


EVENTS = web.AppKey("events", EventHub)
INFLIGHT = web.AppKey("inflight", InflightTracker)
