"""Every matrix validation rule of llama-swap HEAD (reference §3.3), with its code and the
exact place it points at: the offending token inside the DSL string, for plain,
single-quoted and double-quoted YAML scalars alike."""

from __future__ import annotations

import pytest
from compiler_support import at, codes, combos, compile_yaml, errors, locate, one
from hypothesis import given, settings
from hypothesis import strategies as st

HEAD = """\
models:
  gemma: {cmd: "llamaswap fake-upstream --port ${PORT} --name g"}
  qwen:
    cmd: llamaswap fake-upstream --port ${PORT} --name q
    aliases: [qwen-alias]
  voxtral: {cmd: "llamaswap fake-upstream --port ${PORT} --name v"}
"""


def config(matrix_body: str) -> str:
    return HEAD + "matrix:\n" + matrix_body


# -- 1. at least one set -------------------------------------------------------------------


@pytest.mark.parametrize("body", ["  vars: {g: gemma}\n", "  sets: {}\n", "  sets:\n"])
def test_matrix_needs_a_set(body):
    text = config(body)
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS200")
    assert d.message == "the matrix has no sets"
    assert d.path == "matrix.sets"
    assert d.line == locate(text, "vars" if "vars" in body else "sets", dedent=False)[0]


def test_vars_are_optional():
    plan = compile_yaml(config("  sets:\n    s: gemma & voxtral\n"), dedent=False)
    assert plan.ok and combos(plan, "s") == [["gemma", "voxtral"]]


# -- 2. vars -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["big_model", "a" * 33, "g!", "g/x"])
def test_var_key_pattern(key):
    text = config(f"  vars:\n    '{key}': gemma\n  sets:\n    s: qwen\n")
    d = one(compile_yaml(text, dedent=False), "LS205")
    assert d.message == (f"var key {key!r} is not 1 to 32 letters, digits, '-' or '.'")
    assert at(d) == locate(text, f"'{key}'", dedent=False)
    assert d.path == f"matrix.vars.{key}"


@pytest.mark.parametrize("key", ["a" * 32, "Q4.k-m", "9"])
def test_var_key_pattern_accepts(key):
    text = config(f"  vars:\n    '{key}': gemma\n  sets:\n    s: '{key} & qwen'\n")
    assert compile_yaml(text, dedent=False).ok


def test_var_must_name_a_model():
    text = config("  vars:\n    g: gemmma\n  sets:\n    s: qwen\n")
    d = one(compile_yaml(text, dedent=False), "LS206")
    assert d.message == "var 'g' names 'gemmma', which is not a model"
    assert at(d) == locate(text, "gemmma", dedent=False)
    assert "did you mean 'gemma'" in (d.hint or "")


def test_var_naming_an_alias_is_rejected_with_the_real_id():
    text = config("  vars:\n    q: qwen-alias\n  sets:\n    s: q & gemma\n")
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS206")
    assert at(d) == locate(text, "qwen-alias", 1, dedent=False)
    assert "'qwen'" in (d.hint or "")
    assert codes(plan) == ["LS206"], "using the broken var is not a second error"


def test_var_wins_over_a_model_id_of_the_same_name():
    text = config("  vars:\n    gemma: qwen\n  sets:\n    s: gemma & voxtral\n")
    plan = compile_yaml(text, dedent=False)
    assert combos(plan, "s") == [["qwen", "voxtral"]]


# -- 3. evict costs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, shown",
    [
        ("0", "0"),
        ("-3", "-3"),
        ("2.5", "2.5"),
        ('"3"', "the string '3'"),
        ("true", "true"),
        ("[1]", "a list"),
    ],
)
def test_evict_cost_must_be_a_positive_integer(value, shown):
    text = config(f"  vars: {{g: gemma}}\n  evict_costs:\n    g: {value}\n  sets:\n    s: g & qwen\n")
    d = one(compile_yaml(text, dedent=False), "LS207")
    assert d.message == f"the evict cost of 'g' is {shown}, not a whole number of at least 1"
    line, col = locate(text, f"    g: {value}", dedent=False)
    assert at(d) == (line, col + 7)
    assert d.path == "matrix.evict_costs.g"


