"""`plan --explain` for a model that is already running lists the sets that hold it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "valid" / "matrix-example.yaml"


def plan(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "llamaswap", "plan", str(SAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_explain_for_a_running_model_lists_the_sets_that_hold_it():
    text = plan("--running", "gemma-model,voxtral-model", "--request", "gemma-model", "--explain")
    assert "no set can hold it" not in text
    lines = text.splitlines()
    assert "sets that hold it" in lines[1]
    held = {line[3:].split()[0]: line.startswith(" *") for line in lines[2:]}
    assert held["standard"] is True  # holds gemma and voxtral together
    assert held["creative"] is False  # holds gemma, not with voxtral
