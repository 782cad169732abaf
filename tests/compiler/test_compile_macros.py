"""Macros, `${env.X}`, `${MODEL_ID}`, `${PORT}` and `${PID}` (reference §2 steps 1-5, §2.3)."""

from __future__ import annotations

import pytest
from compiler_support import at, codes, compile_yaml, locate, one

from llamaswap.compiler.commands import split_command

FAKE = "llamaswap fake-upstream"


def test_global_and_model_macros_reverse_order_and_typed_values():
    text = f"""\
    macros:
      server: {FAKE}
      ctx: 4096
      args: "-c ${{ctx}} --name ${{MODEL_ID}}"
      flag: true
    models:
      m1:
        macros:
          ctx: 8192
        cmd: ${{server}} --port ${{PORT}} ${{args}}
        metadata:
          ctx: ${{ctx}}
          flag: ${{flag}}
          text: "ctx=${{ctx}} flag=${{flag}}"
          nested: ["${{ctx}}", {{deep: "${{MODEL_ID}}"}}]
      m0:
        cmd: ${{server}} --port ${{PORT}} ${{args}}
        metadata: {{ctx: "${{ctx}}"}}
    """
    plan = compile_yaml(text)
    assert plan.ok, plan.diagnostics
    m1, m0 = plan.config.models["m1"], plan.config.models["m0"]
    # The model macro overrides the global one in place, so `args` (declared after `ctx`)
    # sees the model's value.
    assert m1.cmd == f"{FAKE} --port 5801 -c 8192 --name m1"
    assert m0.cmd == f"{FAKE} --port 5800 -c 4096 --name m0"
    # A value that is exactly ${name} keeps the macro's type; interpolation gives strings.
    assert m1.metadata == {
        "ctx": 8192,
        "flag": True,
        "text": "ctx=8192 flag=true",
        "nested": (8192, {"deep": "m1"}),
    }
    assert m0.metadata == {"ctx": 4096}


def test_a_macro_can_only_use_macros_declared_before_it():
    text = f"""\
    macros:
      early: "${{late}}"
      late: x
    models:
      m:
        cmd: {FAKE} --port ${{PORT}} ${{early}}
    """
    plan = compile_yaml(text)
    d = one(plan, "LS307")
    assert (
        d.message == "macro '${late}' is used before it is declared (in models.m.cmd, through macro 'early')"
    )
    assert "declared" in (d.hint or "")
    assert at(d) == locate(text, "${late}")  # where the leftover is written
    assert d.path == "macros.early"


def test_a_leftover_from_a_macro_is_reported_once_at_its_declaration():
    text = f"""\
    macros:
      args: "--x ${{undeclared}}"
    models:
      m1: {{cmd: "{FAKE} --port ${{PORT}} ${{args}}"}}
      m2: {{cmd: "{FAKE} --port ${{PORT}} ${{args}}"}}
    """
    d = one(compile_yaml(text), "LS307")
    assert d.message == "unknown macro '${undeclared}' (in models.m1.cmd, through macro 'args')"
    assert at(d) == locate(text, "${undeclared}")


def test_macros_apply_to_top_level_values_but_not_model_ids():
    text = f"""\
    macros:
      key: sk-secret
    apiKeys: ["${{key}}"]
    models:
      m:
        cmd: {FAKE} --port ${{PORT}}
    """
    plan = compile_yaml(text)
    assert plan.ok and plan.config.api_keys == ("sk-secret",)


def test_port_allocation_sorted_ids_from_start_port_only_for_cmd_users():
    text = f"""\
    startPort: 9000
    models:
      zeta: {{cmd: "{FAKE} --port ${{PORT}}"}}
      beta:
        cmd: {FAKE} --port 7000
        proxy: http://127.0.0.1:7000
      alpha: {{cmd: "{FAKE} --port ${{PORT}}"}}
      gamma:
        cmd: {FAKE} --port ${{PORT}}
        proxy: http://127.0.0.1:${{PORT}}/v1
        metadata: {{port: "${{PORT}}"}}
    """
    plan = compile_yaml(text)
    assert plan.ok, plan.diagnostics
    assert plan.ports == {"alpha": 9000, "gamma": 9001, "zeta": 9002}
    assert plan.config.models["gamma"].proxy == "http://127.0.0.1:9001/v1"
    assert plan.config.models["gamma"].metadata == {"port": 9001}
    assert plan.config.models["alpha"].proxy == "http://localhost:9000"  # the default proxy
    assert plan.config.models["beta"].proxy == "http://127.0.0.1:7000"


def test_port_in_a_macro_value():
    text = f"""\
    macros:
      listen: "--port ${{PORT}}"
    models:
      m: {{cmd: "{FAKE} ${{listen}}"}}
    """
    plan = compile_yaml(text)
    assert plan.ok and plan.config.models["m"].cmd == f"{FAKE} --port 5800"


