"""Logs: bounded in-memory line buffers, the hub that names and joins them, the pipe protocol
that turns a child's output into lines, and the logging handler that feeds llamaswap's own
records into the hub.

Invariants: a buffer is bounded in lines and bytes (the newest line always stays, long lines
are cut at `max_line`); lines are numbered from 0, forever; a failing listener never breaks
the writer; a slow follower loses its oldest queued lines instead of growing memory.
Everything runs in the event loop; nothing here blocks or does I/O of its own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import AsyncGenerator, Callable

# Listener failures are reported where they were before logs had a module of their own.
logger = logging.getLogger("llamaswap.process")


class LogBuffer:
    """A ring of log lines bounded in count and bytes, with listeners for new lines."""

    def __init__(self, max_lines: int = 1000, max_bytes: int = 256 * 1024,
                 max_line: int = 8192, redact: Callable[[str], str] | None = None) -> None:
        self.redact = redact  # applied to every line before it is kept or passed on
        self.max_lines = max(1, max_lines)
        self.max_bytes = max(1, max_bytes)
        self.max_line = max_line
        self._lines: collections.deque[tuple[int, str]] = collections.deque()
        self._bytes = 0
        self._next_seq = 0
        self._listeners: list[Callable[[str], None]] = []

    @property
    def next_seq(self) -> int:
        """Sequence number the next line will get (lines are numbered from 0, forever)."""
        return self._next_seq

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def append(self, line: str) -> None:
        if self.redact is not None:
            line = self.redact(line)
        if len(line) > self.max_line:
            line = line[: self.max_line] + "…"
        size = len(line.encode("utf-8", "replace")) + 1
        self._lines.append((self._next_seq, line))
        self._next_seq += 1
        self._bytes += size
        while len(self._lines) > 1 and (len(self._lines) > self.max_lines
                                        or self._bytes > self.max_bytes):
            _, old = self._lines.popleft()
            self._bytes -= len(old.encode("utf-8", "replace")) + 1
        for listener in tuple(self._listeners):
            try:
                listener(line)
            except Exception:  # a broken listener must not break the upstream's log
                logger.exception("log listener failed")

    def history(self) -> list[str]:
        return [line for _, line in self._lines]

    def lines_since(self, seq: int) -> list[str]:
        return [line for s, line in self._lines if s >= seq]

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(line)` for every new line (in the event loop); returns unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def follow(self, history: bool = True, max_queue: int = 1000) -> AsyncGenerator[str, None]:
        """History (optionally), then new lines as they come. A slow reader loses the
        oldest queued lines rather than growing memory."""
        queue: asyncio.Queue[str] = asyncio.Queue(max_queue)

        def push(line: str) -> None:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(line)

        unsubscribe = self.subscribe(push)
        snapshot = self.history() if history else []  # no await since subscribe: no gap
        try:
            for line in snapshot:
                yield line
            while True:
                yield await queue.get()
        finally:
            unsubscribe()


class LogHub:
    """The process-wide logs: `proxy` (llamaswap's own), one buffer per model, `upstream`
    (every model's lines prefixed `[model] `) and `combined` (proxy and upstream)."""

    def __init__(self, max_lines: int = 1000, max_bytes: int = 256 * 1024,
                 redact: Callable[[str], str] | None = None) -> None:
        self._limits = (max_lines, max_bytes)
        self._redact = redact  # at the sources (proxy, models); the joined buffers get their lines
        self.proxy = LogBuffer(*self._limits, redact=redact)
        self.upstream = LogBuffer(*self._limits)
        self.combined = LogBuffer(*self._limits)
        self._models: dict[str, LogBuffer] = {}
        self.proxy.subscribe(self.combined.append)
        self.upstream.subscribe(self.combined.append)

    def model(self, name: str) -> LogBuffer:
        """The buffer of `name`, created on first use."""
        buf = self._models.get(name)
        if buf is None:
            buf = self._models[name] = LogBuffer(*self._limits, redact=self._redact)
            buf.subscribe(lambda line: self.upstream.append(f"[{name}] {line}"))
        return buf

    def models(self) -> tuple[str, ...]:
        return tuple(self._models)


class LinePipe(asyncio.Protocol):
    """Reads a child's output pipe and appends whole lines to a sink."""

    def __init__(self, sink: Callable[[str], None], done: asyncio.Event, max_line: int) -> None:
        self._sink = sink
        self._done = done
        self._max_line = max_line
        self._partial = b""

    def data_received(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._emit(line)
        if len(self._partial) > self._max_line:
            self._emit(self._partial)
            self._partial = b""

    def _emit(self, raw: bytes) -> None:
        self._sink(raw.rstrip(b"\r").decode("utf-8", "replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = b""
        self._done.set()


class HubHandler(logging.Handler):
    """A logging handler that appends formatted records to the hub's `proxy` buffer."""

    def __init__(self, hub: LogHub) -> None:
        super().__init__()
        self.hub = hub
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.hub.proxy.append(self.format(record))
        except Exception:  # pragma: no cover
            self.handleError(record)
