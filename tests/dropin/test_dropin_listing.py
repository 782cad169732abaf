"""/v1/models records as llama-swap writes them, and the startup banner (both pure)."""

from __future__ import annotations

import shlex
from textwrap import dedent

from llamaswap.compiler.plan import CompileOptions, compile_text
from llamaswap.runtime.banner import KEY_PLACEHOLDER, banner, base_url
from llamaswap.runtime.listing import model_records


def plan_of(text: str):
    plan = compile_text(dedent(text), "c.yaml", CompileOptions(env={}))
    assert plan.ok, plan.diagnostics
    return plan


def records(text: str, loaded: frozenset[str] = frozenset()) -> dict[str, dict]:
    out = model_records(plan_of(text), 7, loaded=lambda m: m in loaded)
    assert [r["id"] for r in out] == sorted(r["id"] for r in out)
    return {r["id"]: r for r in out}


def test_aliases_in_declared_order_then_set_params_by_id_names_and_no_empty_key():
    recs = records("""\
        includeAliasesInList: true
        models:
          a:
            cmd: x --port ${PORT}
            aliases: [zeta, alpha]
            metadata: {family: f}
            filters: {setParamsByID: {a-fast: {t: 1}}}
          b:
            cmd: x --port ${PORT}
        """)
    assert recs["a"]["meta"]["llamaswap"] == {
        "family": "f",
        "type": "model",
        "aliases": ["zeta", "alpha", "a-fast"],
    }
    assert recs["b"]["meta"]["llamaswap"] == {"type": "model"}
    assert recs["zeta"]["meta"]["llamaswap"] == {"family": "f", "type": "alias", "modelID": "a"}
    assert recs["a-fast"]["meta"]["llamaswap"]["modelID"] == "a"
    assert set(recs) == {"a", "b", "zeta", "alpha", "a-fast"}


def test_capabilities_render_like_llama_swap():
    recs = records("""\
        models:
          vlm:
            cmd: x --port ${PORT}
            metadata: {context_length: 1, note: kept}
            capabilities: {in: [text, image], out: [text], tools: true, context: 32768}
          tts:
            cmd: x --port ${PORT}
            capabilities: {in: [text], out: [audio]}
        """)
    vlm = recs["vlm"]
    assert vlm["architecture"] == {
        "input_modalities": ["text", "image"],
        "output_modalities": ["text"],
        "modality": "text+image->text",
    }
    assert vlm["capabilities"] == {"vision": True, "function_calling": True}
    assert vlm["supported_parameters"] == ["tools", "tool_choice"]
    assert vlm["context_length"] == 32768
    assert vlm["meta"] == {"llamaswap": {"note": "kept", "type": "model"}, "n_ctx": 32768}
    assert recs["tts"]["capabilities"] == {"audio_speech": True}
    assert "context_length" not in recs["tts"] and "n_ctx" not in recs["tts"]["meta"]


def test_peers_and_selectors_are_listed():
    recs = records(
        """\
        models:
          a: {cmd: "x --port ${PORT}"}
          b: {cmd: "x --port ${PORT}", aliases: [bee]}
        selectors:
          auto: {strategy: warm, targets: [a, bee], name: " Auto "}
          hidden: {strategy: pin, targets: [a], unlisted: true}
        peers:
          box: {proxy: "http://10.0.0.2:8080", models: [big, big, small]}
        """,
        loaded=frozenset({"b"}),
    )
    assert set(recs) == {"a", "b", "auto", "box/big", "box/small"}
    assert recs["box/big"]["name"] == "box: big"
    assert recs["box/big"]["meta"]["llamaswap"] == {"type": "peer", "peerID": "box"}
    auto = recs["auto"]
    assert auto["name"] == "Auto"
    assert auto["meta"]["llamaswap"] == {"type": "selector", "strategy": "warm", "targets": ["a", "bee"]}
    assert auto["status"] == {"value": "loaded"}  # b (through its alias) is loaded


def test_banner_with_no_models_does_not_crash_and_still_gives_two_curls():
    plan = plan_of("healthCheckTimeout: 60\n")
    lines = [line for line, _ in banner(plan, "c.yaml", "127.0.0.1", 8080, "asyncio", "0")]
    curls = [shlex.split(line) for line in lines if line.strip().startswith("curl ")]
    assert [c[2] for c in curls] == ["http://127.0.0.1:8080/health", "http://127.0.0.1:8080/v1/models"]
    assert any("defines no models" in line for line in lines)


def test_banner_curl_uses_a_listed_model_and_a_key_placeholder():
    plan = plan_of("""\
        apiKeys: [sekrit]
        models:
          aaa-hidden: {cmd: "x --port ${PORT}", unlisted: true}
          chat: {cmd: "x --port ${PORT}"}
        """)
    lines = [line for line, _ in banner(plan, "c.yaml", "0.0.0.0", 8080, "asyncio", "0")]
    chat = next(shlex.split(line) for line in lines if "/v1/chat/completions" in line)
    assert '"model": "chat"' in chat[chat.index("-d") + 1]
    assert f"Authorization: Bearer {KEY_PLACEHOLDER}" in chat
    assert "sekrit" not in "\n".join(lines)
    assert any("reachable from other hosts" in line for line in lines)


def test_banner_curl_names_a_model_that_can_start():
    # The first listed models have no cmd or one that cannot be split (LS411): their
    # requests fail, so the printed curl names the first model that can start.
    plan = plan_of("""\
        models:
          aaa-remote: {proxy: "http://127.0.0.1:9"}
          bbb-quote: {cmd: "x --port ${PORT} --alias 'oops"}
          ccc-null:
          chat: {cmd: "x --port ${PORT}"}
        """)
    lines = [line for line, _ in banner(plan, "c.yaml", "127.0.0.1", 8080, "asyncio", "0")]
    chat = next(shlex.split(line) for line in lines if "/v1/chat/completions" in line)
    assert '"model": "chat"' in chat[chat.index("-d") + 1]


def test_banner_curl_falls_back_to_a_listed_model_when_none_can_start():
    plan = plan_of('models:\n  only: {proxy: "http://127.0.0.1:9"}\n')
    lines = [line for line, _ in banner(plan, "c.yaml", "127.0.0.1", 8080, "asyncio", "0")]
    assert any('"model": "only"' in line for line in lines)


def test_ipv6_urls_are_bracketed():
    assert base_url("::1", 8080) == "http://[::1]:8080"
    assert base_url("::", 8080) == "http://[::1]:8080"
    assert base_url("0.0.0.0", 80, tls=True) == "https://127.0.0.1:80"
