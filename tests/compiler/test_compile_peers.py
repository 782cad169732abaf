"""Peers in the compiler: filters and timeouts typed as a model's, with located errors, and
the routing names llama-swap's peer router gives each peer model."""

from __future__ import annotations

from compiler_support import at, compile_yaml, errors, locate

from llamaswap.runtime.limits import peer_timeouts

PEERS = """\
models:
  local: {cmd: "x --port ${PORT}"}
peers:
  box:
    proxy: http://10.0.0.2:8080
    apiKey: k
    models: [llama, shared, other/x]
    filters: {stripParams: "a, b", setParams: {temperature: 0.5}, setParamsByID: {box/llama: {top_k: 1}}}
    timeouts: {connect: 5, streamIdle: 20}
  other:
    proxy: http://10.0.0.3:8080
    models: [shared, x, local]
"""


def test_peer_filters_and_timeouts_are_typed():
    plan = compile_yaml(PEERS, dedent=False)
    assert plan.ok and not plan.diagnostics, plan.diagnostics
    box = plan.virtual.route("box/llama").peer
    assert box.api_key == "k" and box.filters.stripped_keys() == ("a", "b")
    assert box.filters.set_params_by_id == {"box/llama": {"top_k": 1}}
    t = peer_timeouts(box.timeouts)
    assert (t.connect, t.response_header, t.stream_idle) == (5, 60, 20)  # responseHeader: 60 unset
    assert peer_timeouts(plan.virtual.route("other/x").peer.timeouts).response_header == 60


def test_peer_routing_names_are_llama_swaps():
    routes = compile_yaml(PEERS, dedent=False).virtual.routes
    assert {n: (r.peer.id, r.model) for n, r in routes.items()} == {
        "box/llama": ("box", "llama"),
        "box/shared": ("box", "shared"),
        # "other/x" is box's model "other/x": a peer/model name is never another peer's bare name
        "box/other/x": ("box", "other/x"),
        "other/shared": ("other", "shared"),
        "other/x": ("other", "x"),
        "other/local": ("other", "local"),
        "llama": ("box", "llama"),  # bare: one peer lists it
        "x": ("other", "x"),
        "local": ("other", "local"),  # listed, but a local model of that name is asked first
    }
    assert "shared" not in routes  # on two peers: no one's


def test_wrong_peer_filters_and_timeouts_are_located():
    text = """\
    peers:
      box:
        proxy: http://10.0.0.2:8080
        models: [llama]
        filters: {stripParams: [a], setParams: 3}
        timeouts: {connect: "30", responseHeader: -1}
    """
    plan = compile_yaml(text)
    found = {d.path: d for d in errors(plan)}
    assert at(found["peers.box.filters.stripParams"]) == locate(text, "[a]")
    assert "must be a string" in found["peers.box.filters.stripParams"].message
    assert "must be a mapping" in found["peers.box.filters.setParams"].message
    quoted = found["peers.box.timeouts.connect"]
    assert at(quoted) == locate(text, '"30"') and quoted.hint == "remove the quotes around the number"
    negative = found["peers.box.timeouts.responseHeader"]
    assert negative.code == "LS303" and at(negative) == locate(text, "-1")


def test_plan_request_for_a_peer_model_says_where_it_goes(tmp_path):
    import json

    from click.testing import CliRunner

    from llamaswap.cli import cli

    path = tmp_path / "c.yaml"
    path.write_text(PEERS)

    def plan(*args: str):
        r = CliRunner().invoke(cli, ["plan", str(path), *args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.stdout

    text = plan("--request", "llama", "--running", "local")
    assert text.startswith("llama is a peer model: forwarded to peer box (http://10.0.0.2:8080) as 'llama'")
    assert json.loads(plan("--request", "box/llama", "--format", "json")) == {
        "request": "box/llama",
        "peer": "box",
        "proxy": "http://10.0.0.2:8080",
        "model": "llama",
        "evict": [],
        "swap": False,
    }
    assert "peer model" not in plan("--request", "local")  # a local name stays local


def test_a_config_of_peers_only_compiles_without_a_warning():
    # A front host with no GPU of its own: every model is a peer's, and /v1/models lists
    # them, so "the config defines no models" would be false (and fail `compile --strict`).
    plan = compile_yaml(
        "peers:\n  box:\n    proxy: http://10.0.0.2:8080\n    models: [llama]\n", dedent=False
    )
    assert plan.ok and not plan.diagnostics, plan.diagnostics
    assert "box/llama" in plan.virtual.routes


def test_a_config_with_neither_models_nor_peers_still_warns():
    plan = compile_yaml("healthCheckTimeout: 60\n", dedent=False)
    assert [(d.code, d.path) for d in plan.diagnostics] == [("LS303", "models")]
