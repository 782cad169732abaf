"""A timed FIFO shadow inside `lookahead`: how close it comes to the simulator's FIFO.

Issue 19's third pass ("worse on none", docs/policies.md "Third pass") needed what FIFO's
own schedule would have paid, timed, from inside the policy. `ShadowedLookahead` keeps a
small timed model of FIFO fed by the policy's own hooks:

- requests queue in arrival order; a queued request for a ready model is granted at once
  (or when its model became ready) and keeps the model busy for its duration;
- the first queued request whose model is neither ready nor loading starts a load when its
  victims (FIFO's pick: `eviction.decide` on the shadow's own running set) are idle; the
  load takes the policy's learned load time;
- a request's duration comes from the policy's own world: each `on_serve_done(model)` is
  matched to the model's oldest request in flight (served at once if its model was ready,
  else when its load finished). The shadow lags: it takes a request only once that
  duration is known (or the request is `max_lag` seconds old; then the model's mean).

The shadow only watches; it changes no choice (the guards built on it missed more than the
shipped policy, docs/policies.md). This script replays traces with a `ShadowedLookahead`
that never overrides (so its own world is FIFO's) and prints FIFO's swaps and p95 next to
the shadow's:

    .venv/bin/python bench/lookahead_shadow.py [--seeds 20-23] [--kinds office,chat-rag-tts]
        [--variants two-slots-renamed,three-slots]
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies import VARIANTS, seeds_arg, variant
from traces import generate

from llamaswap.compiler.plan import compile_text
from llamaswap.runtime.policies import LookaheadPolicy
from llamaswap.runtime.settings import scheduler_settings
from llamaswap.runtime.simulate import simulate


def p95(ordered: list[float]) -> float:
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0


class ShadowedLookahead(LookaheadPolicy):
    """`lookahead` plus a timed model of what FIFO would have done with the same arrivals."""

    def __init__(self, max_lag: float = 900.0, **options) -> None:
        super().__init__(**options)
        self.max_lag = max_lag
        self._eviction = None
        # this world: which models are ready, and each request's start and duration
        self._ready: set[str] = set()
        self._next = 0
        self._start: dict[int, float] = {}
        self._duration: dict[int, float] = {}
        self._pending: dict[str, list[int]] = {}
        self._in_flight: dict[str, deque[int]] = {}
        self._mean: dict[str, list[float]] = {}
        self.real_swaps: list[float] = []  # start times
        self.real_waits: list[float] = []  # sorted, requests the shadow has taken
        # the shadow
        self._arrivals: deque[tuple[float, str, int]] = deque()
        self.shadow_time = 0.0
        self._s_ready: set[str] = set()
        self._s_loading: dict[str, float] = {}
        self._s_ready_at: dict[str, float] = {}
        self._s_busy: dict[str, list[float]] = {}
        self._s_queue: list[tuple[float, str, float]] = []
        self.shadow_swaps = 0
        self.shadow_waits: list[float] = []

    # -- this world ------------------------------------------------------------------------
    def on_request(self, model: str, now: float) -> None:
        super().on_request(model, now)
        k = self._next
        self._next += 1
        self._arrivals.append((now, model, k))
        if model in self._ready:
            self._start[k] = now
            self._in_flight.setdefault(model, deque()).append(k)
        else:
            self._pending.setdefault(model, []).append(k)

    def on_swap_started(self, decision, now: float) -> None:
        super().on_swap_started(decision, now)
        self.real_swaps.append(now)
        for m in decision.evict:
            self._ready.discard(m)

    def on_swap_done(self, model: str, started: float, now: float, ok: bool) -> None:
        super().on_swap_done(model, started, now, ok)
        if ok:
            self._ready.add(model)
            queue = self._in_flight.setdefault(model, deque())
            for k in self._pending.pop(model, ()):
                self._start[k] = now
                queue.append(k)

    def on_serve_done(self, model: str, now: float) -> None:
        super().on_serve_done(model, now)
        queue = self._in_flight.get(model)
        if queue:
            k = queue.popleft()
            took = now - self._start[k]
            self._duration[k] = took
            total = self._mean.setdefault(model, [0.0, 0.0])
            total[0] += took
            total[1] += 1

    def choose(self, eviction, decision, now: float):
        self._eviction = eviction
        self.advance(now)
        return super().choose(eviction, decision, now)

    # -- the shadow ------------------------------------------------------------------------
    def _takeable(self, now: float) -> float | None:
        if not self._arrivals:
            return None
        at, _, k = self._arrivals[0]
        return at if k in self._duration or now - at > self.max_lag else None

    def advance(self, now: float) -> None:
        """Run the shadow up to the first arrival whose duration is not known yet."""
        if self._eviction is None:
            return
        while True:
            nxt = self._takeable(now)
            until = nxt if nxt is not None else (self._arrivals[0][0] if self._arrivals else now)
            times = [t for t in self._s_loading.values() if t <= until]
            if self._s_queue:
                times += [e for ends in self._s_busy.values() for e in ends if self.shadow_time < e <= until]
            if nxt is not None:
                times.append(nxt)
            if not times:
                return
            t = self.shadow_time = min(times)
            while self._arrivals and self._arrivals[0][0] <= t and self._takeable(now) is not None:
                at, model, k = self._arrivals.popleft()
                mean = self._mean.get(model)
                took = self._duration.get(k, mean[0] / mean[1] if mean else 1.0)
                self._s_queue.append((at, model, took))
                bisect.insort(self.real_waits, self._start.get(k, now) - at)
            for m in list(self._s_busy):
                self._s_busy[m] = [e for e in self._s_busy[m] if e > t]
            self._step(t)

    def _step(self, t: float) -> None:
        progressed = True
        while progressed:
            progressed = False
            for m, done in list(self._s_loading.items()):
                if done <= t:
                    del self._s_loading[m]
                    self._s_ready.add(m)
            waiting = []
            for at, model, took in self._s_queue:
                if model in self._s_ready:
                    granted = max(at, self._s_ready_at.get(model, at))
                    self.shadow_waits.append(granted - at)
                    self._s_busy.setdefault(model, []).append(granted + took)
                    progressed = True
                else:
                    waiting.append((at, model, took))
            self._s_queue = waiting
            for _, model, _ in self._s_queue:
                if model in self._s_loading:
                    continue
                running = tuple(sorted(self._s_ready | set(self._s_loading)))
                victims = self._eviction.decide(model, running).evict
                if any(v in self._s_loading for v in victims):
                    break
                if any(e > t for v in victims for e in self._s_busy.get(v, ())):
                    break
                for v in victims:
                    self._s_ready.discard(v)
                    self._s_busy.pop(v, None)
                self._s_loading[model] = self._s_ready_at[model] = t + self.load_time_of(model)
                self.shadow_swaps += 1
                progressed = True
                break


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="20-23")
    ap.add_argument("--kinds", default="office,chat-rag-tts")
    ap.add_argument("--variants", default="two-slots-renamed,three-slots")
    args = ap.parse_args()
    print("| kind | seed | variant | FIFO swaps | shadow swaps | FIFO p95 s | shadow p95 s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for kind in args.kinds.split(","):
        for seed in seeds_arg(args.seeds):
            base = generate(kind, seed)
            for name in args.variants.split(","):
                slots = VARIANTS[name][2]
                if slots > 1 and slots >= len(base.models):
                    continue
                world = variant(base, name)
                plan = compile_text(world.config(slots), f"{kind}-{seed}-{name}.yaml")
                policy = ShadowedLookahead(min_trials=10**9)  # never trusts itself: FIFO's picks
                result = simulate(
                    plan.policy, scheduler_settings(plan), world.requests, world.load_times, scheduling=policy
                )
                policy.advance(math.inf)
                print(
                    f"| {kind} | {seed} | {name} | {result['swaps']} | {policy.shadow_swaps} "
                    f"| {result['wait']['p95']:.3f} | {p95(sorted(policy.shadow_waits)):.3f} |"
                )


if __name__ == "__main__":
    main()
