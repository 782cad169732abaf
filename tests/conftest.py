"""Shared fixtures. Keep this small and generic; helpers live in tests/support/."""

from __future__ import annotations

import os
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
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers started by tests (in process or as subprocesses, which inherit this) keep
    their activity store under a temporary XDG_DATA_HOME, never in the user's data dir."""
    old = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if old is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = old
