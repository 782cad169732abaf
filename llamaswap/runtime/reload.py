"""Reload: hot reload of the served config as a diff — the edge around runtime/reconfigure.py.

Triggers: SIGHUP (serve.py), `--watch-config` (`ConfigWatcher`: polls the config file or
directory, notices a change within 2 s, waits until the content stops changing so an
editor's partial write is not compiled), and `POST /api/config/reload`. Reloads run one at
a time; a trigger during a reload waits for it, then reloads what is there then.

One reload: read the config and compile it in a worker thread, pinning the ports of the
models that stay (`CompileOptions.keep_ports`). A config that cannot be read or has errors
changes nothing: the old plan keeps serving; the diagnostics are logged as `compile` prints
them, kept in the record (`GET /api/config`, `GET /api/reloads`, `/health`'s text), and
the reload counts as failed (`llamaswap_reloads_total{outcome="failed"}`). Otherwise the
reload plan (what is added, removed, restarted, updated; aliases; decisions; the eviction
the new policy forces) is computed, the live plan and API keys are swapped, and the router's
owner applies the rest (`Router.reconfigure`) in the same step, so a request resolved
against the new plan never reaches the scheduler before the new settings. Unchanged models
keep their processes and their requests in flight; restarted ones are drained first;
removed ones finish their requests, then stop. One log line per reload says what changed.
The drain is bounded (`llamaswap.reloadDrainTimeout`, default 30 s, as llama-swap's reload
gives its old server): what is still in flight then is ended (a stream gets an error event, a
WebSocket a 1012 close, another response is aborted; runtime/scheduler.py "Reconfigure"), and
`GET /api/reloads` and `GET /api/scheduler` name the models draining and their deadline.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from llamaswap.compiler.diagnostics import Severity, render_text
from llamaswap.compiler.plan import Plan
from llamaswap.runtime.activity import ACTIVITY
from llamaswap.runtime.keys import DECISIONS, LIVE, METRICS, ROUTER, SELECTORS
from llamaswap.runtime.processes import ModelProcess, ProcessSpec
from llamaswap.runtime.reconfigure import ReloadPlan, reload_plan
from llamaswap.runtime.scheduler import ModelState
from llamaswap.runtime.settings import (
    effective_unload_timeout,
    health_check_timeout,
    scheduler_settings,
    scheduling_policy,
)
from llamaswap.runtime.sources import (  # noqa: F401 (file_source, read_text_file, text_source: re-exported)
    ConfigSource,
    SourceError,
    file_source,
    read_text_file,
    text_source,
)

logger = logging.getLogger("llamaswap.reload")

RECORDS = 100
WATCH_INTERVAL = 0.5  # seconds between polls of the watched paths
WATCH_SETTLE = 0.3  # the content must stay the same this long before a reload
CONFIG_SUFFIXES = (".yaml", ".yml")


def process_specs(plan: Plan) -> dict[str, ProcessSpec]:
    """Every model's process spec: what `serve` runs for it."""
    c = plan.config
    assert c is not None
    hct = health_check_timeout(plan)
    return {
        m: ProcessSpec(
            model=m,
            cmd=c.models[m].cmd,
            proxy=c.models[m].proxy,
            cmd_stop=c.models[m].cmd_stop,
            env=tuple(c.models[m].env),
            check_endpoint=c.models[m].check_endpoint,
            health_check_timeout=hct,
            unload_timeout=effective_unload_timeout(plan, m),
        )
        for m in plan.models
    }


# -- where the config comes from ---------------------------------------------------------------


# ConfigSource and its readers live in sources.py (serve compiles before aiohttp is imported).


# -- records -------------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ReloadRecord:
    id: int
    time: float  # time.time() at the start
    trigger: str
    ok: bool
    seconds: float
    error: str | None = None
    diagnostics: tuple[dict, ...] = ()
    diagnostics_text: str = ""
    plan: ReloadPlan | None = None

    @property
    def summary(self) -> str:
        if not self.ok:
            return f"failed: {self.error}"
        assert self.plan is not None
        return self.plan.summary()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": _iso(self.time),
            "trigger": self.trigger,
            "ok": self.ok,
            "outcome": "ok" if self.ok else "failed",
            "seconds": round(self.seconds, 6),
            "error": self.error,
            "summary": self.summary,
            "diagnostics": list(self.diagnostics),
            "diagnostics_text": self.diagnostics_text,
            "changes": self.plan.to_json() if self.plan is not None else None,
        }


# -- the reloader ----------------------------------------------------------------------------------


