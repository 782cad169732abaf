"""Config loading: YAML, the key schema, types, aliases, routing layouts, groups, the
scheduler block and preload (reference §2, §2.1, §2.2, §2.4)."""

from __future__ import annotations

import pytest
from compiler_support import at, codes, compile_yaml, errors, locate, one

from llamaswap.compiler.diagnostics import Severity
from llamaswap.compiler.keys import TOP

FAKE = "llamaswap fake-upstream --port ${PORT}"
M2 = f"""\
models:
  a: {{cmd: "{FAKE} --name a"}}
  b: {{cmd: "{FAKE} --name b"}}
"""


# -- YAML --------------------------------------------------------------------------------------


def test_yaml_syntax_error_is_located():
    text = "models:\n  a: {cmd: x\n  b: 1\n"
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS300")
    assert d.message.startswith("YAML syntax error:") and d.line is not None and d.column is not None
    assert plan.config is None and not plan.ok


@pytest.mark.parametrize(
    "text, code",
    [("", "LS303"), ("# only a comment\n", "LS303"), ("- a\n- b\n", "LS302"), ("just text\n", "LS302")],
)
def test_empty_or_non_mapping_config(text, code):
    plan = compile_yaml(text, dedent=False)
    assert codes(plan) == [code]


def test_duplicate_keys_are_errors_at_the_second_key():
    text = M2 + "startPort: 1000\nstartPort: 2000\n"
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS304")
    assert at(d) == locate(text, "startPort: 2000", dedent=False)
    assert "first defined on line" in d.message


def test_merge_keys_may_be_overridden():
    text = f"""\
    defaults: &defaults
      ttl: 60
    models:
      a:
        <<: *defaults
        cmd: {FAKE}
        ttl: 5
    """
    plan = compile_yaml(text)
    assert "LS304" not in codes(plan)
    assert plan.config.models["a"].ttl == 5


def test_yaml_1_2_scalars():
    text = f"""\
    sendLoadingState: true
    models:
      a:
        cmd: {FAKE}
        name: yes
        description: 2024-01-01
        unlisted: false
    """
    plan = compile_yaml(text)
    assert plan.ok, plan.diagnostics
    m = plan.config.models["a"]
    assert (m.name, m.description, m.unlisted) == ("yes", "2024-01-01", False)


# -- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "yaml_text, key, hint",
    [
        ("healthCheckTimout: 5\n", "healthCheckTimout", "did you mean 'healthCheckTimeout'?"),
        ("starport: 5\n", "starport", "did you mean 'startPort'?"),
        ("global_ttl: 5\n", "global_ttl", "did you mean 'globalTTL'?"),
        ("Models: {}\n", "Models", "did you mean 'models'?"),
    ],
)
def test_unknown_top_level_key_with_hint(yaml_text, key, hint):
    # llama-swap ignores unknown keys, so they are warnings (errors under compile --strict).
    text = M2 + yaml_text
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS408")
    assert plan.ok and d.severity is Severity.WARNING
    assert d.message == f"unknown key '{key}' in the top level; llama-swap ignores it"
    assert d.hint.startswith(hint)
    assert at(d) == locate(text, key, dedent=False)
    assert d.path == key


def test_unknown_nested_keys_with_hints():
    text = f"""\
    models:
      a:
        cmd: {FAKE}
        filters: {{strip: x}}
        cmdStpo: y
    groups:
      g: {{members: [a], exclusiv: true}}
    routing:
      scheduler:
        settings:
          fifo: {{priorty: {{}}}}
    """
    plan = compile_yaml(text)
    found = {d.path: (d.hint, at(d)) for d in plan.diagnostics if d.code == "LS408"}
    assert found["models.a.cmdStpo"] == ("did you mean 'cmdStop'?", locate(text, "cmdStpo"))
    assert found["groups.g.exclusiv"][0] == "did you mean 'exclusive'?"
    assert found["routing.scheduler.settings.fifo.priorty"][0] == "did you mean 'priority'?"
    assert found["models.a.filters.strip"][0] == "did you mean 'stripParams'?"


