"""Scheduling policies on generated traces: FIFO against the others, per trace, worst case first.

For each trace kind of `bench/traces.py`, each seed and each *variant* of the world (the same
requests with faster or slower loads, or arriving faster or slower, or more models fitting at
once under several matrix layouts), every policy replays the
trace through the real scheduler (`runtime/simulate.py`, the engine of `plan --trace`), with the
world's load times. Per run: swaps, load-seconds, p50/p95/max wait, makespan, rejections, and
swaps divided by the lower bound of `bench/lowerbound.py` at the run's own max wait (fewest
loads of any schedule whose longest wait is within that budget).

Verdict per trace and policy, against FIFO on the same trace (the issue's bar, margin zero):
- PASS: fewer swaps, and p95 wait no worse;
- EQUAL: the same swaps, p95 no worse (nothing to gain, nothing lost);
- MISS: more swaps, or a worse p95 (compared at the simulator's microsecond rounding).
The summary reports, per kind, how many traces are PASS / EQUAL / MISS and the worst case
(largest p95 increase, largest swap increase), not the mean.

References (not policies you can configure: they read the trace's future):
- `foresight`: holds an idle victim exactly when its next request arrives before the target
  could finish loading, until that request;
- `foresight-cheap`: the same, but only when nothing else waits and the victim's next request
  arrives and is served within a quarter of the target's load time (the safest use of a hold).

    .venv/bin/python bench/policies.py [--seeds 0-19] [--kinds agentic,office]
        [--policies fifo,hold] [--variants base,fast-loads,slow-loads,busier,calmer]
        [--no-references] [--markdown bench/results/policies.md]

Prints markdown tables and writes bench/results/policies.json (and the --markdown file).
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import write_result
from lowerbound import chain_bound
from traces import KINDS, World, generate, renamed

from llamaswap.compiler.plan import compile_text
from llamaswap.runtime.policies import make_policy
from llamaswap.runtime.scheduler import FifoPolicy
from llamaswap.runtime.settings import scheduler_settings
from llamaswap.runtime.simulate import compare_table, simulate

# name -> (load-time factor, arrival-time factor, models that fit at once, shuffled names): the
# same requests in a different world.
VARIANTS = {
    "base": (1.0, 1.0, 1, False),
    "fast-loads": (0.5, 1.0, 1, False),
    "slow-loads": (2.0, 1.0, 1, False),
    "busier": (1.0, 0.7, 1, False),  # arrivals 30 % closer together
    "calmer": (1.0, 1.5, 1, False),
    "two-slots": (1.0, 1.0, 2, False),  # any two models fit together: a load chooses its victim
    "three-slots": (1.0, 1.0, 3, False),
    # The same, under shuffled model names: FIFO's pick among equally cheap victims follows
    # set order, which follows the names, so these give FIFO other (good or bad) luck.
    "two-slots-renamed": (1.0, 1.0, 2, True),
    "three-slots-renamed": (1.0, 1.0, 3, True),
    # Other matrices a user writes (traces.LAYOUTS): the sets listing the slowest-loading
    # models first (FIFO's pick then keeps the slow models), the slowest model alone beside
    # any two others, the slowest beside any one other or any three others.
    "two-slots-slow-first": (1.0, 1.0, 2, False),
    "three-slots-slow-first": (1.0, 1.0, 3, False),
    "big-alone": (1.0, 1.0, 2, False),
    "big-plus-one": (1.0, 1.0, 2, False),
}
# variant -> the matrix layout of its sets (traces.World.config); "any" when not listed.
LAYOUT = {
    "two-slots-slow-first": "slow-first",
    "three-slots-slow-first": "slow-first",
    "big-alone": "big-alone",
    "big-plus-one": "big-plus-one",
}
ONE_SLOT = [name for name, (_, _, slots, _) in VARIANTS.items() if slots == 1]
REFERENCES = ("foresight", "foresight-cheap")


def variant(world: World, name: str) -> World:
    loads, times, _, names = VARIANTS[name]
    if names:
        world = renamed(world)
    if (loads, times) == (1.0, 1.0):
        return world
    return World(
        world.kind,
        world.seed,
        {m: round(v * loads, 3) for m, v in world.load_times.items()},
        [replace(r, at=round(r.at * times, 3)) for r in world.requests],
    )


class Foresight(FifoPolicy):
    """Not a real policy (it reads the future): the issue's perfect-foresight reference. It
    holds an idle victim exactly when the victim's next request arrives before the target
    could finish loading, until that request, and never otherwise. `cheap`: only when nothing
    else waits and the victim's next request arrives and ends within `cheap` x the target's
    load time."""

    name = "foresight"

    def __init__(self, requests, load_times, cheap: float | None = None) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.durations: dict[str, list[float]] = {}
        for r in sorted(requests, key=lambda r: r.at):
            self.arrivals.setdefault(r.model, []).append(r.at)
            self.durations.setdefault(r.model, []).append(r.duration)
        self.load_times = load_times
        self.cheap = cheap

    def hold(self, scheduler, target, decision, now):
        if self.cheap is not None:
            mine = scheduler.reserved(target) - scheduler.in_flight(target) - len(scheduler.waiting(target))
            if scheduler.swaps() or len(scheduler.queued()) > max(mine, 1) or mine > 1:
                return None
        until = None
        for victim in decision.evict:
            times = self.arrivals.get(victim, [])
            i = bisect.bisect_right(times, now)
            if i == len(times):
                continue
            gap = times[i] - now
            if self.cheap is None:
                if gap > self.load_times[target]:
                    continue
            elif gap + self.durations[victim][i] > self.cheap * self.load_times[target]:
                continue
            until = max(until or 0.0, times[i] + 1e-3)
        return until


def seeds_arg(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return out


def verdict(mine: dict, fifo: dict) -> str:
    if mine["swaps"] > fifo["swaps"] or mine["p95"] > fifo["p95"]:
        return "MISS"
    return "PASS" if mine["swaps"] < fifo["swaps"] else "EQUAL"


def run(
    kinds: list[str], seeds: list[int], variants: list[str], policies: list[str], references: bool
) -> list[dict]:
    rows = []
    for kind in kinds:
        for seed in seeds:
            base = generate(kind, seed)
            for vname in variants:
                slots = VARIANTS[vname][2]
                if slots > 1 and slots >= len(base.models):
                    continue  # everything fits at once: nothing to decide
                world = variant(base, vname)
                plan = compile_text(
                    world.config(slots, LAYOUT.get(vname, "any")), f"{kind}-{seed}-{vname}.yaml"
                )
                assert plan.ok, plan.diagnostics
                settings = scheduler_settings(plan)
                scheduling = {name: make_policy(name) for name in policies}
                if references:
                    scheduling["foresight"] = Foresight(world.requests, world.load_times)
                    scheduling["foresight-cheap"] = Foresight(world.requests, world.load_times, cheap=0.25)
                results = {
                    name: simulate(plan.policy, settings, world.requests, world.load_times, scheduling=policy)
                    for name, policy in scheduling.items()
                }
                table = compare_table(results, world.load_times)
                for name, r in table.items():
                    # The chain bound assumes one model at a time.
                    bound = chain_bound(world.requests, r["wait"]["max"]) if slots == 1 else None
                    rows.append(
                        {
                            "kind": kind,
                            "seed": seed,
                            "variant": vname,
                            "policy": name,
                            "requests": len(world.requests),
                            "swaps": r["swaps"],
                            "load_seconds": round(r["load_seconds"], 1),
                            "p50": r["wait"]["p50"],
                            "p95": r["wait"]["p95"],
                            "max": r["wait"]["max"],
                            "mean": r["wait"]["mean"],
                            "makespan": r["makespan"],
                            "rejected": r["rejected"],
                            "lower_bound": bound,
                            "swaps_per_bound": round(r["swaps"] / bound, 2) if bound else None,
                        }
                    )
    base_runs = {(r["kind"], r["seed"], r["variant"]): r for r in rows if r["policy"] == "fifo"}
    for r in rows:
        r["verdict"] = (
            "" if r["policy"] == "fifo" else verdict(r, base_runs[(r["kind"], r["seed"], r["variant"])])
        )
    return rows


def world_of(row: dict) -> str:
    """The summary's grouping: every one-model-at-a-time variant together, else the variant."""
    return "one at a time" if row["variant"] in ONE_SLOT else row["variant"]


