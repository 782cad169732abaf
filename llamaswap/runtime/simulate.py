"""Discrete-event simulation of a request trace, driving the real scheduler on a virtual clock.

This is the engine of `llamaswap plan CONFIG --trace FILE`. It owns the trace format, the
virtual clock and the statistics; every decision is the scheduler's own, so a dry run proves
something about the server.

Trace lines (blank lines and lines starting with `#` are skipped):
    {"at": 12.5, "model": "qwen", "duration": 3}   at seconds >= 0, duration >= 0 (default 1)
    qwen                                           a bare model name: at 0, duration 1
    {"load_times": {"qwen": 20.8, "whisper": 2.4}}  seconds per model (`trace export` writes
                                                   the median of the loads the server saw)

The simulated world: a swap takes `stop_time` (when it evicts anything) plus the target's
load time; a stop takes `stop_time`; a granted request holds its model for its duration;
every client waits forever (grants are always taken). Events at the same virtual time run in
the order they were scheduled (a sequence number breaks ties), so the output is a pure
function of the inputs. `tick` runs once at every event time, and at each deadline the
scheduler reports (a TTL running out, a queued request reaching max_wait), never on a timer.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from llamaswap.compiler.decision import Decision, EvictionPolicy
from llamaswap.compiler.suggest import did_you_mean
from llamaswap.runtime.scheduler import ReqId, Scheduler, SchedulerSettings, SchedulingPolicy

__all__ = [
    "KEEP",
    "compare_table",
    "format_trace",
    "format_load_times",
    "trace_load_times",
    "trace_from_activity",
    "TraceError",
    "TraceIssue",
    "TraceRequest",
    "parse_trace",
    "resolve_trace",
    "simulate",
]

KEEP: Any = object()  # simulate(max_wait_override=KEEP): use the settings' max_wait
_DIGITS = 6  # virtual times are rounded to microseconds in the output


@dataclass(frozen=True, slots=True)
class TraceRequest:
    at: float
    model: str
    duration: float = 1.0
    line: int = 0  # 1-based line in the trace, 0 when not from a file


@dataclass(frozen=True, slots=True)
class TraceIssue:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class TraceError(ValueError):
    """The trace (or what it asks of the config) is invalid. Carries every issue found."""

    def __init__(self, issues: Iterable[TraceIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer literal too large for a float
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _json_line(text: str) -> tuple[Any, str | None]:
    """A line's JSON value, or the reason it is not JSON."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, "invalid JSON: nested too deeply"