def test_port_in_explicit_proxy_without_cmd_points_at_port():
    text = f"""\
    models:
      m:
        cmd: {FAKE} --port 9000
        proxy: "http://127.0.0.1:${{PORT}}"
    """
    d = one(compile_yaml(text), "LS308")
    assert d.message == ("proxy uses ${PORT}, but cmd does not ask for a port")
    assert at(d) == locate(text, '${PORT}"')
    assert d.path == "models.m.proxy"


def test_default_proxy_without_port_in_cmd_is_an_error_at_the_model():
    text = f"""\
    models:
      m:
        cmd: {FAKE} --port 9000
    """
    d = one(compile_yaml(text), "LS308")
    assert at(d) == locate(text, "m:")
    # An old config that gives the server a fixed port is told the proxy to write.
    assert d.hint == (
        "the default proxy is http://localhost:${PORT}, but cmd listens on http://127.0.0.1:9000: "
        "add proxy: http://127.0.0.1:9000, or use --port ${PORT} in cmd"
    )


@pytest.mark.parametrize(
    "cmd, url",
    [
        ("llama-server --host 0.0.0.0 --port 9602 -m x", "http://127.0.0.1:9602"),
        ("llama-server --host=10.0.0.5 --port=8081", "http://10.0.0.5:8081"),
        ("sd-server --listen-port 9999 --steps 8", "http://127.0.0.1:9999"),
        ("docker run -p 9009:8000 vllm/vllm-openai", "http://127.0.0.1:9009"),
        ("llama-server -m x", None),
        ("llama-server --port 99999", None),
        ("server --ports 80 --port-file x", None),
    ],
)
def test_the_hint_finds_a_fixed_port_in_cmd(cmd, url):
    text = f"models:\n  m:\n    cmd: {cmd}\n"
    hint = one(compile_yaml(text, dedent=False), "LS308").hint or ""
    if url is None:
        assert "listens on" not in hint
    else:
        assert f"cmd listens on {url}: add proxy: {url}" in hint


def test_pid_only_in_cmd_stop():
    text = f"""\
    models:
      m:
        cmd: {FAKE} --port ${{PORT}}
        cmdStop: kill -TERM ${{PID}}
        env: ["PARENT=${{PID}}"]
    """
    plan = compile_yaml(text)
    d = one(plan, "LS307")
    assert d.message == "'${PID}' has a value only in cmdStop"
    assert at(d) == locate(text, '${PID}"')
    assert plan.config.models["m"].cmd_stop == "kill -TERM ${PID}"


def test_unknown_macro_with_hint_and_position():
    text = f"""\
    macros:
      context: 4096
    models:
      m:
        cmd: {FAKE} --port ${{PORT}} -c ${{contxt}}
    """
    d = one(compile_yaml(text), "LS307")
    assert d.message == "unknown macro '${contxt}'"
    assert d.hint == "did you mean '${context}'?"
    assert at(d) == locate(text, "${contxt}")


def test_model_id_outside_a_model():
    text = f"""\
    apiKeys: ["${{MODEL_ID}}"]
    models:
      m: {{cmd: "{FAKE} --port ${{PORT}}"}}
    """
    d = one(compile_yaml(text), "LS307")
    assert "has a value only inside a model" in d.message


def test_comment_lines_in_cmd_are_dropped_before_expansion():
    text = f"""\
    models:
      m:
        cmd: |
          # ${{not_a_macro}} in a comment
          {FAKE}
          --port ${{PORT}}
    """
    plan = compile_yaml(text)
    assert plan.ok, plan.diagnostics
    assert "not_a_macro" not in plan.config.models["m"].cmd


@pytest.mark.parametrize(
    "name, message",
    [
        ("PORT", "macro name 'PORT' is reserved"),
        ("PID", "macro name 'PID' is reserved"),
        ("MODEL_ID", "macro name 'MODEL_ID' is reserved"),
        ("has space", "macro name 'has space' must match ^[a-zA-Z0-9_-]+$"),
        ("x" * 64, f"macro name '{'x' * 64}' exceeds maximum length of 63 characters"),
    ],
)
def test_macro_declaration_rules(name, message):
    text = f"""\
    macros:
      "{name}": 1
    models:
      m: {{cmd: "{FAKE} --port ${{PORT}}"}}
    """
    d = one(compile_yaml(text), "LS306")
    assert d.message == message
    assert at(d) == locate(text, f'"{name}"')


def test_macro_self_reference_and_non_scalar_value():
    text = f"""\
    macros:
      loop: "a ${{loop}}"
      listy: [1, 2]
    models:
      m:
        macros:
          PID: 3
        cmd: {FAKE} --port ${{PORT}}
    """
    plan = compile_yaml(text)
    messages = [d.message for d in plan.diagnostics if d.code == "LS306"]
    assert messages == [
        "macro 'loop' contains self-reference",
        "macro 'listy' must be a string, number or boolean",
        "model m: macro name 'PID' is reserved",
    ]


