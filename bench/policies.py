"""Scheduling policies on generated traces: FIFO against the others, several seeds per kind.

For each trace kind of `bench/traces.py` and each seed, every policy replays the same trace
through the real scheduler (`runtime/simulate.py`, the engine of `plan --trace`), with the
world's load times. Per run: swaps, load-seconds, p50/p95/max wait, makespan, rejections,
and swaps divided by the lower bound of `bench/lowerbound.py` at the run's own max wait
(fewest loads of any schedule whose longest wait is within that budget).

The verdict per kind follows the issue: the policy must make fewer swaps than FIFO at no
worse p95 where it can, and never be worse on swaps or p95 (p95 compared at the
simulator's microsecond rounding).

    .venv/bin/python bench/policies.py [--seeds 0-9] [--kinds agentic,office] [--policies fifo,hold]

Prints markdown tables and writes bench/results/policies.json.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import write_result
from lowerbound import chain_bound
from traces import KINDS, generate

from llamaswap.compiler.plan import compile_text
from llamaswap.runtime.policies import make_policy
from llamaswap.runtime.scheduler import FifoPolicy
from llamaswap.runtime.settings import scheduler_settings
from llamaswap.runtime.simulate import compare_table, simulate


class Foresight(FifoPolicy):
    """Not a real policy (it reads the future): the issue's perfect-foresight reference. It
    holds an idle victim exactly when the victim's next request arrives before the target
    could finish loading, until that request, and never otherwise."""

    name = "foresight"

    def __init__(self, requests, load_times) -> None:
        self.arrivals: dict[str, list[float]] = {}
        for r in requests:
            self.arrivals.setdefault(r.model, []).append(r.at)
        for times in self.arrivals.values():
            times.sort()
        self.load_times = load_times

    def hold(self, scheduler, target, decision, now):
        until = None
        for victim in decision.evict:
            times = self.arrivals.get(victim, [])
            i = bisect.bisect_right(times, now)
            if i < len(times) and times[i] - now <= self.load_times[target]:
                until = max(until or 0.0, times[i] + 1e-3)
        return until


def seeds_arg(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return out


def run(kinds: list[str], seeds: list[int], policies: list[str], foresight: bool) -> list[dict]:
    rows = []
    for kind in kinds:
        for seed in seeds:
            world = generate(kind, seed)
            plan = compile_text(world.config(), f"{kind}-{seed}.yaml")
            assert plan.ok, plan.diagnostics
            settings = scheduler_settings(plan)
            results = {}
            for name in policies:
                results[name] = simulate(
                    plan.policy, settings, world.requests, world.load_times, scheduling=make_policy(name)
                )
            if foresight:
                results["foresight"] = simulate(
                    plan.policy,
                    settings,
                    world.requests,
                    world.load_times,
                    scheduling=Foresight(world.requests, world.load_times),
                )
            table = compare_table(results, world.load_times)
            for name, r in table.items():
                bound = chain_bound(world.requests, r["wait"]["max"])
                rows.append(
                    {
                        "kind": kind,
                        "seed": seed,
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
                        "swaps_per_bound": round(r["swaps"] / bound, 2),
                    }
                )
    return rows


def verdicts(rows: list[dict], policies: list[str]) -> list[dict]:
    out = []
    base = {(r["kind"], r["seed"]): r for r in rows if r["policy"] == "fifo"}
    for name in policies:
        if name == "fifo":
            continue
        for kind in dict.fromkeys(r["kind"] for r in rows):
            mine = [r for r in rows if r["policy"] == name and r["kind"] == kind]
            fifo = [base[(r["kind"], r["seed"])] for r in mine]
            fewer = sum(1 for m, f in zip(mine, fifo) if m["swaps"] < f["swaps"] and m["p95"] <= f["p95"])
            worse = sum(1 for m, f in zip(mine, fifo) if m["swaps"] > f["swaps"] or m["p95"] > f["p95"])
            fs, ms = sum(f["swaps"] for f in fifo), sum(m["swaps"] for m in mine)
            out.append(
                {
                    "policy": name,
                    "kind": kind,
                    "traces": len(mine),
                    "better": fewer,
                    "worse": worse,
                    "fifo_swaps": fs,
                    "swaps": ms,
                    "swap_change_pct": round(100 * (ms - fs) / fs, 1),
                    "p95_change_mean": round(
                        sum(m["p95"] - f["p95"] for m, f in zip(mine, fifo)) / len(mine), 2
                    ),
                    "verdict": "PASS" if worse == 0 and fewer > 0 else ("MISS" if worse else "EQUAL"),
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-9", help="seeds, e.g. 0-9 or 1,5,7 (default 0-9)")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--policies", default="fifo,hold")
    ap.add_argument("--no-foresight", action="store_true", help="skip the perfect-foresight reference row")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    policies = [p for p in args.policies.split(",") if p]
    if "fifo" not in policies:
        policies.insert(0, "fifo")
    seeds = seeds_arg(args.seeds)
    started = time.perf_counter()
    rows = run(kinds, seeds, policies, not args.no_foresight)
    took = time.perf_counter() - started

    print("## Scheduling policies on generated traces\n")
    print(
        "| kind | seed | policy | requests | swaps | load-s | p50 s | p95 s | max s | makespan s | rejected "
        "| lower bound | swaps/LB |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['seed']} | {r['policy']} | {r['requests']} | {r['swaps']} | {r['load_seconds']:g} "
            f"| {r['p50']:.1f} | {r['p95']:.1f} | {r['max']:.1f} | {r['makespan']:.0f} | {r['rejected']} "
            f"| {r['lower_bound']} | {r['swaps_per_bound']:.2f} |"
        )
    summary = verdicts(rows, policies + ([] if args.no_foresight else ["foresight"]))
    print("\n## Against FIFO (target: fewer swaps at no worse p95, never worse on either)\n")
    print(
        "| policy | kind | traces | fewer swaps, p95 no worse | worse on swaps or p95 | swaps FIFO -> policy "
        "| mean p95 change s | verdict |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for s in summary:
        print(
            f"| {s['policy']} | {s['kind']} | {s['traces']} | {s['better']} | {s['worse']} "
            f"| {s['fifo_swaps']} -> {s['swaps']} ({s['swap_change_pct']:+.1f} %) | {s['p95_change_mean']:+.2f} "
            f"| {s['verdict']} |"
        )
    print(f"\n{len(rows)} runs in {took:.1f} s")
    write_result(
        "policies",
        {
            "settings": {"kinds": kinds, "seeds": seeds, "policies": policies},
            "runs": rows,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
