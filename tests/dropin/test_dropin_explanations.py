"""Explanations that are right: group decisions say what exclusive, swap and persistent do
(reference §4), and running states that cannot happen are refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaswap.cli import cli
from llamaswap.compiler.explain import explain
from llamaswap.compiler.plan import Plan, compile_text
from llamaswap.compiler.reachable import why_unreachable

FAKE = "llamaswap fake-upstream --port ${PORT}"

GROUPS = f"""\
models:
  qwen: {{cmd: "{FAKE}"}}
  mistral: {{cmd: "{FAKE}"}}
  embed: {{cmd: "{FAKE}"}}
  rerank: {{cmd: "{FAKE}"}}
  whisper: {{cmd: "{FAKE}"}}
  scratch: {{cmd: "{FAKE}"}}
  solo: {{cmd: "{FAKE}"}}
groups:
  chat: {{swap: true, exclusive: true, members: [qwen, mistral]}}
  tools: {{swap: false, exclusive: false, members: [embed, rerank]}}
  always-on: {{persistent: true, swap: false, exclusive: false, members: [whisper]}}
  alone: {{swap: true, exclusive: true, members: [solo]}}
"""

MATRIX = f"""\
models:
  a: {{cmd: "{FAKE}"}}
  b: {{cmd: "{FAKE}"}}
  c: {{cmd: "{FAKE}"}}
  loner: {{cmd: "{FAKE}"}}
matrix:
  sets:
    ab: "a & b"
    c-alone: "c"
"""


@pytest.fixture(scope="module")
def groups() -> Plan:
    plan = compile_text(GROUPS, "groups.yaml")
    assert plan.ok, plan.diagnostics
    return plan


@pytest.fixture(scope="module")
def matrix() -> Plan:
    plan = compile_text(MATRIX, "matrix.yaml")
    assert plan.ok, plan.diagnostics
    return plan


def say(plan: Plan, target: str, running: tuple[str, ...] = ()) -> str:
    return explain(plan.policy.decide(target, running), plan.engine)


def test_an_exclusive_group_is_described_as_exclusive_even_when_nothing_stops(groups: Plan) -> None:
    for target in ("qwen", "scratch"):  # a configured exclusive group, and (default)
        text = say(groups, target)
        assert "is exclusive: starting a member stops the models of other groups" in text, text
        assert "may run beside" not in text
    assert "is not exclusive: it never stops other groups" in say(groups, "embed")


def test_an_exclusive_start_stops_other_groups_but_not_persistent_ones(groups: Plan) -> None:
    d = groups.policy.decide("solo", ("embed", "qwen", "whisper"))
    assert d.evict == ("embed", "qwen")  # both other groups, as llama-swap does
    assert d.rule == (
        "embed is in group 'tools', and group 'alone' is exclusive; qwen is in group 'chat', and group "
        "'alone' is exclusive; whisper stays: group 'always-on' is persistent, no other group stops it"
    )


def test_a_non_exclusive_start_keeps_exclusive_groups_and_says_so_once(groups: Plan) -> None:
    d = groups.policy.decide("embed", ("qwen", "whisper"))
    assert d.evict == ()  # llama-swap's one-way gotcha: non-exclusive never unloads others
    assert d.rule == "qwen, whisper stay: group 'tools' is not exclusive, it never stops other groups"


def test_a_swap_group_runs_one_member_at_a_time(groups: Plan) -> None:
    d = groups.policy.decide("mistral", ("qwen",))
    assert d.evict == ("qwen",)
    assert d.rule == "qwen shares group 'chat', which runs one member at a time"


@pytest.mark.parametrize(
    ("state", "why"),
    [
        (("mistral", "qwen"), "mistral and qwen are both in group 'chat', which runs one member at a time"),
        (
            ("qwen", "solo"),
            "starting qwen stops solo (solo is in group 'alone', and group 'chat' is exclusive)",
        ),
        (("embed", "qwen", "whisper"), None),  # qwen first, then the non-exclusive ones
        (("embed", "rerank"), None),
        (("qwen",), None),
        ((), None),
    ],
)
def test_group_states_that_cannot_happen(groups: Plan, state: tuple[str, ...], why: str | None) -> None:
    got = why_unreachable(groups, state)
    assert got == why if why is None else got is not None and got.startswith(why), got


@pytest.mark.parametrize(
    ("state", "possible"),
    [(("a", "b"), True), (("a", "c"), False), (("a", "loner"), False), (("loner",), True)],
)
def test_matrix_states_that_cannot_happen(matrix: Plan, state: tuple[str, ...], possible: bool) -> None:
    got = why_unreachable(matrix, state)
    assert (got is None) == possible
    if not possible:
        assert got == f"no set lets {', '.join(state)} run together"


def test_every_reachable_state_is_possible(groups: Plan, matrix: Plan) -> None:
    from llamaswap.compiler.reachable import reachable_states

    for plan in (groups, matrix):
        for state in reachable_states(plan):
            assert why_unreachable(plan, state) is None, state


def test_plan_refuses_a_running_state_that_cannot_happen(tmp_path: Path) -> None:
    config = tmp_path / "groups.yaml"
    config.write_text(GROUPS)
    r = CliRunner().invoke(
        cli, ["plan", str(config), "--running", "qwen,mistral", "--request", "embed"], catch_exceptions=False
    )
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        "error: --running qwen,mistral: this state cannot happen: mistral and qwen are both in group "
        "'chat', which runs one member at a time",
        f"hint: llamaswap graph {config} --view coexist --focus mistral shows what may run beside mistral",
    ]
    r = CliRunner().invoke(
        cli, ["plan", str(config), "--running", "qwen,nope", "--request", "embed"], catch_exceptions=False
    )
    assert r.exit_code == 1
    assert r.stderr.startswith("error: unknown model 'nope' in --running")
    assert "Traceback" not in r.stderr


SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "valid"


def test_a_large_transitions_picture_is_refused_with_a_focus_that_works() -> None:
    def graph(*args: str):
        return CliRunner().invoke(cli, ["graph", *args], catch_exceptions=False)

    sample = str(SAMPLES / "matrix-example.yaml")  # 97 requests: a 9,700-pixel-wide picture
    r = graph(sample, "--view", "transitions", "--format", "dot")
    assert r.exit_code == 1 and r.stdout == ""
    assert "too many to draw in one picture" in r.stderr
    assert "--focus MODEL (e.g. --focus gemma-model)" in r.stderr
    r = graph(sample, "--view", "transitions", "--format", "dot", "--focus", "gemma-model")
    assert r.exit_code == 0 and r.stdout.startswith("digraph")
    large = str(SAMPLES / "generated-large.yaml")  # its states cannot even be listed
    r = graph(large, "--view", "transitions", "--format", "dot")
    assert r.exit_code == 1
    assert "--view coexist --focus MODEL (e.g. --focus audio-00)" in r.stderr
    r = graph(large, "--view", "coexist", "--format", "dot", "--focus", "audio-00")
    assert r.exit_code == 0 and r.stdout.startswith("graph")
