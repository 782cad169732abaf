"""The compiler and grammar packages are pure: importing them (every module) in a fresh
interpreter loads no asyncio, aiohttp, click or subprocess (ARCHITECTURE.md)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import llamaswap.compiler
import llamaswap.grammar

FORBIDDEN = ("asyncio", "aiohttp", "click", "subprocess")

PROBE = """
import importlib, json, pkgutil, sys
import llamaswap.compiler, llamaswap.grammar
names = []
for pkg in (llamaswap.compiler, llamaswap.grammar):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
# Exercise the pure passes too: some imports happen lazily inside functions.
from llamaswap.compiler.plan import compile_text
plan = compile_text(open(sys.argv[1]).read(), "x.yaml")
assert plan.ok, plan.diagnostics
print(json.dumps({"modules": names, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
""" % (FORBIDDEN,)


def all_modules() -> list[str]:
    out = []
    for pkg in (llamaswap.compiler, llamaswap.grammar):
        out += [info.name for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    return out


def test_compiler_imports_nothing_impure(tmp_path):
    sample = tmp_path / "c.yaml"
    sample.write_text(
        "models:\n  a: {cmd: 'x --port ${PORT}'}\n  b: {cmd: 'x --port ${PORT}'}\n"
        "matrix:\n  sets: {s: a & b}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(sample)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["modules"]) == set(all_modules()) and report["modules"]
    assert report["loaded"] == [], f"impure modules loaded: {report['loaded']}"


NETWORKX_PROBE = """
import json, sys
from llamaswap.compiler.plan import compile_text
plan = compile_text(open(sys.argv[1]).read(), "x.yaml")
print(json.dumps({"cycles": [d.message for d in plan.diagnostics if d.code == "LS204"],
                  "networkx": "networkx" in sys.modules}))
"""


def _probe_refs(tmp_path, sets: str) -> dict:
    sample = tmp_path / "refs.yaml"
    sample.write_text(
        "models:\n  a: {cmd: 'x --port ${PORT}'}\n  b: {cmd: 'x --port ${PORT}'}\nmatrix:\n  sets:\n" + sets
    )
    result = subprocess.run(
        [sys.executable, "-c", NETWORKX_PROBE, str(sample)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_valid_references_are_ordered_without_networkx_and_a_cycle_is_still_shown_whole(tmp_path):
    # Start-up time: a valid config with `+ref`s is ordered by graphlib; networkx (a slow
    # import) is loaded only to find and report a cycle, which it still shows whole.
    valid = _probe_refs(tmp_path, "    x: a\n    y: +x & b\n    z: +y | +x\n")
    assert valid == {"cycles": [], "networkx": False}
    cycle = _probe_refs(tmp_path, "    x: +z & a\n    y: +x | b\n    z: +y\n    w: +x\n")
    assert cycle == {"cycles": ["set 'x' includes itself: x -> z -> y -> x"], "networkx": True}