class Reloader:
    """Reloads the app's config; the only writer of `app[LIVE]` after startup."""

    def __init__(
        self,
        app: web.Application,
        source: ConfigSource | None,
        make_process: Callable[[web.Application, ProcessSpec], ModelProcess],
    ) -> None:
        self.app = app
        self.source = source
        self._make_process = make_process
        self.records: collections.deque[ReloadRecord] = collections.deque(maxlen=RECORDS)
        self.loaded_at = time.time()  # when the serving plan was loaded
        self._lock = asyncio.Lock()
        self._ids = 0
        self._tasks: set[asyncio.Task] = set()

    @property
    def last(self) -> ReloadRecord | None:
        return self.records[-1] if self.records else None

    def trigger(self, why: str) -> asyncio.Task:
        """Reload in the background (signal handlers, the watcher)."""
        task = asyncio.get_running_loop().create_task(self.reload(why), name=f"llamaswap:reload:{why}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def reload(self, trigger: str) -> ReloadRecord:
        async with self._lock:
            self._ids += 1
            wall, started = time.time(), time.monotonic()
            try:
                record = await self._reload(self._ids, wall, started, trigger)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let a reload take serving down
                logger.exception("reload failed")
                record = ReloadRecord(
                    self._ids,
                    wall,
                    trigger,
                    False,
                    time.monotonic() - started,
                    error=f"{type(exc).__name__}: {exc}",
                )
            self.records.append(record)
            self.app[METRICS].reloads.labels("ok" if record.ok else "failed").inc()
            if record.ok:
                logger.info("config reloaded (%s, %.3fs): %s", trigger, record.seconds, record.summary)
            else:
                text = record.diagnostics_text.rstrip()
                logger.error(
                    "config reload failed (%s): %s; still serving the previous config%s",
                    trigger,
                    record.error,
                    "\n" + text if text else "",
                )
            return record

    async def _reload(self, rid: int, wall: float, started: float, trigger: str) -> ReloadRecord:
        live = self.app[LIVE]
        old = live.plan
        if self.source is None:
            return ReloadRecord(
                rid, wall, trigger, False, 0.0, error="this server has no config source to reload"
            )
        assert old.config is not None
        try:
            new, texts = await asyncio.to_thread(self.source.compile, old.ports, old.config.start_port)
        except SourceError as exc:
            return ReloadRecord(rid, wall, trigger, False, time.monotonic() - started, error=str(exc))
        shown = tuple(d.to_json() for d in new.diagnostics if d.severity is not Severity.INFO)
        text = render_text([d for d in new.diagnostics if d.severity is not Severity.INFO], texts)
        if not new.ok:
            errors = sum(1 for d in new.diagnostics if d.severity is Severity.ERROR)
            return ReloadRecord(
                rid,
                wall,
                trigger,
                False,
                time.monotonic() - started,
                error=f"{self.source.name}: the config has {errors} error(s)",
                diagnostics=shown,
                diagnostics_text=text,
            )
        router = self.app[ROUTER]
        running = await router.call(
            lambda s: tuple(m for m in old.models if s.knows(m) and s.state(m) is not ModelState.STOPPED)
        )
        changes = await asyncio.to_thread(reload_plan, old, new, running)
        specs = process_specs(new)
        # A new scheduling policy only when its config changed (a kept one keeps what it learnt).
        assert new.config is not None
        was, now_ = old.config.routing.scheduler, new.config.routing.scheduler
        scheduling = (
            scheduling_policy(new)
            if (was.policy_name, was.policy_options) != (now_.policy_name, now_.policy_options)
            else None
        )
        store = self.app.get(ACTIVITY)
        if scheduling is not None and store is not None:  # a fresh one starts from the loads so far
            from llamaswap.runtime.policies import seed_load_times

            times = await asyncio.to_thread(store.load_times, new.models, flush=True)
            seed_load_times(scheduling, times, router.now())
        # The swap of the live plan and the router's event happen in one step (no await
        # between them): a request resolved against the new plan reaches the owner after it.
        live.plan = new
        live.api_keys = frozenset(new.config.api_keys if new.config else ())
        self.app[DECISIONS].policy = new.policy
        self.app[SELECTORS].replan(new)
        self.app[METRICS].set_models(new.models)
        evict, why = await router.reconfigure(
            new.policy,
            scheduler_settings(new),
            specs,
            restart=changes.restarted,
            evict_costs=new.evict_costs,
            resolve=new.resolve_model,
            make_process=lambda spec: self._make_process(self.app, spec),
            scheduling=scheduling,
            profiles=[p.name for p in new.virtual.profiles],
        )
        if evict != changes.evict:  # what ran changed while the reload was computed
            changes = dataclasses.replace(changes, evict=evict, evict_reason=why)
        self.loaded_at = wall
        return ReloadRecord(
            rid,
            wall,
            trigger,
            True,
            time.monotonic() - started,
            diagnostics=shown,
            diagnostics_text=text,
            plan=changes,
        )


# -- the watcher ------------------------------------------------------------------------------------


def draining(sched: Any, now: float) -> dict[str, dict[str, Any]]:
    """The models a reload retires that still have requests in flight: why, how many, and
    seconds until their drain ends (<= 0: those requests are being ended). Run it inside the
    router's owner task (`Router.call`), with `now` from its clock."""
    reasons = sched.retiring()
    return {
        model: {
            "reason": reasons.get(model),
            "in_flight": sched.in_flight(model),
            "deadline_in_s": round(until - now, 3),
        }
        for model, until in sorted(sched.draining().items())
    }


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def snapshot(paths: tuple[str, ...]) -> tuple:
    """What the watched paths hold: each file's content hash (None when missing); for a
    directory, its top-level *.yaml / *.yml files."""
    out: list[tuple[str, str | None]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            try:
                names = sorted(n for n in os.listdir(p) if n.endswith(CONFIG_SUFFIXES))
            except OSError:
                names = []
            out.extend((str(p / n), _digest(p / n)) for n in names if (p / n).is_file())
        else:
            out.append((raw, _digest(p)))
    return tuple(out)


class ConfigWatcher:
    """Polls `paths` (stdlib only: content hashes) and calls `on_change` when what they hold
    changed and then stayed the same for `settle` seconds."""

    def __init__(
        self,
        paths: tuple[str, ...],
        on_change: Callable[[], Awaitable[Any]],
        interval: float = WATCH_INTERVAL,
        settle: float = WATCH_SETTLE,
    ) -> None:
        self.paths = paths
        self.on_change = on_change
        self.interval = interval
        self.settle = settle

    async def run(self) -> None:
        last = await asyncio.to_thread(snapshot, self.paths)
        while True:
            await asyncio.sleep(self.interval)
            now = await asyncio.to_thread(snapshot, self.paths)
            if now == last:
                continue
            while True:  # an editor may still be writing: wait until it holds still
                await asyncio.sleep(self.settle)
                again = await asyncio.to_thread(snapshot, self.paths)
                if again == now:
                    break
                now = again
            last = now
            logger.info("config changed on disk: reloading")
            try:
                await self.on_change()
            except Exception:
                logger.exception("reload after a config change failed")


# -- endpoints ---------------------------------------------------------------------------------------

RELOADER = web.AppKey("reloader", Reloader)


async def reload_state(app: web.Application) -> dict[str, Any]:
    """What `GET /api/config` says about reloads: when the serving plan was loaded, its
    source text (file -> text, as it is on disk now), the watched paths, the last reload's
    record and the recent ones (newest first)."""
    reloader = app[RELOADER]
    source = reloader.source
    texts: dict[str, str] = {}
    if source is not None:
        try:
            texts = await asyncio.to_thread(source.read)
        except SourceError as exc:
            logger.debug("config source unreadable: %s", exc)
    last = reloader.last
    return {
        "loaded_at": _iso(reloader.loaded_at),
        "source": texts,
        "watched": list(source.paths) if source is not None else [],
        "last_reload": last.to_json() if last is not None else None,
        "reloads": [r.to_json() for r in reversed(list(reloader.records)[-10:])],
    }


async def reloads_view(request: web.Request) -> web.Response:
    """GET /api/reloads[?limit=N]: reload records, newest first."""
    try:
        limit = int(request.query.get("limit", str(RECORDS)))
    except ValueError:
        limit = RECORDS
    records = list(request.app[RELOADER].records)[-max(0, limit) :] if limit > 0 else []
    router = request.app[ROUTER]
    try:
        now_draining = await router.call(lambda s: draining(s, router.now()))
    except RuntimeError:  # the scheduler task is not running (shutting down)
        now_draining = {}
    return web.json_response({"reloads": [r.to_json() for r in reversed(records)], "draining": now_draining})


async def reload_now(request: web.Request) -> web.Response:
    """POST /api/config/reload: reload now; 200 with the record, 422 when it failed."""
    record = await request.app[RELOADER].reload("api")
    return web.json_response(record.to_json(), status=200 if record.ok else 422)


def health_detail(app: web.Application) -> str:
    """What `/health` adds about reloads ("" when the last one did not fail)."""
    reloader = app.get(RELOADER)
    last = reloader.last if reloader is not None else None
    if last is None or last.ok:
        return ""
    return f"last config reload failed: {last.error}; serving the previous config"