def summarise(rows: list[dict]) -> list[dict]:
    base = {(r["kind"], r["seed"], r["variant"]): r for r in rows if r["policy"] == "fifo"}
    out = []
    groups = dict.fromkeys((r["kind"], world_of(r)) for r in rows)
    for name in dict.fromkeys(r["policy"] for r in rows if r["policy"] != "fifo"):
        for kind, world in groups:
            mine = [r for r in rows if r["policy"] == name and r["kind"] == kind and world_of(r) == world]
            if not mine:
                continue
            pairs = [(m, base[(m["kind"], m["seed"], m["variant"])]) for m in mine]
            dp95 = [m["p95"] - f["p95"] for m, f in pairs]
            dswaps = [m["swaps"] - f["swaps"] for m, f in pairs]
            fs, ms = sum(f["swaps"] for _, f in pairs), sum(m["swaps"] for m, _ in pairs)
            counts = {v: sum(1 for m in mine if m["verdict"] == v) for v in ("PASS", "EQUAL", "MISS")}
            out.append(
                {
                    "policy": name,
                    "kind": kind,
                    "world": world,
                    "traces": len(mine),
                    **{k.lower(): n for k, n in counts.items()},
                    "p95_worse": sum(1 for d in dp95 if d > 0),
                    "swaps_worse": sum(1 for d in dswaps if d > 0),
                    "worst_p95_change": round(max(dp95), 3),
                    "best_p95_change": round(min(dp95), 3),
                    "worst_swap_change": max(dswaps),
                    "fifo_swaps": fs,
                    "swaps": ms,
                    "swap_change_pct": round(100 * (ms - fs) / fs, 1) if fs else 0.0,
                    "verdict": "PASS"
                    if counts["MISS"] == 0 and counts["PASS"] > counts["EQUAL"]
                    else ("MISS" if counts["MISS"] else "EQUAL"),
                }
            )
    return out