def parse_trace(lines: Iterable[str], models: Iterable[str] | None = None) -> list[TraceRequest]:
    """Parse trace lines, in file order. With `models`, unknown model names are errors too.
    Raises TraceError listing every bad line. A single string is split into lines."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    known = None if models is None else set(models)
    requests: list[TraceRequest] = []
    issues: list[TraceIssue] = []
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if text[0] in '{["':  # JSON; only an object is a request
            item, problem = _json_line(text)
            if problem is not None:
                issues.append(TraceIssue(number, problem))
                continue
            if not isinstance(item, dict):
                issues.append(TraceIssue(number, "expected a JSON object"))
                continue
            if "load_times" in item:
                _, problems = _load_times_item(item)
                issues.extend(TraceIssue(number, p) for p in problems)
                continue
            problems = [_unknown_key(key) for key in sorted(set(item) - set(_REQUEST_KEYS))]
            model = item.get("model")
            if not isinstance(model, str) or not model:
                problems.append('"model" must be a non-empty string')
            at = _seconds(item["at"]) if "at" in item else None
            if "at" not in item:
                problems.append('"at" is missing: each request needs its arrival time in seconds')
            elif at is None:
                problems.append('"at" must be a number of seconds >= 0')
            duration = _seconds(item.get("duration", 1.0))
            if duration is None:
                problems.append('"duration" must be a number of seconds >= 0')
            if problems:
                issues.extend(TraceIssue(number, p) for p in problems)
                continue
            assert at is not None and duration is not None and isinstance(model, str)  # no problems
            request = TraceRequest(at, model, duration, number)
        elif any(ch.isspace() for ch in text):
            issues.append(TraceIssue(number, f"a bare model name cannot contain spaces: {text!r}"))
            continue
        else:
            request = TraceRequest(0.0, text, 1.0, number)
        if known is not None and request.model not in known:
            issues.append(TraceIssue(number, f"unknown model {request.model!r}"))
            continue
        requests.append(request)
    if issues:
        raise TraceError(issues)
    return requests


_REQUEST_KEYS = ("at", "model", "duration")


def _unknown_key(key: str) -> str:
    hint = did_you_mean(key, _REQUEST_KEYS, written="{}")
    return f"unknown key {key!r}" + (f" ({hint})" if hint else f" (a request has {', '.join(_REQUEST_KEYS)})")


def _load_times_item(item: dict) -> tuple[dict[str, float], list[str]]:
    """A `{"load_times": {MODEL: SECONDS, ...}}` line: the load times, and its problems."""
    problems = [f'unknown key {key!r} beside "load_times"' for key in sorted(set(item) - {"load_times"})]
    table = item["load_times"]
    if not isinstance(table, dict):
        return {}, [*problems, '"load_times" must be an object of model: seconds']
    out: dict[str, float] = {}
    for model, value in table.items():
        seconds = _seconds(value)
        if not model or seconds is None:
            problems.append(f'"load_times": {model!r} must be a model name with a number of seconds >= 0')
        else:
            out[model] = seconds
    return out, problems


def trace_load_times(lines: Iterable[str]) -> dict[str, float]:
    """The load times a trace's `load_times` lines give (a later line wins per model). The
    lines must have passed `parse_trace`."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    out: dict[str, float] = {}
    for raw in lines:
        text = raw.strip()
        if text.startswith("{") and '"load_times"' in text:
            item, _ = _json_line(text)
            if isinstance(item, dict) and "load_times" in item:
                out.update(_load_times_item(item)[0])
    return out


def format_load_times(loads: Mapping[str, float]) -> str:
    """The trace line `trace_load_times` reads back as `loads`."""
    return json.dumps({"load_times": dict(loads)})


def resolve_trace(
    requests: Iterable[TraceRequest], resolve: Callable[[str], str | None]
) -> list[TraceRequest]:
    """The requests with each model name (an ID or an alias) replaced by the model's ID, e.g.
    `resolve=plan.resolve_model`. Raises TraceError listing every line whose model is unknown."""
    resolved: list[TraceRequest] = []
    issues: list[TraceIssue] = []
    for r in requests:
        real = resolve(r.model)
        if real is None:
            issues.append(TraceIssue(r.line, f"unknown model {r.model!r}"))
        else:
            resolved.append(replace(r, model=real))
    if issues:
        raise TraceError(issues)
    return resolved