def test_unimplemented_keys_warn_and_say_so():
    text = M2 + "logToStdout: both\ncaptureBuffer: 10\npeers: {}\nprofiles: {}\nselectors: {}\n"
    plan = compile_yaml(text, dedent=False)
    assert plan.ok
    warned = [d for d in plan.diagnostics if d.code == "LS400"]
    assert [d.path for d in warned] == ["captureBuffer"]
    assert all(d.severity is Severity.WARNING and "does not implement" in d.message for d in warned)
    assert at(warned[0]) == locate(text, "captureBuffer", dedent=False)


def test_ignored_key_warns():
    text = f"models:\n  a:\n    cmd: {FAKE}\n    healthCheckTimeout: 5\n"
    d = one(compile_yaml(text, dedent=False), "LS407")
    assert d.path == "models.a.healthCheckTimeout"


def test_free_form_keys_are_not_checked():
    text = f"""\
    models:
      a:
        cmd: {FAKE}
        metadata: {{anything: {{goes: [1, 2]}}}}
        filters: {{setParams: {{whatever: 1}}}}
        macros: {{m1: x}}
    """
    assert compile_yaml(text).diagnostics == ()


def test_every_documented_key_is_known():
    top = set(TOP.children or {})
    assert {
        "healthCheckTimeout",
        "logLevel",
        "logTimeFormat",
        "logToStdout",
        "logRequests",
        "metricsMaxInMemory",
        "captureBuffer",
        "store",
        "ui",
        "performance",
        "startPort",
        "sendLoadingState",
        "includeAliasesInList",
        "globalTTL",
        "unloadTimeout",
        "macros",
        "models",
        "apiKeys",
        "hooks",
        "routing",
        "groups",
        "matrix",
        "peers",
        "upstream",
        "profiles",
        "selectors",
    } <= top
    model = set((TOP.children or {})["models"].each.children or {})
    assert {
        "cmd",
        "cmdStop",
        "proxy",
        "aliases",
        "env",
        "checkEndpoint",
        "ttl",
        "unloadTimeout",
        "unlisted",
        "useModelName",
        "name",
        "description",
        "concurrencyLimit",
        "filters",
        "macros",
        "metadata",
        "sendLoadingState",
        "timeouts",
        "compat",
        "capabilities",
    } <= model


# -- types and values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, path, message",
    [
        ('startPort: "9000"', "startPort", "'startPort' must be a whole number, got the string '9000'"),
        (
            "sendLoadingState: 1",
            "sendLoadingState",
            "'sendLoadingState' must be true or false, got the number 1",
        ),
        ("globalTTL: [1]", "globalTTL", "'globalTTL' must be a whole number, got a list"),
        ("apiKeys: key", "apiKeys", "'apiKeys' must be a list, got the string 'key'"),
        ("models: [a]", "models", "'models' must be a mapping, got a list"),
    ],
)
def test_wrong_types(line, path, message):
    text = (M2 if not line.startswith("models") else "") + line + "\n"
    d = one(compile_yaml(text, dedent=False), "LS302")
    assert (d.path, d.message) == (path, message)
    assert at(d) == locate(text, line.split(": ", 1)[1], dedent=False)


def test_wrong_types_are_all_reported_and_the_rest_still_checked():
    text = f"""\
    startPort: x
    globalTTL: y
    models:
      a:
        cmd: {FAKE}
        ttl: "60"
        unlisted: 1
        aliases: [x, [3]]
      b: {{cmd: "{FAKE}", ttl: -5}}
    """
    plan = compile_yaml(text)
    assert [d.path for d in errors(plan)] == [
        "startPort",
        "globalTTL",
        "models.a.ttl",
        "models.a.unlisted",
        "models.a.aliases[1]",
        "models.b.ttl",
    ]
    assert one(plan, "LS303").message == "ttl -5 is not a TTL"


def test_quoted_number_hint_only_for_numbers():
    text = M2 + 'startPort: "9000"\nglobalTTL: "soon"\n'
    plan = compile_yaml(text, dedent=False)
    hints = {d.path: d.hint for d in plan.diagnostics}
    assert hints == {"startPort": "remove the quotes around the number", "globalTTL": None}


