"""Fixtures for end-to-end tests of `llamaswap serve`; the helpers are in serve_support.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_support import API_KEY, Serve, ServeFactory, model, upstream_cmd


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def serve(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServeFactory]:
    """Factory: `serve(config_dict)` writes the config and starts `llamaswap serve` on it.
    Teardown: SIGTERM, exit code 0, no orphan upstream process. A failed test shows the
    servers' logs."""
    factory = ServeFactory(tmp_path)
    try:
        yield factory
    finally:
        try:
            factory.finish()
        finally:
            report = getattr(request.node, "report_call", None)
            if report is not None and report.failed:
                for server in factory.started:
                    print(f"--- llamaswap serve log ({server.url}) ---\n{server.log()}")


# -- one shared server for the API tests ------------------------------------------------------


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """A server with apiKeys, aliases, filters, an unlisted model, a model ID with a `/`, and
    one with sendLoadingState; every model may run with every other. Requests carry the key.
    Tests that unload must leave the models they need loadable (they always are)."""
    factory = ServeFactory(tmp_path_factory.mktemp("api"))
    server = factory(
        {
            "healthCheckTimeout": 30,
            "apiKeys": [API_KEY],
            "models": {
                "chat": model(
                    upstream_cmd("chat"),
                    aliases=["chat-alias"],
                    name="Chat",
                    description="the chat model",
                    useModelName="upstream-chat",
                    metadata={"family": "fake", "size": 7},
                    filters={
                        "stripParams": "secret, nested.drop, model",
                        "setParams": {"temperature": 0.5, "options.k": 3, "model": "no"},
                        "setParamsByID": {"chat-fast": {"mode": "fast"}},
                    },
                ),
                "org": model(upstream_cmd("org")),
                "org/model": model(upstream_cmd("org/model")),
                "hidden": model(upstream_cmd("hidden"), unlisted=True),
                "reasoner": model(upstream_cmd("reasoner"), sendLoadingState=True),
            },
            "matrix": {"vars": {"om": "org/model"}, "sets": {"all": "chat & org & om & hidden & reasoner"}},
        }
    )
    server.headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        yield server
    finally:
        factory.finish()
