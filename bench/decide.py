"""Decision benchmark: how long one swap decision takes, by path.

Shapes are llama-swap's own benchmark shapes (internal/matrix/program_bench_test.go):

- multiset-N (BenchmarkProgram_SolveMultiSet), N = 1, 8, 32: set s is
  "target-s & (a-s-0 | ... | a-s-9) & (b-s-0 | ... | b-s-9)"; evict costs a=2, b=5, default 1;
  one extra model "outside" in no set. Query: target-q with q = N // 2 and running
  [a-q-1, b-q-2, a-0-0, b-0-1, outside].
- product-D (BenchmarkMatrix_Compile's definition), D = 2..5: one set
  "target & (model-0-0 | ... | model-0-9) & ... & (model-{D-1}-0 | ...)" (10^D combinations) and
  "outside". Query (ours; llama-swap only benchmarks compiling this shape): target with
  running [model-0-1, model-0-2, model-1-3, ..., model-{D-1}-3, outside].

Measured in ns per decision, wall clock, as the minimum over many short batches of the mean
per call in the batch (the median is written to the JSON next to it). Short batches mostly
escape preemption on a busy machine, so the minimum is the uncontended cost:

- lookup: `policy.decide(target, running)` over up to 20,000 of the precomputed table's own
  keys, shuffled (batches of 200 distinct keys), for shapes whose table fits the precompute
  budget; every call is a table hit;
- lookup, hot: one table key asked again and again (a server's running state repeats);
- solve: `policy.solve(...)`, the symbolic solver with no table and no memo; the solver keeps
  nothing between queries (its per-query memo of set states is dropped after each), so every
  call is a cold solve, though the CPU caches are warm from the previous call;
- first solve: the first solve on a freshly built policy (not even the CPU caches have seen
  its compiled program), min (and median) over several fresh policies; building the policy
  is not timed;
- memo hit: `policy.decide` asked the same question again (the query is not a reachable state,
  so the table cannot answer it; the memo does).

multiset-8's table (326,040 entries) is past the default budget (250,000); the row
"multiset-8, budget 400k" compiles it with a larger budget so a big table's lookups are
measured too.

Usage: python bench/decide.py [--quick] [--precompute-budget N] [--output PATH]
Prints a markdown table and writes bench/results/decide.json (no timestamps, no paths).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collections.abc import Callable

import common

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llamaswap.compiler.evict import MatrixPolicy  # noqa: E402
from llamaswap.compiler.plan import CompileOptions, compile_text  # noqa: E402

TARGET_LOOKUP_NS = 1_000
TARGET_SOLVE_NS = 100_000  # on multiset-32


def _yaml(models: list[str], sets: list[tuple[str, str]], costs: dict[str, int]) -> str:
    lines = ["models:"]
    for m in models:
        lines.append(f"  {m}:")
        lines.append('    cmd: "server --port ${PORT}"')
    lines.append("matrix:")
    if costs:
        lines.append("  evict_costs:")
        lines += [f"    {k}: {v}" for k, v in costs.items()]
    lines.append("  sets:")
    lines += [f'    {name}: "{dsl}"' for name, dsl in sets]
    return "\n".join(lines) + "\n"


def multiset(n: int) -> tuple[str, str, tuple[str, ...]]:
    models = ["outside"]
    sets: list[tuple[str, str]] = []
    costs: dict[str, int] = {}
    for s in range(n):
        a = [f"a-{s}-{c}" for c in range(10)]
        b = [f"b-{s}-{c}" for c in range(10)]
        models += [f"target-{s}", *a, *b]
        costs.update({m: 2 for m in a})
        costs.update({m: 5 for m in b})
        sets.append((f"set-{s}", f"target-{s} & ({' | '.join(a)}) & ({' | '.join(b)})"))
    q = n // 2
    running = (f"a-{q}-1", f"b-{q}-2", "a-0-0", "b-0-1", "outside")
    return _yaml(models, sets, costs), f"target-{q}", running


def product(d: int) -> tuple[str, str, tuple[str, ...]]:
    models = ["outside", "target"]
    groups = []
    for dim in range(d):
        alts = [f"model-{dim}-{c}" for c in range(10)]
        models += alts
        groups.append(f"({' | '.join(alts)})")
    running = ("model-0-1", "model-0-2", *(f"model-{dim}-3" for dim in range(1, d)), "outside")
    return _yaml(models, [("large", "target & " + " & ".join(groups))], {}), "target", running


def timed(fn: Callable[[], None], loops: int, batches: int) -> tuple[float, float]:
    """(min, median) over `batches` batches of the mean ns per call over `loops` calls.

    Batches are short (tens to hundreds of µs), so on a busy machine most of them run
    without being preempted; the minimum is the uncontended cost, the median shows noise."""
    samples = []
    clock = time.perf_counter_ns
    for _ in range(batches):
        t0 = clock()
        for _ in range(loops):
            fn()
        samples.append((clock() - t0) / loops)
    samples.sort()
    return samples[0], samples[len(samples) // 2]


def measure(
    name: str, text: str, target: str, running: tuple[str, ...], quick: bool, budget: int | None
) -> dict:
    opts = CompileOptions() if budget is None else CompileOptions(precompute_budget=budget)
    t0 = time.perf_counter()
    plan = compile_text(text, f"{name.split(',')[0]}.yaml", opts)
    assert plan.ok, [d.message for d in plan.diagnostics]
    policy = plan.policy
    compile_s = time.perf_counter() - t0
    assert isinstance(policy, MatrixPolicy)
    run = tuple(sorted(running))
    batches = 30 if quick else 200
    row: dict = {
        "shape": name,
        "sets": len(plan.sets),
        "combinations": sum(s.count for s in plan.sets),
        "models": len(plan.models),
        "table_entries": None if policy.table is None else len(policy.table),
        "compile_and_precompute_s": round(compile_s, 3),
    }

    decision = policy.solve(target, run, explain=False)
    row["decision"] = {k: v for k, v in decision.to_json().items() if k not in ("request", "model")}

    # Lookups: the table's own keys, shuffled so consecutive calls do not share cache lines.
    if policy.table is not None:
        keys = [(t, s) for s in policy.table.states for t in policy.table.models]
        random.Random(0).shuffle(keys)
        keys = keys[:20_000]
        assert all(policy.table.get(t, s) is not None for t, s in keys)
        decide = policy.decide
        chunk = 200
        samples = []
        clock = time.perf_counter_ns
        for _ in range(1 if quick else 3):
            for i in range(0, len(keys) - chunk + 1, chunk):
                part = keys[i : i + chunk]
                t0 = clock()
                for t, s in part:
                    decide(t, s)
                samples.append((clock() - t0) / chunk)
        samples.sort()
        row["lookup_ns"] = round(samples[0])
        row["lookup_ns_median"] = round(samples[len(samples) // 2])
        t_hot, s_hot = keys[0]
        lo, med = timed(lambda: decide(t_hot, s_hot), 100, batches)
        row["lookup_hot_ns"], row["lookup_hot_ns_median"] = round(lo), round(med)
    else:
        row["lookup_ns"] = row["lookup_ns_median"] = None
        row["lookup_hot_ns"] = row["lookup_hot_ns_median"] = None

    loops = 10
    solve = policy.solve
    lo, med = timed(lambda: solve(target, run, False), loops, batches)
    row["solve_ns"], row["solve_ns_median"] = round(lo), round(med)

    # First solve on fresh policies: nothing cached anywhere. Building them is not timed.
    fresh_n = 10 if quick else 50
    sets = [(s.name, s.dsl, s.expr) for s in plan.sets]
    firsts = []
    for _ in range(fresh_n):
        fresh = MatrixPolicy(plan.models, sets, dict(plan.evict_costs))
        t1 = time.perf_counter_ns()
        got = fresh.solve(target, run, False)
        firsts.append(time.perf_counter_ns() - t1)
        assert got == decision
    firsts.sort()
    row["first_solve_ns"], row["first_solve_ns_median"] = firsts[0], firsts[len(firsts) // 2]

    assert policy.table is None or policy.table.get(target, run) is None  # the memo answers this one
    policy.decide(target, run)
    decide = policy.decide
    lo, med = timed(lambda: decide(target, run), 100, batches)
    row["memo_hit_ns"], row["memo_hit_ns_median"] = round(lo), round(med)
    assert decide(target, run) == decision
    return row


def fmt(ns: float | None) -> str:
    if ns is None:
        return "—"
    if ns >= 10_000:
        return f"{ns / 1000:,.0f} µs"
    if ns >= 1_000:
        return f"{ns / 1000:,.1f} µs"
    return f"{ns:,.0f} ns"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer batches (smoke run)")
    ap.add_argument(
        "--precompute-budget",
        type=int,
        default=None,
        help="decision-table budget (default: the compiler's, 250000 entries)",
    )
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "decide.json"))
    args = ap.parse_args(argv)

    load_before = [round(x, 2) for x in os.getloadavg()]
    budget = args.precompute_budget
    shapes = [(f"multiset-{n}", *multiset(n), budget) for n in (1, 8, 32)]
    shapes.append(("multiset-8, budget 400k", *multiset(8), budget or 400_000))
    shapes += [(f"product-{d}", *product(d), budget) for d in (2, 3, 4, 5)]
    rows = [measure(name, text, target, running, args.quick, b) for name, text, target, running, b in shapes]

    print(
        "| shape | sets | combinations | models | table entries | lookup (table-wide) | lookup (hot) "
        "| cold solve | first solve, fresh policy | memo hit |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        entries = "—" if r["table_entries"] is None else f"{r['table_entries']:,}"
        print(
            f"| {r['shape']} | {r['sets']} | {r['combinations']:,} | {r['models']} | {entries} "
            f"| {fmt(r['lookup_ns'])} | {fmt(r['lookup_hot_ns'])} | {fmt(r['solve_ns'])} "
            f"| {fmt(r['first_solve_ns'])} | {fmt(r['memo_hit_ns'])} |"
        )

    worst_lookup = max((r["lookup_ns"] for r in rows if r["lookup_ns"] is not None), default=None)
    worst_hot = max((r["lookup_hot_ns"] for r in rows if r["lookup_hot_ns"] is not None), default=None)
    m32 = next(r for r in rows if r["shape"] == "multiset-32")
    cold32 = max(m32["solve_ns"], m32["first_solve_ns"])
    checks = {
        "lookup_hot_le_1us": worst_hot is not None and worst_hot <= TARGET_LOOKUP_NS,
        "lookup_table_wide_le_1us": worst_lookup is not None and worst_lookup <= TARGET_LOOKUP_NS,
        "cold_solve_multiset32_le_100us": cold32 <= TARGET_SOLVE_NS,
    }
    load_after = [round(x, 2) for x in os.getloadavg()]
    print()
    print("| target | measured (worst) | verdict |")
    print("|---|---:|---|")
    print(
        f"| table lookup <= 1 µs, hot key (worst table) | {fmt(worst_hot)} "
        f"| {'PASS' if checks['lookup_hot_le_1us'] else 'MISS'} |"
    )
    print(
        f"| table lookup <= 1 µs, shuffled keys over the whole table (worst table) | {fmt(worst_lookup)} "
        f"| {'PASS' if checks['lookup_table_wide_le_1us'] else 'MISS'} |"
    )
    print(
        f"| cold symbolic solve <= 100 µs on multiset-32 (worse of cold / first solve) | {fmt(cold32)} "
        f"| {'PASS' if checks['cold_solve_multiset32_le_100us'] else 'MISS'} |"
    )
    print(
        f"\n{os.cpu_count()} CPUs, {common.cpu_model()}; load average {load_before} before, {load_after} after"
    )

    out = {
        "benchmark": "decide",
        "unit": "ns per decision, wall clock: min over short batches (*_median: median batch)",
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": common.cpu_model(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "arch": platform.machine(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "quick": args.quick,
        "precompute_budget": args.precompute_budget,
        "targets": {
            "lookup_ns": TARGET_LOOKUP_NS,
            "cold_solve_multiset32_ns": TARGET_SOLVE_NS,
            "met": checks,
        },
        "rows": rows,
    }
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
