"""Faults a new user's client or upstream brings, found by probing a running serve: each
test names what the client saw before the fix. The upstream is the scripted raw socket
server (tests/support/scripted_upstream.py, the model's cmd) behind one real `llamaswap
serve`; the client is a raw socket or urllib, so every byte is the test's own.
"""

from __future__ import annotations

import gzip
import shlex
import socket
from pathlib import Path

import pytest
from serve_support import DEADLINE, PY, ServeFactory, model
from support.upstream import http

SCRIPT = Path(__file__).resolve().parent.parent / "support" / "scripted_upstream.py"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    factory = ServeFactory(tmp_path_factory.mktemp("faults"))
    cmd = f"{shlex.quote(PY)} {shlex.quote(str(SCRIPT))} --port ${{PORT}}"
    srv = factory({"healthCheckTimeout": 30, "models": {"m": model(cmd)}})
    try:
        yield srv
    finally:
        factory.finish()


def test_a_gzip_encoded_body_reaches_the_upstream_byte_for_byte(srv):
    """Before: aiohttp decompressed the body, which went upstream still labelled gzip and
    shorter than its Content-Length: the upstream waited for the rest and the client hung
    (until timeouts.responseHeader, 600 s)."""
    body = gzip.compress(b'{"prompt":"hello"}' * 50)
    resp = http(
        "POST",
        srv.url + "/upstream/m/echo-body",
        body,
        {"Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=DEADLINE,
    )
    assert resp.status == 200, resp
    assert resp.body == body
