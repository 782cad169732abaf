"""`llamaswap compile`: formats, exit codes (0 ok, 1 errors or --strict warnings, 2 usage or
unreadable file) and the -o plan artifact."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaswap.cli import cli

REPO = Path(__file__).resolve().parent.parent
VALID = REPO / "samples" / "valid"
INVALID = REPO / "samples" / "invalid"

OK = """\
models:
  a: {cmd: "llamaswap fake-upstream --port ${PORT} --name a"}
  b: {cmd: "llamaswap fake-upstream --port ${PORT} --name b"}
matrix:
  sets:
    s: a & b
"""
WARN = OK + "captureBuffer: 10\n"  # known to llama-swap, not implemented: a warning
BAD = OK.replace("a & b", "a & nope")


def run(*args: str, env: dict | None = None):
    return CliRunner(env=env).invoke(cli, ["compile", *args], catch_exceptions=False)


@pytest.fixture
def write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def write(name: str, text: str) -> str:
        Path(name).write_text(text, encoding="utf-8")
        return name

    return write


# -- exit codes ---------------------------------------------------------------------------------


def test_ok_exits_0_and_says_so(write):
    r = run(write("ok.yaml", OK))
    assert r.exit_code == 0
    assert r.stdout == "ok.yaml: ok — 2 models, 1 set (matrix engine); 0 errors, 0 warnings\n"


def test_errors_exit_1(write):
    assert run(write("bad.yaml", BAD)).exit_code == 1


def test_warnings_exit_0_unless_strict(write):
    path = write("warn.yaml", WARN)
    assert run(path).exit_code == 0
    r = run(path, "--strict")
    assert r.exit_code == 1
    assert "failed (--strict: warnings are errors)" in r.stdout
    assert run(write("ok.yaml", OK), "--strict").exit_code == 0


def test_info_notes_do_not_fail_strict(write):
    r = run(write("ok.yaml", OK), "--strict", "--expand-budget", "0")
    assert r.exit_code == 0 and "info[LS450]" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["missing.yaml"],
        ["."],
        ["--format", "xml", "ok.yaml"],
        [],
        ["ok.yaml", "--expand-budget", "-1"],
        ["ok.yaml", "--bogus"],
    ],
)
def test_usage_errors_exit_2(write, args):
    write("ok.yaml", OK)
    r = run(*args)
    assert r.exit_code == 2, r.output


def test_config_dir_is_merged_and_checked_as_serve_merges_it(write):
    # llama-swap's -config-dir: a config checked in CI is the one serve will read.
    Path("conf.d").mkdir()
    write("main.yaml", 'models:\n  a: {cmd: "llamaswap fake-upstream --port ${PORT}"}\n')
    write("conf.d/10-b.yaml", 'models:\n  b: {cmd: "llamaswap fake-upstream --port ${PORT}"}\n')
    write("conf.d/notes.txt", "not a config\n")
    r = run("main.yaml", "--config-dir", "conf.d")
    assert r.exit_code == 0, r.output
    assert (
        r.stdout == "conf.d (2 files merged): ok — 2 models, 1 group (group engine); 0 errors, 0 warnings\n"
    )
    assert json.loads(run("--config-dir", "conf.d", "--format", "json").stdout)["models"] == ["b"]
    # A model defined twice is an error located in the file that repeats it.
    write("conf.d/20-again.yaml", "# again\nmodels:\n  a: {cmd: x}\n")
    r = run("main.yaml", "--config-dir", "conf.d")
    assert r.exit_code == 1
    assert r.stdout.startswith("conf.d/20-again.yaml:3:3: error[LS317]: duplicate models 'a'")
    assert run("--config-dir", "missing").exit_code == 2
    assert run("conf.d/10-b.yaml", "--config-dir", "conf.d").exit_code == 2  # in both: refused


def test_non_utf8_file_exits_2(write):
    Path("latin1.yaml").write_bytes("models: {caf\xe9: {cmd: x}}\n".encode("latin-1"))
    r = run("latin1.yaml")
    assert r.exit_code == 2 and "not UTF-8" in r.output


def test_utf8_bom_is_accepted(write):
    Path("bom.yaml").write_bytes(b"\xef\xbb\xbf" + OK.encode())
    assert run("bom.yaml").exit_code == 0


# -- formats ------------------------------------------------------------------------------------


def test_text_format_reads_like_a_compiler(write):
    r = run(write("bad.yaml", BAD))
    lines = r.stdout.splitlines()
    assert (
        lines[0] == "bad.yaml:6:12: error[LS201]: set 's': 'nope' is not a var or a model [at matrix.sets.s]"
    )
    assert lines[1] == "   6 |     s: a & nope"
    assert lines[2] == "     |            ^^^^"
    assert lines[3].startswith("     = help: ")
    assert lines[-1] == "1 error, 0 warnings"


def test_json_format_shape(write):
    r = run(write("bad.yaml", BAD), "--format", "json")
    assert r.exit_code == 1
    assert r.stdout.count("\n") == 1
    obj = json.loads(r.stdout)
    assert obj == {
        "ok": False,
        "engine": "matrix",
        "models": ["a", "b"],
        "sets": [],
        "diagnostics": [
            {
                "severity": "error",
                "code": "LS201",
                "message": "set 's': 'nope' is not a var or a model (hint: use a model ID from 'models', or "
                "define a var for it under 'vars')",
                "file": "bad.yaml",
                "line": 6,
                "column": 12,
                "path": "matrix.sets.s",
            }
        ],
    }


def test_json_sets_in_solver_order_and_symbolic_null(write):
    text = OK.replace("    s: a & b\n", "    t: +s & a\n    s: a | b\n")
    obj = json.loads(run(write("c.yaml", text), "--format", "json").stdout)
    assert [s["name"] for s in obj["sets"]] == ["s", "t"]
    assert obj["sets"][0] == {"name": "s", "dsl": "a | b", "combinations": [["a"], ["b"]]}
    obj = json.loads(run("c.yaml", "--format", "json", "--expand-budget", "0").stdout)
    assert [s["combinations"] for s in obj["sets"]] == [None, None]
    assert obj["ok"] is True


def test_json_group_engine_has_no_sets(write):
    obj = json.loads(run(write("g.yaml", OK.split("matrix:")[0]), "--format", "json").stdout)
    assert obj["engine"] == "group" and obj["sets"] == [] and obj["diagnostics"] == []


def test_github_format(write):
    r = run(write("w.yaml", BAD + "captureBuffer: 10\n"), "--format", "github", "--expand-budget", "0")
    lines = r.stdout.splitlines()
    assert lines[0].startswith(
        "::error file=w.yaml,line=6,col=12,title=LS201::set 's': 'nope' is not a var or a model"
    )
    assert lines[1].startswith("::warning file=w.yaml,line=7,col=1,title=LS400::")
    assert all(
        re.match(r"^::(error|warning|notice) file=[^,]+(,line=\d+(,col=\d+)?)?,title=LS\d{3}::", ln)
        for ln in lines
    )


def test_github_format_escapes_properties_but_not_the_message(write):
    text = OK.replace("a & b", 'a & "x,y:z"')
    r = run(write("a,b:c.yaml", text), "--format", "github")
    assert r.stdout.startswith(
        "::error file=a%2Cb%3Ac.yaml,line=6,col=12,title=LS201::set 's': 'x,y:z' is not a var or a model"
    )


# -- -o -----------------------------------------------------------------------------------------


def test_output_writes_a_versioned_plan(write):
    r = run(write("ok.yaml", OK), "-o", "plan.json")
    assert r.exit_code == 0
    plan = json.loads(Path("plan.json").read_text())
    assert plan["schema"] == "llamaswap.plan/1" and plan["ok"] is True
    assert plan["file"] == "ok.yaml"
    assert [m["id"] for m in plan["models"]] == ["a", "b"]
    assert [m["port"] for m in plan["models"]] == [5800, 5801]
    assert plan["sets"] == [{"name": "s", "dsl": "a & b", "combinations": [["a", "b"]]}]
    assert sorted(os.listdir(".")) == ["ok.yaml", "plan.json"], "no temporary file left behind"


def test_output_is_deterministic(write):
    write("ok.yaml", OK)
    run("ok.yaml", "-o", "p1.json")
    run("ok.yaml", "-o", "p2.json")
    assert Path("p1.json").read_bytes() == Path("p2.json").read_bytes()


def test_output_not_written_on_errors_or_strict_failure(write):
    Path("plan.json").write_text("previous")
    assert run(write("bad.yaml", BAD), "-o", "plan.json").exit_code == 1
    assert run(write("warn.yaml", WARN), "--strict", "-o", "plan.json").exit_code == 1
    assert Path("plan.json").read_text() == "previous"


def test_output_replaces_atomically(write):
    Path("plan.json").write_text("previous")
    assert run(write("ok.yaml", OK), "-o", "plan.json").exit_code == 0
    assert json.loads(Path("plan.json").read_text())["schema"] == "llamaswap.plan/1"


def test_output_to_a_missing_directory_is_a_usage_error(write):
    r = run(write("ok.yaml", OK), "-o", "nowhere/plan.json")
    assert r.exit_code == 2 and "cannot write" in r.output


# -- the real entry point -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sample, code",
    [
        (VALID / "matrix-example.yaml", 0),
        (INVALID / "many-problems.yaml", 1),
        (REPO / "samples" / "nope.yaml", 2),
    ],
)
def test_entry_point_exit_codes(sample, code):
    r = subprocess.run(
        [sys.executable, "-m", "llamaswap", "compile", str(sample.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == code, r.stderr


# -- start-up: what `compile` loads -----------------------------------------------------------

LOADS = """
import os, runpy, sys
watched = ("networkx", "lark", "aiohttp", "asyncio", "llamaswap.runtime.scheduler",
           "llamaswap.runtime.policies", "llamaswap.compiler.resources", "llamaswap.compiler.placer",
           "llamaswap.compiler.evict", "llamaswap.compiler.lints", "importlib.metadata")
