"""Real llama-swap configs, as people publish them, against what llama-swap does with them.

tests/data/realworld/ holds one published config per file (its first line names the source
repository and path). llama-swap-resolved.json beside them records what llama-swap's own
loader (HEAD 0bdb3720, built locally, run with ENV below) made of each one: the error it
refused it with, or every model's cmd, cmdStop, proxy, aliases, env, ttl, … after macro,
env and port substitution, and the groups. Fields at llama-swap's defaults are left out.

The checks:
- a config llama-swap loads, llamaswap compiles without an error, to the same values;
- a config llama-swap refuses (at load, or when its router starts), llamaswap refuses too,
  with the error that says why, located (line and column) and with a hint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from golden_helper import REPO_ROOT

from llamaswap.compiler.plan import CompileOptions, Plan, compile_text

DATA = REPO_ROOT / "tests" / "data" / "realworld"
CONFIGS = sorted(DATA.glob("*.yaml"))
RESOLVED: dict[str, dict[str, Any]] = json.loads((DATA / "llama-swap-resolved.json").read_text())

# The environment the configs were recorded with (their ${env.X}); VAR_NAME is unset: the
# example config names it only in a comment, which llama-swap does not read.
ENV = {
    "HOME": "/home/user",
    "HF_TOKEN": "hf_test",
    "LLAMA_MODELS_DIR": "/models",
    "LLAMA_SWAP_API_KEY": "sk-test",
    "LLM_ROOT_PATH": "/srv/llm",
    "OPENROUTER_API_KEY": "sk-or-test",
    "API_KEY_1": "key-one",
    "API_KEY_2": "key-two",
}

# Configs llama-swap refuses: the error of ours that says what llama-swap's says
# (code, line, column).
REFUSED = {
    # "unknown macro '${KEEP}'": an envsubst template ($${KEEP}), not a config yet.
    "artpods56--llama-swap-setup--base": ("LS307", 7, 23),
    # "duplicate alias hermes-agent": two models list the same aliases.
    "blockfeed--llama-swap_homelab": ("LS309", 501, 9),
    # "profile must be a mapping …; the legacy list syntax is no longer supported"
    "jwmarb--llms-portable": ("LS314", 371, 5),
    "llama-swap--aider-qwq-coder": ("LS314", 7, 7),
    # "proxy uses ${PORT} but cmd does not": no proxy (so the default) and a fixed port.
    "llama-swap--config.example": ("LS308", 459, 3),
    "llama-swap--docker-config.example": ("LS308", 21, 3),
    "llama-swap--docker-unified-config.example": ("LS308", 34, 3),
    "llama-swap--docs-speculative-decoding-2": ("LS308", 3, 3),
    # "unknown macro '${llama_server}'": a -config-dir fragment, its macros in another file.
    "luksamuk--ai-dotfiles--android-qwen3.5-2b": ("LS307", 18, 7),
    # "unknown macro '${HOME}'": a shell variable, not a macro.
    "ramb0t--fw-desktop-llm": ("LS307", 19, 12),
    # llama-swap loads these, then fails to start its router: "no model config for X"
    # (a group member that is not a model; in flowy0's the model is commented out).
    "LeBohdan--llama-swap-confdir": ("LS215", 167, 9),
    "flowy0--gb10-experiments": ("LS215", 770, 15),
}

# llama-swap's values for fields left out of the record.
DEFAULTS: dict[str, Any] = {
    "checkEndpoint": "/health",
    "cmdStop": "",
    "unlisted": False,
    "useModelName": "",
    "name": "",
    "concurrencyLimit": 0,
    "env": [],
    "aliases": [],
    "sendLoadingState": False,
    "ttl": 0,
}


def compile_config(path: Path) -> Plan:
    rel = path.relative_to(REPO_ROOT).as_posix()
    return compile_text(path.read_text(encoding="utf-8"), rel, CompileOptions(env=ENV))


def name(path: Path) -> str:
    return path.stem


def test_the_collection_is_large_and_recorded():
    assert len(CONFIGS) >= 65
    assert {name(p) for p in CONFIGS} == set(RESOLVED) - {"_about"}
    assert set(REFUSED) == {
        n for n, r in RESOLVED.items() if n != "_about" and ("refused" in r or "startup_refused" in r)
    }


@pytest.mark.parametrize("path", CONFIGS, ids=name)
def test_each_file_names_its_source(path: Path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# source: github.com/"), first


ACCEPTED = [p for p in CONFIGS if name(p) not in REFUSED]


@pytest.mark.parametrize("path", ACCEPTED, ids=name)
def test_a_config_llama_swap_loads_compiles_without_errors(path: Path):
    plan = compile_config(path)
    assert [d for d in plan.diagnostics if d.is_error] == []


def ours(plan: Plan, mid: str) -> dict[str, Any]:
    assert plan.config is not None
    c = plan.config
    m = c.models[mid]
    send = m.send_loading_state if m.send_loading_state is not None else c.send_loading_state
    # llama-swap's alias list also holds setParamsByID keys and aliases equal to the model's
    # own ID (which resolve to the model either way).
    aliases = sorted({a for a, real in plan.aliases.items() if real == mid} | set(m.alias_ids()))
    return {
        "cmd": m.cmd,
        "cmdStop": m.cmd_stop,
        "proxy": m.proxy,
        "checkEndpoint": m.check_endpoint,
        "aliases": aliases,
        "env": list(m.env),
        "ttl": c.global_ttl if m.ttl == -1 else m.ttl,
        "unlisted": m.unlisted,
        "useModelName": m.use_model_name,
        "name": m.name,
        "concurrencyLimit": m.concurrency_limit,
        "sendLoadingState": send,
    }


@pytest.mark.parametrize("path", ACCEPTED, ids=name)
def test_a_config_compiles_to_what_llama_swap_runs(path: Path):
    want = RESOLVED[name(path)]
    plan = compile_config(path)
    assert plan.engine == want["router"]
    assert sorted(plan.models) == sorted(want["models"])
    for mid, fields in want["models"].items():
        assert ours(plan, mid) == {**DEFAULTS, **fields}, mid
    if plan.engine == "group":
        groups = {
            g.name: {
                "swap": g.swap,
                "exclusive": g.exclusive,
                "persistent": g.persistent,
                "members": sorted(g.members),
            }
            for g in plan.groups
            if g.members
        }
        assert groups == want["groups"]
    assert list(plan.preload) == want.get("preload", [])


@pytest.mark.parametrize("path", [p for p in CONFIGS if name(p) in REFUSED], ids=name)
def test_a_config_llama_swap_refuses_is_refused_with_a_located_error(path: Path):
    plan = compile_config(path)
    errors = [d for d in plan.diagnostics if d.is_error]
    assert errors
    assert all(d.line is not None and d.column is not None and d.hint for d in errors), errors
    code, line, column = REFUSED[name(path)]
    assert (code, line, column) in {(d.code, d.line, d.column) for d in errors}, errors


def test_an_anchor_defined_again_names_the_latest_node():
    # 8forty/kfchat repeats `proxy: &kfproxy ...` in every model (yaml.v3 allows it).
    text = "x-a: &port 1\nx-b: &port 2\nmodels:\n  m:\n    cmd: s --port ${PORT}\n    ttl: *port\n"
    plan = compile_text(text, "t.yaml")
    assert plan.ok and plan.config is not None
    assert plan.config.models["m"].ttl == 2


def test_model_hints_hold_for_an_id_with_a_dot():
    text = "models:\n  qwen3.5-9b:\n    cmd: s --port ${PORT}\n    port: 8081\n    unload: 60\n"
    plan = compile_text(text, "t.yaml")
    hints = {d.path: d.hint for d in plan.diagnostics}
    assert "proxy" in (hints["models.qwen3.5-9b.port"] or "")
    assert "ttl" in (hints["models.qwen3.5-9b.unload"] or "")


def test_a_shell_variable_used_as_a_macro_hints_at_env():
    text = "models:\n  m:\n    cmd: s --port ${PORT} -m ${HOME}/m.gguf\n"
    (err,) = [d for d in compile_text(text, "t.yaml").diagnostics if d.is_error]
    assert err.code == "LS307" and "${env.HOME}" in (err.hint or "")


# What llama-swap substitutes for `--t ${x}` with `macros: {x: VALUE}` (recorded with its loader):
# yaml.v3 types the plain scalar, Go's %v writes it.
@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("1e6", "1e+06"),
        ("1000000.0", "1e+06"),
        ("1234567.5", "1.2345675e+06"),
        ("123456.7", "123456.7"),
        ("100000.0", "100000"),
        ("0.00001", "1e-05"),
        ("-2.5e-7", "-2.5e-07"),
        ("1e21", "1e+21"),
        ("1.0", "1"),
        ("08", "8"),
        ("0777", "511"),
        ("1_000", "1000"),
        ("0x10", "16"),
        ("12345678901234567890", "12345678901234567890"),
    ],
)
def test_a_macro_value_is_typed_and_written_as_llama_swap_does(value: str, text: str):
    plan = compile_text(
        f"macros:\n  x: {value}\nmodels:\n  m:\n    cmd: s --port ${{PORT}} --t ${{x}}\n", "t.yaml"
    )
    assert plan.ok and plan.config is not None
    assert plan.config.models["m"].cmd == f"s --port 5800 --t {text}"


@pytest.mark.parametrize(
    ("value", "ttl"), [("1_000", 1000), ("0b101", 5), ("0o17", 15), ("+12", 12), ("0777", 511)]
)
def test_an_integer_key_reads_go_integers(value: str, ttl: int):
    plan = compile_text(f"models:\n  m:\n    cmd: s --port ${{PORT}}\n    ttl: {value}\n", "t.yaml")
    assert plan.ok and plan.config is not None
    assert plan.config.models["m"].ttl == ttl


@pytest.mark.parametrize("text", ["", "---\n", "null\n", "---\n---\nmodels: {m: {cmd: x}}\n"])
def test_an_empty_first_document_is_an_empty_config(text: str):
    # llama-swap reads the first document only, and an empty one is a config with no models.
    plan = compile_text(text, "t.yaml")
    assert plan.ok and plan.config is not None and plan.models == ()


def test_a_second_document_is_ignored_with_a_warning():
    text = "models:\n  m:\n    cmd: s --port ${PORT}\n---\nmodels: {n: {cmd: x}}\n"
    plan = compile_text(text, "t.yaml")
    assert plan.ok and plan.models == ("m",)
    (w,) = plan.diagnostics
    assert (w.code, w.line, w.column) == ("LS415", 4, 1)


def test_start_port_may_be_a_global_macro():
    text = "macros:\n  base: 7000\nstartPort: ${base}\nmodels:\n  m:\n    cmd: s --port ${PORT}\n"
    plan = compile_text(text, "t.yaml")
    assert plan.ok and plan.ports == {"m": 7000}


@pytest.mark.parametrize("value", ["2026-01-02", "2026-01-02T10:00:00Z", "2026-1-2 3:04:05"])
def test_a_date_macro_is_refused_as_llama_swap_refuses_it(value: str):
    text = f"macros:\n  x: {value}\nmodels:\n  m:\n    cmd: s --port ${{PORT}} ${{x}}\n"
    errors = [d for d in compile_text(text, "t.yaml").diagnostics if d.is_error]
    assert ("LS306", 2, 6) in {(d.code, d.line, d.column) for d in errors}
    quoted = compile_text(
        f'macros:\n  x: "{value}"\nmodels:\n  m:\n    cmd: s --port ${{PORT}} ${{x}}\n', "t.yaml"
    )
    assert quoted.ok


# llama-swap substitutes ${env.X} into the YAML text, escaping \ and " for double quotes:
# outside double quotes the escapes stay (recorded with its loader).
@pytest.mark.parametrize(
    ("cmd", "value", "want", "warned"),
    [
        ("s ${env.X}", 'a"b', 's a\\"b', True),
        ("s ${env.X}", "C:\\m\\x", "s C:\\\\m\\\\x", True),
        ("'s ${env.X}'", "C:\\m", "s C:\\\\m", True),
        ('"s ${env.X}"', 'C:\\m "q"', 's C:\\m "q"', False),
        ("s ${env.X}", "plain", "s plain", False),
    ],
)
def test_an_env_value_is_substituted_as_llama_swap_substitutes_it(
    cmd: str, value: str, want: str, warned: bool
):
    text = f"models:\n  m:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:9\n"
    plan = compile_text(text, "t.yaml", CompileOptions(env={"X": value}))
    assert plan.ok and plan.config is not None
    assert plan.config.models["m"].cmd == want
    assert any(d.code == "LS412" and "backslash" in d.message for d in plan.diagnostics) is warned


def test_an_env_value_that_changes_the_yaml_is_warned_about():
    text = "models:\n  m:\n    cmd: s ${env.X}\n    proxy: http://127.0.0.1:9\n"
    plan = compile_text(text, "t.yaml", CompileOptions(env={"X": "a # b"}))
    (w,) = [d for d in plan.diagnostics if d.code == "LS412" and "changes how" in d.message]
    assert (w.line, w.column) == (3, 12)
