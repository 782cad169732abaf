"""Profile pins and selectors resolved (compiler/resolution.py, the one implementation serve
and plan share), and `plan --request` explaining the resolution before the swap decision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llamaswap.cli import cli
from llamaswap.compiler.explain import explain
from llamaswap.compiler.plan import CompileOptions, compile_text
from llamaswap.compiler.resolution import resolve

CONFIG = """\
models:
  a: {cmd: "x --port ${PORT}"}
  b: {cmd: "x --port ${PORT}", aliases: [bee]}
  c: {cmd: "x --port ${PORT}"}
groups:
  pool: {swap: false, members: [a, b]}
selectors:
  spill: {strategy: spillover, targets: [a, bee]}
  fast: {strategy: warm, targets: [a, bee]}
  fixed: {strategy: pin, targets: [c, a]}
profiles:
  coding:
    description: code with c
    pins: {coder: fixed, chat: fast, off: null}
  lite:
    description: small
    pins: {chat: a}
"""

PLAN = compile_text(CONFIG, "c.yaml", CompileOptions(env={}))


def test_the_config_compiles_without_warnings():
    assert PLAN.ok and PLAN.diagnostics == (), PLAN.diagnostics


def test_profile_pins_apply_once_then_selectors_then_nothing():
    assert resolve(PLAN, "chat").steps == ()  # no profile active: not rewritten
    r = resolve(PLAN, "chat", profile="coding", state_of={"b": "ready"}.get)
    assert (r.name, [s.reason for s in r.steps], r.profile) == ("bee", ["pinned", "warm-ready"], "coding")
    assert r.header() == (
        "profile=coding; pin=chat->fast; selector=fast; strategy=warm; target=bee; reason=warm-ready"
    )
    off = resolve(PLAN, "off", profile="coding")
    assert (off.status, off.message, off.name) == (
        404,
        "model 'off' is disabled by the active profile 'coding'",
        "",
    )
    assert resolve(PLAN, "a", profile="coding").steps == ()


def test_every_spillover_reason():
    def reason(states: dict, counts: dict) -> tuple[str, str]:
        r = resolve(PLAN, "spill", state_of=lambda m: states.get(m, "stopped"), inflight=counts)
        return r.name, r.reason

    assert reason({}, {}) == ("a", "cold")
    assert reason({"a": "ready"}, {}) == ("a", "least-busy")
    assert reason({"a": "ready"}, {("spill", "a"): 1}) == ("bee", "spillover")
    assert reason({"a": "ready", "b": "ready"}, {("spill", "a"): 1, ("spill", "bee"): 1}) == ("a", "all-busy")
    assert reason({"a": "stopping"}, {}) == ("bee", "cold")
    gone = resolve(PLAN, "spill", state_of=lambda m: "stopping")
    assert (gone.status, gone.message) == (503, "selector 'spill' has no available spillover targets")


def run(*args: str):
    return CliRunner().invoke(cli, ["plan", *args], catch_exceptions=False)


@pytest.fixture
def path(tmp_path: Path) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(CONFIG)
    return str(p)


def test_plan_request_selector_explains_the_spill_then_the_swap(path):
    r = run(path, "--running", "a", "--in-flight", "a=1", "--request", "spill")
    assert r.exit_code == 0, r.output
    d = PLAN.policy.decide("b", ("a",))
    assert r.stdout.splitlines() == [
        "selector 'spill' (spillover) chose 'bee': every active target has 1 or more in flight "
        "(spillover 1), so the first cold target.",
        explain(d, PLAN.engine, "bee"),
    ]


def test_plan_request_a_pin_of_one_profile_plans_it_active(path):
    r = run(path, "--running", "a", "--request", "coder")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[:3] == [
        "note: 'coder' is a pin of profile 'coding' only; planned as if it were active "
        "(none is when llamaswap starts: PUT /api/profiles/active)",
        "profile 'coding' pins 'coder' to 'fixed'.",
        "selector 'fixed' (pin) chose 'c': a pin selector always answers with its first target.",
    ]
    assert lines[3] == explain(PLAN.policy.decide("c", ("a",)), PLAN.engine, "c")


def test_plan_request_json_carries_the_resolution(path):
    r = run(path, "--running", "b", "--request", "chat", "--profile", "coding", "--format", "json")
    out = json.loads(r.stdout)
    assert (out["request"], out["model"], out["evict"]) == ("chat", "b", [])
    assert out["resolution"]["steps"][1] == {
        "kind": "selector",
        "name": "fast",
        "strategy": "warm",
        "source": "fast",
        "target": "bee",
        "reason": "warm-ready",
        "detail": "selector 'fast' (warm) chose 'bee': it is ready.",
    }
    off = json.loads(run(path, "--request", "off", "--profile", "coding", "--format", "json").stdout)
    assert (off["status"], off["resolution"]["reason"]) == (404, "disabled")


def test_plan_request_refuses_what_it_cannot_tell(path):
    both = run(path, "--request", "chat")
    assert (
        both.exit_code == 1
        and "pin of profiles coding, lite: say which is active with --profile" in both.stderr
    )
    nope = run(path, "--request", "a", "--profile", "codin")
    assert nope.exit_code == 1 and "did you mean 'coding'?" in nope.stderr
    assert run(path, "--request", "fats").stderr.startswith(
        "error: unknown model 'fats' in --request (did you mean 'fast'?)"
    )
    assert run(path, "--profile", "coding", "--all").exit_code == 2
