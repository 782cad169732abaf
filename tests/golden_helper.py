"""Golden files: compare an artifact with its checked-in copy under tests/golden/.

Goldens are rewritten only on request: run the tests with LLAMASWAP_UPDATE_GOLDENS=1 and
review the diff. Without the flag a missing or different golden fails the test.

    from golden_helper import assert_golden
    assert_golden("compile/valid/single-model.txt", output)

Importable from any test module (tests/ is on sys.path through tests/conftest.py).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
GOLDEN_DIR = TESTS_DIR / "golden"
UPDATE_ENV = "LLAMASWAP_UPDATE_GOLDENS"


def updating() -> bool:
    """True when this run rewrites goldens instead of checking them."""
    return os.environ.get(UPDATE_ENV) == "1"


def golden_path(name: str | Path) -> Path:
    """The golden file for `name` (relative to tests/golden/, or absolute)."""
    path = Path(name)
    return path if path.is_absolute() else GOLDEN_DIR / path


def assert_golden(name: str | Path, actual: str) -> None:
    """Fail unless `actual` equals the golden file `name`; with LLAMASWAP_UPDATE_GOLDENS=1,
    write it instead (only when it changed, so timestamps stay put)."""
    path = golden_path(name)
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    if updating():
        if not path.exists() or path.read_text(encoding="utf-8") != actual:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(
            f"missing golden file {shown}; create it with {UPDATE_ENV}=1 and review it", pytrace=False
        )
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{shown} (golden)",
                tofile="actual",
                n=2,
            )
        )
        pytest.fail(f"{shown} differs ({UPDATE_ENV}=1 rewrites it):\n{diff}", pytrace=False)


def stale_goldens(directory: str | Path, expected: set[Path]) -> list[Path]:
    """Golden files under `directory` that no test produces any more."""
    root = golden_path(directory)
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p not in expected)