def test_evict_cost_keys_are_vars_or_models():
    text = config(
        "  vars: {g: gemma}\n  evict_costs:\n    g: 2\n    qwen: 3\n    nope: 4\n    qwen-alias: 5\n"
        "  sets:\n    s: g & qwen\n"
    )
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS208")
    assert d.message == "evict cost for 'nope', which is not a var or a model"
    assert at(d) == locate(text, "nope", dedent=False)
    alias = one(plan, "LS202")
    assert at(alias) == locate(text, "qwen-alias: 5", dedent=False)
    assert "'qwen'" in (alias.hint or "")
    assert plan.evict_costs == {"gemma": 2, "qwen": 3}


# -- 4. sets: syntax, names, references -----------------------------------------------------

STYLES = {
    "plain": lambda dsl: dsl,
    "single": lambda dsl: "'" + dsl.replace("'", "''") + "'",
    "double": lambda dsl: '"' + dsl.replace("\\", "\\\\").replace('"', '\\"') + '"',
}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    "dsl, token, code",
    [
        ("gemma & bogus", "bogus", "LS201"),
        ("(gemma | qwen) & voxtrl", "voxtrl", "LS201"),
        ("gemma & qwen-alias", "qwen-alias", "LS202"),
        ("gemma & +nothere", "+nothere", "LS203"),
        ("gemma & org/x", "/", "LS101"),
        ("gemma & + x", "+", "LS102"),
        ("gemma & (qwen | voxtral", "(", "LS103"),
        ("gemma & | qwen", "|", "LS104"),
        ("gemma qwen", "qwen", "LS105"),
        ('gemma & "a/b', '"a/b', "LS106"),
    ],
)
def test_dsl_errors_point_at_the_token(style, dsl, token, code):
    scalar = STYLES[style](dsl)
    if style == "plain" and dsl.startswith('"'):
        pytest.skip("not a plain YAML scalar")
    text = config(f"  sets:\n    ok: gemma & qwen & voxtral\n    bad: {scalar}\n")
    plan = compile_yaml(text, dedent=False)
    d = one(plan, code)
    line, col = locate(text, scalar, dedent=False)
    inner = scalar.index(token.replace('"', '\\"') if style == "double" else token)
    assert at(d) == (line, col + inner), d
    assert d.path == "matrix.sets.bad"
    assert d.message.startswith("set 'bad'")
    assert [e.code for e in errors(plan)] == [code]


def test_unknown_name_message_and_hint():
    text = config("  vars: {g: gemma}\n  sets:\n    s: gg & qwen\n")
    d = one(compile_yaml(text, dedent=False), "LS201")
    assert d.message == "set 's': 'gg' is not a var or a model"
    assert d.hint == "did you mean 'g'?"


def test_alias_in_a_set_names_the_real_model():
    text = config('  sets:\n    s: "gemma & qwen-alias"\n')
    d = one(compile_yaml(text, dedent=False), "LS202")
    assert "'qwen'" in (d.hint or "")
    assert d.message == "set 's': 'qwen-alias' is an alias; sets must use real model IDs"


def test_undefined_reference_message_and_hint():
    text = config("  sets:\n    llms: gemma | qwen\n    s: +llm & voxtral\n")
    d = one(compile_yaml(text, dedent=False), "LS203")
    assert d.message == "set 's': there is no set 'llm' to include"
    assert d.hint == "did you mean '+llms'?"


def test_errors_in_a_multi_line_block_scalar_point_into_it():
    text = config("  sets:\n    s: >\n      gemma &\n      (qwen | bogus)\n")
    d = one(compile_yaml(text, dedent=False), "LS201")
    assert at(d) == locate(text, "bogus", dedent=False)


def test_every_set_is_checked_in_one_run():
    text = config("  sets:\n    a1: gemma & x1\n    a2: 'qwen & x2'\n    a3: \"(voxtral\"\n    a4: +zz\n")
    plan = compile_yaml(text, dedent=False)
    assert codes(plan) == ["LS201", "LS201", "LS103", "LS203"]


# -- 5. cycles -------------------------------------------------------------------------------


def test_self_reference_is_a_cycle():
    text = config("  sets:\n    s: gemma | +s\n")
    d = one(compile_yaml(text, dedent=False), "LS204")
    assert d.message == "set 's' includes itself: s -> s"
    assert at(d) == locate(text, "+s", dedent=False)


def test_cycle_error_shows_the_whole_cycle_and_points_at_the_closing_reference():
    text = config(
        "  sets:\n    ok: gemma\n    a: +b & gemma\n    b: qwen | +c\n    c: +a\n    d: +a & qwen\n"
    )
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS204")
    assert d.message == "set 'a' includes itself: a -> b -> c -> a"
    assert at(d) == locate(text, "+b", dedent=False)
    assert d.path == "matrix.sets.a"
    # Sets in or depending on the cycle are left out; the rest still compile.
    assert [s.name for s in plan.sets] == ["ok"]


