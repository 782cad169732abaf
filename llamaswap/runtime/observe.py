"""Observe: decision records, Prometheus metrics, and a health check that means something.

- `DecisionLog` keeps the most recent committed swaps (bounded memory). A record says what
  was asked, what ran before, what was evicted, the chosen set (or group rule), its cost,
  the runner-up candidates, how long the requests waited and how long the load took. It is
  written once per committed swap — speculative what-if queries never produce one — and the
  same fields go to the log as one JSON line when the swap ends.
- `Metrics` owns a private set of Prometheus metrics (so several apps can live in one process):
  requests by model and status, in-flight requests, model state, swaps and evictions by
  model and reason, load-duration and queue-wait histograms, queue depth, the age of the
  oldest waiting request, and config reloads by outcome. The values are plain numbers here;
  prometheus_client is imported at the first scrape, to write them in its exposition format
  (the samples prometheus_client's own Counter, Gauge and Histogram would give; serve's
  memory and start-up do not pay for the library until `/metrics` is asked for).
- `health()` is 200 only while the scheduler's owner task is alive and making progress:
  503 with a reason when the task died, or when requests have been waiting with nothing
  started, finished or granted for longer than the stall window.
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llamaswap.compiler.explain import explain

if TYPE_CHECKING:
    from llamaswap.compiler.decision import EvictionPolicy
    from llamaswap.runtime.router import Router, SwapRecord

logger = logging.getLogger("llamaswap.swaps")

DEFAULT_RECORDS = 1000
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class DecisionRecord:
    swap: SwapRecord
    requested: str
    candidates: list[dict]
    engine: str = "matrix"

    def to_json(self) -> dict[str, Any]:
        s = self.swap
        d = s.decision
        status = "loading" if s.finished is None else ("error" if s.error else "ok")
        return {
            "id": s.id,
            "time": _iso(s.started_wall),
            "model": s.model,
            "requested": self.requested,
            "running_before": list(d.running),
            "evicted": list(d.evict),
            "set": d.set,
            "dsl": d.dsl,
            "rule": d.rule,
            "cost": d.cost,
            "target_set": list(d.target_set),
            **({} if d.devices is None else {"devices": list(d.devices)}),
            "candidates": self.candidates,
            "waited": [round(w, 6) for w in s.requests_waited],
            "load_seconds": None if s.load_seconds is None else round(s.load_seconds, 6),
            "status": status,
            "error": s.error,
            "explanation": explain(d, self.engine, self.requested),
            # The profile pin / selector choice that led to this model (None: asked by name).
            "resolution": s.via.to_json() if s.via is not None else None,
        }


class DecisionLog:
    """The most recent committed swaps, newest last."""

    def __init__(self, policy: EvictionPolicy, maxlen: int = DEFAULT_RECORDS) -> None:
        self.policy = policy
        self._records: collections.deque[DecisionRecord] = collections.deque(maxlen=maxlen)
        self._by_swap: dict[int, DecisionRecord] = {}

    def committed(self, swap: SwapRecord, requested: str | None = None) -> DecisionRecord:
        """A swap was committed: keep its record (with the runner-up candidates)."""
        d = swap.decision
        try:
            explained = self.policy.decide(d.target, d.running, explain=True)
            ranked = [c.to_json() for c in (explained.candidates or ())]
        except Exception:  # explaining must never break a swap
            ranked = []
        runner_ups = ranked[1:] if ranked and ranked[0]["set"] == d.set else ranked
        record = DecisionRecord(swap, requested or d.target, runner_ups, self.policy.engine)
        if len(self._records) == self._records.maxlen:
            old = self._records[0]
            self._by_swap.pop(old.swap.id, None)
        self._records.append(record)
        self._by_swap[swap.id] = record
        return record

    def finished(self, swap: SwapRecord) -> None:
        """The swap ended: one structured log line with the record's fields."""
        record = self._by_swap.get(swap.id)
        if record is None:
            return
        logger.info("swap %s", json.dumps(record.to_json(), sort_keys=True, separators=(",", ":")))

    def for_swap(self, swap_id: int) -> DecisionRecord | None:
        return self._by_swap.get(swap_id)

    def latest_by_model(self, models: Iterable[str]) -> dict[str, DecisionRecord]:
        """The newest record of each of `models` that has one."""
        wanted = set(models)
        out: dict[str, DecisionRecord] = {}
        for record in reversed(self._records):
            m = record.swap.model
            if m in wanted and m not in out:
                out[m] = record
                if len(out) == len(wanted):
                    break
        return out

    def recent(self, limit: int) -> list[dict[str, Any]]:
        items = list(self._records)[-limit:] if limit > 0 else []
        return [r.to_json() for r in reversed(items)]

    def __len__(self) -> int:
        return len(self._records)