def markdown(rows: list[dict], summary: list[dict], took: float) -> str:
    lines = ["## Against FIFO, per kind and world (worst case over every trace and variant)", ""]
    lines.append(
        "| policy | kind | world | traces | PASS | EQUAL | MISS | p95 worse on | swaps worse on "
        "| worst p95 change s | best p95 change s | worst swap change | swaps FIFO -> policy | verdict |"
    )
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in summary:
        lines.append(
            f"| {s['policy']} | {s['kind']} | {s['world']} | {s['traces']} | {s['pass']} | {s['equal']} | {s['miss']} "
            f"| {s['p95_worse']} | {s['swaps_worse']} | {s['worst_p95_change']:+.2f} | {s['best_p95_change']:+.2f} "
            f"| {s['worst_swap_change']:+d} | {s['fifo_swaps']} -> {s['swaps']} ({s['swap_change_pct']:+.1f} %) "
            f"| {s['verdict']} |"
        )
    lines += [
        "",
        "PASS: fewer swaps than FIFO at no worse p95 wait; EQUAL: same swaps, p95 no worse; "
        "MISS: more swaps or a worse p95. A kind's verdict is PASS when no trace MISSes and most PASS.",
        "",
        "## Per trace",
        "",
        "| kind | seed | variant | policy | requests | swaps | load-s | p50 s | p95 s | max s | makespan s "
        "| rejected | lower bound | swaps/LB | vs FIFO |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['seed']} | {r['variant']} | {r['policy']} | {r['requests']} | {r['swaps']} "
            f"| {r['load_seconds']:g} | {r['p50']:.2f} | {r['p95']:.2f} | {r['max']:.2f} | {r['makespan']:.0f} "
            f"| {r['rejected']} | {'-' if r['lower_bound'] is None else r['lower_bound']} "
            f"| {'-' if r['swaps_per_bound'] is None else format(r['swaps_per_bound'], '.2f')} | {r['verdict']} |"
        )
    lines += ["", f"{len(rows)} runs in {took:.1f} s", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-19", help="seeds, e.g. 0-19 or 1,5,7 (default 0-19)")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--policies", default="fifo,hold")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    ap.add_argument("--no-references", action="store_true", help="skip the perfect-foresight reference rows")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    ap.add_argument(
        "--tables-from", type=Path, metavar="JSON", help="print the tables of a saved run instead of running"
    )
    args = ap.parse_args()
    if args.tables_from:
        saved = json.loads(args.tables_from.read_text(encoding="utf-8"))
        text = markdown(saved["runs"], summarise(saved["runs"]), saved.get("seconds", 0.0))
        print(text)
        if args.markdown:
            args.markdown.write_text("# bench/policies.py\n\n" + text, encoding="utf-8")
        return
    kinds = [k for k in args.kinds.split(",") if k]
    policies = [p for p in args.policies.split(",") if p]
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r} (variants: {', '.join(VARIANTS)})")
    if "fifo" not in policies:
        policies.insert(0, "fifo")
    seeds = seeds_arg(args.seeds)
    started = time.perf_counter()
    rows = run(kinds, seeds, variants, policies, not args.no_references)
    took = time.perf_counter() - started
    summary = summarise(rows)
    text = markdown(rows, summary, took)
    print(text)
    if args.markdown:
        args.markdown.write_text("# bench/policies.py\n\n" + text, encoding="utf-8")
    write_result(
        "policies",
        {
            "settings": {
                "kinds": kinds,
                "seeds": seeds,
                "variants": {v: [*VARIANTS[v], LAYOUT.get(v, "any")] for v in variants},
                "policies": policies,
            },
            "seconds": round(took, 1),
            "summary": summary,
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
