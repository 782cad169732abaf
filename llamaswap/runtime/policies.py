"""Scheduling policies: the shipped ones, and the registry that finds them by name.

A scheduling policy (`scheduler.SchedulingPolicy`) answers the scheduler's open questions:
which victims, and whether to hold idle victims a little longer before a swap evicts them.
`routing.scheduler.policy` names one; its options come from the mapping form
(`policy: {use: NAME, OPTION: VALUE, ...}`). Names are looked up among the built-in policies,
then in the `llamaswap.policies` entry-point group (see docs/policies.md): an entry point's
object is a factory called as `factory(**options)` that returns a fresh policy; it raises
`PolicyOptionError` (or TypeError/ValueError) for bad options.

The policies are sans-IO, like the scheduler: they see time only through their inputs, so
`plan --trace` and the server make the same choices.

`hold` (fewer swaps than FIFO, paid in wait; see docs/policies.md "Measured"): many of FIFO's
swaps are eager evictions, a model
evicted while it is still "hot" (in a burst of use) and asked for again moments later, which
costs its whole load time and the swap back. `hold` keeps an idle victim while its next use
is likely soon, measured on its own history, and for no longer than its reload is worth:

- it learns, per model, the *return gaps* (from the model's last activity, an arrival or a
  finished request, to its next arrival) and its load time (from the swaps it saw start and
  finish; the `load_time` option before the first one);
- a victim is *hot* while its idle time is below the `quantile` of its return gaps (at
  least `min_history` of them; colder models are evicted at once, as FIFO does);
- the hold ends when no victim is hot any more, or at `budget` x the victims' load time
  divided by the number of requests queued for the target (waiting is paid by every queued
  request, a reload once), whichever comes first.
The scheduler never holds the request that bounded waiting protects, so `max_wait` still
bounds every wait.

`lookahead` (fewer swaps and shorter waits where a load has a choice of victims; exactly FIFO
where it has none): it never delays anything. When the eviction policy rates several
victims the same (a matrix whose sets give the target equally cheap places, e.g. "any two
of these fit"), FIFO takes the first in solver order, which is arbitrary. `lookahead` takes
the one whose eviction is expected to cost least:

- it learns, per model, how often it is asked for lately (each request weighted
  exp(-age / `horizon`)) and its load time (from the swaps it saw; before a model's first
  load, the mean of the others', `load_time` before any);
- the expected cost of evicting a set of models is the sum of each one's load time x the
  chance it is asked for again within about `horizon` seconds (1 - exp(-decayed count): a
  burst makes one reload likely, not many);
- it replaces the eviction policy's choice only by a cheaper one (cost below `margin` x the
  eviction policy's; the default 1 takes any cheaper one, so the choice does not depend on
  set order, i.e. on the models' names), and only when a second opinion agrees: each
  model's *return gaps* (from its last activity to its next request, the last `history`
  kept) give its expected time to the next request given how long it has been idle (the
  mean of the gaps longer than that, minus it; cold when it has been idle longer than any),
  and the models the replacement evicts must be needed later by that measure (a smaller
  sum of 1 / expected time). Recency alone mistakes a burst that just ended for a hot model
  and a regular one for a cold model; the gaps see both. The second opinion abstains while
  a model has fewer than `min_history` gaps.
- and it trusts itself only where it has been right: every swap where its choice and the
  eviction policy's differ is a *trial*, settled by the next request for one of the two
  victims (the model it would have evicted asked for first: it was wrong). It replaces the
  eviction policy's pick only while at least `trust` of the last `trials` settled trials
  (and at least `min_trials` of them) went its way, counting the trials of the same pair
  (these victims instead of those) once there are `min_trials` of them, before that all
  trials (and the pair's own few may veto); the trials run whether or not it acted, so
  FIFO's pick teaches it as well. Where the eviction policy's set order happens to keep
  the right model (chat + embeddings + TTS when the embedding model sorts first), it stops
  overriding instead of trading swaps for p95.
Choices only ever come from the eviction policy's own candidates at its lowest cost (the
user's `evict_costs` are honoured); the groups engine never has a choice.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from llamaswap.compiler.decision import Decision, EvictionPolicy
from llamaswap.compiler.suggest import did_you_mean
from llamaswap.runtime.scheduler import FifoPolicy, SchedulingPolicy

if TYPE_CHECKING:
    from llamaswap.runtime.scheduler import Scheduler

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "HoldPolicy",
    "LookaheadPolicy",
    "PolicyError",
    "PolicyOptionError",
    "available",
    "make_policy",
    "check_policy",
]

ENTRY_POINT_GROUP = "llamaswap.policies"


class PolicyError(ValueError):
    """A policy name that nothing provides, or a factory that failed."""

    def __init__(self, message: str, option: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.option = option
        self.hint = hint


class PolicyOptionError(PolicyError):
    """A policy option is unknown or has a bad value (`option` names it)."""


def _number(name: str, value: Any, low: float, high: float | None = None, *, integer: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not isinstance(value, int))
    ):
        kind = "an integer" if integer else "a number"
        raise PolicyOptionError(f"option {name!r} must be {kind}, not {value!r}", name)
    if value < low or (high is not None and value > high):
        span = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
        raise PolicyOptionError(f"option {name!r} must be {span}, not {value!r}", name)
    return value


class HoldPolicy(FifoPolicy):
    """Keep a hot idle victim while its reload is worth more than the wait (module docstring)."""

    name = "hold"
    OPTIONS = ("budget", "quantile", "min_history", "history", "load_time")

    def __init__(
        self,
        budget: float = 1.0,
        quantile: float = 0.75,
        min_history: int = 3,
        history: int = 64,
        load_time: float = 10.0,
    ) -> None:
        self.budget = _number("budget", budget, 0.0)
        self.quantile = _number("quantile", quantile, 0.0, 1.0)
        self.min_history = int(_number("min_history", min_history, 1, integer=True))
        self.history = int(_number("history", history, 1, integer=True))
        self.load_time = _number("load_time", load_time, 0.0)
        self._last_active: dict[str, float] = {}
        self._gaps: dict[str, deque[float]] = {}
        self._sorted: dict[str, list[float]] = {}
        self._loads: dict[str, float] = {}
        self._since: dict[str, float] = {}  # target -> when its current hold began

    # -- learning ---------------------------------------------------------------------------
    def on_request(self, model: str, now: float) -> None:
        last = self._last_active.get(model)
        if last is not None:
            gaps = self._gaps.setdefault(model, deque())
            if len(gaps) == self.history:
                old = gaps.popleft()
                ordered = self._sorted[model]
                del ordered[bisect.bisect_left(ordered, old)]
            gaps.append(now - last)
            bisect.insort(self._sorted.setdefault(model, []), now - last)
        self._last_active[model] = now

    def on_serve_done(self, model: str, now: float) -> None:
        self._last_active[model] = now

    def on_swap_started(self, decision: Decision, now: float) -> None:
        self._since.pop(decision.target, None)

    def on_swap_done(self, model: str, started: float, now: float, ok: bool) -> None:
        if ok:
            took = now - started
            old = self._loads.get(model)
            self._loads[model] = took if old is None else 0.5 * old + 0.5 * took

    def load_time_of(self, model: str) -> float:
        return self._loads.get(model, self.load_time)

    def hot_for(self, model: str, now: float) -> float:
        """How much longer `model` stays hot if nothing happens (0: it is cold)."""
        ordered = self._sorted.get(model)
        last = self._last_active.get(model)
        if not ordered or len(ordered) < self.min_history or last is None:
            return 0.0
        index = min(len(ordered) - 1, int(self.quantile * len(ordered)))
        return max(0.0, ordered[index] - (now - last))

    # -- the choice -------------------------------------------------------------------------
    def hold(self, scheduler: Scheduler, target: str, decision: Decision, now: float) -> float | None:
        hot = [self.hot_for(v, now) for v in decision.evict]
        if not any(hot):
            self._since.pop(target, None)
            return None
        since = self._since.setdefault(target, now)
        queued = max(1, scheduler.reserved(target) - scheduler.in_flight(target))
        reload = sum(self.load_time_of(v) for v, h in zip(decision.evict, hot) if h > 0)
        cap = since + self.budget * reload / queued
        until = min(cap, now + max(hot))
        if until <= now:
            self._since.pop(target, None)
            return None
        return until


class LookaheadPolicy(FifoPolicy):
    """Choose, among the victims the eviction policy rates equally, the ones whose eviction
    is expected to cost least (module docstring). Never delays anything: it only picks."""

    name = "lookahead"
    chooses_victims = True
    OPTIONS = ("horizon", "margin", "load_time", "history", "min_history", "trials", "min_trials", "trust")

    def __init__(
        self,
        horizon: float = 60.0,
        margin: float = 1.0,
        load_time: float = 10.0,
        history: int = 256,
        min_history: int = 3,
        trials: int = 20,
        min_trials: int = 5,
        trust: float = 0.5,
    ) -> None:
        self.horizon = _number("horizon", horizon, 1e-3)
        self.margin = _number("margin", margin, 0.0, 1.0)
        self.load_time = _number("load_time", load_time, 0.0)
        self.history = int(_number("history", history, 1, integer=True))
        self.min_history = int(_number("min_history", min_history, 1, integer=True))
        self._rate: dict[str, tuple[float, float]] = {}  # model -> (decayed count, as of when)
        self._loads: dict[str, float] = {}
        self._last_active: dict[str, float] = {}
        self._gaps: dict[str, deque[float]] = {}  # model -> its last `history` return gaps
        self._alternatives: dict[tuple[str, tuple[str, ...]], tuple[Decision, ...]] = {}
        self.trials = int(_number("trials", trials, 1, integer=True))
        self.min_trials = int(_number("min_trials", min_trials, 0, integer=True))
        self.trust = _number("trust", trust, 0.0, 1.0)
        # (target, running) -> (the eviction policy's victims, the ones preferred), as last
        # asked: the swap that starts with one of them opens a trial.
        self._proposals: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        # Open trials: (models only the preferred choice evicts, models only the eviction
        # policy's evicts); settled by the first request for either side.
        self._open: deque[tuple[frozenset[str], frozenset[str]]] = deque(maxlen=64)
        # Settled trials, True where the preference was right: all of them, and per pair.
        self._settled: deque[bool] = deque(maxlen=self.trials)
        self._by_pair: dict[tuple[frozenset[str], frozenset[str]], deque[bool]] = {}

    # -- learning ---------------------------------------------------------------------------
    def on_request(self, model: str, now: float) -> None:
        if self._open:
            self._settle(model)
        self._rate[model] = (self.rate(model, now) + 1.0, now)
        last = self._last_active.get(model)
        if last is not None:
            gaps = self._gaps.get(model)
            if gaps is None:
                gaps = self._gaps[model] = deque(maxlen=self.history)
            gaps.append(now - last)
        self._last_active[model] = now

    def on_serve_done(self, model: str, now: float) -> None:
        self._last_active[model] = now

    def on_swap_started(self, decision: Decision, now: float) -> None:
        proposal = self._proposals.get((decision.target, decision.running))
        self._proposals.clear()
        if proposal is None or proposal[0] == proposal[1]:
            return
        fifo, preferred = set(proposal[0]), set(proposal[1])
        mine, theirs = frozenset(preferred - fifo), frozenset(fifo - preferred)
        if mine and theirs:
            self._open.append((mine, theirs))

    def _settle(self, model: str) -> None:
        """A request for `model` settles the open trials it is a victim of."""
        still = []
        for pair in self._open:
            mine, theirs = pair
            if model in mine or model in theirs:
                right = model in theirs  # else what it would evict came back first
                self._settled.append(right)
                record = self._by_pair.get(pair)
                if record is None:
                    if len(self._by_pair) >= 4096:
                        self._by_pair.clear()
                    record = self._by_pair[pair] = deque(maxlen=self.trials)
                record.append(right)
            else:
                still.append(pair)
        if len(still) != len(self._open):
            self._open.clear()
            self._open.extend(still)

    def on_swap_done(self, model: str, started: float, now: float, ok: bool) -> None:
        if ok:
            took = now - started
            old = self._loads.get(model)
            self._loads[model] = took if old is None else 0.5 * old + 0.5 * took

    def trusted(self, mine: frozenset[str] = frozenset(), theirs: frozenset[str] = frozenset()) -> bool:
        """Has its preference been right often enough lately to act on it: evicting `mine`
        where the eviction policy evicts `theirs` (module docstring)? Judged by that pair's
        trials once it has `min_trials`; before that by all trials, and the pair's few
        trials so far may veto."""
        record = self._by_pair.get((mine, theirs))
        if record is not None and len(record) >= self.min_trials:
            return sum(record) >= self.trust * len(record)
        n = len(self._settled)
        if n < self.min_trials or sum(self._settled) < self.trust * n:
            return False
        return not record or sum(record) >= self.trust * len(record)

    def rate(self, model: str, now: float) -> float:
        """Requests for `model` so far, each weighted exp(-age / horizon)."""
        count, since = self._rate.get(model, (0.0, now))
        return count * math.exp(-max(0.0, now - since) / self.horizon)

    def load_time_of(self, model: str) -> float:
        """The model's learned load time; before its first load, the mean of the others'
        (the `load_time` option before any)."""
        known = self._loads.get(model)
        if known is not None:
            return known
        return sum(self._loads.values()) / len(self._loads) if self._loads else self.load_time

    def eviction_cost(self, models: tuple[str, ...], now: float) -> float:
        """What evicting `models` now is expected to cost: each one's load time times the
        chance that it is asked for again within about `horizon` seconds, 1 - exp(-rate)
        (a burst of requests makes a reload likely, not many reloads)."""
        return sum(self.load_time_of(m) * -math.expm1(-self.rate(m, now)) for m in models)

    def expected_idle(self, model: str, now: float) -> float | None:
        """How long until `model` is asked for again, by its own return gaps: the mean of the
        gaps longer than its current idle time, minus that time (math.inf when it has been
        idle longer than any gap seen: cold). None before `min_history` gaps."""
        gaps = self._gaps.get(model)
        last = self._last_active.get(model)
        if gaps is None or last is None or len(gaps) < self.min_history:
            return None
        idle = now - last
        longer = [g for g in gaps if g > idle]
        return sum(longer) / len(longer) - idle if longer else math.inf

    def agrees(self, chosen: tuple[str, ...], instead_of: tuple[str, ...], now: float) -> bool:
        """The second opinion: evicting `chosen` rather than `instead_of` loses models that
        are, by their return gaps, needed later (sum of 1 / expected idle time lower). It
        abstains (True) while any of them has too little history."""
        soon = []
        for models in (chosen, instead_of):
            total = 0.0
            for m in models:
                idle = self.expected_idle(m, now)
                if idle is None:
                    return True
                total += 1.0 / max(idle, 1e-3)
            soon.append(total)
        return soon[0] < soon[1]

    # -- the choice -------------------------------------------------------------------------
    def alternatives(self, eviction: EvictionPolicy, decision: Decision) -> tuple[Decision, ...]:
        """`decision` first, then the other decisions the eviction policy rates as good (the
        other sets' best combinations at the same cost) for the same target and running."""
        key = (decision.target, decision.running)
        found = self._alternatives.get(key)
        if found is not None:
            return found
        out = [decision]
        explained = eviction.decide(decision.target, decision.running, explain=True)
        dsl = getattr(eviction, "dsl", None)
        for c in explained.candidates or ():
            if c.cost != decision.cost:
                continue
            keep = set(c.combination)
            evict = tuple(m for m in decision.running if m not in keep)
            if any(d.evict == evict for d in out):
                continue
            out.append(
                replace(
                    decision,
                    evict=evict,
                    set=c.set,
                    dsl=dsl.get(c.set) if isinstance(dsl, Mapping) else None,
                    target_set=tuple(sorted(c.combination)),
                )
            )
        if len(self._alternatives) >= 4096:
            self._alternatives.clear()
        self._alternatives[key] = found = tuple(out)
        return found

    def choose(self, eviction: EvictionPolicy, decision: Decision, now: float) -> Decision:
        if not decision.evict or getattr(eviction, "engine", None) != "matrix":
            return decision  # nothing to evict, or the groups engine (no choice there)
        pick = self.preferred(eviction, decision, now)
        key = (decision.target, decision.running)
        if len(self._proposals) >= 4096:
            self._proposals.clear()
        self._proposals[key] = (decision.evict, pick.evict)
        if pick is decision:
            return decision
        fifo, preferred = set(decision.evict), set(pick.evict)
        return pick if self.trusted(frozenset(preferred - fifo), frozenset(fifo - preferred)) else decision

    def preferred(self, eviction: EvictionPolicy, decision: Decision, now: float) -> Decision:
        """The choice by expected cost and return gaps, before the self-check (`choose`)."""
        options = self.alternatives(eviction, decision)
        if len(options) == 1:
            return decision
        costs = [self.eviction_cost(d.evict, now) for d in options]
        # Only a clearly cheaper choice replaces the eviction policy's own, and only when the
        # return gaps agree that what it evicts is needed later.
        for i in sorted(range(1, len(options)), key=costs.__getitem__):
            if not costs[i] < self.margin * costs[0]:
                break
            if self.agrees(options[i].evict, decision.evict, now):
                return options[i]
        return decision


def seed_load_times(policy: SchedulingPolicy, times: Mapping[str, float], now: float) -> None:
    """Tell a fresh policy the load times recorded before it existed (serve start, a reload
    that changed the policy): each as one successful load of `model` that took `seconds` and
    ended `now` (the scheduler's clock), through the policy's own `on_swap_done`, so that a
    learning policy starts from this machine's costs instead of its `load_time` default."""
    for model, seconds in times.items():
        policy.on_swap_done(model, now - seconds, now, True)


# name -> factory(**options) -> SchedulingPolicy
BUILTIN: Mapping[str, Callable[..., SchedulingPolicy]] = {
    "fifo": FifoPolicy,
    "hold": HoldPolicy,
    "lookahead": LookaheadPolicy,
}


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Every policy name: built-in ones, then entry points, sorted."""
    return sorted(set(BUILTIN) | set(_entry_points()))


def make_policy(name: str, options: Mapping[str, Any] | None = None) -> SchedulingPolicy:
    """A fresh policy by name, with options. Raises PolicyError / PolicyOptionError."""
    options = dict(options or {})
    factory = BUILTIN.get(name)
    if factory is None:
        ep = _entry_points().get(name)
        if ep is None:
            hint = did_you_mean(name, available()) or (
                f"built-in: {', '.join(sorted(BUILTIN))}; others install an entry point in the "
                f"{ENTRY_POINT_GROUP!r} group"
            )
            raise PolicyError(
                f"unknown scheduling policy {name!r} (available: {', '.join(available())})", hint=hint
            )
        try:
            factory = ep.load()
        except Exception as exc:  # a broken plugin is the user's to fix: say which and why
            raise PolicyError(
                f"scheduling policy {name!r}: cannot load entry point {ep.value!r}: {exc}"
            ) from None
    if factory is FifoPolicy and options:
        key = sorted(options)[0]
        raise PolicyOptionError(
            f"policy 'fifo' takes no options (got {key!r})",
            key,
            hint="FIFO's own knobs are routing.scheduler.settings.fifo",
        )
    known = getattr(factory, "OPTIONS", None)
    if known is not None:
        for key in sorted(options):
            if key not in known:
                raise PolicyOptionError(
                    f"policy {name!r} has no option {key!r} (options: {', '.join(known)})",
                    key,
                    hint=did_you_mean(key, known, fold=True),
                )
    try:
        policy = factory(**options)
    except PolicyError:
        raise
    except (TypeError, ValueError) as exc:
        raise PolicyOptionError(f"policy {name!r}: {exc}") from None
    for method in ("hold", "choose", "on_request", "on_swap_started", "on_swap_done", "on_serve_done"):
        if not callable(getattr(policy, method, None)):
            raise PolicyError(
                f"scheduling policy {name!r} has no {method}() method",
                hint="subclass llamaswap.runtime.scheduler.FifoPolicy and override what you need",
            )
    return policy


def check_policy(name: str, options: Mapping[str, Any]) -> tuple[str | None, str, str | None] | None:
    """None when `name` with `options` can be made, else (option, message, hint): the
    compiler's `CompileOptions.policy_check`, which locates the problem in the config."""
    try:
        make_policy(name, options)
    except PolicyError as exc:
        return exc.option, str(exc), exc.hint
    return None
