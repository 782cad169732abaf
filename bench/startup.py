"""Start-up benchmark: `serve` spawn -> first 200 on /v1/models, and `llamaswap compile` wall time.

Usage: .venv/bin/python bench/startup.py [--runs 7] [--config samples/valid/matrix-example.yaml]
                                          [--install wheel|editable] [--against REV]

1. `llamaswap serve CONFIG --listen 127.0.0.1:PORT --log-level warn` (a free port chosen
   beforehand), spawned `--runs` times one after another; for each: spawn -> the first
   `200` answer to `GET /v1/models`, polled over a raw socket every millisecond (a refused
   connection costs ~20 µs, so polling does not slow the server down). Then SIGTERM, reaped.
2. `llamaswap compile samples/valid/<x>.yaml` for every valid sample: wall clock spawn -> exit
   and CPU (user + system, from wait4), median of `--runs`.

What is measured is what a user with an installed package gets (`--install wheel`, the
default): a wheel built from the working tree (`pip wheel`, in a copy of the tracked files)
and installed with `pip install --compile` into a scratch venv, so its bytecode sits beside
its sources as pip writes it, and no editable-install finder runs at interpreter start-up
(the dev venv's costs ~5-15 ms). The dependencies come from the dev venv (a .pth line).
`--install editable` measures the dev venv's `.venv/bin/llamaswap` instead, with a
PYTHONPYCACHEPREFIX (the source tree has no .pyc under PYTHONDONTWRITEBYTECODE): quicker
to run while iterating. Either way every module's bytecode is written before anything is
measured (`compileall` over the tree and the dependencies; pip's `--compile` for the
wheels), so no measured run compiles a module from source, and one unmeasured round comes
first (page caches). `--against REV` builds a second wheel from git revision REV and alternates
the two, round by round, so a before/after comparison shares the machine's load. Targets (issue 18): serve <= 0.4 s, compile <= 0.35 s on every
sample. Wall clock depends on the machine's load (printed with the tables); CPU time less so.
Writes bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import md_table, ms, verdict

TARGET_SERVE = 0.400
TARGET_COMPILE = 0.350
REQUEST = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def first_answer(port: int, deadline: float) -> bool:
    """Poll until /v1/models answers 200 (True) or the deadline passes (False)."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
                s.sendall(REQUEST)
                head = s.recv(64)
                if head.startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.001)
    return False


