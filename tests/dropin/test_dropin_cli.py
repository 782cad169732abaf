"""llama-swap's command line end to end: `-config`, `-config-dir` (merged by llama-swap's
rules), `-listen :PORT`, `-tls-cert-file/-tls-key-file` (HTTPS), `-version`, `-watch-config`."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serve_support import DEADLINE, upstream_cmd

from llamaswap.compiler.merge import Source, merge_sources

PY = sys.executable
URL = re.compile(r"serving .* on (https?://127\.0\.0\.1:\d+) ")


def llamaswap(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "llamaswap", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class Running:
    """`llamaswap ARGS...` until its banner is out; then SIGTERM, and it must exit 0."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.err = cwd / f"stderr-{time.monotonic_ns()}"
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [PY, "-m", "llamaswap", *args],
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        out = b""
        deadline = time.monotonic() + DEADLINE
        while not (URL.search(out.decode()) and out.decode().count("curl -s") >= 2 and out.endswith(b"\n")):
            left = deadline - time.monotonic()
            if (
                left <= 0
                or self.proc.poll() is not None
                and not select.select([self.proc.stdout], [], [], 0)[0]
            ):
                self.proc.kill()
                raise AssertionError(f"no banner: {out!r}\n{self.err.read_text()}")
            if select.select([self.proc.stdout], [], [], left)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 4096)  # type: ignore[union-attr]
                if not chunk:
                    self.proc.wait()
                    continue
                out += chunk
        self.banner = out.decode()
        self.url = URL.search(self.banner).group(1)  # type: ignore[union-attr]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(DEADLINE)

    def log(self) -> str:
        return self.err.read_text(errors="replace")


def get_json(url: str, context: ssl.SSLContext | None = None) -> dict:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(url, timeout=DEADLINE) as resp:
        return json.loads(resp.read())


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- -config-dir merge rules (pure) -----------------------------------------------------------


def test_merge_unions_identity_maps_concatenates_lists_and_lets_nulls_yield():
    merged = merge_sources(
        [
            Source("a.yaml", "healthCheckTimeout: 60\napiKeys: [k1]\nmodels:\n  a: {cmd: x}\nlogLevel:\n"),
            Source(
                "b.yaml", "healthCheckTimeout: 60\napiKeys: [k2]\nmodels:\n  b: {cmd: y}\nlogLevel: debug\n"
            ),
            Source("c.yaml", "# only a comment\n"),
        ]
    )
    assert merged.diagnostics == []
    import yaml

    assert yaml.safe_load(merged.text) == {
        "healthCheckTimeout": 60,
        "apiKeys": ["k1", "k2"],
        "models": {"a": {"cmd": "x"}, "b": {"cmd": "y"}},
        "logLevel": "debug",
    }
    assert merged.origins["models.b.cmd"][0] == "b.yaml" and merged.origins["apiKeys[1]"][0] == "b.yaml"


@pytest.mark.parametrize(
    "second, message, line",
    [
        (
            "models:\n  a: {cmd: z}\n",
            "duplicate models 'a' found in b.yaml (already defined in another config source)",
            2,
        ),
        (
            "healthCheckTimeout: 90\n",
            "conflict at 'healthCheckTimeout': b.yaml sets a different value than a previous source",
            1,
        ),
        ("models: [a]\n", "conflict at 'models': expected a mapping, introduced by b.yaml", 1),
        ("apiKeys: k\n", "conflict at 'apiKeys': a value in b.yaml, a list in a previous source", 1),
        ("- a\n", "config b.yaml: top-level YAML must be a mapping", 1),
    ],
)
def test_merge_conflicts_are_located_errors(second, message, line):
    merged = merge_sources(
        [
            Source("a.yaml", "healthCheckTimeout: 60\napiKeys: [k]\nmodels:\n  a: {cmd: x}\n"),
            Source("b.yaml", second),
        ]
    )
    assert merged.text is None
    [d] = merged.diagnostics
    assert (d.file, d.message, d.line) == ("b.yaml", message, line) and d.is_error


# -- the command line, end to end -------------------------------------------------------------


def two_model_config(tmp_path: Path) -> tuple[Path, Path]:
    main = write(
        tmp_path / "config.yaml",
        f"healthCheckTimeout: 30\nmodels:\n  a:\n    cmd: {upstream_cmd('a')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n",
    )
    conf = tmp_path / "conf.d"
    write(
        conf / "10-b.yaml",
        f"models:\n  b:\n    cmd: {upstream_cmd('b')}\n    proxy: http://127.0.0.1:${{PORT}}\n",
    )
    write(conf / "notes.txt", "not a config")
    return main, conf


@pytest.mark.e2e
def test_llama_swap_command_line_serves_config_and_config_dir(tmp_path: Path):
    main, conf = two_model_config(tmp_path)
    server = Running(["-config", str(main), "-config-dir", str(conf), "-listen", ":0"], tmp_path)
    try:
        models = get_json(server.url + "/v1/models")
        assert [m["id"] for m in models["data"]] == ["a", "b"]
        assert "reachable from other hosts" in server.log()  # :PORT is every interface
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.e2e
def test_config_dir_conflicts_and_bad_values_point_into_their_file(tmp_path: Path):
    main, conf = two_model_config(tmp_path)
    write(conf / "20-dup.yml", "models:\n  a:\n    cmd: other\n")
    out = llamaswap("serve", "-config", str(main), "-config-dir", str(conf), cwd=tmp_path)
    assert out.returncode == 1
    assert f"{conf / '20-dup.yml'}:2:3: error[LS317]: duplicate models 'a'" in out.stderr
    (conf / "20-dup.yml").write_text("models:\n  c:\n    cmd: x\n    ttl: soon\n")
    out = llamaswap("serve", "-config", str(main), "-config-dir", str(conf), cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{conf / '20-dup.yml'}:4:10: error[LS302]: 'models.c.ttl' must be a whole number" in out.stderr
    shutil.copy(main, conf / "config.yaml")
    out = llamaswap("serve", "-config", str(conf / "config.yaml"), "-config-dir", str(conf), cwd=tmp_path)
    assert out.returncode == 2 and "is also present in -config-dir" in out.stderr


def test_version_and_tls_flag_errors(tmp_path: Path):
    out = llamaswap("-version", cwd=tmp_path)
    assert out.returncode == 0 and re.fullmatch(r"version: \S+ \(\S+\), built at \S+\n", out.stdout), out
    out = llamaswap("serve", "-tls-cert-file", "cert.pem", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == "both -tls-cert-file and -tls-key-file must be provided for TLS"


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_serves_https_and_watch_config_watches_the_file(tmp_path: Path):
    main, _ = two_model_config(tmp_path)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = Running(
        [
            "serve",
            "-config",
            str(main),
            "-listen",
            "127.0.0.1:0",
            "-tls-cert-file",
            str(cert),
            "-tls-key-file",
            str(key),
            "-watch-config",
        ],
        tmp_path,
    )
    try:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        models = get_json(server.url + "/v1/models", context)
        assert [m["id"] for m in models["data"]] == ["a"]
        assert f"watching {main} for changes" in server.log()  # hot reload (tests/serve/test_serve_reload.py)
        with pytest.raises(urllib.error.URLError):
            get_json(server.url + "/v1/models", ssl.create_default_context())  # an untrusted certificate
    finally:
        assert server.stop() == 0, server.log()
