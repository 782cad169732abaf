"""Every sample config against its golden `llamaswap compile` output (text and json).

The CLI runs in-process with the repo root as working directory and sample paths relative
to it, so no absolute path reaches a golden. Environment variables a sample reads are set
(or unset) explicitly here. Regenerate with LLAMASWAP_UPDATE_GOLDENS=1 and review the diff.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from golden_helper import REPO_ROOT, assert_golden, golden_path, stale_goldens, updating

from llamaswap.cli import cli
from llamaswap.compiler.diagnostics import CODES

SAMPLES = REPO_ROOT / "samples"
VALID = sorted((SAMPLES / "valid").glob("*.yaml"))
INVALID = sorted((SAMPLES / "invalid").glob("*.yaml"))
# Variables samples read, pinned for every run (None = unset).
SAMPLE_ENV: dict[str, str | None] = {"LLAMASWAP_SAMPLE_UNSET_VAR": None}


def run_compile(sample: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.chdir(REPO_ROOT)
    rel = sample.relative_to(REPO_ROOT).as_posix()
    result = CliRunner(env=SAMPLE_ENV).invoke(cli, ["compile", rel, *args], catch_exceptions=False)
    return result.exit_code, result.stdout


def golden_name(sample: Path, suffix: str) -> str:
    return f"compile/{sample.parent.name}/{sample.stem}{suffix}"


def test_there_are_enough_samples():
    assert len(VALID) >= 8
    assert len(INVALID) >= 15


@pytest.mark.parametrize("sample", VALID + INVALID, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_text_golden(sample: Path, monkeypatch: pytest.MonkeyPatch):
    code, out = run_compile(sample, monkeypatch=monkeypatch)
    assert code == (0 if sample in VALID else 1), out
    assert_golden(golden_name(sample, ".txt"), out)


@pytest.mark.parametrize("sample", VALID + INVALID, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_json_golden(sample: Path, monkeypatch: pytest.MonkeyPatch):
    code, out = run_compile(sample, "--format", "json", monkeypatch=monkeypatch)
    assert code == (0 if sample in VALID else 1)
    assert out.endswith("\n") and out.count("\n") == 1, "json output is exactly one line"
    obj = json.loads(out)
    # `resources` (devices, needs, placements) only where the config declares resources.
    assert set(obj) - {"resources"} == {"ok", "engine", "models", "sets", "diagnostics"}
    assert ("resources" in obj) == sample.stem.startswith("resources-")
    assert obj["ok"] is (sample in VALID)
    assert all(d["code"] in CODES for d in obj["diagnostics"])
    assert all(not Path(d["file"]).is_absolute() for d in obj["diagnostics"])
    assert_golden(
        golden_name(sample, ".json"), json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )


@pytest.mark.parametrize("sample", VALID, ids=lambda p: p.stem)
def test_valid_samples_have_no_errors(sample: Path, monkeypatch: pytest.MonkeyPatch):
    code, out = run_compile(sample, "--format", "json", monkeypatch=monkeypatch)
    assert [d for d in json.loads(out)["diagnostics"] if d["severity"] == "error"] == []


@pytest.mark.parametrize("sample", INVALID, ids=lambda p: p.stem)
def test_invalid_samples_fail_with_located_errors(sample: Path, monkeypatch: pytest.MonkeyPatch):
    _, out = run_compile(sample, "--format", "json", monkeypatch=monkeypatch)
    errs = [d for d in json.loads(out)["diagnostics"] if d["severity"] == "error"]
    assert errs
    assert all(d["line"] is not None and d["column"] is not None for d in errs)


def test_invalid_samples_cover_many_problem_classes(monkeypatch: pytest.MonkeyPatch):
    seen: set[str] = set()
    for sample in INVALID:
        _, out = run_compile(sample, "--format", "json", monkeypatch=monkeypatch)
        seen |= {d["code"] for d in json.loads(out)["diagnostics"] if d["severity"] == "error"}
    assert len(seen) >= 15, sorted(seen)


def test_many_problems_reports_every_problem_in_one_run(monkeypatch: pytest.MonkeyPatch):
    _, out = run_compile(
        SAMPLES / "invalid" / "many-problems.yaml", "--format", "json", monkeypatch=monkeypatch
    )
    found = {d["code"] for d in json.loads(out)["diagnostics"]}
    assert {
        "LS302",
        "LS408",
        "LS307",
        "LS309",
        "LS308",
        "LS205",
        "LS206",
        "LS207",
        "LS208",
        "LS201",
        "LS202",
        "LS104",
        "LS204",
        "LS203",
    } <= found


def test_github_golden(monkeypatch: pytest.MonkeyPatch):
    sample = SAMPLES / "invalid" / "many-problems.yaml"
    code, out = run_compile(sample, "--format", "github", monkeypatch=monkeypatch)
    assert code == 1
    assert all(
        line.startswith(
            (
                "::error file=samples/invalid/many-problems.yaml,line=",
                "::warning file=samples/invalid/many-problems.yaml,line=",
            )
        )
        for line in out.splitlines()
    )
    assert_golden(golden_name(sample, ".github"), out)


def test_no_stale_goldens():
    if updating():
        pytest.skip("goldens are being rewritten")
    expected = {golden_path(golden_name(s, suffix)) for s in VALID + INVALID for suffix in (".txt", ".json")}
    expected.add(golden_path(golden_name(SAMPLES / "invalid" / "many-problems.yaml", ".github")))
    assert stale_goldens("compile", expected) == []


def test_generated_sample_is_up_to_date():
    result = subprocess.run(
        [sys.executable, str(SAMPLES / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
