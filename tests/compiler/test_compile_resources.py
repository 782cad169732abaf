"""Resources (llamaswap extension): the schema with located errors and hints, Check (every
combination of hand-written sets fits) and Derive (`sets: auto`), and their JSON forms."""

from __future__ import annotations

from fractions import Fraction

import pytest
from compiler_support import codes, combos, compile_yaml, locate, one

from llamaswap.compiler.diagnostics import Severity
from llamaswap.compiler.resources import UNITS, format_size, parse_size

GiB = 1 << 30
MiB = 1 << 20

BOX = """\
resources:
  gpu0: {vram: 24GiB}
  gpu1: {vram: 24GiB}
models:
  llama-70b: {cmd: "x --port ${PORT}", resources: {vram: 40GiB, split: [gpu0, gpu1]}}
  qwen-32b: {cmd: "x --port ${PORT}", resources: {vram: 20GiB}}
  coder-7b: {cmd: "x --port ${PORT}", resources: {vram: 7.5GiB}}
  embed: {cmd: "x --port ${PORT}", resources: {vram: 1.5GiB, devices: [gpu1]}}
matrix:
"""


# -- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written, expected",
    [
        ("24GiB", 24 * GiB),
        ("1.5GiB", 3 * GiB // 2),
        ("512MiB", 512 * MiB),
        ("1 KiB", 1024),
        ("2TiB", 2 << 40),
        ("24GB", 24 * 10**9),
        ("10MB", 10**7),
        ("3KB", 3000),
        ("7B", 7),
        (".5GiB", GiB // 2),
        (24, 24 * MiB),
        (1.5, 3 * MiB // 2),
        ("100", 100 * MiB),
        (0, 0),
    ],
)
def test_sizes_take_units_and_bare_numbers_are_mib(written, expected):
    amount, problem, _ = parse_size(written)
    assert problem is None and amount == expected


@pytest.mark.parametrize(
    "written, hint",
    [
        ("24Gib", "did you mean '24GiB'?"),
        ("24gb", "did you mean '24GB'?"),
        ("24G", "did you mean '24GiB'?"),
        ("24Gi", "did you mean '24GiB'?"),
    ],
)
def test_unit_typos_get_a_hint(written, hint):
    amount, problem, got = parse_size(written)
    assert amount is None and "unknown unit" in problem and got == hint


@pytest.mark.parametrize("written", ["-1GiB", -3, True, None, "lots", "GiB", "1..5GiB"])
def test_bad_sizes_are_refused(written):
    amount, problem, _ = parse_size(written)
    assert amount is None and problem


def test_format_size_picks_the_largest_binary_unit():
    assert format_size(Fraction(7, 2) * GiB) == "3.5 GiB"
    assert format_size(1536 * MiB) == "1.5 GiB"
    assert format_size(UNITS["KiB"]) == "1 KiB"
    assert format_size(12) == "12 B"


# -- no resources: exactly as before ---------------------------------------------------------------


def test_a_config_without_resources_has_no_resources_anywhere():
    plan = compile_yaml("""\
        models:
          a: {cmd: "x --port ${PORT}"}
        matrix:
          sets: {s: a}
        """)
    assert plan.ok and plan.resources is None
    assert "resources" not in plan.compile_json() and "resources" not in plan.artifact_json()


# -- the schema ------------------------------------------------------------------------------------


def test_unknown_device_is_located_with_a_did_you_mean():
    text = BOX.replace("devices: [gpu1]", "devices: [gpu2]") + "  sets: {s: embed}\n"
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS319")
    assert (d.line, d.column) == locate(text, "gpu2", dedent=False)
    assert d.hint == "did you mean 'gpu0'?" or d.hint == "did you mean 'gpu1'?"
    assert d.path == "models.embed.resources.devices[0]"


def test_unit_typo_is_located():
    text = BOX.replace("vram: 7.5GiB", "vram: 7.5Gb") + "  sets: {s: coder-7b}\n"
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS318")
    assert (d.line, d.column) == locate(text, "7.5Gb", dedent=False)
    assert d.hint == "did you mean '7.5GB'?" and d.path == "models.coder-7b.resources.vram"


def test_a_model_that_cannot_fit_alone_says_by_how_much():
    text = BOX.replace("vram: 20GiB", "vram: 30GiB") + "  sets: {s: qwen-32b}\n"
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS320")
    assert "qwen-32b cannot fit even alone" in d.message and "(6 GiB short)" in d.message
    assert (d.line, d.column) == locate(text, "resources", 2, dedent=False)


def test_a_resource_no_device_holds_is_named_in_the_hint():
    text = BOX.replace("vram: 20GiB", "vram: 20GiB, ram: 8GiB") + "  sets: {s: qwen-32b}\n"
    d = one(compile_yaml(text, dedent=False), "LS320")
    assert d.hint == "no device holds ram; add it to a device's budget"


def test_split_and_devices_together_and_a_device_listed_twice():
    text = (
        BOX.replace("split: [gpu0, gpu1]", "split: [gpu0, gpu0]").replace(
            "devices: [gpu1]", "devices: [gpu1], split: [gpu1]"
        )
        + "  sets: {s: embed}\n"
    )
    plan = compile_yaml(text, dedent=False)
    messages = [d.message for d in plan.diagnostics if d.code == "LS321"]
    assert any("listed twice" in m for m in messages) and any("not both" in m for m in messages)


def test_model_resources_without_devices_is_an_error():
    plan = compile_yaml("""\
        models:
          a: {cmd: "x --port ${PORT}", resources: {vram: 1GiB}}
        """)
    d = one(plan, "LS319")
    assert d.path == "models.a.resources" and "declares none" in d.message


def test_device_budgets_must_be_mappings_and_a_broken_budget_does_not_cascade():
    text = BOX.replace("gpu1: {vram: 24GiB}", "gpu1: 24") + "  sets: {s: llama-70b & embed}\n"
    plan = compile_yaml(text, dedent=False)
    assert codes(plan, Severity.ERROR) == ["LS318"]
    assert one(plan, "LS318").hint == "write gpu1: {vram: 24}"


def test_a_model_without_resources_is_a_warning():
    text = BOX + "  sets: {s: llama-70b}\n"
    text = text.replace("models:\n", 'models:\n  free: {cmd: "x --port ${PORT}"}\n')
    plan = compile_yaml(text, dedent=False)
    assert plan.ok and "LS413" in codes(plan)


def test_groups_engine_warns_that_resources_are_not_used():
    plan = compile_yaml(BOX.replace("matrix:\n", ""), dedent=False)
    assert plan.ok and "LS414" in codes(plan)


# -- Check -----------------------------------------------------------------------------------------


def test_every_combination_of_a_hand_written_set_must_fit():
    text = BOX + "  sets:\n    ok: llama-70b & embed\n    bad: llama-70b & (coder-7b | qwen-32b)\n"
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS220")
    assert d.path == "matrix.sets.bad" and (d.line, d.column) == locate(text, "bad:", dedent=False)
    assert "combination [coder-7b, llama-70b] does not fit" in d.message
    assert "gpu0 would hold llama-70b, coder-7b: vram 27.5 GiB of 24 GiB (3.5 GiB over)" in d.message
    assert "1 more of its combinations do not fit either" in d.message


def test_a_set_that_fits_is_silent():
    plan = compile_yaml(BOX + "  sets:\n    s: qwen-32b & coder-7b & embed\n    t: llama-70b\n", dedent=False)
    assert plan.ok and codes(plan) == []


def test_a_symbolic_set_whose_support_does_not_fit_is_noted():
    plan = compile_yaml(
        BOX + "  sets:\n    s: (qwen-32b | coder-7b) & (llama-70b | embed)\n", dedent=False, budget=1
    )
    assert "LS452" in codes(plan)


# -- Derive ----------------------------------------------------------------------------------------


def test_sets_auto_derives_the_maximal_fitting_combinations():
    plan = compile_yaml(BOX + "  sets: auto\n", dedent=False)
    assert plan.ok, plan.diagnostics
    assert [s.name for s in plan.sets] == ["auto-1", "auto-2"]
    assert combos(plan, "auto-1") == [["embed", "llama-70b"]]
    assert combos(plan, "auto-2") == [["coder-7b", "embed", "qwen-32b"]]
    assert plan.sets[1].dsl == "coder-7b & embed & qwen-32b"
    # The policy works on them as on written sets.
    d = plan.policy.decide("llama-70b", ("embed", "qwen-32b"))
    assert d.evict == ("qwen-32b",) and d.set == "auto-1"


def test_derived_sets_in_json_with_placements():
    plan = compile_yaml(BOX + "  sets: auto\n", dedent=False)
    out = plan.compile_json()
    assert [s["name"] for s in out["sets"]] == ["auto-1", "auto-2"]
    placements = out["resources"]["placements"]
    assert placements[0]["placement"] == {"llama-70b": ["gpu0", "gpu1"], "embed": ["gpu1"]}
    gpu1 = placements[0]["use"][1]
    assert gpu1["device"] == "gpu1" and gpu1["use"]["vram"] == {
        "used": 20 * GiB + 3 * GiB // 2,
        "budget": 24 * GiB,
    }
    assert plan.artifact_json()["resources"] == out["resources"]


def test_sets_auto_without_resources_is_an_error():
    plan = compile_yaml("""\
        models:
          a: {cmd: "x --port ${PORT}"}
        matrix:
          sets: auto
        """)
    d = one(plan, "LS221")
    assert d.path == "matrix.sets" and (d.line, d.column) == (4, 9)


def test_sets_auto_under_routing():
    text = BOX.replace("matrix:\n", "routing:\n  router:\n    use: matrix\n    settings:\n      matrix:\n")
    plan = compile_yaml(text + "        sets: auto\n", dedent=False)
    assert plan.ok and [s.name for s in plan.sets] == ["auto-1", "auto-2"]


def test_sets_auto_past_the_budget_is_an_error():
    plan = compile_yaml(BOX + "  sets: auto\n", dedent=False, budget=1)
    assert "LS222" in codes(plan)


def test_models_needing_nothing_join_every_derived_set():
    text = BOX.replace("models:\n", 'models:\n  free: {cmd: "x --port ${PORT}", resources: {}}\n')
    plan = compile_yaml(text + "  sets: auto\n", dedent=False)
    assert plan.ok and all("free" in s.combinations[0] for s in plan.sets)


def test_derivation_is_deterministic():
    first = compile_yaml(BOX + "  sets: auto\n", dedent=False).compile_json()
    assert all(compile_yaml(BOX + "  sets: auto\n", dedent=False).compile_json() == first for _ in range(3))


# -- Place: device ids and the ${GPU} / ${GPUS} macros ------------------------------------------


def test_device_index_defaults_to_position_and_may_be_a_number_or_an_id():
    text = """\
    resources:
      gpu0: {vram: 24GiB}
      gpu1: {vram: 24GiB, index: GPU-5fd2a5c4}
      gpu2: {vram: 24GiB, index: 7}
    models:
      a: {cmd: "x --port ${PORT}", resources: {vram: 1GiB}}
    matrix:
      sets: auto
    """
    plan = compile_yaml(text)
    assert plan.ok, codes(plan)
    assert [d.index for d in plan.resources.devices] == ["0", "GPU-5fd2a5c4", "7"]
    assert plan.resources.devices[1].budgets == {"vram": 24 * GiB}  # index is no resource


@pytest.mark.parametrize(
    "index, message",
    [
        ("[0]", "device gpu1: index must be a device number or id, got a list"),
        ("-1", "device gpu1: index must be a device number or id, got -1"),
        ("0", "device gpu1: index 0 is already device gpu0's"),
    ],
)
def test_a_bad_or_repeated_device_index_is_a_located_error(index, message):
    text = f"""\
    resources:
      gpu0: {{vram: 24GiB}}
      gpu1: {{vram: 24GiB, index: {index}}}
    models:
      a: {{cmd: "x --port ${{PORT}}", resources: {{vram: 1GiB}}}}
    matrix:
      sets: auto
    """
    d = one(compile_yaml(text), "LS318")
    assert d.message == message
    assert d.hint


def test_gpu_macros_stay_for_start_time_in_models_with_resources():
    text = """\
    resources:
      gpu0: {vram: 24GiB}
    models:
      a:
        cmd: "x --port ${PORT} --device ${GPU}"
        cmdStop: "stop ${PID} ${GPUS}"
        env: ["MY_GPUS=${GPUS}"]
        resources: {vram: 1GiB}
    matrix:
      sets: auto
    """
    plan = compile_yaml(text)
    assert plan.ok, codes(plan)
    model = plan.config.models["a"]
    assert model.cmd.endswith("--device ${GPU}")
    assert tuple(model.env) == ("MY_GPUS=${GPUS}",)


def test_gpu_macro_in_a_model_without_resources_is_a_located_error():
    text = """\
    resources:
      gpu0: {vram: 24GiB}
    models:
      a: {cmd: "x --port ${PORT}", resources: {vram: 1GiB}}
      b: {cmd: "x --port ${PORT} --device ${GPU}"}
    matrix:
      sets: auto
    """
    d = one(compile_yaml(text), "LS307")
    assert "the model declares no resources" in d.message
    assert (d.line, d.column) == locate(text, "${GPU}")
    assert "resources" in d.hint


def test_gpu_macro_outside_cmd_and_env_is_a_located_error():
    text = """\
    resources:
      gpu0: {vram: 24GiB}
    models:
      a: {cmd: "x --port ${PORT}", proxy: "http://h${GPU}:${PORT}", resources: {vram: 1GiB}}
    matrix:
      sets: auto
    """
    d = one(compile_yaml(text), "LS307")
    assert d.message == "'${GPU}' has a value only in cmd, cmdStop and env"
