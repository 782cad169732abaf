"""Resources benchmark: `sets: auto` derivation and the Check of hand-written sets.

Usage: .venv/bin/python bench/resources.py [--quick]

Each shape is a full config compiled in-process with `compile_text` (warm: modules imported,
one run first); the time is the median of repeated runs and includes loading, validating and
deriving. Issue 17's target: 30 models on 4 devices derive in under 1 s. Shapes (4 x 24 GiB):

- pinned-30: 30 models — 10 split over GPU pairs or all four, 4 any-GPU models, 16 pinned
  helpers (embedders, rerankers, speech; 4 per GPU): how multi-GPU boxes are usually set up.
- mixed-30: 30 models — 10 split models, 12 any-GPU models of 18-23.5 GiB, 8 pinned helpers:
  any-GPU models multiply the maximal combinations (4,000+), so this one is the hard case.
- box-2x24: samples/valid/resources-two-gpus.yaml.
- check-30: the pinned-30 models with 60 hand-written sets, every combination checked.

Then the placement lookup: `Placer.decide(target, placed state)` on box-2x24's precomputed
table, ns per decision (min over short batches of the mean, as bench/decide.py).

Columns: wall-clock median and minimum, and the median CPU time of the process
(`time.process_time`). On a shared machine the wall clock includes waiting for a core; as in
bench/decide.py the verdict takes the minimum (the least-contended run), and the CPU time
says what the work itself costs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import md_table, ms, verdict

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.0

SPLITS = [
    (40, "gpu0, gpu1"),
    (42, "gpu0, gpu1"),
    (44, "gpu2, gpu3"),
    (38, "gpu2, gpu3"),
    (46, "gpu0, gpu1"),
    (36, "gpu2, gpu3"),
    (39, "gpu0, gpu1"),
    (41, "gpu2, gpu3"),
    (80, "gpu0, gpu1, gpu2, gpu3"),
    (70, "gpu0, gpu1, gpu2, gpu3"),
]


def config(singles: list[float], helpers: list[float], sets: list[str] | None = None) -> str:
    lines = ["resources:"] + [f"  gpu{i}: {{vram: 24GiB}}" for i in range(4)] + ["models:"]

    def model(name: str, res: str) -> None:
        lines.append(f"  {name}: {{cmd: 'llamaswap fake-upstream --port ${{PORT}}', resources: {res}}}")

    for i, (gib, devs) in enumerate(SPLITS):
        model(f"split-{i}", f"{{vram: {gib}GiB, split: [{devs}]}}")
    for i, gib in enumerate(singles):
        model(f"single-{i}", f"{{vram: {gib}GiB}}")
    for i, gib in enumerate(helpers):
        model(f"helper-{i}", f"{{vram: {gib}GiB, devices: [gpu{i % 4}]}}")
    lines += ["matrix:", "  sets:" + (" auto" if sets is None else "")]
    lines += [f'    s{i}: "{dsl}"' for i, dsl in enumerate(sets or [])]
    return "\n".join(lines) + "\n"


PINNED_30 = config(
    [18, 20, 22, 23], [0.5, 1, 1.5, 2, 0.75, 1.25, 1.75, 0.6, 2.5, 3, 0.4, 1.1, 0.9, 1.6, 2.2, 0.3]
)
MIXED_30 = config(
    [18, 19, 20, 21, 22, 23, 18.5, 19.5, 20.5, 21.5, 22.5, 23.5], [0.5, 1, 1.5, 2, 0.75, 1.25, 1.75, 0.6]
)


def check_sets() -> list[str]:
    out = []
    for i in range(60):
        a, b = i % 8, (i * 3) % 16
        out.append(
            f"split-{a} & (helper-{b} | helper-{(b + 1) % 16}) & (helper-{(b + 2) % 16} | helper-{(b + 5) % 16})"
        )
    return out


CHECK_30 = config(
    [18, 20, 22, 23],
    [0.5, 1, 1.5, 2, 0.75, 1.25, 1.75, 0.6, 2.5, 3, 0.4, 1.1, 0.9, 1.6, 2.2, 0.3],
    check_sets(),
)


def measure(name: str, text: str, budget: float) -> dict[str, Any]:
    from llamaswap.compiler.plan import compile_text

    plan = compile_text(text, name)
    cpu: list[float] = []

    def run() -> None:
        t0 = time.process_time()
        compile_text(text, name)
        cpu.append(time.process_time() - t0)

    times = common.repeat_timing(run, budget=budget, min_runs=3, max_runs=20)
    return {
        "shape": name,
        "ok": plan.ok,
        "models": len(plan.models),
        "devices": len(plan.resources.devices) if plan.resources else 0,
        "sets": len(plan.sets),
        "combinations": sum(len(s.combinations or ()) for s in plan.sets),
        "median_s": common.median(times),
        "min_s": min(times),
        "cpu_median_s": common.median(cpu),
        "runs": len(times),
        "errors": [d.code for d in plan.diagnostics if d.severity.value == "error"],
    }


def placement_lookup(text: str, batches: int = 200, batch: int = 200) -> dict[str, Any]:
    """ns per `Placer.decide` over the precomputed table's own keys (shuffled, deterministic),
    as the minimum over short batches of the mean per call (like bench/decide.py)."""
    import random

    from llamaswap.compiler.plan import compile_text

    placer = compile_text(text, "box").policy.placer
    keys = [(t, st) for t, row in placer._rows.items() for st in row]
    random.Random(17).shuffle(keys)
    keys = (keys * (batch // max(1, len(keys)) + 1))[:batch]
    decide = placer.decide
    means = []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for target, state in keys:
            decide(target, state)
        means.append((time.perf_counter_ns() - t0) / len(keys))
    return {"entries": placer.precomputed, "min_ns": min(means), "median_ns": common.median(means)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "resources.json"))
    args = ap.parse_args(argv)
    budget = 0.5 if args.quick else 3.0
    box = (ROOT / "samples" / "valid" / "resources-two-gpus.yaml").read_text(encoding="utf-8")
    rows = [
        measure("pinned-30", PINNED_30, budget),
        measure("mixed-30", MIXED_30, budget),
        measure("box-2x24", box, budget),
        measure("check-30", CHECK_30, budget),
    ]
    table = []
    for r in rows:
        target = r["models"] >= 30 and r["shape"] != "check-30"
        table.append(
            [
                r["shape"],
                r["models"],
                r["devices"],
                r["sets"],
                r["combinations"],
                ms(r["median_s"]),
                ms(r["min_s"]),
                ms(r["cpu_median_s"]),
                "< 1 s" if target else "-",
                verdict(r["min_s"] < TARGET_S) if target else "-",
            ]
        )
    print(
        md_table(
            [
                "shape",
                "models",
                "devices",
                "sets",
                "combinations",
                "compile (median)",
                "compile (min)",
                "cpu (median)",
                "target",
                "verdict",
            ],
            table,
        )
    )
    lookup = placement_lookup(box, batches=50 if args.quick else 200)
    print(
        f"\nplacement lookup (box-2x24, {lookup['entries']} precomputed entries): "
        f"{lookup['min_ns']:.0f} ns min, {lookup['median_ns']:.0f} ns median per decision "
        f"({verdict(lookup['min_ns'] <= 1000)} against 1 us)"
    )
    common.write_result("resources", {"target_s": TARGET_S, "shapes": rows, "placement_lookup": lookup})
    return 0


if __name__ == "__main__":
    sys.exit(main())
