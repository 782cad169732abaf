"""Inputs built to exhaust the compiler end in a located error, quickly."""

from __future__ import annotations

import time

from llamaswap.compiler.plan import compile_text


def test_an_alias_bomb_is_refused_without_expanding_it():
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    lines.append('models:\n  m: {cmd: "server --port ${PORT}"}')
    started = time.perf_counter()
    plan = compile_text("\n".join(lines) + "\n", "bomb.yaml")
    assert time.perf_counter() - started < 5  # 10^12 values if expanded
    assert [(d.code, d.line) for d in plan.diagnostics] == [("LS300", 1)]
    assert "aliases" in plan.diagnostics[0].message and not plan.ok


def test_anchors_in_an_extension_field_aliases_and_merge_keys_work():
    text = """\
x-base: &base {cmd: "server --port ${PORT}", ttl: 5}
models:
  a: *base
  b:
    <<: *base
    ttl: 7
"""
    plan = compile_text(text, "aliases.yaml")
    assert plan.ok and not plan.diagnostics, plan.diagnostics
    assert plan.config.models["a"].ttl == 5 and plan.config.models["b"].ttl == 7
