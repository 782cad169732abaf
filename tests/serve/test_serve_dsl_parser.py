"""serve reads the set DSL with the hand parser (compiler/parse.py), compile with Lark's:
a server's start-up imports no Lark, and a config with a DSL mistake gets the same located
error from both commands. Real `llamaswap serve` and `llamaswap compile` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from serve_support import DEADLINE, model, upstream_cmd

INVALID = Path(__file__).resolve().parents[2] / "samples" / "invalid"


def test_serve_of_a_matrix_config_answers_without_importing_lark(serve):
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {"a": model(upstream_cmd("a")), "b": model(upstream_cmd("b"))},
            "matrix": {"sets": {"both": "a & b", "either": '(a | "b")'}},
        },
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert server.get("/v1/models").status == 200
    assert server.chat("a").status == 200
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in server.log().splitlines() if "import time:" in line
    ]
    assert "llamaswap.compiler.parse" in imported  # the import-time log is on
    assert not [m for m in imported if m.split(".")[0] == "lark"]


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["XDG_DATA_HOME"] = str(cwd / "data")
    return subprocess.run(
        [sys.executable, "-m", "llamaswap", *argv],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def diagnostics(text: str) -> list[str]:
    """The error lines (code, file:line:col, message) and their hints."""
    return [line.strip() for line in text.splitlines() if "LS1" in line or "help:" in line]


@pytest.mark.parametrize("sample", sorted(p.name for p in INVALID.glob("dsl-*.yaml")))
def test_serve_and_compile_report_the_same_dsl_error(sample, tmp_path):
    path = INVALID / sample
    compiled = run("compile", str(path), cwd=tmp_path)
    served = run("serve", str(path), "--listen", "127.0.0.1:0", cwd=tmp_path)
    assert compiled.returncode != 0 and served.returncode != 0
    expected = diagnostics(compiled.stdout + compiled.stderr)
    assert expected, compiled.stdout + compiled.stderr
    assert diagnostics(served.stdout + served.stderr) == expected