class _World:
    """The simulated runtime: the scheduler's Effects, turning each into future events."""

    def __init__(
        self,
        load_times: Mapping[str, float],
        default_load_time: float,
        stop_time: float,
        requests: list[TraceRequest],
    ) -> None:
        self.load_times = load_times
        self.default_load_time = default_load_time
        self.stop_time = stop_time
        self.requests = requests
        self.now = 0.0
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.swaps = 0
        self.loads: dict[str, int] = {}
        self.evictions: dict[str, int] = {}
        self.decisions: list[Decision] = []  # committed, in start order
        self.served_order: list[str] = []
        self.granted_at: dict[int, float] = {}
        self.finished_at: dict[int, float] = {}
        self.rejected: dict[int, tuple[int, str]] = {}

    def schedule(self, at: float, kind: str, payload: Any) -> None:
        heapq.heappush(self.events, (at, self.seq, kind, payload))
        self.seq += 1

    # Effects
    def start_swap(self, model: str, decision: Decision, stop_timeout: float) -> None:
        self.swaps += 1
        self.decisions.append(decision)
        self.loads[model] = self.loads.get(model, 0) + 1
        for victim in decision.evict:
            self.evictions[victim] = self.evictions.get(victim, 0) + 1
        took = (self.stop_time if decision.evict else 0.0) + self.load_times.get(
            model, self.default_load_time
        )
        self.schedule(self.now + took, "swap_done", model)

    def grant(self, req_id: ReqId, model: str) -> bool:
        assert isinstance(req_id, int)  # simulate() only issues int ids
        self.granted_at[req_id] = self.now
        self.served_order.append(model)
        self.schedule(self.now + self.requests[req_id].duration, "serve_done", req_id)
        return True

    def reject(self, req_id: ReqId, status: int, message: str, headers: Mapping[str, str]) -> None:
        assert isinstance(req_id, int)  # simulate() only issues int ids
        self.rejected[req_id] = (status, message)
        self.finished_at[req_id] = self.now

    def queue_position(self, req_id: ReqId, position: int) -> None:
        pass

    def stop_processes(self, models: tuple[str, ...], reason: str, timeout: float) -> None:
        self.schedule(self.now + self.stop_time, "stop_done", models)

    def end_requests(self, req_ids: tuple[ReqId, ...], model: str, reason: str) -> None:
        raise AssertionError("a trace has no reloads, so no drain can run out")


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted, non-empty list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def simulate(
    policy: EvictionPolicy,
    settings: SchedulerSettings,
    requests: Iterable[TraceRequest],
    load_times: Mapping[str, float] | None = None,
    default_load_time: float = 1.0,
    *,
    max_wait_override: float | None = KEEP,
    stop_time: float = 0.0,
    verbose: bool = False,
    scheduling: SchedulingPolicy | None = None,
) -> dict:
    """Run the trace through a fresh scheduler and summarise what happened.

    `max_wait_override`: KEEP (the settings' value), None (bounded waiting off) or seconds.
    `scheduling`: the scheduling policy (None: FIFO). Pass a fresh one per run: policies
    that learn keep what they saw.
    Returns {"requests", "swaps", "loads", "evictions", "served_order", "wait", "makespan",
    "rejected"} (+ "per_request" and "decisions", the committed swaps, when verbose); waits are over granted requests, makespan
    runs from the first arrival to the last request finished.
    """
    requests = list(requests)
    load_times = dict(load_times or {})
    issues = [
        TraceIssue(r.line, f"unknown model {r.model!r}") for r in requests if r.model not in settings.models
    ]
    if issues:
        raise TraceError(issues)
    unknown = sorted(set(load_times) - set(settings.models))
    if unknown:
        raise ValueError(f"load times given for unknown models: {', '.join(unknown)}")
    if any(t < 0 for t in load_times.values()) or default_load_time < 0 or stop_time < 0:
        raise ValueError("load and stop times must be >= 0")
    if max_wait_override is not KEEP:
        settings = replace(settings, max_wait=max_wait_override)

    # Stable: same-time requests keep their trace order.
    ordered = sorted(requests, key=lambda r: r.at)
    world = _World(load_times, default_load_time, stop_time, ordered)
    scheduler = Scheduler(policy, settings, world, scheduling=scheduling)
    for req_id, request in enumerate(ordered):
        world.schedule(request.at, "arrive", req_id)

    ticks: set[float] = set()
    while world.events:
        at, _, kind, payload = heapq.heappop(world.events)
        world.now = at
        if kind == "arrive":
            scheduler.request(payload, ordered[payload].model, at)
        elif kind == "swap_done":
            scheduler.swap_done(payload, at)
        elif kind == "serve_done":
            world.finished_at[payload] = at
            scheduler.serve_done(payload, at)
        elif kind == "stop_done":
            scheduler.stop_done(payload, at)
        # kind == "tick" only wakes the loop: the tick below does the work.
        if not world.events or world.events[0][0] > at:
            scheduler.tick(at)
            deadline = scheduler.next_deadline()
            if deadline is not None and deadline > at and deadline not in ticks:
                ticks.add(deadline)
                world.schedule(deadline, "tick", None)

    return _report(ordered, world, verbose)


