"""Compile benchmark: in-process `compile_text` times and the wall time of `llamaswap compile`.

Usage: .venv/bin/python bench/compile.py [--cli-runs 5] [--skip-large]

1. In-process, warm (grammar built, modules imported): the median of repeated `compile_text`
   calls for every sample under samples/valid and samples/invalid, for the product shapes of
   llama-swap's BenchmarkMatrix_Compile — D dimensions of ten alternatives each,
   `(m-0-0 | ... | m-0-9) & ... & (m-D-0 | ... | m-D-9)`, 10^2 to 10^5 combinations, all
   expanded under the default budget (100,000) — and for D = 10: 10^10 combinations, kept
   symbolic. `serve` also builds the eviction policy (`plan.policy`, with its precomputed
   decision table); that time is shown beside, as information.
2. In a fresh interpreter: the first `compile_text` of a sample (grammar construction included).
3. The `llamaswap compile samples/valid/<x>.yaml` command, wall clock from spawn to exit, median
   of `--cli-runs`, in two set-ups: "bytecode cached" (what an installed package gives: the
   .pyc files exist; here they live in a PYTHONPYCACHEPREFIX primed by one run) and "no
   llamaswap bytecode" (PYTHONDONTWRITEBYTECODE=1 and no cache, as on this dev box and in CI,
   so llamaswap's own modules are compiled from source on every start). The target is judged
   on the first. `python -c pass` and `llamaswap --version` give the start-up floor.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import md_table, ms, verdict

TARGET_CLI = 0.400
CLI_SAMPLES = ("single-model", "matrix-example", "generated-large")


def product_shape(dims: int, width: int = 10) -> str:
    lines = ["# bench/compile.py: llama-swap's BenchmarkMatrix_Compile shape", "models:"]
    for i in range(dims):
        for j in range(width):
            lines += [
                f"  m-{i}-{j}:",
                "    cmd: sleep 100000",
                f"    proxy: http://127.0.0.1:{10000 + i * width + j}",
                "    checkEndpoint: none",
            ]
    expr = " & ".join("(" + " | ".join(f"m-{i}-{j}" for j in range(width)) + ")" for i in range(dims))
    lines += ["matrix:", "  sets:", f'    product: "{expr}"']
    return "\n".join(lines) + "\n"


def time_compile(text: str, name: str, with_policy: bool, budget: float) -> dict[str, Any]:
    from llamaswap.compiler.plan import compile_text

    plan = compile_text(text, name)  # warm this shape once (and check it)
    times = common.repeat_timing(
        lambda: compile_text(text, name),
        budget=budget,
        min_runs=3 if plan.sets and (plan.sets[0].count or 0) < 50_000 else 1,
    )
    out: dict[str, Any] = {
        "ok": plan.ok,
        "runs": len(times),
        "median_s": common.median(times),
        "min_s": min(times),
        "models": len(plan.models),
        "sets": [{"name": s.name, "count": s.count, "symbolic": s.combinations is None} for s in plan.sets],
        "diagnostics": len(plan.diagnostics),
    }
    if with_policy and plan.ok:
        fresh = compile_text(text, name)
        t0 = time.perf_counter()
        policy = fresh.policy  # built on first use (cached on the plan)
        out["policy_s"] = time.perf_counter() - t0
        out["policy_table"] = getattr(policy, "table", None) is not None
    return out


def first_compile_in_fresh_process(sample: Path) -> dict[str, float]:
    code = (
        "import time, sys\nt0 = time.perf_counter()\nfrom llamaswap.compiler.plan import compile_text\n"
        "t1 = time.perf_counter()\ncompile_text(open(sys.argv[1]).read(), sys.argv[1])\n"
        "t2 = time.perf_counter()\ncompile_text(open(sys.argv[1]).read(), sys.argv[1])\n"
        "t3 = time.perf_counter()\nprint(t1 - t0, t2 - t1, t3 - t2)"
    )
    out = subprocess.run(
        [common.python_exe(), "-c", code, str(sample)],
        capture_output=True,
        text=True,
        check=True,
        cwd=common.REPO,
    )
    imp, first, second = (float(x) for x in out.stdout.split())
    return {"import_s": imp, "first_compile_s": first, "second_compile_s": second}


def wall(argv: list[str], env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """Wall times (spawn -> reaped) and CPU times (user + system, from wait4) of `runs` runs."""
    times, cpus = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, cwd=common.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _, status, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - t0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpus.append(usage.ru_utime + usage.ru_stime)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"bench: {' '.join(argv)} exited {proc.returncode}")
    return times, cpus


def import_profile(env: dict[str, str], sample: Path, top: int = 12) -> list[dict[str, Any]]:
    """The slowest imports (cumulative, microseconds) of `llamaswap compile`, from -X importtime."""
    code = (
        "import sys; from llamaswap.cli import main; sys.argv = ['llamaswap', 'compile', sys.argv[1]]; main()"
    )
    proc = subprocess.run(
        [common.python_exe(), "-X", "importtime", "-c", code, str(sample)],
        env=env,
        cwd=common.REPO,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            self_us, cum_us, name = line[len("import time:") :].split("|")
            rows.append(
                {
                    "module": name.strip(),
                    "self_us": int(self_us),
                    "cumulative_us": int(cum_us),
                    "top_level": not name.startswith("  "),
                }
            )
    return sorted((r for r in rows if r["top_level"]), key=lambda r: -r["cumulative_us"])[:top]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cli-runs", type=int, default=5, help="runs of each command (default 5)")
    ap.add_argument(
        "--budget", type=float, default=0.5, help="seconds of repeats per in-process case (default 0.5)"
    )
    ap.add_argument("--skip-large", action="store_true", help="skip the 10^5 product shape (a few seconds)")
    common.add_nice_option(ap)
    args = ap.parse_args()
    nice = common.raise_priority(args.nice)
    load_before = common.machine()["loadavg"]

    # 1. in-process
    samples = sorted((common.REPO / "samples" / "valid").glob("*.yaml"))
    invalid = sorted((common.REPO / "samples" / "invalid").glob("*.yaml"))
    per_sample = {}
    for path in samples + invalid:
        rel = str(path.relative_to(common.REPO))
        per_sample[rel] = time_compile(path.read_text(encoding="utf-8"), rel, path in samples, args.budget)
        common.log(f"{rel}: {per_sample[rel]['median_s'] * 1000:.2f} ms")
    shapes = {}
    for dims in (2, 3, 4, 5, 10):
        if dims == 5 and args.skip_large:
            continue
        label = f"10^{dims}" + (" symbolic" if dims == 10 else "")
        shapes[label] = time_compile(product_shape(dims), f"product-{dims}.yaml", True, args.budget)
        common.log(
            f"product {label}: {shapes[label]['median_s'] * 1000:.1f} ms, "
            f"policy {shapes[label].get('policy_s', 0) * 1000:.1f} ms"
        )

    # 2. fresh interpreter
    fresh = {
        name: first_compile_in_fresh_process(common.REPO / "samples" / "valid" / f"{name}.yaml")
        for name in CLI_SAMPLES
    }

    # 3. the command
    base_env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    cli: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="llamaswap-bench-pycache-") as cache:
        setups = {
            "bytecode cached": dict(base_env, PYTHONPYCACHEPREFIX=cache),
            "no llamaswap bytecode": dict(base_env, PYTHONDONTWRITEBYTECODE="1"),
        }
        ls = common.llamaswap_exe()
        commands = {
            "python -c pass": [common.python_exe(), "-c", "pass"],
            "llamaswap --version": [ls, "--version"],
        }
        commands.update(
            {f"llamaswap compile {n}.yaml": [ls, "compile", f"samples/valid/{n}.yaml"] for n in CLI_SAMPLES}
        )
        for setup, env in setups.items():
            if setup == "bytecode cached":
                for argv in commands.values():
                    wall(argv, env, 1)  # prime the cache
            cli[setup] = {}
            for label, argv in commands.items():
                times, cpus = wall(argv, env, args.cli_runs)
                cli[setup][label] = {
                    "median_s": common.median(times),
                    "min_s": min(times),
                    "max_s": max(times),
                    "runs": times,
                    "cpu_median_s": common.median(cpus),
                    "cpu_runs": cpus,
                }
                common.log(f"{setup}: {label}: {cli[setup][label]['median_s'] * 1000:.0f} ms")
        imports = import_profile(
            setups["bytecode cached"], common.REPO / "samples" / "valid" / "matrix-example.yaml"
        )
    load_after = common.machine()["loadavg"]
    has_pycache = (common.REPO / "llamaswap" / "__pycache__").exists()

    # -- tables ---------------------------------------------------------------------------------
    print(
        f"### compile: in-process compile_text, warm (median; nice {nice}, load {load_before[0]} -> "
        f"{load_after[0]})\n"
    )
    rows = []
    for rel, r in per_sample.items():
        if rel.startswith("samples/valid/"):
            combos = sum(s["count"] or 0 for s in r["sets"])
            rows.append(
                [
                    Path(rel).name,
                    r["models"],
                    len(r["sets"]),
                    f"{combos:,}",
                    ms(r["median_s"]),
                    ms(r.get("policy_s")),
                ]
            )
    inv = [r["median_s"] for rel, r in per_sample.items() if rel.startswith("samples/invalid/")]
    if inv:
        rows.append(
            [
                f"samples/invalid/*.yaml ({len(inv)} files): median / max",
                "",
                "",
                "",
                f"{ms(common.median(inv))} / {ms(max(inv))}",
                "",
            ]
        )
    for label, r in shapes.items():
        combos = r["sets"][0]["count"] if r["sets"] else 0
        rows.append(
            [
                f"product {label}",
                r["models"],
                len(r["sets"]),
                f"{combos:,}",
                ms(r["median_s"]),
                ms(r.get("policy_s")),
            ]
        )
    print(
        md_table(["config", "models", "sets", "combinations", "compile_text", "+ policy (serve start)"], rows)
    )

    print("\n### compile: first compile in a fresh interpreter (grammar built on first use)\n")
    print(
        md_table(
            ["sample", "import llamaswap.compiler.plan", "first compile_text", "second compile_text"],
            [
                [f"{n}.yaml", ms(f["import_s"], 1), ms(f["first_compile_s"], 1), ms(f["second_compile_s"], 1)]
                for n, f in fresh.items()
            ],
        )
    )

    print(f"\n### compile: `llamaswap compile` wall time, spawn to exit (median of {args.cli_runs})\n")
    crow = []
    for label in commands:
        row = [label]
        for s in setups:
            c, floor = cli[s][label], cli[s]["python -c pass"]
            row += [
                f"{ms(c['median_s'], 0)} (max {ms(c['max_s'], 0)})",
                ms(c["cpu_median_s"], 0),
                f"{c['median_s'] / floor['median_s']:.1f}x",
            ]
        crow.append(row)
    heads = ["command"]
    for s in setups:
        heads += [f"{s}: wall", "CPU", "x python -c pass"]
    print(md_table(heads, crow))
    print(
        "\nCPU = user + system time of the command (wait4), less sensitive to other load than the wall "
        "time; the last column divides the wall time by `python -c pass`'s on the same run."
    )
    worst = max(cli["bytecode cached"][f"llamaswap compile {n}.yaml"]["median_s"] for n in CLI_SAMPLES)
    worst_src = max(
        cli["no llamaswap bytecode"][f"llamaswap compile {n}.yaml"]["median_s"] for n in CLI_SAMPLES
    )
    targets = [
        [
            "`llamaswap compile` on a sample, wall (bytecode cached, slowest sample)",
            ms(worst, 0),
            f"<= {TARGET_CLI * 1000:g} ms",
            verdict(worst <= TARGET_CLI),
        ],
        [
            "same, no llamaswap bytecode (information)",
            ms(worst_src, 0),
            f"<= {TARGET_CLI * 1000:g} ms",
            verdict(worst_src <= TARGET_CLI),
        ],
    ]
    print()
    print(md_table(["target", "measured", "goal", "result"], targets, align="lrrl"))
    print(
        "\nslowest top-level imports of `llamaswap compile` (bytecode cached, -X importtime, cumulative):\n"
    )
    print(
        md_table(["module", "cumulative"], [[i["module"], ms(i["cumulative_us"] / 1e6, 1)] for i in imports])
    )

    common.write_result(
        "compile",
        {
            "settings": vars(args),
            "nice": nice,
            "load_before": load_before,
            "load_after": load_after,
            "samples": per_sample,
            "product_shapes": shapes,
            "fresh_interpreter": fresh,
            "cli": cli,
            "repo_has_llamaswap_pycache": has_pycache,
            "imports": imports,
            "targets": targets,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