def working_tree(dest: Path) -> Path:
    """A copy of the working tree's tracked files (uncommitted edits included)."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=common.REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (common.REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(common.REPO / name, dest / name)
    return dest


def revision(rev: str, dest: Path) -> Path:
    """The tracked files of a git revision (`--against`)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=common.REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def installed_wheel(src: Path, scratch: Path, env: dict[str, str]) -> str:
    """Build a wheel of `src` and install it (with its bytecode) into a scratch venv under
    `scratch`; the dependencies are the dev venv's. Returns its `llamaswap`."""
    scratch.mkdir(parents=True, exist_ok=True)
    pip = [common.python_exe(), "-m", "pip"]

    def quiet(argv: list[str]) -> None:
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)

    quiet([*pip, "wheel", "-q", "--no-deps", "-w", str(scratch / "dist"), str(src)])
    (wheel,) = (scratch / "dist").glob("llamaswap-*.whl")
    venv = scratch / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    quiet([base, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    quiet(
        [*pip, "--python", str(python), "install", "-q", "--compile", "--no-deps", "--no-index", str(wheel)]
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "llamaswap-bench-deps.pth").write_text(deps_dir() + "\n")
    return str(venv / "bin" / "llamaswap")


def prime_bytecode(env: dict[str, str], *trees: str) -> None:
    """Write the bytecode of every module under `trees` before anything is measured
    (`compileall`, with `env`'s PYTHONPYCACHEPREFIX if it has one): a module first imported
    in a measured run would otherwise be compiled from source, and the .pyc written, there.
    What is already compiled and current is left alone."""
    subprocess.run(
        [common.python_exe(), "-m", "compileall", "-q", "-j", "0", *trees],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,  # a dependency's unimportable test file must not stop the bench
    )


def deps_dir() -> str:
    """The dev venv's site-packages (the dependencies every measured install uses)."""
    return subprocess.run(
        [
            common.python_exe(),
            "-c",
            "import pydantic, os; print(os.path.dirname(os.path.dirname(pydantic.__file__)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def serve_once(exe: str, config: Path, env: dict[str, str]) -> dict[str, float]:
    port = common.free_port()
    argv = [
        exe,
        "serve",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
        "--log-level",
        "warn",
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=common.REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        ok = first_answer(port, t0 + 30.0)
        answered = time.monotonic() - t0
        cpu = process_cpu(proc.pid)
        if not ok:
            raise SystemExit(f"bench: serve did not answer /v1/models within 30 s ({' '.join(argv)})")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return {"answered_s": answered, "cpu_s": cpu}


def process_cpu(pid: int) -> float:
    """CPU time (user + system) the process has used so far, from /proc (clock ticks; the
    watchdog, a child, is not counted); NaN where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compile_once(exe: str, sample: Path, env: dict[str, str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [exe, "compile", str(sample)],
        env=env,
        cwd=common.REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"bench: llamaswap compile {sample} exited {code}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(exe: str, args: argparse.Namespace, env: dict[str, str]) -> Iterator[tuple[str, float, float]]:
    """One round: (what, wall, cpu) for serve and for every sample's compile."""
    served = serve_once(exe, common.REPO / args.config, env)
    yield "serve", served["answered_s"], served["cpu_s"]
    if not args.skip_compile:
        for sample in sorted((common.REPO / "samples" / "valid").glob("*.yaml")):
            wall, cpu = compile_once(exe, sample, env)
            yield sample.name, wall, cpu


def summary(rounds: list[list[tuple[str, float, float]]]) -> dict[str, Any]:
    by: dict[str, tuple[list[float], list[float]]] = {}
    for one in rounds:
        for what, wall, cpu in one:
            walls, cpus = by.setdefault(what, ([], []))
            walls.append(wall)
            cpus.append(cpu)
    serve_runs, serve_cpus = by.pop("serve")
    return {
        "serve": {
            "answered_s": serve_runs,
            "cpu_s": serve_cpus,
            "median_s": common.median(serve_runs),
            "cpu_median_s": common.median(serve_cpus),
        },
        "compile": {
            name: {
                "wall_s": walls,
                "cpu_s": cpus,
                "median_s": common.median(walls),
                "cpu_median_s": common.median(cpus),
            }
            for name, (walls, cpus) in by.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="spawns per measurement (median)")
    ap.add_argument("--config", default="samples/valid/matrix-example.yaml", help="config for serve")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument(
        "--install",
        choices=["wheel", "editable"],
        default="wheel",
        help="measure a wheel installed in a scratch venv (what a user gets; default) or the dev venv",
    )
    ap.add_argument(
        "--against",
        metavar="REV",
        default=None,
        help="also measure a wheel of git revision REV, the two alternating round by round "
        "(before/after under the same load)",
    )
    args = ap.parse_args()
    if args.against and args.install != "wheel":
        raise SystemExit("bench: --against compares wheels (--install wheel)")
    load_before = os.getloadavg()[0]
    base_env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    results: dict[str, Any] = {"runs": args.runs, "config": args.config, "install": args.install}
    with tempfile.TemporaryDirectory(prefix="llamaswap-bench-startup-") as tmp:
        scratch = Path(tmp)
        if args.install == "wheel":
            env = base_env
            exes = {"this tree": installed_wheel(working_tree(scratch / "src"), scratch / "this", env)}
            if args.against:
                exes[args.against] = installed_wheel(
                    revision(args.against, scratch / "against-src"), scratch / "against", env
                )
            prime_bytecode(env, deps_dir())
        else:
            env = dict(base_env, PYTHONPYCACHEPREFIX=str(scratch))
            exes = {"this tree": common.llamaswap_exe()}
            prime_bytecode(env, deps_dir(), str(common.REPO / "llamaswap"))
        rounds: dict[str, list[list[tuple[str, float, float]]]] = {label: [] for label in exes}
        for i in range(args.runs + 1):  # round 0 primes the bytecode and page caches
            for label, exe in exes.items():
                one = list(measure(exe, args, env))
                if i:
                    rounds[label].append(one)
        results.update(summary(rounds["this tree"]))
        if args.against:
            results["against"] = {"rev": args.against, **summary(rounds[args.against])}
    load_after = os.getloadavg()[0]
    results["load"] = [load_before, load_after]

    print(
        f"\n### start-up (median of {args.runs}; {args.install} install, bytecode cached; "
        f"load {load_before:.2f} -> {load_after:.2f})\n"
    )
    before = results.get("against")

    def cells(m: dict[str, Any], walls: str) -> list[str]:
        return [ms(m["median_s"], 0), ms(min(m[walls]), 0), ms(m["cpu_median_s"], 0)]

    def row(
        what: str, now: dict[str, Any], then: dict[str, Any] | None, walls: str, goal: float
    ) -> list[str]:
        return [
            what,
            *(cells(then, walls) if then is not None else []),
            *cells(now, walls),
            f"<= {goal * 1000:.0f} ms",
            verdict(now["median_s"] <= goal),
        ]

    name = Path(args.config).name
    rows = [
        row(
            f"`serve {name}`: spawn -> first 200 on /v1/models",
            results["serve"],
            before["serve"] if before else None,
            "answered_s",
            TARGET_SERVE,
        )
    ]
    for sample, c in results["compile"].items():
        rows.append(
            row(
                f"`compile {sample}`",
                c,
                before["compile"][sample] if before else None,
                "wall_s",
                TARGET_COMPILE,
            )
        )
    head = ["wall p50", "wall min", "CPU p50"]
    if before:
        head = [f"{args.against}: {h}" for h in head] + [f"this tree: {h}" for h in head]
    print(md_table(["command", *head, "goal", "result"], rows, "l" + "r" * (len(head) + 1) + "l"))
    if before:
        print(
            f"\n({args.against} and this tree alternate round by round; CPU of serve: the process until its first answer.)"
        )
    common.write_result("startup", results)


if __name__ == "__main__":
    main()