def _report(ordered: list[TraceRequest], world: _World, verbose: bool) -> dict:
    def r(value: float) -> float:
        return round(value, _DIGITS)

    waits = sorted(world.granted_at[i] - ordered[i].at for i in world.granted_at)
    if waits:
        wait = {
            "mean": r(sum(waits) / len(waits)),
            "p50": r(_percentile(waits, 0.5)),
            "p95": r(_percentile(waits, 0.95)),
            "max": r(waits[-1]),
        }
    else:
        wait = {"mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    makespan = 0.0
    if ordered:
        makespan = max(world.finished_at.values()) - min(req.at for req in ordered)
    out = {
        "requests": len(ordered),
        "swaps": world.swaps,
        "loads": dict(sorted(world.loads.items())),
        "evictions": dict(sorted(world.evictions.items())),
        "served_order": world.served_order,
        "wait": wait,
        "makespan": r(makespan),
        "rejected": len(world.rejected),
    }
    if verbose:
        per_request = []
        for i, req in enumerate(ordered):
            granted = world.granted_at.get(i)
            entry = {
                "model": req.model,
                "at": r(req.at),
                "granted_at": None if granted is None else r(granted),
                "finished_at": r(world.finished_at[i]),
                "wait": None if granted is None else r(granted - req.at),
            }
            if i in world.rejected:
                entry["rejected"] = {"status": world.rejected[i][0], "message": world.rejected[i][1]}
            per_request.append(entry)
        out["per_request"] = per_request
        # Every committed swap decision, in start order, as serve's decision records say them.
        out["decisions"] = [
            {
                "model": d.target,
                "running_before": list(d.running),
                "evicted": list(d.evict),
                "set": d.set,
                **({} if d.devices is None else {"devices": list(d.devices)}),
            }
            for d in world.decisions
        ]
    return out


def compare_table(
    results: Mapping[str, dict], load_times: Mapping[str, float], default_load_time: float = 1.0
) -> dict[str, dict]:
    """The side-by-side summary of `plan --trace --compare`: per policy (in the given order)
    swaps, load-seconds (each load at its load time), waits, makespan and rejections."""
    rows = {}
    for name, result in results.items():
        load_seconds = sum(n * load_times.get(m, default_load_time) for m, n in result["loads"].items())
        rows[name] = {
            "swaps": result["swaps"],
            "load_seconds": round(load_seconds, _DIGITS),
            "wait": dict(result["wait"]),
            "makespan": result["makespan"],
            "rejected": result.get("rejected", 0),
            "loads": dict(result["loads"]),
        }
    return rows


def trace_from_activity(rows: Iterable[tuple[float, str, float, float]]) -> list[TraceRequest]:
    """Recorded requests as a trace: rows of (arrival epoch seconds, model, wait ms, total ms)
    in recorded order (the activity store's `ts`, `model`, `wait_ms`, `duration_ms`). `at` is
    relative to the first arrival; `duration` is the time the model served the request (total
    minus wait, never negative). Arrival order is kept, ties included."""
    rows = list(rows)
    if not rows:
        return []
    t0 = min(row[0] for row in rows)
    out = []
    for ts, model, wait_ms, duration_ms in sorted(rows, key=lambda row: row[0]):
        out.append(
            TraceRequest(
                round(ts - t0, _DIGITS), model, round(max(0.0, duration_ms - wait_ms) / 1000.0, _DIGITS)
            )
        )
    return out


def format_trace(requests: Iterable[TraceRequest]) -> list[str]:
    """Trace lines (JSON, one request each) that `parse_trace` reads back unchanged."""
    return [json.dumps({"at": r.at, "model": r.model, "duration": r.duration}) for r in requests]
