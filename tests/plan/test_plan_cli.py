"""`llamaswap plan`: the JSON shape, the text sentence, alias resolution, exit codes (0 ok,
1 unknown model / config errors / differences with --exit-code, 2 usage), `--all` and `--diff`.
Runs the click command in-process; stdout and stderr are checked separately.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaswap import cli as cli_module
from llamaswap.cli import cli
from llamaswap.compiler.plan import compile_text

MATRIX = """\
models:
  t:
    cmd: "server --port ${PORT}"
  a:
    cmd: "server --port ${PORT}"
    aliases: [alpha]
  b:
    cmd: "server --port ${PORT}"
  c:
    cmd: "server --port ${PORT}"
    aliases: [cee]
  loner:
    cmd: "server --port ${PORT}"
matrix:
  sets:
    pool: "(t | a | b | c)"
    all: "+pool & +pool & +pool"
"""

GROUPS = """\
models:
  a: {cmd: "server --port ${PORT}", aliases: [alpha]}
  b: {cmd: "server --port ${PORT}"}
  c: {cmd: "server --port ${PORT}"}
groups:
  g:
    swap: true
    exclusive: false
    members: [a, b]
"""

BROKEN = """\
models:
  a: {cmd: "server --port ${PORT}"}
matrix:
  sets:
    s: "a & nope"