def test_empty_values_mean_unset():
    text = f"""\
    groups:
    macros:
    hooks:
      on_startup:
    models:
      a:
        cmd: {FAKE}
        aliases:
        filters:
        env:
    """
    plan = compile_yaml(text)
    assert plan.ok, plan.diagnostics
    assert plan.config.models["a"].aliases == ()


@pytest.mark.parametrize(
    "line, code, message",
    [
        ("startPort: 0", "LS303", "startPort 0 is not a port"),
        ("globalTTL: -1", "LS303", "globalTTL -1 is negative"),
        ("unloadTimeout: -1", "LS303", "unloadTimeout -1 is negative"),
        ('apiKeys: [""]', "LS311", "an API key is empty"),
        ('apiKeys: ["a b"]', "LS311", "an API key contains a space"),
    ],
)
def test_scalar_rules(line, code, message):
    text = M2 + line + "\n"
    d = one(compile_yaml(text, dedent=False), code)
    assert d.message == message


@pytest.mark.parametrize(
    "field, message",
    [
        ("ttl: -2", "ttl -2 is not a TTL"),
        ("unloadTimeout: -1", "unloadTimeout -1 is negative"),
    ],
)
def test_model_value_rules(field, message):
    text = f"models:\n  a:\n    proxy: http://127.0.0.1:1\n    {field}\n"
    if not field.startswith("cmd"):
        text += "    cmd: x\n"
    d = one(compile_yaml(text, dedent=False), "LS303")
    assert d.message == message


@pytest.mark.parametrize(
    "line, code, message",
    [
        (
            "logLevel: verbose",
            "LS412",
            "logLevel 'verbose' is not one of: debug, info, warn, error; it is read as info",
        ),
        (
            "healthCheckTimeout: -1",
            "LS412",
            "healthCheckTimeout -1: llama-swap waits at least 15 s for a model to "
            "become ready; llamaswap waits 1 s",
        ),
        (
            "sendLoadingState: yes",
            "LS412",
            "'sendLoadingState': 'yes' is read as true (YAML 1.1 word); write true",
        ),
        (
            "globalTTL: 1.5",
            "LS412",
            "'globalTTL': 1.5 is read as 1 (a whole number is expected; the fraction is dropped)",
        ),
    ],
)
def test_values_llama_swap_reads_leniently_warn(line, code, message):
    plan = compile_yaml(M2 + line + "\n", dedent=False)
    d = one(plan, code)
    assert plan.ok and d.severity is Severity.WARNING and d.message == message


@pytest.mark.parametrize(
    "field, code, message",
    [
        ("concurrencyLimit: -1", "LS412", "concurrencyLimit -1 is read as the default, 10"),
        (
            'env: ["NOVALUE"]',
            "LS412",
            "env entry 'NOVALUE' is not NAME=value; it is passed as is and sets nothing",
        ),
        (
            'cmd: "x \'unbalanced"',
            "LS411",
            "cannot split command: No closing quotation: requests for it fail when it starts",
        ),
    ],
)
def test_model_values_llama_swap_loads_warn(field, code, message):
    text = f"models:\n  a:\n    proxy: http://127.0.0.1:1\n    {field}\n"
    if not field.startswith("cmd"):
        text += "    cmd: x\n"
    plan = compile_yaml(text, dedent=False)
    d = one(plan, code)
    assert plan.ok and d.message == message


def test_a_model_without_cmd_loads_with_a_warning():
    text = "models:\n  a:\n    proxy: http://127.0.0.1:1\n"
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS411")
    assert plan.ok and d.message.startswith("model a has no cmd") and at(d) == (2, 3)


def test_a_model_without_cmd_or_proxy_is_refused_like_llama_swap():
    # The default proxy is http://localhost:${PORT}, and only a cmd can ask for ${PORT}.
    plan = compile_yaml("models:\n  a:\n    ttl: 5\n", dedent=False)
    d = one(plan, "LS308")
    assert not plan.ok and at(d) == (2, 3)


@pytest.mark.parametrize("proxy", ["localhost:8080", "ftp://x", "http://", "http://host:99999"])
def test_proxy_urls_go_accepts_but_cannot_work_warn(proxy):
    text = f"models:\n  a:\n    cmd: x\n    proxy: '{proxy}'\n"
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS412")
    assert plan.ok and d.path == "models.a.proxy"


