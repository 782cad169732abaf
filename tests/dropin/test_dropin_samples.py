"""Every sample in samples/valid serves as the README shows: `.venv/bin/llamaswap serve FILE`
from a virtualenv that is not activated, so `llamaswap` (the fake upstream's program in the
samples) is not on PATH. Each sample is served once, all of them at the same time, and one
of its models answers a chat request."""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serve_support import Serve, free_port_block, start_serve

from llamaswap.compiler.plan import compile_text

pytestmark = pytest.mark.e2e

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples" / "valid").glob("*.yaml"))
VENV_BIN = str(Path(sys.executable).parent)


def path_without_venv() -> str:
    """PATH without this interpreter's bin directory (where pip put the `llamaswap` script)."""
    keep = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and os.path.realpath(d) != os.path.realpath(VENV_BIN)
    ]
    return os.pathsep.join(keep or ["/usr/bin", "/bin"])


def on_free_ports(text: str, count: int) -> str:
    """The sample with its startPort moved to a free block (the samples are served at once)."""
    first = free_port_block(count)
    if re.search(r"(?m)^startPort:", text):
        return re.sub(r"(?m)^startPort: *\d+", f"startPort: {first}", text)
    return f"startPort: {first}\n{text}"


def serve_one(sample: Path, tmp: Path) -> tuple[str, str, int, str]:
    plan = compile_text(sample.read_text(encoding="utf-8"), str(sample))
    assert plan.ok, sample.name
    model = min(plan.ports)  # the first model whose cmd takes ${PORT}: no fixed port to clash
    config = tmp / sample.name
    config.write_text(on_free_ports(sample.read_text(encoding="utf-8"), len(plan.ports)), encoding="utf-8")
    work = tmp / sample.stem
    work.mkdir()
    server: Serve = start_serve(config, cwd=work, executable=(os.path.join(VENV_BIN, "llamaswap"),))
    try:
        resp = server.chat(model)
        body = (
            resp.body.decode(errors="replace")
            if resp.status != 200
            else resp.json()["choices"][0]["message"]["content"]
        )
        return sample.name, model, resp.status, body
    finally:
        server.terminate()


def test_every_valid_sample_serves_without_llamaswap_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_without_venv())
    assert not any(
        os.path.exists(os.path.join(d, "llamaswap")) and os.path.realpath(d) == os.path.realpath(VENV_BIN)
        for d in os.environ["PATH"].split(os.pathsep)
    )
    assert len(SAMPLES) >= 10
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda s: serve_one(s, tmp_path), SAMPLES))
    failed = [(name, model, status, body) for name, model, status, body in results if status != 200]
    assert not failed, failed
    for name, model, _, body in results:
        assert body, (name, model)