def test_two_separate_cycles_are_two_errors():
    text = config("  sets:\n    a: +b\n    b: +a\n    c: +d\n    d: +c\n")
    plan = compile_yaml(text, dedent=False)
    assert sorted(d.message for d in plan.diagnostics if d.code == "LS204") == [
        "set 'a' includes itself: a -> b -> a",
        "set 'c' includes itself: c -> d -> c",
    ]


# -- 6. YAML shape -------------------------------------------------------------------------


def test_sets_must_be_a_mapping():
    text = config("  sets: [gemma]\n")
    d = one(compile_yaml(text, dedent=False), "LS302")
    assert d.path == "matrix.sets"
    assert at(d) == locate(text, "[gemma]", dedent=False)


@pytest.mark.parametrize("value", ["[gemma, qwen]", "{a: b}", "true", "null"])
def test_a_set_must_be_a_dsl_string(value):
    text = config(f"  sets:\n    s: {value}\n")
    d = one(compile_yaml(text, dedent=False), "LS209")
    assert d.message == "set 's' is not an expression (a string)"
    assert at(d) == locate(text, value, dedent=False)


def test_routing_layout_paths():
    text = HEAD + (
        "routing:\n  router:\n    use: matrix\n    settings:\n      matrix:\n        sets:\n"
        "          s: gemma & nope\n"
    )
    d = one(compile_yaml(text, dedent=False), "LS201")
    assert d.path == "routing.router.settings.matrix.sets.s"
    assert at(d) == locate(text, "nope", dedent=False)


def test_cycle_through_a_set_with_another_error_is_still_found():
    text = config("  sets:\n    a: +b & nope\n    b: +a | gemma\n")
    plan = compile_yaml(text, dedent=False)
    assert codes(plan) == ["LS204", "LS201"]
    assert one(plan, "LS204").message == "set 'a' includes itself: a -> b -> a"
    assert plan.sets == ()


# -- 5b. references at random, against a brute-force reading ---------------------------------


def _reaches_a_cycle(graph: dict[str, list[str]], start: str) -> tuple[bool, bool]:
    """(start is on a cycle, start reaches a cycle) by plain search: the reference answer."""
    on_cycle = False
    reach = False
    seen: set[str] = set()
    stack = list(graph[start])
    while stack:
        n = stack.pop()
        if n == start:
            on_cycle = True
        if n in seen:
            continue
        seen.add(n)
        stack.extend(graph[n])
    for n in seen:
        # n is on a cycle when n reaches itself.
        inner: set[str] = set()
        todo = list(graph[n])
        while todo:
            m = todo.pop()
            if m in inner:
                continue
            inner.add(m)
            todo.extend(graph[m])
        if n in inner:
            reach = True
    return on_cycle, reach or on_cycle


@given(
    st.integers(min_value=1, max_value=6).flatmap(
        lambda n: st.lists(st.lists(st.integers(0, n - 1), max_size=3), min_size=n, max_size=n)
    )
)
@settings(max_examples=60, deadline=None)
def test_random_references_cycles_reported_and_solver_order_matches_brute_force(edges):
    names = [f"s{i}" for i in range(len(edges))]
    graph = {names[i]: [names[j] for j in dict.fromkeys(e)] for i, e in enumerate(edges)}
    body = "  sets:\n" + "".join(
        f"    {n}: {' | '.join(['gemma'] + ['+' + r for r in refs])}\n" for n, refs in graph.items()
    )
    plan = compile_yaml(config(body), dedent=False)
    verdicts = {n: _reaches_a_cycle(graph, n) for n in names}
    # Every cycle is reported, each showing the whole cycle: a path of references that
    # comes back to where it started.
    reported = [d.message for d in plan.diagnostics if d.code == "LS204"]
    assert bool(reported) == any(on for on, _ in verdicts.values())
    for message in reported:
        path = message.split(": ", 1)[1].split(" -> ")
        assert path[0] == path[-1] and all(b in graph[a] for a, b in zip(path, path[1:]))
        assert verdicts[path[0]][0]
    # The sets left out are exactly those on or reaching a cycle; dependencies come first.
    solved = [s.name for s in plan.sets]
    assert sorted(solved) == sorted(n for n in names if not verdicts[n][1])
    for i, n in enumerate(solved):
        assert all(r in solved[:i] for r in graph[n])