@pytest.mark.parametrize(
    "proxy, why",
    [
        ("http://host:abc", "invalid port ':abc' after host"),
        (":8080", "missing protocol scheme"),
        ("10.0.0.1:8080", "first path segment in URL cannot contain colon"),
        ("http://a%zz", "invalid URL escape"),
    ],
)
def test_invalid_proxy_url(proxy, why):
    # Refused where Go's url.Parse refuses it, as llama-swap does.
    text = f"models:\n  a:\n    cmd: x\n    proxy: '{proxy}'\n"
    d = one(compile_yaml(text, dedent=False), "LS310")
    assert d.path == "models.a.proxy" and d.message == f"proxy {proxy!r} is not a URL: {why}"


# -- aliases ------------------------------------------------------------------------------------


def test_aliases_resolve_and_are_unique_across_models():
    text = f"""\
    models:
      a:
        cmd: {FAKE}
        aliases: [chat, {{id: gpt, name: GPT}}]
      b:
        cmd: {FAKE}
        aliases: [chat]
    """
    plan = compile_yaml(text)
    d = one(plan, "LS309")
    assert d.message == "alias 'chat' of model 'b' is taken: model 'a' has it"
    assert at(d) == locate(text, "chat", 1)
    assert plan.aliases == {"chat": "a", "gpt": "a"}
    assert (
        plan.resolve_model("gpt") == "a"
        and plan.resolve_model("b") == "b"
        and plan.resolve_model("x") is None
    )


def test_alias_equal_to_a_model_id_warns():
    text = f"models:\n  a: {{cmd: '{FAKE}', aliases: [b]}}\n  b: {{cmd: '{FAKE}'}}\n"
    d = one(compile_yaml(text, dedent=False), "LS313")
    assert d.severity is Severity.WARNING


def test_set_params_by_id_conflicts():
    text = f"""\
    models:
      a:
        cmd: {FAKE}
        aliases: [x]
      b:
        cmd: {FAKE}
        filters:
          setParamsByID:
            a: {{t: 1}}
            x: {{t: 2}}
    """
    plan = compile_yaml(text)
    assert sorted(codes(plan)) == ["LS309", "LS313"]


# -- routing layouts ------------------------------------------------------------------------


def test_no_router_means_groups_with_default_group():
    plan = compile_yaml(M2, dedent=False)
    assert plan.engine == "group" and plan.sets == ()
    assert [(g.name, g.members, g.swap, g.exclusive) for g in plan.groups] == [
        ("(default)", ("a", "b"), True, True)
    ]


def test_legacy_groups_and_default_group():
    text = (
        M2
        + "  c: {cmd: x, proxy: 'http://h:1'}\ngroups:\n  g: {members: [b], swap: false, persistent: true}\n"
    )
    plan = compile_yaml(text, dedent=False)
    assert plan.ok, plan.diagnostics
    assert [(g.name, g.members, g.swap, g.persistent) for g in plan.groups] == [
        ("g", ("b",), False, True),
        ("(default)", ("a", "c"), True, False),
    ]


def test_a_written_default_group_is_replaced_as_llama_swap_replaces_it():
    # llama-swap overwrites a '(default)' group: swap and exclusive, with the models in no
    # other group. Its members written here stay in it (there is one '(default)', not two).
    text = (
        M2
        + "  c: {cmd: x, proxy: 'http://h:1'}\ngroups:\n  keep: {members: [a], swap: false, exclusive: false}\n"
        + "  (default): {swap: false, exclusive: false, persistent: true, members: [b]}\n"
    )
    plan = compile_yaml(text, dedent=False)
    assert plan.ok, plan.diagnostics
    assert [(g.name, g.members, g.swap, g.exclusive, g.persistent) for g in plan.groups] == [
        ("keep", ("a",), False, False, False),
        ("(default)", ("b", "c"), True, True, False),
    ]
    d = one(plan, "LS412")
    assert "replaced by swap: true, exclusive: true" in d.message
    assert at(d) == locate(text, "(default)", dedent=False)


