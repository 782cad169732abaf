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
from collections.abc import AsyncGenerator, Callable

# Listener failures are reported where they were before logs had a module of their own.
logger = logging.getLogger("llamaswap.process")


class LogBuffer:
    """A ring of log lines bounded in count and bytes, with listeners for new lines."""

    def __init__(
        self,
        max_lines: int = 1000,
        max_bytes: int = 256 * 1024,
        max_line: int = 8192,
        redact: Callable[[str], str] | None = None,
    ) -> None:
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
        while len(self._lines) > 1 and (len(self._lines) > self.max_lines or self._bytes > self.max_bytes):
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

    def __init__(
        self, max_lines: int = 1000, max_bytes: int = 256 * 1024, redact: Callable[[str], str] | None = None
    ) -> None:
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


# -- what reaches the terminal -----------------------------------------------------------------
# llama-swap's logToStdout, logTimeFormat and logLevel, and llamaswap's --log-format. The
# proxy's own records go through the `llamaswap` loggers; upstream output through UPSTREAM.

UPSTREAM = "llamaswap-upstream"  # outside the `llamaswap` tree: not fed back into the proxy log


def go_time(name: str, when: float) -> str:
    """`when` in the Go layout llama-swap's logTimeFormat names ("" for an unknown name)."""
    import datetime as dt

    t = dt.datetime.fromtimestamp(when).astimezone()
    zone = t.strftime("%Z")
    offset = t.strftime("%z")
    # Go's "Z07:00": Z for a zero offset (UTC), else +hh:mm.
    colon = offset[:3] + ":" + offset[3:] if offset and offset != "+0000" else "Z"
    frac = when - int(when)
    layouts: dict[str, Callable[[], str]] = {
        "ansic": lambda: t.strftime("%a %b ") + f"{t.day:>2}" + t.strftime(" %H:%M:%S %Y"),
        "unixdate": lambda: t.strftime("%a %b ") + f"{t.day:>2}" + t.strftime(f" %H:%M:%S {zone} %Y"),
        "rubydate": lambda: t.strftime("%a %b %d %H:%M:%S %z %Y"),
        "rfc822": lambda: t.strftime(f"%d %b %y %H:%M {zone}"),
        "rfc822z": lambda: t.strftime("%d %b %y %H:%M %z"),
        "rfc850": lambda: t.strftime(f"%A, %d-%b-%y %H:%M:%S {zone}"),
        "rfc1123": lambda: t.strftime(f"%a, %d %b %Y %H:%M:%S {zone}"),
        "rfc1123z": lambda: t.strftime("%a, %d %b %Y %H:%M:%S %z"),
        "rfc3339": lambda: t.strftime("%Y-%m-%dT%H:%M:%S") + colon,
        "rfc3339nano": lambda: (
            t.strftime("%Y-%m-%dT%H:%M:%S") + f"{frac:.9f}"[1:].rstrip("0").rstrip(".") + colon
        ),
        "kitchen": lambda: f"{(t.hour % 12) or 12}:{t.minute:02d}{'PM' if t.hour >= 12 else 'AM'}",
        "stamp": lambda: t.strftime("%b ") + f"{t.day:>2}" + t.strftime(" %H:%M:%S"),
        "stampmilli": lambda: t.strftime("%b ") + f"{t.day:>2}" + t.strftime(" %H:%M:%S") + f"{frac:.3f}"[1:],
        "stampmicro": lambda: t.strftime("%b ") + f"{t.day:>2}" + t.strftime(" %H:%M:%S") + f"{frac:.6f}"[1:],
        "stampnano": lambda: t.strftime("%b ") + f"{t.day:>2}" + t.strftime(" %H:%M:%S") + f"{frac:.9f}"[1:],
    }
    layout = layouts.get(name.strip().lower())
    return layout() if layout else ""


_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """`[time ]LEVEL logger: message`, the time in llama-swap's logTimeFormat (none when unset)."""

    def __init__(self, time_format: str = "") -> None:
        super().__init__()
        self.time_format = time_format

    def format(self, record: logging.LogRecord) -> str:
        stamp = go_time(self.time_format, record.created) if self.time_format else ""
        text = (
            record.getMessage()
            if record.name == UPSTREAM
            else (f"{record.levelname.replace('WARNING', 'WARN')} {record.name}: {record.getMessage()}")
        )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{stamp} {text}" if stamp else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, and the record's extra fields."""

    def __init__(self, time_format: str = "") -> None:
        super().__init__()
        self.time_format = time_format

    def format(self, record: logging.LogRecord) -> str:
        import datetime as dt
        import json

        out: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds"),
            "level": record.levelname.lower().replace("warning", "warn"),
            "logger": "upstream" if record.name == UPSTREAM else record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str, log_to_stdout: str, time_format: str, fmt: str, stream=None) -> None:
    """Send the proxy log (`logToStdout` proxy or both) and upstream output (upstream or both)
    to `stream` (stderr), each line formatted as text or JSON. The /logs buffers get everything
    either way."""
    import sys

    stream = stream or sys.stderr
    formatter: logging.Formatter = JsonFormatter(time_format) if fmt == "json" else TextFormatter(time_format)
    numeric = {
        "DEBUG": logging.DEBUG,
        "INFO": logging.INFO,
        "WARN": logging.WARNING,
        "ERROR": logging.ERROR,
    }.get(level.strip().upper(), logging.INFO)
    for name, wanted in (
        ("llamaswap", log_to_stdout in ("proxy", "both")),
        (UPSTREAM, log_to_stdout in ("upstream", "both")),
    ):
        target = logging.getLogger(name)
        for old in [h for h in target.handlers if getattr(h, "_llamaswap_terminal", False)]:
            target.removeHandler(old)
        handler: logging.Handler = logging.StreamHandler(stream) if wanted else logging.NullHandler()
        handler._llamaswap_terminal = True  # type: ignore[attr-defined]  # marks ours for the next configure
        handler.setFormatter(formatter)
        target.addHandler(handler)
        target.setLevel(numeric if name == "llamaswap" else logging.INFO)
        target.propagate = False


class AccessLog:
    """The access logger (aiohttp's `access_log_class`, and the fast front's): one line per
    request — method, path, model, status, seconds, bytes — with the same fields as `extra`
    for the JSON format. aiohttp's AbstractAccessLogger interface, without importing aiohttp
    (serve listens before the web framework is loaded)."""

    __slots__ = ("logger", "log_format")

    def __init__(self, logger: logging.Logger, log_format: str = "") -> None:
        self.logger = logger
        self.log_format = log_format

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request, response, time: float) -> None:
        model = request.get("llamaswap.model") or "-"
        size = getattr(response, "body_length", 0)
        self.logger.info(
            "%s %s %s %s %.3fs %sB",
            request.method,
            request.path_qs,
            model,
            response.status,
            time,
            size,
            extra={
                "method": request.method,
                "path": request.path_qs,
                "model": model,
                "status": response.status,
                "duration": round(time, 6),
                "bytes": size,
            },
        )


def access_logger() -> AccessLog:
    """The access logger on `llamaswap.access` (what serve gives aiohttp, too)."""
    return AccessLog(logging.getLogger("llamaswap.access"))
