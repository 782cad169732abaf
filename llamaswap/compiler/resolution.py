"""Resolution: the model ID a request asks for, to the name the router serves, as
llama-swap's profile and selector middleware do it (in that order, before aliases, filters
and routing), with the reason of every step.

1. The active profile, if any, pins the ID: `pins[requested]` replaces it, once (a pin's
   target is a model ID, alias, peer model or selector; an empty target disables the ID: 404).
2. A selector ID becomes one of its targets:
   - pin: always the first target;
   - warm: the first target that is ready, else the first that is starting, else the first;
   - spillover: targets are active (starting or ready, or with requests of this selector in
     flight) or cold (stopped; a peer target with none in flight); stopping ones are skipped.
     No active target: the first cold one. The least busy active target while it has fewer
     than `spillover` requests of this selector in flight; past that the first cold target;
     with no cold target left the least busy again (ties go round robin). Every target
     stopping: 503.

One implementation for `serve` (runtime/selectors.py keeps the in-flight counts and the
round-robin turns, and passes them in) and `plan --request` (which passes the state it is
told). Pure: no I/O, no clock; the same inputs give the same `Resolution`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llamaswap.compiler.virtual import Profile, Selector

if TYPE_CHECKING:
    from llamaswap.compiler.plan import Plan

# Reasons, as the decision record and the X-Llamaswap-Resolution header name them.
PINNED = "pinned"  # a profile pin, or a selector with strategy pin
DISABLED = "disabled"  # a profile pin with an empty target
WARM_READY = "warm-ready"
WARM_STARTING = "warm-starting"
FALLBACK = "fallback"  # warm: nothing loaded, the first target
COLD = "cold"  # spillover: nothing active, the first cold target
LEAST_BUSY = "least-busy"  # spillover: an active target below the spillover threshold
SPILLOVER = "spillover"  # spillover: the active targets are busy, the first cold one
ALL_BUSY = "all-busy"  # spillover: busy and nothing cold left, the least busy
UNAVAILABLE = "unavailable"  # spillover: every target is stopping


@dataclass(frozen=True)
class Step:
    """One rewrite: `kind` "profile" (`name` is the profile) or "selector" (`name` is the
    selector ID, `strategy` its strategy); `source` became `target` ("" = none) because
    of `reason`, said in words in `detail`."""

    kind: str
    name: str
    source: str
    target: str
    reason: str
    detail: str
    strategy: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.strategy:
            out["strategy"] = self.strategy
        out.update(source=self.source, target=self.target, reason=self.reason, detail=self.detail)
        return out


@dataclass(frozen=True)
class Resolution:
    """What became of a requested ID. `name` is what the router resolves next (a model
    ID, alias or peer model, as written in the config); when `status` is not 0 the request is
    answered with it and `message` instead."""

    requested: str
    name: str
    steps: tuple[Step, ...] = ()
    status: int = 0
    message: str = ""
    turn_used: bool = False  # a spillover tie was broken by the round-robin turn

    @property
    def profile(self) -> str | None:
        return next((s.name for s in self.steps if s.kind == "profile"), None)

    @property
    def selector(self) -> Step | None:
        return next((s for s in self.steps if s.kind == "selector"), None)

    @property
    def reason(self) -> str:
        return self.steps[-1].reason if self.steps else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "profile": self.profile,
            "selector": self.selector.name if self.selector is not None else None,
            "target": self.name or None,
            "reason": self.reason,
            "steps": [s.to_json() for s in self.steps],
        }

    def header(self) -> str:
        """`X-Llamaswap-Resolution`: `profile=P; pin=A->B; selector=S; target=T; reason=R`."""
        parts = []
        for s in self.steps:
            if s.kind == "profile":
                parts.append(f"profile={s.name}; pin={s.source}->{s.target}")
            else:
                parts.append(f"selector={s.name}; strategy={s.strategy}; target={s.target}")
        parts.append(f"reason={self.reason}")
        return "; ".join(parts)

    def lines(self) -> list[str]:
        return [s.detail for s in self.steps]


def _stopped(model: str) -> str:
    return "stopped"


def pinned_by(plan: Plan, name: str) -> tuple[str, ...]:
    """The profiles that pin `name` (in written order)."""
    return tuple(p.name for p in plan.virtual.profiles if any(pin == name for pin, _ in p.pins))


def find_profile(plan: Plan, name: str | None) -> Profile | None:
    if name is None:
        return None
    return next((p for p in plan.virtual.profiles if p.name == name), None)


def find_selector(plan: Plan, name: str) -> Selector | None:
    return next((s for s in plan.virtual.selectors if s.id == name), None)


def is_virtual(plan: Plan, name: str, profile: str | None) -> bool:
    """Whether `name` needs resolving at all (the hot path's one check)."""
    if find_selector(plan, name) is not None:
        return True
    p = find_profile(plan, profile)
    return p is not None and any(pin == name for pin, _ in p.pins)


def resolve(
    plan: Plan,
    requested: str,
    *,
    profile: str | None = None,
    state_of: Callable[[str], str] = _stopped,
    inflight: Mapping[tuple[str, str], int] | None = None,
    turns: Mapping[str, int] | None = None,
) -> Resolution:
    """Resolve `requested` under the active `profile` (None: none active).

    `state_of(model)`: a local model's process state (stopped, starting, ready, stopping,
    shutdown); `inflight[(selector, target)]`: requests of a spillover selector in flight
    on a target (as written); `turns[selector]`: its round-robin turn."""
    steps: list[Step] = []
    name = requested
    active = find_profile(plan, profile)
    if active is not None:
        for pin, target in active.pins:
            if pin != requested:
                continue
            if target == "":
                detail = f"profile '{active.name}' disables '{requested}' (its pin is empty): 404."
                step = Step("profile", active.name, requested, "", DISABLED, detail)
                message = f"model '{requested}' is disabled by the active profile '{active.name}'"
                return Resolution(requested, "", (step,), 404, message)
            steps.append(
                Step(
                    "profile",
                    active.name,
                    requested,
                    target,
                    PINNED,
                    f"profile '{active.name}' pins '{requested}' to '{target}'.",
                )
            )
            name = target
            break
    sel = find_selector(plan, name)
    if sel is None:
        return Resolution(requested, name, tuple(steps))
    step, turn_used = _choose(plan, sel, state_of, inflight or {}, turns or {})
    steps.append(step)
    if step.reason == UNAVAILABLE:
        return Resolution(
            requested, "", tuple(steps), 503, f"selector '{sel.id}' has no available spillover targets"
        )
    return Resolution(requested, step.target, tuple(steps), turn_used=turn_used)


def _choose(
    plan: Plan,
    sel: Selector,
    state_of: Callable[[str], str],
    inflight: Mapping[tuple[str, str], int],
    turns: Mapping[str, int],
) -> tuple[Step, bool]:
    def step(target: str, reason: str, why: str) -> Step:
        if not target:
            detail = f"selector '{sel.id}' ({sel.strategy}) has no available target: {why}."
        else:
            detail = f"selector '{sel.id}' ({sel.strategy}) chose '{target}': {why}."
        return Step("selector", sel.id, sel.id, target, reason, detail, sel.strategy)

    def state(target: str) -> str:
        model = plan.resolve_model(target)
        return state_of(model) if model is not None else "peer"

    first = sel.targets[0]
    if sel.strategy == "pin":
        return step(first, PINNED, "a pin selector always answers with its first target"), False
    if sel.strategy == "warm":
        for wanted, reason, why in (
            ("ready", WARM_READY, "it is ready"),
            ("starting", WARM_STARTING, "no target is ready and it is starting"),
        ):
            for t in sel.targets:
                if state(t) == wanted:
                    return step(t, reason, why), False
        return step(first, FALLBACK, "no target is loaded, so the first one"), False

    def busy(t: str) -> int:
        return inflight.get((sel.id, t), 0)

    active, cold = [], []
    for t in sel.targets:
        s = state(t)
        if s in ("stopping", "shutdown"):
            continue
        if s in ("starting", "ready") or busy(t) > 0:
            active.append(t)
        else:
            cold.append(t)
    if not active:
        if not cold:
            return step("", UNAVAILABLE, "every target is stopping"), False
        return step(cold[0], COLD, "no target is active, so the first cold one"), False
    least = min(busy(t) for t in active)
    if least >= sel.spillover and cold:
        return (
            step(
                cold[0],
                SPILLOVER,
                f"every active target has {least} or more in flight (spillover {sel.spillover}), "
                "so the first cold target",
            ),
            False,
        )
    tied = [t for t in active if busy(t) == least]
    chosen = tied[turns.get(sel.id, 0) % len(tied)]
    rr = f"; round robin among {len(tied)} tied" if len(tied) > 1 else ""
    if least < sel.spillover:
        reason, why = (
            LEAST_BUSY,
            f"it is active with {least} in flight, fewer than its spillover of {sel.spillover}{rr}",
        )
    else:
        reason, why = ALL_BUSY, f"every target is busy, so the least busy ({least} in flight{rr})"
    return step(chosen, reason, why), True


def upstream_pin(plan: Plan, profile: str | None, path: str) -> tuple[str, str] | None:
    """For `/upstream/<path>`: the active profile's pin that `path` starts with (the longest
    one, as a whole path segment), and its target; None when no pin applies."""
    active = find_profile(plan, profile)
    if active is None:
        return None
    path = path.lstrip("/")
    best: tuple[str, str] | None = None
    for pin, target in active.pins:
        if (path == pin or path.startswith(pin + "/")) and (best is None or len(pin) > len(best[0])):
            best = (pin, target)
    return best
