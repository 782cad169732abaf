"""Selectors: a virtual model ID resolved to one of its targets per request, as llama-swap's
selector middleware does, before aliases, filters and routing.

- pin: always the first target;
- warm: the first target that is ready, else the first that is starting, else the first;
- spillover: the least busy active target (starting, ready, or with requests of this
  selector in flight) while it has fewer than `spillover` of them; past that the first cold
  target; when every target is busy, the least busy again (ties go round robin).

The tracker counts only the requests it routed; it lives on the event loop (no locks).
"""

from __future__ import annotations

from collections.abc import Callable

from llamaswap.compiler.plan import Plan
from llamaswap.compiler.virtual import Selector

ACTIVE = ("starting", "ready")


class SelectorTracker:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.by_id: dict[str, Selector] = {s.id: s for s in plan.virtual.selectors}
        self.inflight: dict[tuple[str, str], int] = {}
        self.rr: dict[str, int] = {}

    def replan(self, plan: Plan) -> None:
        """A hot reload: the selectors of `plan` from now on (reservations in flight stay)."""
        self.plan = plan
        self.by_id = {s.id: s for s in plan.virtual.selectors}

    def choose(self, selector_id: str, state_of: Callable[[str], str]) -> str | None:
        """The target (as written) for one request to `selector_id`; None if it is not one.
        A spillover choice is reserved until `release`."""
        sel = self.by_id.get(selector_id)
        if sel is None:
            return None
        real = {t: self.plan.resolve_model(t) for t in sel.targets}

        def state(target: str) -> str:
            model = real[target]
            return state_of(model) if model is not None else "peer"

        if sel.strategy == "pin":
            return sel.targets[0]
        if sel.strategy == "warm":
            for wanted in ("ready", "starting"):
                for t in sel.targets:
                    if state(t) == wanted:
                        return t
            return sel.targets[0]
        active, cold = [], []
        for t in sel.targets:
            s = state(t)
            if s in ("stopping", "shutdown"):
                continue
            if s in ACTIVE or self.inflight.get((sel.id, t), 0) > 0:
                active.append(t)
            else:
                cold.append(t)
        if not active:
            return self._reserve(sel.id, cold[0]) if cold else sel.targets[0]
        least = min(self.inflight.get((sel.id, t), 0) for t in active)
        if least >= sel.spillover and cold:
            return self._reserve(sel.id, cold[0])
        tied = [t for t in active if self.inflight.get((sel.id, t), 0) == least]
        turn = self.rr.get(sel.id, 0)
        self.rr[sel.id] = turn + 1
        return self._reserve(sel.id, tied[turn % len(tied)])

    def _reserve(self, selector_id: str, target: str) -> str:
        self.inflight[(selector_id, target)] = self.inflight.get((selector_id, target), 0) + 1
        return target

    def release(self, selector_id: str, target: str) -> None:
        key = (selector_id, target)
        if self.inflight.get(key, 0) > 0:
            self.inflight[key] -= 1
