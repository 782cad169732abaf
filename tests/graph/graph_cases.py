"""Cases and helpers for the graph tests: the configs drawn, running the CLI in-process,
golden files, and whether Graphviz must be there.

Goldens live in tests/golden/graph/ (samples/valid/NAME.yaml -> NAME.VIEW.FORMAT) and
tests/golden/graph/configs/ (tests/graph/configs/NAME.yaml). A run that fails is stored as
NAME.VIEW.FORMAT.err: "exit N" and its stderr. Regenerate with LLAMASWAP_UPDATE_GOLDENS=1
and review the diff (tests/golden_helper.py does the comparing).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from golden_helper import GOLDEN_DIR, REPO_ROOT, TESTS_DIR

from llamaswap.cli import cli

CONFIGS = TESTS_DIR / "graph" / "configs"
SAMPLES = REPO_ROOT / "samples" / "valid"
GOLDEN = GOLDEN_DIR / "graph"

VIEWS = ("coexist", "refs", "sets", "transitions")
TEXT_FORMATS = ("dot", "mermaid", "json", "text")
REQUIRE_GRAPHVIZ = os.environ.get("LLAMASWAP_REQUIRE_GRAPHVIZ") == "1"

# Extra compile arguments per own config.
ARGS = {"symbolic": ("--expand-budget", "10")}


@dataclass(frozen=True)
class Case:
    name: str
    config: Path
    args: tuple[str, ...]
    golden_dir: Path

    def __str__(self) -> str:
        return self.name

    def golden(self, view: str, fmt: str) -> Path:
        return self.golden_dir / f"{self.config.stem}.{view}.{fmt}"


def cases() -> list[Case]:
    out = [
        Case(f"configs/{p.stem}", p, ARGS.get(p.stem, ()), GOLDEN / "configs")
        for p in sorted(CONFIGS.glob("*.yaml"))
    ]
    out += [Case(f"samples/{p.stem}", p, (), GOLDEN) for p in sorted(SAMPLES.glob("*.yaml"))]
    return out


CASES = cases()
# The devices view needs resources: drawn for the samples that declare them.
DEVICE_CASES = [c for c in CASES if c.name.startswith("samples/resources-")]
# Every (case, view) with goldens.
CASE_VIEWS = [(c, v) for c in CASES for v in VIEWS] + [(c, "devices") for c in DEVICE_CASES]


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes


def run_cli(*args: str, env: dict[str, str] | None = None) -> Run:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr, result.stdout_bytes)


def run_graph(case: Case, view: str, fmt: str, *extra: str) -> Run:
    return run_cli("graph", str(case.config), "--view", view, "--format", fmt, *case.args, *extra)


def outcome(run: Run) -> tuple[str, str]:
    """(golden suffix, text) for a run: its stdout when it succeeded, else its error."""
    if run.code == 0:
        return "", run.stdout
    return ".err", f"exit {run.code}\n{run.stderr}"


def dot_program() -> str:
    """Graphviz's dot: skip without it, unless LLAMASWAP_REQUIRE_GRAPHVIZ=1 (set by CI)."""
    exe = shutil.which("dot")
    if exe is None:
        if REQUIRE_GRAPHVIZ:
            pytest.fail(
                "Graphviz's dot is required (LLAMASWAP_REQUIRE_GRAPHVIZ=1) but not on PATH; "
                "install Debian's graphviz package"
            )
        pytest.skip("Graphviz's dot is not installed")
    return exe
