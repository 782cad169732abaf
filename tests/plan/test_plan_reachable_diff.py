"""The pure functions behind `plan --all`, `plan --diff` and the transitions view: reachable
running states (the table's, else enumerated, else a located reason) and the decision diff."""

from __future__ import annotations

import pytest

from llamaswap.compiler.diff import diff_plans, same_decision
from llamaswap.compiler.plan import CompileOptions, compile_text
from llamaswap.compiler.reachable import StatesError, enumerate_states, reachable_states

MATRIX = """\
models:
  a: {cmd: "server --port ${PORT}"}
  b: {cmd: "server --port ${PORT}"}
  c: {cmd: "server --port ${PORT}"}
matrix:
  sets:
    ab: "a & b"
    c: "c"
"""

GROUPS = """\
models:
  a: {cmd: "server --port ${PORT}"}
  b: {cmd: "server --port ${PORT}"}
  c: {cmd: "server --port ${PORT}"}
groups:
  g:
    swap: false
    exclusive: false
    members: [a, b]
"""


def _plan(text: str, **options):
    plan = compile_text(text, "x.yaml", CompileOptions(**options))
    assert plan.ok, plan.diagnostics
    return plan


def test_matrix_states_are_every_subset_of_a_combination_and_each_model_alone():
    want = [(), ("a",), ("b",), ("c",), ("a", "b")]
    assert reachable_states(_plan(MATRIX)) == want
    untabled = _plan(MATRIX, precompute_budget=0)
    assert untabled.policy.table is None
    assert reachable_states(untabled) == want  # enumerated: the same states, in the same order


def test_group_states_are_the_closure_under_the_policy():
    plan = _plan(GROUPS, precompute_budget=0)
    assert plan.policy.table is None
    states = reachable_states(plan)
    assert states == list(_plan(GROUPS).policy.table.states)  # the same as the table's
    assert states[0] == () and ("a", "b") in states  # a swap: false group loads together
    for state in states:  # closed under the decisions
        for target in plan.models:
            d = plan.policy.decide(target, state)
            assert tuple(sorted(set(state) - set(d.evict) | {target})) in states


def test_too_many_states_for_the_decision_cap_is_a_reason_not_a_listing():
    plan = _plan(MATRIX, precompute_budget=0)
    with pytest.raises(
        StatesError,
        match=r"more than 3 reachable running states \(x 3 models: over 10 "
        r"decisions\); too many to list",
    ):
        reachable_states(plan, max_decisions=10)
    assert enumerate_states(plan, 3) is None


def test_symbolic_sets_cannot_be_listed():
    text = MATRIX.replace('ab: "a & b"', 'ab: "(a | b) & (a | b)"')
    plan = _plan(text, expand_budget=0, precompute_budget=0)
    with pytest.raises(StatesError, match=r"set\(s\) ab, c are symbolic .* raise --expand-budget"):
        reachable_states(plan)


def test_a_plan_against_itself_has_no_changes():
    plan = _plan(MATRIX)
    assert list(diff_plans(plan, _plan(MATRIX))) == []


def test_diff_lists_each_changed_decision_and_models_only_one_side_knows():
    old = _plan(MATRIX)
    new = _plan(MATRIX.replace('c: "c"', 'c: "c"\n    ac: "a & c"'))
    changes = list(diff_plans(old, new))
    for change in changes:
        assert change.old is not None and change.new is not None
        assert not same_decision(change.old, change.new)
    # States of either plan (a, c is reachable only in the new one), by size then names.
    assert [(c.running, c.request) for c in changes] == [
        (("a",), "c"),
        (("c",), "a"),
        (("a", "b"), "c"),
        (("a", "c"), "a"),
        (("a", "c"), "c"),
    ]
    first = changes[0]
    assert first.to_json() == {
        "running": ["a"],
        "request": "c",
        "old": {"evict": ["a"], "set": "c", "dsl": "c", "target_set": ["c"], "cost": 1},
        "new": {"evict": [], "set": "ac", "dsl": "a & c", "target_set": ["a", "c"], "cost": 0},
    }
    assert first.lines() == [
        "[a] + c",
        "  - old: evict [a]; set c [c]; cost 1",
        "  + new: evict []; set ac [a, c]; cost 0",
    ]

    extra = _plan(MATRIX.replace("  c: {cmd", '  d: {cmd: "server --port ${PORT}"}\n  c: {cmd'))
    changes = list(diff_plans(old, extra))
    assert changes and all(c.request == "d" and c.old is None and c.new is not None for c in changes)
    assert changes[0].lines()[1] == "  - old: unknown model (not in this config)"
    assert changes[0].to_json()["old"] is None