def test_routing_groups():
    text = (
        M2
        + "routing:\n  router:\n    use: group\n    settings:\n      groups:\n        g: {members: [a, b]}\n"
    )
    plan = compile_yaml(text, dedent=False)
    assert plan.ok and [g.name for g in plan.groups] == ["g"]


def test_routing_matrix():
    text = (
        M2 + "routing:\n  router:\n    use: matrix\n    settings:\n      matrix:\n        sets: {s: a & b}\n"
    )
    plan = compile_yaml(text, dedent=False)
    assert plan.ok and plan.engine == "matrix" and plan.groups == ()


def test_legacy_matrix():
    plan = compile_yaml(M2 + "matrix:\n  sets: {s: a & b}\n", dedent=False)
    assert plan.ok and plan.engine == "matrix"


@pytest.mark.parametrize(
    "extra, code, key",
    [
        ("matrix: {sets: {s: a}}\nrouting: {router: {use: matrix}}\n", "LS211", "matrix"),
        ("groups: {g: {members: [a]}}\nrouting: {router: {use: group}}\n", "LS211", "groups"),
        ("groups: {g: {members: [a]}}\nmatrix: {sets: {s: a}}\n", "LS212", "groups"),
        ("routing: {router: {use: matrix}}\n", "LS210", "use"),
        ("routing: {router: {use: groups}}\n", "LS216", "use"),
    ],
)
def test_mixing_rules(extra, code, key):
    text = M2 + extra
    plan = compile_yaml(text, dedent=False)
    d = one(plan, code)
    assert d.line == locate(text, key, dedent=False)[0]
    assert [e.code for e in errors(plan)] == [code]


def test_routing_scheduler_alone_is_not_mixing():
    text = M2 + "groups: {g: {members: [a]}}\nrouting: {scheduler: {use: fifo}}\n"
    assert compile_yaml(text, dedent=False).ok


def test_matrix_under_group_router_is_ignored_with_a_warning():
    text = M2 + "routing:\n  router:\n    settings:\n      matrix: {sets: {s: a}}\n"
    plan = compile_yaml(text, dedent=False)
    assert plan.engine == "group" and codes(plan) == ["LS407"]


def test_unknown_router_hint():
    d = one(compile_yaml(M2 + "routing: {router: {use: matrx}}\n", dedent=False), "LS216")
    assert d.message == "unknown router 'matrx'"
    assert d.hint == "did you mean 'matrix'?"


# -- groups ----------------------------------------------------------------------------------


def test_group_rules_are_located():
    text = (
        M2
        + "  c: {cmd: x, proxy: 'http://h:1', aliases: [cc]}\n"
        + ("groups:\n  g1: {members: [a, b, a]}\n  g2: {members: [b, zz, cc]}\n")
    )
    plan = compile_yaml(text, dedent=False)
    dup, multi = one(plan, "LS213"), one(plan, "LS214")
    assert dup.message == "group 'g1' lists 'a' twice"
    assert at(dup) == locate(text, "a]}", dedent=False)
    assert multi.message == "model 'b' is in two groups, 'g1' and 'g2'"
    assert at(multi) == locate(text, "b, zz", dedent=False)
    unknown = [d for d in plan.diagnostics if d.code == "LS215"]
    assert [d.message for d in unknown] == ["group 'g2' names 'zz', which is not a model"]
    # An alias as a member: llama-swap starts and ignores it (the model runs in '(default)').
    alias = one(plan, "LS412")
    assert alias.severity is Severity.WARNING and alias.path == "groups.g2.members[2]"
    assert at(alias) == (7, 25)  # the cc of g2
    assert alias.hint == "use the model ID: - c"
    assert "c" in next(g.members for g in plan.groups if g.name == "(default)")


# -- scheduler and preload ---------------------------------------------------------------------


def test_scheduler_priority():
    text = M2.replace('--name a"}', '--name a", aliases: [alpha]}') + (
        "routing:\n  scheduler:\n    settings:\n      fifo:\n        priority: {alpha: 3, b: 1, ghost: 9}\n"
    )
    plan = compile_yaml(text, dedent=False)
    assert plan.priority == {"a": 3, "b": 1}
    d = one(plan, "LS218")
    assert d.message == "a priority for 'ghost', which is not a model or an alias"
    assert at(d) == locate(text, "ghost", dedent=False)


