"""One way to say a problem: the Reporter every pass reports through, and the one
did-you-mean helper every hint comes from."""

from __future__ import annotations

import ast
from pathlib import Path

import llamaswap.compiler
from llamaswap.compiler.diagnostics import Diagnostic, Reporter, Severity
from llamaswap.compiler.source import PathReporter, Pos, load_document
from llamaswap.compiler.suggest import closest, did_you_mean

COMPILER_DIR = Path(llamaswap.compiler.__file__).parent
PACKAGE_DIR = COMPILER_DIR.parent


def test_the_reporter_builds_located_values_in_the_order_found() -> None:
    report = Reporter("c.yaml")
    report.error("LS303", "bad", Pos(3, 5), "models.a", hint="fix it", length=4)
    report.warning("LS406", "dropped")
    report.info("LS450", "symbolic", Pos(1, 1), "matrix.sets.big")
    assert report.diagnostics == [
        Diagnostic(Severity.ERROR, "LS303", "bad", "c.yaml", 3, 5, "models.a", hint="fix it", length=4),
        Diagnostic(Severity.WARNING, "LS406", "dropped", "c.yaml", None, None, None),
        Diagnostic(Severity.INFO, "LS450", "symbolic", "c.yaml", 1, 1, "matrix.sets.big"),
    ]


def test_the_path_reporter_places_a_problem_by_its_path_in_the_tree() -> None:
    doc = load_document("models:\n  a:\n    cmd: serve --port 1\n    ttl: [1]\n", "c.yaml")
    report = PathReporter("c.yaml", doc.root)
    report.error_at("LS303", "value", ("models", "a", "cmd"))  # a one-line scalar: underlined whole
    report.warning_at("LS303", "key", ("models", "a", "cmd"), key=True)
    report.error_at("LS302", "list", ("models", "a", "ttl"))  # not a scalar: one caret
    report.error_at("LS302", "missing", ("models", "a", "nope", 0))  # stops early: the deepest node
    assert [(d.severity, d.line, d.column, d.path, d.length) for d in report.diagnostics] == [
        (Severity.ERROR, 3, 10, "models.a.cmd", len("serve --port 1")),
        (Severity.WARNING, 3, 5, "models.a.cmd", 3),
        (Severity.ERROR, 4, 10, "models.a.ttl", 1),
        (Severity.ERROR, 3, 5, "models.a.nope[0]", 1),
    ]


def test_closest_tries_each_step_only_when_asked() -> None:
    assert closest("modles", ["models", "macros"]) == "models"
    assert closest("zzz", ["models"]) is None
    # fold: case and separators (config keys)
    assert closest("LOGLEVEL", ["logLevel"]) is None
    assert closest("LOGLEVEL", ["logLevel"], fold=True) == "logLevel"
    assert closest("log_level", ["logLevel", "logToStdout"], fold=True) == "logLevel"
    assert closest("health-check_timeout", ["healthCheckTimeout"], fold=True) == "healthCheckTimeout"
    # partial: a prefix either way, then a looser match (model and set names)
    models = ["llama-3.1-8b-instruct", "qwen"]
    assert closest("llama", models) is None
    assert closest("llama", models, partial=True) == "llama-3.1-8b-instruct"
    assert closest("qwen-coder-32b", ["qwen", "qwen-coder"], partial=True) == "qwen-coder"
    assert closest("qwen3", ["qwen-coder"]) is None
    assert closest("qwen3", ["qwen-coder"], partial=True) == "qwen-coder"
    # cutoff
    assert closest("qwen3", ["qwen-coder"], cutoff=0.5) == "qwen-coder"


def test_did_you_mean_words_the_hint_as_the_user_would_write_the_name() -> None:
    assert did_you_mean("standrd", ["standard"]) == "did you mean 'standard'?"
    assert did_you_mean("standrd", ["standard"], written="+{}") == "did you mean '+standard'?"
    assert did_you_mean("MODLE", ["MODEL_ID"], written="${{{}}}") == "did you mean '${MODEL_ID}'?"
    assert did_you_mean("zzz", ["standard"]) is None


def _calls(tree: ast.AST, name: str) -> int:
    return sum(
        1
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and (
            (isinstance(n.func, ast.Name) and n.func.id == name)
            or (isinstance(n.func, ast.Attribute) and n.func.attr == name)
        )
    )


def _imports(tree: ast.AST, module: str) -> bool:
    return any(
        (isinstance(n, ast.Import) and any(a.name == module for a in n.names))
        or (isinstance(n, ast.ImportFrom) and n.module == module)
        for n in ast.walk(tree)
    )


def test_diagnostics_are_built_in_one_place_and_hints_come_from_one_helper() -> None:
    built = {}
    difflib_users = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        rel = path.relative_to(PACKAGE_DIR).as_posix()
        if _calls(tree, "Diagnostic"):
            built[rel] = _calls(tree, "Diagnostic")
        if _imports(tree, "difflib"):
            difflib_users.append(rel)
    assert built == {"compiler/diagnostics.py": 1}, "build diagnostics through diagnostics.Reporter"
    assert difflib_users == ["compiler/suggest.py"], "suggest names through compiler/suggest.py"
