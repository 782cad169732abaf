"""Settings: the scheduler's knobs, read off a compiled Plan. Pure (the simulator uses it too).

- concurrency limit: `concurrencyLimit` (0 -> 10, applied by the scheduler; llama-swap raises
  `comfyui_auto`'s to at least 50);
- priority: `routing.scheduler.settings.fifo.priority` (aliases resolved at compile time);
- TTL: model `ttl`, where -1 means `globalTTL`; 0 = never;
- unload timeout: model `unloadTimeout`, 0 -> the global one (0 -> 10 s);
- max_wait: `routing.scheduler.settings.fifo.max_wait`; unset -> DEFAULT_MAX_WAIT, 0 -> off;
- swap stop timeout: `healthCheckTimeout` (llama-swap uses it as the eviction grace);
- reload drain timeout: `llamaswap.reloadDrainTimeout` (default 30 s, llama-swap's reload deadline).
"""

from __future__ import annotations

from llamaswap.compiler.plan import Plan
from llamaswap.runtime.scheduler import (
    DEFAULT_MAX_WAIT,
    DEFAULT_UNLOAD_TIMEOUT,
    SchedulerSettings,
    SchedulingPolicy,
)

_UNSET = object()
COMFYUI_MODEL = "comfyui_auto"  # llama-swap's fixed model behind /comfyui/
COMFYUI_CONCURRENCY = 50


def effective_ttl(plan: Plan, model: str) -> float:
    c = plan.config
    assert c is not None
    ttl = c.models[model].ttl
    return float(c.global_ttl if ttl == -1 else max(0, ttl))


def effective_unload_timeout(plan: Plan, model: str) -> float:
    c = plan.config
    assert c is not None
    own = c.models[model].unload_timeout
    glob = c.unload_timeout if c.unload_timeout > 0 else DEFAULT_UNLOAD_TIMEOUT
    return float(own if own > 0 else glob)


def health_check_timeout(plan: Plan) -> float:
    """Seconds to wait for an upstream to become ready (at least 1)."""
    c = plan.config
    assert c is not None
    return float(max(1, c.health_check_timeout))


def scheduler_settings(plan: Plan, max_wait: object = _UNSET) -> SchedulerSettings:
    """SchedulerSettings for a plan; `max_wait` (seconds, 0/None = off) overrides the config."""
    c = plan.config
    assert c is not None, "scheduler settings need a compiled config"
    if max_wait is _UNSET:
        configured = c.routing.scheduler.settings.fifo.max_wait
        mw = DEFAULT_MAX_WAIT if configured is None else (None if configured == 0 else float(configured))
    else:
        mw = None if not max_wait else float(max_wait)  # type: ignore[arg-type]
    glob_unload = c.unload_timeout if c.unload_timeout > 0 else DEFAULT_UNLOAD_TIMEOUT
    return SchedulerSettings(
        models=plan.models,
        concurrency_limit={
            m: max(c.models[m].concurrency_limit, COMFYUI_CONCURRENCY if m == COMFYUI_MODEL else 0)
            for m in plan.models
        },
        priority={m: p for m, p in plan.priority.items() if m in plan.models},
        ttl={m: effective_ttl(plan, m) for m in plan.models},
        unload_timeout={m: effective_unload_timeout(plan, m) for m in plan.models},
        max_wait=mw,
        swap_stop_timeout=health_check_timeout(plan),
        default_unload_timeout=float(glob_unload),
        reload_drain_timeout=float(c.llamaswap.reload_drain_timeout),
    )


def stall_timeout(plan: Plan) -> float:
    """Seconds requests may wait with nothing started, finished or granted before /health
    says the scheduler is stalled: `fifo.stall_timeout`, else long enough for the slowest
    legitimate swap (evicted models' graceful stop plus the target's health-check timeout)."""
    c = plan.config
    assert c is not None
    configured = c.routing.scheduler.settings.fifo.stall_timeout
    if configured is not None:
        return float(configured)
    return 2 * health_check_timeout(plan) + 30.0


def scheduling_policy(plan: Plan, name: str | None = None) -> SchedulingPolicy:
    """A fresh scheduling policy for a plan: `routing.scheduler.policy` (or `name`, with no
    options). Raises runtime.policies.PolicyError when it cannot be made (the CLI's compile
    already reported that as LS219)."""
    from llamaswap.runtime.policies import make_policy

    c = plan.config
    assert c is not None
    if name is not None:
        return make_policy(
            name, c.routing.scheduler.policy_options if name == c.routing.scheduler.policy_name else {}
        )
    return make_policy(c.routing.scheduler.policy_name or "fifo", c.routing.scheduler.policy_options)
