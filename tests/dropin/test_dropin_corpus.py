"""Drop-in acceptance on the corpus: every config llama-swap starts compiles (warnings
allowed, errors under --strict only when we warn) and serves with the /v1/models IDs
llama-swap lists; every config llama-swap refuses fails compile with a located error."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from corpus_cases import Case, cases
from serve_support import start_serve

from llamaswap.compiler.plan import CompileOptions, compile_text

CASES = cases()
STARTS = [c for c in CASES if c.starts]
REFUSED = [c for c in CASES if not c.starts]


def compile_case(case: Case):
    return compile_text(case.path.read_text(), str(case.path), CompileOptions(env={}))


def where(plan) -> str:
    return "\n".join(f"  {d.severity.value} {d.code}@{d.line}: {d.message}" for d in plan.diagnostics)


def test_corpus_is_large_and_mixed() -> None:
    assert len(STARTS) >= 20 and len(REFUSED) >= 15


@pytest.mark.parametrize("case", STARTS, ids=lambda c: c.name)
def test_llama_swap_starts_it_so_compile_accepts_it(case: Case) -> None:
    plan = compile_case(case)
    assert plan.ok, f"{case.name}: llama-swap starts it, compile refused it:\n{where(plan)}"
    got = {(d.code, d.line) for d in plan.diagnostics if d.severity.value == "warning"}
    missing = [w for w in case.warns if w not in got]
    assert not missing, f"{case.name}: expected warnings {missing} not given:\n{where(plan)}"


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_llama_swap_refuses_it_so_compile_refuses_it(case: Case) -> None:
    plan = compile_case(case)
    assert not plan.ok, f"{case.name}: llama-swap refuses it ({case.message}), compile accepted it"
    errors = {(d.code, d.line) for d in plan.diagnostics if d.is_error}
    assert case.error in errors, f"{case.name}: expected error {case.error}:\n{where(plan)}"
    assert all(d.line is not None and d.column is not None for d in plan.diagnostics if d.is_error)


@pytest.mark.parametrize("case", [c for c in STARTS if c.warns][:3], ids=lambda c: c.name)
def test_strict_compile_turns_the_warnings_into_failure(case: Case) -> None:
    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "llamaswap", "compile", *extra, str(case.path)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    assert run().returncode == 0
    strict = run("--strict")
    assert strict.returncode == 1
    assert "Traceback" not in strict.stdout + strict.stderr


def serve_and_list(case: Case, tmp_path) -> str | None:
    """Serve the case and compare its /v1/models IDs; what went wrong, or None."""
    work = tmp_path / case.name
    work.mkdir()
    server = start_serve(case.path, cwd=work)
    try:
        resp = server.get("/v1/models")
        if resp.status != 200:
            return f"/v1/models answered {resp.status}"
        body = resp.json()
        ids = [r["id"] for r in body["data"]]
        if body["object"] != "list" or sorted(ids) != sorted(case.ids) or ids != sorted(ids):
            return f"/v1/models lists {ids}, llama-swap lists {sorted(case.ids)}"
    finally:
        code = server.terminate()
    if code != 0 or "Traceback" in server.log():
        return f"exit {code}:\n{server.log()}"
    return None


@pytest.mark.e2e
@pytest.mark.timeout(600)  # one serve per corpus config: minutes on a loaded 2-core machine
def test_serve_lists_the_ids_llama_swap_lists(tmp_path) -> None:
    # Two servers at once: each spends its start-up on one core.
    with ThreadPoolExecutor(max_workers=2) as pool:
        problems = dict(
            zip((c.name for c in STARTS), pool.map(lambda c: serve_and_list(c, tmp_path), STARTS))
        )
    failed = {name: why for name, why in problems.items() if why is not None}
    assert not failed, failed


@pytest.mark.e2e
@pytest.mark.parametrize(
    "name, model",
    [("proxy-only-remote", "gpu-box-llama"), ("null-model", "parked"), ("cmd-unbalanced-quote", "broken")],
)
def test_a_model_that_cannot_start_fails_clearly_when_requested(name: str, model: str, tmp_path) -> None:
    case = next(c for c in STARTS if c.name == name)
    server = start_serve(case.path, cwd=tmp_path)
    try:
        resp = server.chat(model)
        assert resp.status == 500, resp
        message = resp.json()["error"]["message"]
        assert model in message and ("no cmd" in message or "cannot split command" in message), message
        assert server.get("/health").status == 200  # still serving
    finally:
        code = server.terminate()
    assert code == 0 and "Traceback" not in server.log()