def test_unknown_scheduler():
    d = one(compile_yaml(M2 + "routing: {scheduler: {use: lifo}}\n", dedent=False), "LS217")
    assert d.message == "unknown scheduler 'lifo'"


def test_preload_resolves_aliases_and_drops_unknown():
    text = M2.replace('--name b"}', '--name b", aliases: [bee]}') + (
        "hooks:\n  on_startup:\n    preload: [' bee ', a, ghost, b, '']\n"
    )
    plan = compile_yaml(text, dedent=False)
    assert plan.preload == ("b", "a")
    d = one(plan, "LS406")
    assert d.severity is Severity.WARNING and at(d) == locate(text, "ghost", dedent=False)


def test_groups_under_matrix_router_are_ignored_with_a_warning():
    text = M2 + (
        "routing:\n  router:\n    use: matrix\n    settings:\n      groups: {g: {members: [a]}}\n"
        "      matrix: {sets: {s: a & b}}\n"
    )
    plan = compile_yaml(text, dedent=False)
    assert plan.engine == "matrix" and plan.ok
    d = one(plan, "LS407")
    assert at(d) == locate(text, "groups", dedent=False)


@pytest.mark.parametrize(
    "text, message, hint",
    [
        (
            "models:\n\ta: 1\n",
            "YAML syntax error: found character '\\t' that cannot start any token "
            "(while scanning for the next token)",
            "indent with spaces",
        ),
        (
            # (a second document is no error: llama-swap reads the first only, LS415)
            "models: {a: 1\n",
            "YAML syntax error: expected ',' or '}', but got '<stream end>' (while parsing a flow "
            "mapping started at line 1, column 9)",
            "check indentation",
        ),
    ],
)
def test_yaml_error_messages_read_well(text, message, hint):
    d = one(compile_yaml(text, dedent=False), "LS300")
    assert d.message == message and (d.hint or "").startswith(hint)


def test_the_reload_drain_timeout_is_checked_and_located():
    plan = compile_yaml(M2 + "llamaswap:\n  reloadDrainTimeout: -1\n", dedent=False)
    d = one(plan, "LS303")
    assert d.message == "llamaswap.reloadDrainTimeout must be >= 0"
    assert (d.path, d.line) == ("llamaswap.reloadDrainTimeout", 5)
    plan = compile_yaml(M2 + "llamaswap:\n  reloadDrainTimeout: soon\n", dedent=False)
    d = one(plan, "LS302")
    assert (d.path, d.line) == ("llamaswap.reloadDrainTimeout", 5)
    plan = compile_yaml(M2 + "llamaswap:\n  reloadDrainTimeout: 2.5\n", dedent=False)
    assert plan.ok, plan.diagnostics
    assert plan.config.llamaswap.reload_drain_timeout == 2.5
    # Unset: llama-swap's 30 s (its reload shuts the old server down with that deadline).
    assert compile_yaml(M2, dedent=False).config.llamaswap.reload_drain_timeout == 30.0
    known = compile_yaml(M2 + "llamaswap: {reloadDrainTimeout: 0}\n", dedent=False)
    assert known.ok and not [c for c in codes(known) if c.startswith("LS4")], (
        known.diagnostics
    )  # no unknown key


@pytest.mark.parametrize("text", ["models:\n  - name: a\n    cmd: x\n", "models: a\n"])
def test_models_of_the_wrong_kind_is_one_error_not_also_no_models(text):
    # The error says what is wrong; "the config defines no models" (LS303) beside it is noise.
    plan = compile_yaml(text, dedent=False)
    assert [(d.code, d.path) for d in plan.diagnostics] == [("LS302", "models")]


def test_models_written_as_a_list_gets_a_hint():
    d = one(compile_yaml("models:\n  - name: a\n    cmd: x\n", dedent=False), "LS302")
    assert d.hint is not None and "models:" in d.hint and "- " in d.hint
