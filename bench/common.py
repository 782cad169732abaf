"""Shared helpers of the benchmarks: tools, free ports, processes, timing stats, tables, JSON.

Benchmarks are scripts, not tests: each prints a markdown table (with the issue's target and
PASS/MISS) and writes `bench/results/<name>.json`. They measure ratios and overheads within one
run on one machine, so every result records the machine it ran on and how busy it was.

Processes started here run in their own session and are stopped by their PID (SIGTERM, then
SIGKILL to their own group after a timeout): nothing is ever killed by name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
VENV_BIN = REPO / ".venv" / "bin"
SYSTEM_PATH = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"


def python_exe() -> str:
    venv = VENV_BIN / "python"
    return str(venv) if venv.exists() else sys.executable


def llamaswap_exe() -> str:
    venv = VENV_BIN / "llamaswap"
    if venv.exists():
        return str(venv)
    found = shutil.which("llamaswap")
    if not found:
        raise SystemExit(
            "bench: cannot find the llamaswap command (.venv/bin/llamaswap or on PATH); "
            "install the project first: python -m venv .venv && .venv/bin/pip install -e ."
        )
    return found


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- tools from Debian ------------------------------------------------------------------------


def which(name: str) -> str | None:
    return shutil.which(name, path=SYSTEM_PATH)


def ensure_debian_tools(tools: dict[str, str]) -> dict[str, str]:
    """Return {binary: path}, installing the Debian packages of missing binaries with apt-get.

    `tools` maps a binary name to its package (e.g. {"nginx": "nginx-light", "wrk": "wrk"}).
    """
    missing = {b: p for b, p in tools.items() if which(b) is None}
    if missing:
        packages = sorted(set(missing.values()))
        prefix: list[str] = []
        if os.geteuid() != 0:
            if shutil.which("sudo") is None:
                raise SystemExit(
                    f"bench: {', '.join(missing)} missing and not root (no sudo); install "
                    f"them first: apt-get install -y {' '.join(packages)}"
                )
            prefix = ["sudo", "-n"]
        apt = shutil.which("apt-get")
        if apt is None:
            raise SystemExit(
                f"bench: {', '.join(missing)} missing and apt-get is not available; install "
                f"the equivalent of Debian's {' '.join(packages)} by hand"
            )
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log(
            f"{', '.join(sorted(missing))} not found: running apt-get update && "
            f"apt-get install -y {' '.join(packages)}"
        )
        for cmd in (
            [*prefix, apt, "update", "-qq"],
            [*prefix, apt, "install", "-y", "-q", "--no-install-recommends", *packages],
        ):
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0:
                raise SystemExit(
                    f"bench: `{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-2000:]}\ninstall {' '.join(packages)} by hand and re-run"
                )
        still = [b for b in missing if which(b) is None]
        if still:
            raise SystemExit(
                f"bench: installed {' '.join(packages)} but {', '.join(still)} is still not "
                "on PATH (looked in PATH, /usr/sbin, /sbin)"
            )
    return {b: which(b) or "" for b in tools}


# -- ports and HTTP ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(
    method: str, url: str, body: Any = None, timeout: float = 30.0, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers or {}), exc.read()


def wait_http(url: str, timeout: float = 30.0, interval: float = 0.005, ok=(200,)) -> float:
    """Poll `url` until it answers one of `ok`; return the time.monotonic() of that answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, _ = http("GET", url, timeout=max(0.1, deadline - time.monotonic()))
            if status in ok:
                return time.monotonic()
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout:g}s")
        time.sleep(interval)


# -- processes --------------------------------------------------------------------------------