class _Counter:
    """One labelled child of a counter (prometheus_client's Counter child: a float total and
    the time it was created)."""

    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        yield "_total", {}, self.value
        if _CREATED:
            yield "_created", {}, self.created


class _Gauge:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        yield "", {}, self.value


class _Histogram:
    """One labelled child of a histogram: a count per bucket (the last one +Inf), the sum."""

    __slots__ = ("bounds", "counts", "sum", "created")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        for i, bound in enumerate(self.bounds):
            if amount <= bound:
                self.counts[i] += 1.0
                break

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        from prometheus_client.utils import floatToGoString

        acc = 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            acc += count
            yield "_bucket", {"le": floatToGoString(bound)}, acc
        yield "_count", {}, acc
        if self.bounds[0] >= 0:
            yield "_sum", {}, self.sum
        if _CREATED:
            yield "_created", {}, self.created


# prometheus_client's switch for the `_created` series, read the same way (at start).
_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")


class _Family:
    """A metric with labels: its children by label values, in the order they were created
    (the order prometheus_client exposes them in)."""

    def __init__(
        self, kind: str, name: str, doc: str, labelnames: tuple[str, ...], buckets: tuple[float, ...] = ()
    ) -> None:
        self.kind, self.name, self.doc, self.labelnames = kind, name, doc, labelnames
        self.bounds = tuple(float(b) for b in buckets) + ((math.inf,) if buckets else ())
        self.children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        got = self.children.get(values)
        if got is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            values = tuple(str(v) for v in values)
            got = self.children.get(values)
            if got is None:
                got = self.children[values] = (
                    _Counter()
                    if self.kind == "counter"
                    else _Gauge()
                    if self.kind == "gauge"
                    else _Histogram(self.bounds)
                )
        return got

    def metric(self) -> Any:
        from prometheus_client.metrics_core import Metric

        out = Metric(self.name, self.doc, self.kind)
        for values, child in self.children.items():
            series = dict(zip(self.labelnames, values, strict=True))
            for suffix, extra, value in child.samples():
                out.add_sample(self.name + suffix, {**series, **extra}, value)
        return out


class Metrics:
    """Prometheus metrics of one serve app."""

    def __init__(self, models: Iterable[str]) -> None:
        self.models = tuple(models)
        self.requests = _Family(
            "counter",
            "llamaswap_requests",
            "Model-dispatched requests by model and HTTP status.",
            ("model", "status"),
        )
        self.in_flight = _Family(
            "gauge", "llamaswap_requests_in_flight", "Requests being served, by model.", ("model",)
        )
        self.swaps = _Family(
            "counter", "llamaswap_swaps", "Committed swaps by target model and outcome.", ("model", "outcome")
        )
        self.evictions = _Family(
            "counter",
            "llamaswap_evictions",
            "Models stopped, by model and reason (swap, ttl, unload, shutdown, crash).",
            ("model", "reason"),
        )
        self.load_duration = _Family(
            "histogram",
            "llamaswap_load_duration_seconds",
            "Time from a swap's start of loading to the upstream being ready.",
            ("model",),
            LOAD_BUCKETS,
        )
        self.queue_wait = _Family(
            "histogram",
            "llamaswap_queue_wait_seconds",
            "Time from a request's arrival to its grant.",
            ("model",),
            WAIT_BUCKETS,
        )
        self.reloads = _Family(
            "counter", "llamaswap_reloads", "Config reloads by outcome (ok, failed).", ("outcome",)
        )
        self._families = (
            self.requests,
            self.in_flight,
            self.swaps,
            self.evictions,
            self.load_duration,
            self.queue_wait,
            self.reloads,
        )
        for outcome in ("ok", "failed"):
            self.reloads.labels(outcome)
        for m in self.models:
            self.in_flight.labels(m).set(0)
        self._children: dict[tuple, Any] = {}  # cached label children (the hot path)
        self._state_source: Any = None
        self._queue_source: Any = None
        self._registry: Any = None

    def child(self, metric: _Family, *labels: str) -> Any:
        key = (id(metric), labels)
        got = self._children.get(key)
        if got is None:
            got = self._children[key] = metric.labels(*labels)
        return got

    def count_request(self, model: str, status: str) -> None:
        self.child(self.requests, model, status).inc()

    def set_models(self, models: Iterable[str]) -> None:
        """A reload changed the models: new ones start at 0 in flight."""
        models = tuple(models)
        for m in models:
            if m not in self.models:
                self.in_flight.labels(m).set(0)
        self.models = models

    def bind(self, processes: dict, router: Router) -> None:
        """Read live values (model state, queue) from these at scrape time."""
        self._state_source = processes
        self._queue_source = router

    def collect(self) -> Iterator[Any]:
        """Every metric as prometheus_client's Metric, the live ones last."""
        for family in self._families:
            yield family.metric()
        yield from _live(self)

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(self)
        return generate_latest(self._registry)


