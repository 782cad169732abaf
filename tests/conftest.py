"""Shared fixtures. Keep this small and generic; helpers live in tests/support/."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from support.upstream import FakeUpstream, start_fake_upstream


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