def test_env_substitution_everywhere_first():
    text = f"""\
    macros:
      dir: "${{env.MODELS_DIR}}/gguf"
    models:
      m:
        cmd: {FAKE} --port ${{PORT}} --name ${{dir}}
        ttl: ${{env.TTL}}
    """
    plan = compile_yaml(text, env={"MODELS_DIR": "/srv/models", "TTL": "30"})
    assert plan.ok, plan.diagnostics
    assert plan.config.models["m"].cmd.endswith("--name /srv/models/gguf")
    assert plan.config.models["m"].ttl == 30  # a whole-value env ref is typed like YAML


def test_env_unset_is_one_located_error():
    text = f"""\
    models:
      m:
        cmd: {FAKE} --port ${{PORT}} --name ${{env.NOPE_NOT_SET}}
    """
    plan = compile_yaml(text, env={})
    d = one(plan, "LS305")
    assert d.message == "environment variable 'NOPE_NOT_SET' is not set"
    assert at(d) == locate(text, "${env.NOPE_NOT_SET}")
    assert codes(plan) == ["LS305"], "the leftover reference is not reported again"


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\0b"])
def test_env_value_with_newline_cr_or_nul(value):
    text = f"""\
    models:
      m: {{cmd: "{FAKE} --port ${{PORT}} ${{env.BAD}}"}}
    """
    d = one(compile_yaml(text, env={"BAD": value}), "LS305")
    assert "newline" in d.message


def test_env_in_keys_too():
    text = f"""\
    models:
      ${{env.MODEL}}: {{cmd: "{FAKE} --port ${{PORT}}"}}
    """
    plan = compile_yaml(text, env={"MODEL": "from-env"})
    assert plan.models == ("from-env",)


def test_set_params_by_id_keys_expand_macros_and_become_aliases():
    text = f"""\
    models:
      gpt:
        cmd: {FAKE} --port ${{PORT}}
        filters:
          setParamsByID:
            "${{MODEL_ID}}:high": {{reasoning: high}}
            "${{MODEL_ID}}": {{reasoning: medium}}
    """
    plan = compile_yaml(text)
    assert plan.ok, plan.diagnostics
    assert plan.aliases == {"gpt:high": "gpt"}


def test_set_params_by_id_keys_that_expand_alike_are_refused():
    text = f"""\
    macros:
      FIRST: shared
    models:
      gpt:
        cmd: {FAKE} --port ${{PORT}}
        filters:
          setParamsByID:
            shared: {{temperature: 0.1}}
            "${{FIRST}}": {{temperature: 0.2}}
    """
    d = one(compile_yaml(text), "LS304")
    assert d.is_error
    assert d.message == "setParamsByID keys 'shared' and '${FIRST}' both resolve to 'shared'"
    assert at(d) == locate(text, '"${FIRST}"')


def test_unknown_macro_outside_models_is_refused_even_without_models():
    text = """\
    peers:
      openrouter:
        proxy: https://openrouter.ai/api
        apiKey: "${KEY}"
        models: [llama-3.1-8b]
    """
    d = one(compile_yaml(text), "LS307")
    assert d.message == "unknown macro '${KEY}'" and d.path == "peers.openrouter.apiKey"
    assert at(d) == locate(text, "${KEY}")


def test_ports_past_65535_warn():
    text = f"""\
    startPort: 65535
    models:
      a: {{cmd: "{FAKE} --port ${{PORT}}"}}
      b: {{cmd: "{FAKE} --port ${{PORT}}"}}
    """
    d = one(compile_yaml(text), "LS411")
    assert d.message == "${PORT} would be 65536, above 65535: it cannot start"
    assert at(d) == locate(text, "b:")


def test_a_hash_after_arguments_in_cmd_is_not_a_comment():
    # llama-swap drops whole '#' lines only; a trailing '# ...' goes to the program.
    text = f"""\
    models:
      a:
        cmd: |
          {FAKE} --port ${{PORT}}
          # a whole comment line: dropped
          --name "x # quoted" --tag=#1 a#b
          --ctx 8192   # bumped from 4096
    """
    plan = compile_yaml(text)
    assert plan.ok
    d = one(plan, "LS412")
    assert d.message == (
        "'#' after arguments in cmd is not a comment: the program gets '# bumped from 4096' as arguments"
    )
    assert at(d) == locate(text, "# bumped")
    argv = split_command(plan.config.models["a"].cmd)
    assert argv[-6:] == ["--ctx", "8192", "#", "bumped", "from", "4096"]  # as llama-swap runs it
    assert "x # quoted" in argv and "--tag=#1" in argv and "a#b" in argv


def test_no_inline_comment_warning_for_quoted_or_mid_word_hashes():
    text = f"""\
    models:
      a:
        cmd: {FAKE} --port ${{PORT}} --name "#x" '# y' a#b --c=#d \\#e
    """
    assert "LS412" not in codes(compile_yaml(text))


def test_a_cmd_written_as_a_list_is_one_error():
    # llama-swap refuses it when decoding; the ${PORT} inside it is no second problem.
    text = """\
    models:
      a:
        cmd: [llama-server, --port, "${PORT}"]
    """
    plan = compile_yaml(text)
    assert [(d.code, d.message) for d in plan.diagnostics if d.is_error] == [
        ("LS302", "'models.a.cmd' must be a string, got a list")
    ]
