"""Shared fixtures. Keep this small and generic; helpers live in tests/support/."""

from __future__ import annotations

import compileall
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings
from support.fuzz import OVERRIDE
from support.upstream import FakeUpstream, start_fake_upstream

# The suite's one Hypothesis profile (example counts are per property, see support/fuzz.py).
# Derandomized so every run tries the same examples, unless a fuzzing session asks for more.
settings.register_profile(
    "llamaswap",
    derandomize=not OVERRIDE,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile("llamaswap")

# Parallel runs (pytest-xdist, `-n auto` in pyproject's addopts): one worker per usable CPU,
# at most MAX_WORKERS. Most tests wait on subprocesses and sockets, but those subprocesses
# need CPU too: more workers than CPUs only makes timing-sensitive tests slower.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def pytest_configure(config: pytest.Config) -> None:
    """The suite starts a few hundred `python -m llamaswap` interpreters. When bytecode is
    not written (PYTHONDONTWRITEBYTECODE, `-B`), each of them would compile the package from
    source (about 0.2 s of CPU per `serve`), so the session compiles it once, up front, into
    its (git-ignored) __pycache__ directories; the interpreters then only read them. Once per
    run: in the controller of a parallel run, never in its workers."""
    if not sys.dont_write_bytecode or hasattr(config, "workerinput"):
        return
    spec = importlib.util.find_spec("llamaswap")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        compileall.compile_dir(location, quiet=1)


@pytest.fixture
def spawn_fake_upstream() -> Iterator[Callable[..., FakeUpstream]]:
    """Factory: `spawn_fake_upstream(name=..., startup_delay=..., ...)` starts a fake upstream
    subprocess on a free port; every one started is stopped at teardown."""
    started: list[FakeUpstream] = []

    def spawn(**options) -> FakeUpstream:
        upstream = start_fake_upstream(**options)
        started.append(upstream)
        return upstream

    yield spawn
    for upstream in started:
        upstream.stop()


@pytest.fixture(autouse=True, scope="session")
def _private_data_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers started by tests (in process or as subprocesses, which inherit this) keep
    their activity store under a temporary XDG_DATA_HOME, never in the user's data dir, and
    their state and lock files (runtime/reaper.py) under a temporary XDG_RUNTIME_DIR: one
    per test session, so parallel workers serving the same config file (the drop-in corpus)
    never see each other's lock or stop each other's upstreams as "leftovers", and a
    llamaswap the developer runs is never touched."""
    saved = {name: os.environ.get(name) for name in ("XDG_DATA_HOME", "XDG_RUNTIME_DIR")}
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    runtime = tmp_path_factory.mktemp("xdg-runtime")
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    yield
    for name, old in saved.items():
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