"""

DECISION_KEYS = {"request", "model", "running", "evict", "set", "dsl", "target_set", "cost"}


@pytest.fixture
def write(tmp_path: Path):
    def write(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


def run(*args: str):
    return CliRunner().invoke(cli, ["plan", *args], catch_exceptions=False)


def test_json_shape_without_explain(write) -> None:
    r = run(write("m.yaml", MATRIX), "--running", "a,b,c", "--request", "t", "--format", "json")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1  # one object
    out = json.loads(lines[0])
    assert set(out) == DECISION_KEYS
    assert out == {
        "request": "t",
        "model": "t",
        "running": ["a", "b", "c"],
        "evict": ["c"],
        "set": "all",
        "dsl": "+pool & +pool & +pool",
        "target_set": ["a", "b", "t"],
        "cost": 1,
    }
    assert list(out) == sorted(out)  # deterministic key order
    assert r.stderr == ""


def test_json_shape_with_explain_ranks_candidates_best_first(write) -> None:
    r = run(write("m.yaml", MATRIX), "--running", "a,b,c", "--request", "t", "--format", "json", "--explain")
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert set(out) == DECISION_KEYS | {"candidates"}
    assert out["candidates"] == [
        {"set": "all", "combination": ["a", "b", "t"], "cost": 1},
        {"set": "pool", "combination": ["t"], "cost": 3},
    ]
    for c in out["candidates"]:
        assert set(c) == {"set", "combination", "cost"}
        assert isinstance(c["set"], str) and isinstance(c["cost"], int)
        assert all(isinstance(m, str) for m in c["combination"])


@pytest.mark.parametrize("request_, running, want_set", [("loner", "a,b", None), ("a", "a,b", "all")])
def test_json_types_when_no_candidate_applies(write, request_: str, running: str, want_set) -> None:
    r = run(
        write("m.yaml", MATRIX), "--running", running, "--request", request_, "--format", "json", "--explain"
    )
    out = json.loads(r.stdout)
    assert out["set"] == want_set and out["candidates"] == []
    assert isinstance(out["cost"], int) and isinstance(out["target_set"], list)


def test_group_engine_json_has_null_dsl_and_the_group_as_set(write) -> None:
    r = run(write("g.yaml", GROUPS), "--running", "alpha,c", "--request", "b", "--format", "json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == DECISION_KEYS
    assert out == {
        "request": "b",
        "model": "b",
        "running": ["a", "c"],
        "evict": ["a"],
        "set": "g",
        "dsl": None,
        "target_set": ["b", "c"],
        "cost": 1,
    }


def test_aliases_are_resolved_in_request_and_running(write) -> None:
    path = write("m.yaml", MATRIX)
    r = run(path, "--running", " alpha , b,cee,alpha", "--request", "cee", "--format", "json")
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert (out["request"], out["model"], out["running"], out["evict"]) == ("cee", "c", ["a", "b", "c"], [])
    text = run(path, "--running", "alpha,b,cee", "--request", "t")
    assert text.stdout == run(path, "--running", "a,b,c", "--request", "t").stdout


def test_text_explains_in_a_sentence_or_two(write) -> None:
    path = write("m.yaml", MATRIX)
    r = run(path, "--running", "a,b,c", "--request", "t")
    assert r.exit_code == 0
    (line,) = r.stdout.splitlines()
    assert line.startswith("Start t in set 'all'") and "stop c" in line and line.endswith(".")
    assert 1 <= line.count(". ") + 1 <= 2
    alias = run(path, "--running", "b", "--request", "alpha").stdout
    assert "alpha (alias of a)" in alias
    alone = run(path, "--running", "a,b", "--request", "loner").stdout
    assert "runs alone" in alone and "stop a, b" in alone
    running = run(path, "--running", "a,b", "--request", "a").stdout
    assert "already running" in running and "nothing is stopped" in running
    explained = run(path, "--running", "a,b,c", "--request", "t", "--explain").stdout.splitlines()
    assert explained[1] == "candidates (best first):"
    assert explained[2].split()[:2] == ["*", "all"] and explained[3].split()[0] == "pool"


@pytest.mark.parametrize("args", [["--request", "ghost"], ["--request", "t", "--running", "a,ghost"]])
def test_unknown_model_exits_1(write, args: list[str]) -> None:
    r = run(write("m.yaml", MATRIX), *args)
    assert r.exit_code == 1
    assert r.stdout == ""
    assert "unknown model 'ghost'" in r.stderr


def test_config_with_errors_exits_1_with_the_diagnostics(write) -> None:
    path = write("bad.yaml", BROKEN)
    for args in (["--request", "a"], ["--all"], ["--diff", path]):
        r = run(path, *args)
        assert r.exit_code == 1
        assert r.stdout == ""
        assert "LS201" in r.stderr and "nope" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],  # no mode
        ["--all", "--request", "t"],  # two modes
        ["--running", "a"],  # --running without --request
        ["--all", "--exit-code"],  # --exit-code without --diff
        ["--request", "t", "--format", "yaml"],  # bad choice
    ],
)
def test_usage_errors_exit_2(write, args: list[str]) -> None:
    r = run(write("m.yaml", MATRIX), *args)
    assert r.exit_code == 2
    assert r.stdout == ""


def test_unreadable_config_exits_2(tmp_path: Path) -> None:
    r = run(str(tmp_path / "missing.yaml"), "--request", "t")
    assert r.exit_code == 2 and "cannot read" in r.stderr


@pytest.mark.parametrize("text", [MATRIX, GROUPS])
def test_all_json_lines_cover_every_state_and_model(write, text: str) -> None:
    path = write("c.yaml", text)
    plan = compile_text(text, path)
    table = plan.policy.table
    r = run(path, "--all", "--format", "json")
    assert r.exit_code == 0
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == len(table.states) * len(plan.models)
    assert {tuple(d["running"]) for d in lines} == set(table.states)
    assert {(tuple(d["running"]), d["model"]) for d in lines} == {
        (s, m) for s in table.states for m in plan.models
    }
    for d in lines:
        assert set(d) == DECISION_KEYS
        assert d == plan.policy.decide(d["model"], tuple(d["running"])).to_json()
    text_lines = run(path, "--all").stdout.splitlines()
    assert len(text_lines) == len(lines)
    assert text_lines[0].startswith("[] + ")


def test_all_progress_bar_goes_to_stderr_only(write, monkeypatch) -> None:
    monkeypatch.setattr(cli_module, "PLAN_PROGRESS_MIN", 0)
    r = run(write("m.yaml", MATRIX), "--all", "--format", "json")
    assert r.exit_code == 0
    assert "deciding" in r.stderr
    for line in r.stdout.splitlines():
        json.loads(line)
    monkeypatch.setattr(cli_module, "PLAN_PROGRESS_MIN", 10**9)
    assert run(write("m.yaml", MATRIX), "--all", "--format", "json").stderr == ""


def test_all_on_symbolic_sets_is_an_error(write) -> None:
    r = run(write("m.yaml", MATRIX), "--all", "--expand-budget", "0")
    assert r.exit_code == 1 and "symbolic" in r.stderr


def test_diff_identical_configs(write) -> None:
    old = write("old.yaml", MATRIX)
    new = write("new.yaml", MATRIX.replace("server --port", "other-server --port"))
    for extra in ([], ["--exit-code"]):
        r = run(old, "--diff", new, *extra)
        assert r.exit_code == 0
        assert r.stdout == ""
        assert "no decision differs" in r.stderr


def test_diff_lists_every_differing_decision_side_by_side(write) -> None:
    changed = MATRIX.replace('all: "+pool & +pool & +pool"', 'all: "+pool & +pool"')
    old, new = write("old.yaml", MATRIX), write("new.yaml", changed)
    old_plan, new_plan = compile_text(MATRIX, old), compile_text(changed, new)
    states = set(old_plan.policy.table.states) | set(new_plan.policy.table.states)
    want = []
    for state in sorted(states, key=lambda s: (len(s), s)):
        for target in old_plan.models:
            a, b = old_plan.policy.decide(target, state), new_plan.policy.decide(target, state)
            if (a.evict, a.set, a.target_set) != (b.evict, b.set, b.target_set):
                want.append((list(state), target, a, b))
    assert want

    r = run(old, "--diff", new, "--format", "json")
    assert r.exit_code == 0  # differences alone do not fail without --exit-code
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(row["running"], row["request"]) for row in rows] == [(s, t) for s, t, _, _ in want]
    for row, (_, _, a, b) in zip(rows, want):
        assert set(row) == {"running", "request", "old", "new"}
        assert row["old"]["evict"] == list(a.evict) and row["new"]["target_set"] == list(b.target_set)
        assert set(row["old"]) == {"evict", "set", "dsl", "target_set", "cost"}

    text = run(old, "--diff", new, "--exit-code")
    assert text.exit_code == 1
    lines = text.stdout.splitlines()
    assert len(lines) == 3 * len(want)
    assert lines[0] == f"[{', '.join(want[0][0])}] + {want[0][1]}"
    assert lines[1].startswith("  - old: ") and lines[2].startswith("  + new: ")
    assert f"{len(want)} decision(s) differ" in text.stderr


def test_diff_with_a_model_only_in_one_config(write) -> None:
    extra = MATRIX.replace("  loner:\n", '  newbie:\n    cmd: "server --port ${PORT}"\n  loner:\n')
    r = run(write("old.yaml", MATRIX), "--diff", write("new.yaml", extra), "--format", "json", "--exit-code")
    assert r.exit_code == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert any(row["request"] == "newbie" and row["old"] is None and row["new"] is not None for row in rows)


def test_all_without_a_table_enumerates_states_and_asks_the_solver(write, monkeypatch) -> None:
    path = write("m.yaml", MATRIX)
    with_table = run(path, "--all", "--format", "json").stdout
    import llamaswap.compiler.precompute as precompute

    monkeypatch.setattr(precompute, "build_table", lambda *args: None)
    assert compile_text(MATRIX, path).policy.table is None
    assert run(path, "--all", "--format", "json").stdout == with_table
    monkeypatch.setattr(cli_module, "PLAN_ALL_MAX", 10)
    r = run(path, "--all")
    assert r.exit_code == 1 and "too many to list" in r.stderr and r.stdout == ""


def test_all_lists_a_repeated_product_by_its_distinct_combinations(write) -> None:
    """`+base & ... & +base` (six times) over four models is 1,000,000 combinations before
    de-duplication but at most 15 distinct ones: it expands, and `plan --all` lists it."""
    base = "a | b | c | t | a & b | a & c | a & t | b & c | b & t | c & t"
    text = (
        "models:\n"
        + "".join(f"  {m}: {{cmd: 'server --port ${{PORT}}'}}\n" for m in "abct")
        + f"matrix:\n  sets:\n    base: '{base}'\n    all: '{' & '.join(['+base'] * 6)}'\n"
    )
    path = write("six.yaml", text)
    plan = compile_text(text, path)
    assert not any(s.symbolic for s in plan.sets) and plan.policy.table is not None
    r = run(path, "--all", "--format", "json")
    assert r.exit_code == 0, r.stderr
    states = {tuple(json.loads(line)["running"]) for line in r.stdout.splitlines()}
    assert len(states) == 16  # every subset of four models, the empty one included


def test_explain_shows_each_device_before_and_after(write) -> None:
    path = str(Path(__file__).resolve().parents[2] / "samples" / "valid" / "resources-two-gpus.yaml")
    r = run(path, "--running", "qwen-32b,embed", "--request", "llama-70b", "--explain")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    at = lines.index("devices (before -> after):")
    assert lines[at + 1] == "  gpu0  vram 20 GiB/24 GiB [qwen-32b] -> vram 20 GiB/24 GiB [llama-70b]"
    assert lines[at + 2] == ("  gpu1  vram 1.5 GiB/24 GiB [embed] -> vram 21.5 GiB/24 GiB [llama-70b, embed]")
    r = run(path, "--running", "qwen-32b,embed", "--request", "llama-70b", "--explain", "--format", "json")
    out = json.loads(r.stdout)
    assert [d["models"] for d in out["devices"]["before"]] == [["qwen-32b"], ["embed"]]
    assert [d["models"] for d in out["devices"]["after"]] == [["llama-70b"], ["llama-70b", "embed"]]
    assert out["devices"]["after"][1]["use"]["vram"] == {"used": 43 * 2**29, "budget": 24 * 2**30}
    # Without --explain (or without resources) there is no devices key.
    r = run(path, "--running", "qwen-32b,embed", "--request", "llama-70b", "--format", "json")
    assert "devices" not in json.loads(r.stdout)
