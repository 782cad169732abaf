"""Smoke tests of the tier's infrastructure: the built llama-server and the tiny GGUFs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from llamacpp_helpers import (
    http_request,
    post_json,
    running_llama_server,
    stop,
    stream_sse,
    wait_healthy,
)
from support.upstream import pid_alive

HOST = "127.0.0.1"


def test_binary_reports_version(llama_server_bin: Path) -> None:
    proc = subprocess.run(
        [str(llama_server_bin), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "version" in (proc.stdout + proc.stderr).lower()


def test_models_are_distinct_and_deterministic(gguf_models: dict[str, Path], tmp_path: Path) -> None:
    import gguf_models as models

    assert len(gguf_models) == 2
    blobs = {name: path.read_bytes() for name, path in gguf_models.items()}
    assert len(set(blobs.values())) == 2
    again = models.write_test_models(tmp_path)
    for name, path in again.items():
        assert path.read_bytes() == blobs[name], f"{name} is not deterministic"


@pytest.mark.parametrize("model_name", ["tiny-llama-a", "tiny-llama-b"])
def test_llama_server_serves_chat_and_stops(
    llama_server_bin: Path, gguf_models: dict[str, Path], tmp_path: Path, model_name: str
) -> None:
    log_path = tmp_path / "llama-server.log"
    with running_llama_server(
        llama_server_bin, gguf_models[model_name], log_path=log_path, host=HOST, alias=model_name
    ) as (proc, port):
        ready_s = wait_healthy(proc, HOST, port, timeout=60, log_path=log_path)
        print(
            f"\n{model_name}: llama-server pid {proc.pid} healthy on :{port} "
            f"{ready_s * 1000:.0f} ms after spawn"
        )

        status, models_body = http_request("GET", HOST, port, "/v1/models")
        assert status == 200
        ids = [m["id"] for m in json.loads(models_body)["data"]]
        assert model_name in ids

        request = {
            "model": model_name,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
            "temperature": 0,
        }
        status, body = post_json(HOST, port, "/v1/chat/completions", request)
        assert status == 200, body
        assert body["object"] == "chat.completion"
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert isinstance(choice["message"]["content"], str)
        assert choice["finish_reason"] in ("length", "stop")
        assert 0 < body["usage"]["completion_tokens"] <= 8

        chunks = list(stream_sse(HOST, port, "/v1/chat/completions", {**request, "stream": True}))
        assert chunks and chunks[-1] == "[DONE]", chunks[-3:]
        events = [json.loads(c) for c in chunks[:-1]]
        assert all(e["object"] == "chat.completion.chunk" for e in events)
        deltas = [e["choices"][0]["delta"] for e in events if e.get("choices")]
        assert any(d.get("content") for d in deltas), events
        finishes = [e["choices"][0].get("finish_reason") for e in events if e.get("choices")]
        assert [f for f in finishes if f] in (["length"], ["stop"]), finishes

        pid = proc.pid
        code = stop(proc)  # SIGTERM, SIGKILL only after 15 s
        assert code is not None
        assert not pid_alive(pid), f"pid {pid} still alive after SIGTERM"
        with pytest.raises(OSError):
            http_request("GET", HOST, port, "/health", timeout=2.0)