real_exit = os._exit

def report(code):  # short-lived commands end with os._exit (no interpreter teardown)
    print("LOADED", code, " ".join(m for m in watched if m in sys.modules), flush=True)
    real_exit(code)

os._exit = report
sys.argv = ["llamaswap", "compile", sys.argv[1]]
runpy.run_module("llamaswap", run_name="__main__")
"""


def loaded_by_compile(path: Path) -> tuple[int, set[str]]:
    """Exit code of `llamaswap compile PATH` in a fresh interpreter, and which of the slow or
    unneeded modules it loaded."""
    r = subprocess.run([sys.executable, "-c", LOADS, str(path)], capture_output=True, text=True, timeout=120)
    line = [x for x in r.stdout.splitlines() if x.startswith("LOADED")]
    assert line, r.stderr
    _, code, *mods = line[-1].split(" ")
    return int(code), {m for m in mods if m}


def test_compile_of_a_groups_config_loads_only_what_it_uses(tmp_path):
    # Start-up time: no matrix passes, no resources, no eviction policies, no scheduler.
    code, mods = loaded_by_compile(VALID / "routing-groups.yaml")
    assert (code, mods) == (0, set())


def test_compile_of_matrix_references_loads_lark_but_not_networkx_or_the_runtime(tmp_path):
    # compile reads the set DSL with Lark (the design's parser); serve uses the hand parser.
    code, mods = loaded_by_compile(VALID / "three-gpus.yaml")
    assert code == 0
    assert "lark" in mods and not mods & {"networkx", "aiohttp", "asyncio", "llamaswap.runtime.scheduler"}


def test_the_cli_skips_pydantic_plugin_discovery_and_pydantic_still_validates(write):
    # `compile` of a valid and of an invalid config: no importlib.metadata (pydantic's plugin
    # scan), the same verdicts; any other name pydantic may ask of its plugin loader still
    # comes from pydantic's own module.
    code, mods = loaded_by_compile(VALID / "matrix-example.yaml")
    assert code == 0 and "lark" in mods and "importlib.metadata" not in mods
    bad = write("bad.yaml", OK.replace("models:", "healthCheckTimeout: soon\nmodels:"))
    code, mods = loaded_by_compile(bad)
    assert code == 1 and "importlib.metadata" not in mods
    probe = (
        "import sys\n"
        "from llamaswap.cli import _without_pydantic_plugins\n"
        "_without_pydantic_plugins()\n"
        "from pydantic.plugin._loader import get_plugins\n"
        "print(tuple(get_plugins()), 'importlib.metadata' in sys.modules)\n"
        "from pydantic.plugin._loader import PYDANTIC_ENTRY_POINT_GROUP\n"
        "print(PYDANTIC_ENTRY_POINT_GROUP)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["() False", "pydantic"]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("fifo", None),
        ("{use: fifo, budget: 1}", "policy 'fifo' takes no options (got 'budget')"),
        ("hold", None),
        ("nope", "unknown scheduling policy 'nope'"),
    ],
)
def test_the_default_policy_is_checked_without_loading_the_runtime_and_others_still_are(
    write, policy, message
):
    # `fifo` without options is answered without importing runtime.policies; the rest are
    # checked by it, as before.
    write("c.yaml", OK + f"routing:\n  scheduler:\n    policy: {policy}\n")
    r = run("c.yaml", "--format", "json")
    found = [d["message"] for d in json.loads(r.output)["diagnostics"] if d["severity"] == "error"]
    if message is None:
        assert (r.exit_code, found) == (0, [])
    else:
        assert r.exit_code == 1 and len(found) == 1 and message in found[0]
