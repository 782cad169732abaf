"""Why no online policy can beat FIFO somewhere and be worse nowhere (issue 19's bar).

For every generated trace (bench/traces.py, the multi-slot variants of bench/policies.py)
on which a policy ever evicts something other than FIFO's pick, this finds the shortest
prefix of the trace (its first n requests) after which the two schedules differ, cuts the
trace there, and adds one request: for a model the policy evicted and FIFO kept, long after
everything has settled. An online policy cannot tell that trace from the real one when it
decides (it has seen the same n requests), so it decides the same; FIFO serves the added
request from a loaded model and the policy has to load it again. The table counts the
traces on which the policy, on that continuation, makes more swaps than FIFO (or waits
longer at p95).

    .venv/bin/python bench/adversary.py [--seeds 0-19] [--policy lookahead]
        [--kinds office,chat-rag-tts,agentic]

So for *any* deterministic online policy, "fewer swaps than FIFO on some trace" implies
"more swaps than FIFO on another": a trace that agrees with a real one up to the moment the
two choices part, and then asks for what the policy let go. The only question is how often
real traffic continues that way, which bench/policies.py measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies import LAYOUT, VARIANTS, seeds_arg, variant
from traces import KINDS, generate

from llamaswap.compiler.plan import compile_text
from llamaswap.runtime.policies import make_policy
from llamaswap.runtime.settings import scheduler_settings
from llamaswap.runtime.simulate import TraceRequest, simulate


def decisions(plan, settings, requests, load_times, policy: str) -> tuple[dict, list[dict]]:
    r = simulate(plan.policy, settings, requests, load_times, scheduling=make_policy(policy), verbose=True)
    return r, r["decisions"]


def first_parting(plan, settings, requests, load_times, policy: str) -> int | None:
    """The smallest n such that FIFO and `policy` commit different swaps on the first n
    requests (None when they never do on the whole trace)."""
    _, a = decisions(plan, settings, requests, load_times, "fifo")
    _, b = decisions(plan, settings, requests, load_times, policy)
    if a == b:
        return None
    lo, hi = 1, len(requests)  # differ at hi; search the smallest n that differs
    while lo < hi:
        mid = (lo + hi) // 2
        _, a = decisions(plan, settings, requests[:mid], load_times, "fifo")
        _, b = decisions(plan, settings, requests[:mid], load_times, policy)
        if a != b:
            hi = mid
        else:
            lo = mid + 1
    return lo


def punish(plan, settings, requests, load_times, policy: str, n: int) -> tuple[dict, dict] | None:
    """The first n requests, then one request for a model the policy evicted where FIFO did
    not, after everything has finished. Returns (FIFO's result, the policy's) or None when
    the prefix's schedules end with the same models loaded."""
    prefix = list(requests[:n])
    _, a = decisions(plan, settings, prefix, load_times, "fifo")
    _, b = decisions(plan, settings, prefix, load_times, policy)
    for da, db in zip(a, b, strict=False):
        if da != db:
            break
    else:
        return None
    # A model the policy's diverging swap evicted and FIFO's kept.
    candidates = sorted(set(db["evicted"]) - set(da["evicted"]))
    if not candidates:
        return None
    end = max(r.at for r in prefix) + sum(load_times.values()) * 2 + sum(r.duration for r in prefix)
    for victim in candidates:
        trace = [*prefix, TraceRequest(at=round(end, 3), model=victim, duration=1.0)]
        fifo = simulate(plan.policy, settings, trace, load_times, scheduling=make_policy("fifo"))
        mine = simulate(plan.policy, settings, trace, load_times, scheduling=make_policy(policy))
        if mine["swaps"] > fifo["swaps"] or mine["wait"]["p95"] > fifo["wait"]["p95"]:
            return fifo, mine
    return fifo, mine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-19")
    ap.add_argument("--kinds", default="office,chat-rag-tts,agentic")
    ap.add_argument("--policy", default="lookahead")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    for k in kinds:
        if k not in KINDS:
            raise SystemExit(f"unknown kind {k!r} (kinds: {', '.join(KINDS)})")
    multi = [v for v, (_, _, slots, _) in VARIANTS.items() if slots > 1]
    print(f"| kind | world | traces | {args.policy} parts from FIFO | worse after one added request |")
    print("|---|---|---:|---:|---:|")
    total = parted = worse = 0
    for kind in kinds:
        for vname in multi:
            row = [0, 0, 0]
            for seed in seeds_arg(args.seeds):
                base = generate(kind, seed)
                slots = VARIANTS[vname][2]
                if slots >= len(base.models):
                    continue
                world = variant(base, vname)
                plan = compile_text(world.config(slots, LAYOUT.get(vname, "any")), f"{kind}-{seed}.yaml")
                settings = scheduler_settings(plan)
                requests = sorted(world.requests, key=lambda r: r.at)
                row[0] += 1
                n = first_parting(plan, settings, requests, world.load_times, args.policy)
                if n is None:
                    continue
                row[1] += 1
                out = punish(plan, settings, requests, world.load_times, args.policy, n)
                if out is not None:
                    fifo, mine = out
                    if mine["swaps"] > fifo["swaps"] or mine["wait"]["p95"] > fifo["wait"]["p95"]:
                        row[2] += 1
            if row[0]:
                print(f"| {kind} | {vname} | {row[0]} | {row[1]} | {row[2]} |")
            total, parted, worse = total + row[0], parted + row[1], worse + row[2]
    print(f"| all | | {total} | {parted} | {worse} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
