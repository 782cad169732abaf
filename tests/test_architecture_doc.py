"""docs/architecture.md stays true: every module of the package is on the map, and every
module on the map exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llamaswap"
DOC = ROOT / "docs" / "architecture.md"


def _modules_in_tree() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name in {"__init__.py", "__main__.py"} and rel != "grammar/__init__.py":
            continue
        found.add(rel)
    return found


def _modules_on_map() -> set[str]:
    """The module paths in the first cell of the layout table's rows."""
    named = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            named.update(re.findall(r"`([a-z_]+(?:/[a-z_]+)*\.py)`", first_cell))
    return named


def test_every_module_is_on_the_map() -> None:
    missing = sorted(_modules_in_tree() - _modules_on_map())
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_every_module_on_the_map_exists() -> None:
    stale = sorted(_modules_on_map() - _modules_in_tree())
    assert not stale, f"docs/architecture.md names modules that do not exist: {stale}"
