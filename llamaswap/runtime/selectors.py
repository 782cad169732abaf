"""Virtual model IDs at serve time: the active profile's pins and the selectors (pin, warm,
spillover), resolved per request by compiler/resolution.py's `resolve` with the live state.

The tracker holds what that pure function needs besides the plan and the process states:
the requests in flight of each spillover selector on each target (reserved by `choose`,
freed by `release`) and each selector's round-robin turn. It lives on the event loop (no
locks); a reload re-plans it and keeps the reservations in flight.
"""

from __future__ import annotations

from collections.abc import Callable

from llamaswap.compiler.plan import Plan
from llamaswap.compiler.resolution import Resolution, is_virtual, resolve
from llamaswap.compiler.virtual import Selector


class SelectorTracker:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.by_id: dict[str, Selector] = {s.id: s for s in plan.virtual.selectors}
        self.inflight: dict[tuple[str, str], int] = {}
        self.rr: dict[str, int] = {}

    def replan(self, plan: Plan) -> None:
        """A hot reload: the selectors and profiles of `plan` from now on (reservations in
        flight stay)."""
        self.plan = plan
        self.by_id = {s.id: s for s in plan.virtual.selectors}

    def resolve(
        self, requested: str, profile: str | None, state_of: Callable[[str], str]
    ) -> Resolution | None:
        """How `requested` resolves under the active `profile`; None when neither a pin nor a
        selector applies (the common case, one dict lookup). A spillover choice is reserved
        until `release`."""
        if requested not in self.by_id and (profile is None or not is_virtual(self.plan, requested, profile)):
            return None
        res = resolve(
            self.plan, requested, profile=profile, state_of=state_of, inflight=self.inflight, turns=self.rr
        )
        sel = res.selector
        if sel is not None and res.turn_used:
            self.rr[sel.name] = self.rr.get(sel.name, 0) + 1
        if sel is not None and sel.strategy == "spillover" and sel.target:
            key = (sel.name, sel.target)
            self.inflight[key] = self.inflight.get(key, 0) + 1
        return res

    def choose(self, selector_id: str, state_of: Callable[[str], str]) -> str | None:
        """The target (as written) for one request to `selector_id` with no profile active;
        None if it is not a selector."""
        if selector_id not in self.by_id:
            return None
        res = self.resolve(selector_id, None, state_of)
        return res.name if res is not None and res.name else None

    def release(self, selector_id: str, target: str) -> None:
        key = (selector_id, target)
        if self.inflight.get(key, 0) > 0:
            self.inflight[key] -= 1

    def done(self, res: Resolution) -> None:
        """The request `res` resolved is finished: free its spillover reservation."""
        sel = res.selector
        if sel is not None and sel.strategy == "spillover" and sel.target:
            self.release(sel.name, sel.target)
