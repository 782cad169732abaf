"""The pure side of hot reload: what a reload changes (runtime/reconfigure.py) and the port
pinning that keeps unchanged models' ports (compile option keep_ports)."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from llamaswap.compiler.plan import CompileOptions, Plan, compile_text
from llamaswap.runtime.processes import ProcessSpec
from llamaswap.runtime.reconfigure import (
    LIVE_SPEC_FIELDS,
    RESTART_FIELDS,
    allowed,
    minimal_eviction,
    reload_plan,
)


def plan_of(text: str, old: Plan | None = None) -> Plan:
    opts = CompileOptions()
    if old is not None:
        assert old.config is not None
        opts = CompileOptions(keep_ports=dict(old.ports), keep_start_port=old.config.start_port)
    plan = compile_text(textwrap.dedent(text), "c.yaml", opts)
    assert plan.ok, [d.message for d in plan.diagnostics]
    return plan


BASE = """
    startPort: 7000
    models:
      a:
        cmd: fake --port ${PORT} --name a
        aliases: [first]
      b:
        cmd: fake --port ${PORT} --name b
      c:
        cmd: fake --port ${PORT} --name c
        ttl: 30
    groups:
      together: {swap: false, members: [a, b, c]}
"""


def test_every_process_spec_field_is_classified():
    """A new ProcessSpec field must be declared restart-worthy or live."""
    spec_fields = {f.name for f in dataclasses.fields(ProcessSpec)} - {"model"}
    assert spec_fields == set(RESTART_FIELDS) | set(LIVE_SPEC_FIELDS)


def test_identical_configs_change_nothing():
    old = plan_of(BASE)
    rp = reload_plan(old, plan_of(BASE), running=("a", "b"))
    assert rp.empty
    assert rp.unchanged == ("a", "b", "c")
    assert rp.summary() == "unchanged 3; decisions changed 0"


def test_cmd_edit_restarts_only_that_model():
    old = plan_of(BASE)
    new = plan_of(BASE.replace("--name b", "--name b --threads 4"), old)
    rp = reload_plan(old, new, running=("a", "b", "c"))
    assert rp.restarted == ("b",)
    assert rp.fields["b"] == ("cmd",)
    assert rp.unchanged == ("a", "c")
    assert not rp.added and not rp.removed and not rp.evict


def test_live_settings_update_without_restart():
    old = plan_of(BASE)
    new = plan_of(BASE.replace("ttl: 30", "ttl: 60\n        concurrencyLimit: 2"), old)
    rp = reload_plan(old, new)
    assert rp.restarted == () and rp.updated == ("c",)
    assert rp.fields["c"] == ("ttl", "concurrency_limit")
    assert "updated [c]" in rp.summary()


def test_added_removed_and_alias_moves():
    old = plan_of(BASE)
    new_text = (
        BASE.replace(
            """      c:
        cmd: fake --port ${PORT} --name c
        ttl: 30
""",
            """      d:
        cmd: fake --port ${PORT} --name d
""",
        )
        .replace("[a, b, c]", "[a, b, d]")
        .replace("aliases: [first]", "")
        .replace("--name b\n", "--name b\n        aliases: [first]\n")
    )
    new = plan_of(new_text, old)
    rp = reload_plan(old, new, running=("c",))
    assert rp.added == ("d",) and rp.removed == ("c",)
    assert rp.aliases == {"first": ("a", "b")}
    assert rp.unchanged == ("b",) or "b" in rp.updated  # b gained an alias: a live change
    assert "added [d]" in rp.summary() and "removed [c]" in rp.summary()
    assert "aliases changed [first]" in rp.summary()


def test_port_pinning_keeps_unchanged_models_ports():
    old = plan_of(BASE)
    assert dict(old.ports) == {"a": 7000, "b": 7001, "c": 7002}
    # A model that sorts first would shift every port without pinning.
    text = BASE.replace("models:\n", 'models:\n      "0":\n        cmd: fake --port ${PORT} --name zero\n', 1)
    unpinned = plan_of(text)
    assert dict(unpinned.ports) == {"0": 7000, "a": 7001, "b": 7002, "c": 7003}
    pinned = plan_of(text, old)
    assert dict(pinned.ports) == {"a": 7000, "b": 7001, "c": 7002, "0": 7003}
    rp = reload_plan(old, pinned)
    assert rp.added == ("0",) and rp.restarted == () and rp.ports == {}
    # Without pinning the same edit would restart every model (their cmd holds the port).
    assert reload_plan(old, unpinned).restarted == ("a", "b", "c")


def test_a_new_start_port_reallocates():
    old = plan_of(BASE)
    new = plan_of(BASE.replace("startPort: 7000", "startPort: 9000"), old)
    assert dict(new.ports) == {"a": 9000, "b": 9001, "c": 9002}
    rp = reload_plan(old, new)
    assert rp.restarted == ("a", "b", "c")
    assert rp.ports["a"] == (7000, 9000)


MATRIX = """
    models:
      a: {cmd: "fake --port ${PORT} --name a"}
      b: {cmd: "fake --port ${PORT} --name b"}
      c: {cmd: "fake --port ${PORT} --name c"}
    matrix:
      evict_costs: {a: 5, b: 2, c: 1}
      sets:
        %s
"""


def test_a_matrix_that_forbids_the_running_pair_evicts_the_cheapest():
    old = plan_of(MATRIX % 'all: "a & b & c"')
    new = plan_of(MATRIX % 'ab: "a | b"\n        ac: "a & c"', old)
    rp = reload_plan(old, new, running=("a", "b", "c"))
    # [a, b, c] is not allowed; dropping b (cost 2) leaves [a, c], allowed; dropping c
    # (cost 1) leaves [a, b], not allowed; so b it is.
    assert rp.evict == ("b",)
    assert "does not allow [a, b, c]" in rp.evict_reason and "keeps [a, c]" in rp.evict_reason
    assert rp.decisions_changed and rp.decisions_changed > 0
    assert rp.decision_examples
    assert "evict [b]" in rp.summary()


def test_minimal_eviction_prefers_cost_then_count():
    plan = plan_of(MATRIX % 'x: "a"\n        y: "b & c"')
    policy = plan.policy
    assert allowed(policy, ("b", "c")) and not allowed(policy, ("a", "b"))
    # [a, b, c]: keep [b, c] (evict a: 5) or keep [a] (evict b, c: 3): the cheaper wins.
    assert minimal_eviction(policy, ("a", "b", "c"), plan.evict_costs) == ("b", "c")
    assert minimal_eviction(policy, ("b", "c"), plan.evict_costs) == ()
    assert minimal_eviction(policy, ()) == ()


def test_removed_models_are_not_part_of_the_new_running_state():
    old = plan_of(MATRIX % 'all: "a & b & c"')
    new = plan_of(
        """
        models:
          a: {cmd: "fake --port ${PORT} --name a"}
          b: {cmd: "fake --port ${PORT} --name b"}
        matrix:
          sets:
            one: "a | b"
    """,
        old,
    )
    rp = reload_plan(old, new, running=("a", "c"))
    assert rp.removed == ("c",) and rp.evict == ()


@pytest.mark.parametrize("running", [(), ("a",), ("a", "b")])
def test_the_json_form_is_complete(running):
    old = plan_of(BASE)
    rp = reload_plan(old, plan_of(BASE.replace("--name b", "--name bb"), old), running)
    js = rp.to_json()
    assert js["restarted"] == ["b"] and js["fields"] == {"b": ["cmd"]}
    assert js["summary"] == rp.summary()