class Proc:
    """A child in its own session; stop() signals this PID, then its own group if needed."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        stdout=subprocess.DEVNULL,
        stderr_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self._stderr = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.spawned = time.monotonic()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=self._stderr,
            env=env,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) did not exit in {timeout:g}s; SIGKILL to its group")
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)
        if self._stderr is not subprocess.DEVNULL:
            self._stderr.close()
        return self.popen.returncode

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Serve(Proc):
    """`llamaswap serve CONFIG --listen 127.0.0.1:0`; `url` is read from its stdout."""

    URL = re.compile(r"\bon (http://\S+)")

    def __init__(
        self,
        config: Path,
        *,
        log_level: str = "warn",
        stderr_path: Path | None = None,
        ready_timeout: float = 60.0,
        launcher: Sequence[str] | None = None,
    ) -> None:
        # `launcher` replaces `llamaswap serve` (bench/whatif.py); the arguments stay the same.
        argv = list(launcher) if launcher else [llamaswap_exe(), "serve"]
        super().__init__(
            [*argv, str(config), "--listen", "127.0.0.1:0", "--log-level", log_level],
            name="llamaswap serve",
            stdout=subprocess.PIPE,
            stderr_path=stderr_path,
        )
        self.url = self._read_url(ready_timeout)
        self.ready = time.monotonic()

    def _read_url(self, timeout: float) -> str:
        found: list[str] = []
        got = threading.Event()
        out = self.popen.stdout
        assert out is not None

        def drain() -> None:  # keep reading so the child never blocks on a full pipe
            for raw in out:
                line = raw.decode("utf-8", "replace")
                if not found:
                    m = self.URL.search(line)
                    if m:
                        found.append(m.group(1))
                        got.set()
            got.set()

        threading.Thread(target=drain, daemon=True).start()
        got.wait(timeout)
        if not found:
            self.stop()
            raise SystemExit(
                f"bench: llamaswap serve did not print its URL within {timeout:g}s "
                f"(exit code {self.popen.returncode}); see its stderr log"
            )
        return found[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (children excluded)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                out.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


def add_nice_option(ap: argparse.ArgumentParser) -> None:
    """--nice: the value `raise_priority` gives the benchmark and everything it starts."""
    ap.add_argument(
        "--nice",
        type=int,
        default=-10 if os.geteuid() == 0 else 0,
        help="nice value for the benchmark and everything it starts (default -10 as root, else 0)",
    )


def raise_priority(nice: int) -> int:
    """Set this process's nice value (children inherit it); returns the value in force."""
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as exc:
            log(f"cannot set nice {nice} ({exc}); running at the default priority")
    return os.getpriority(os.PRIO_PROCESS, 0)


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of one process in MiB, from /proc/<pid>/status (children excluded)."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = round(int(value.split()[0]) / 1024, 2)
    return out


# -- statistics and formatting ----------------------------------------------------------------


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def percentile(xs: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    data = sorted(xs)
    if not data:
        return float("nan")
    k = max(0, min(len(data) - 1, int(round(q / 100 * len(data) + 0.5)) - 1))
    return data[k]


def repeat_timing(fn, *, min_runs: int = 3, max_runs: int = 50, budget: float = 0.5) -> list[float]:
    """Time `fn()` (seconds) until `budget` seconds were spent or `max_runs` runs; at least `min_runs`."""
    times: list[float] = []
    spent = 0.0
    while len(times) < min_runs or (spent < budget and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return times


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; `align` is one letter per column (l/r), default l then r."""
    rows = [[str(c) for c in r] for r in rows]
    align = align or ("l" + "r" * (len(headers) - 1))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align))
            + " |"
        )

    sep = (
        "| "
        + " | ".join(("-" * (w - 1) + ":") if a == "r" else "-" * w for w, a in zip(widths, align))
        + " |"
    )
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def ms(seconds: float | None, digits: int = 2) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.{digits}f} ms"


# -- results ----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "llamaswap"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return (
            out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    """Where and under what load the benchmark ran (load average: 1, 5, 15 minutes)."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "llamaswap_commit": _git_commit(),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **data,
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log(f"wrote {path.relative_to(REPO)}")
    return path