def _live(m: Metrics) -> Iterator[Any]:
    """The values read at scrape time."""
    from prometheus_client.core import GaugeMetricFamily

    state = GaugeMetricFamily(
        "llamaswap_model_state", "1 for each model's current process state.", labels=["model", "state"]
    )
    procs = m._state_source or {}
    for model in m.models:
        proc = procs.get(model)
        current = proc.state.value if proc is not None else "stopped"
        for s in ("stopped", "starting", "ready", "stopping", "shutdown"):
            state.add_metric([model, s], 1.0 if s == current else 0.0)
    yield state
    depth = GaugeMetricFamily(
        "llamaswap_queue_depth", "Requests waiting for a grant (queued or waiting on a swap)."
    )
    oldest = GaugeMetricFamily(
        "llamaswap_oldest_waiting_seconds", "Age of the oldest request waiting for a grant (0 when none)."
    )
    router = m._queue_source
    waiting = router.waiting_tickets() if router is not None else []
    depth.add_metric([], float(len(waiting)))
    if waiting and router is not None:
        now = router.now()
        oldest.add_metric([], max(0.0, now - min(t.arrived for t in waiting)))
    else:
        oldest.add_metric([], 0.0)
    yield depth
    yield oldest


def health(router: Router, stall_timeout: float) -> tuple[bool, str]:
    """(ok, reason). Not ok when the owner task is gone, or when work waits without progress."""
    owner = router.owner
    if owner is None:
        return False, "scheduler task not started"
    if owner.done():
        if owner.cancelled():
            return False, "scheduler task was cancelled"
        exc = owner.exception()
        return False, f"scheduler task died: {exc!r}" if exc else "scheduler task exited"
    waiting = router.waiting_tickets()
    if waiting:
        idle = time.monotonic() - router.last_advance
        if idle > stall_timeout:
            return False, (
                f"scheduler stalled: {len(waiting)} request(s) waiting and nothing started, "
                f"finished or granted for {idle:.1f}s (window {stall_timeout:g}s)"
            )
    return True, "OK"


class AppObserver:
    """The router's observer in `serve`: decision records plus metrics."""

    def __init__(self, decisions: DecisionLog, metrics: Metrics) -> None:
        self.decisions = decisions
        self.metrics = metrics

    def swap_started(self, record: SwapRecord, requested: str) -> None:
        self.decisions.committed(record, requested)

    def swap_finished(self, record: SwapRecord) -> None:
        outcome = "error" if record.error else "ok"
        self.metrics.swaps.labels(record.model, outcome).inc()
        if record.load_seconds is not None and not record.error:
            self.metrics.load_duration.labels(record.model).observe(record.load_seconds)
        self.decisions.finished(record)

    def granted(self, model: str, waited: float) -> None:
        m = self.metrics
        m.child(m.queue_wait, model).observe(max(0.0, waited))
        m.child(m.in_flight, model).inc()

    def served(self, model: str) -> None:
        m = self.metrics
        m.child(m.in_flight, model).dec()

    def evicted(self, model: str, reason: str) -> None:
        self.metrics.evictions.labels(model, reason).inc()

    def profile_changed(self, old: str | None, new: str | None, reason: str) -> None:
        pass  # the router logs it; the UI feed (events.EventsObserver) publishes it
