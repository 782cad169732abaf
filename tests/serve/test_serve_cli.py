"""`llamaswap serve` as a command: the README's first command (the built-in demo) run as a
new user would, then the curl it prints; refusing to serve a config with errors; listen
address problems."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from serve_support import PY, start_serve
from support.upstream import http

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def readme_first_command() -> str:
    """The first shell command of the README's first code block."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:sh|bash|console)?\n(.*?)```", text, re.S)
    assert block, "README.md has no code block"
    return block.group(1).strip().splitlines()[0]


def llamaswap_argv() -> tuple[str, ...]:
    """How a new user runs the installed command (the venv's script), else `python -m`."""
    script = Path(sys.executable).with_name("llamaswap")
    return (str(script),) if script.exists() else (PY, "-m", "llamaswap")


def run_curl(argv: list[str]) -> tuple[int, str]:
    """Run a printed curl command: with curl when installed, else the same request by urllib."""
    if shutil.which("curl"):
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
        )
        return out.returncode, out.stdout
    url, headers, data = None, {}, None
    args = iter(argv[1:])
    for arg in args:
        if arg == "-H":
            key, _, value = next(args).partition(":")
            headers[key.strip()] = value.strip()
        elif arg == "-d":
            data = next(args).encode()
        elif not arg.startswith("-"):
            url = arg
    resp = http("POST" if data is not None else "GET", url, data, headers, timeout=60)
    return (0 if resp.status < 400 else 22), resp.body.decode()


def test_readme_first_command_serves_the_demo_and_its_curl_works(tmp_path):
    command = readme_first_command()
    last = command.split("&&")[-1].split()
    # The README promises that plain `llamaswap serve` (no config) starts the demo.
    assert Path(last[0]).name == "llamaswap" and last[1:] == ["serve"], command
    home = tmp_path / "home"
    home.mkdir()
    # Run as a new user would, from an empty directory (only the port is ours to choose:
    # 8080 may be taken on a shared machine).
    server = start_serve(None, cwd=home, executable=llamaswap_argv())
    try:
        banner = "\n".join(server.banner)
        assert f"serving the built-in demo config on {server.url} (3 models, matrix engine, uvloop)" in banner
        curls = [shlex.split(line.strip()) for line in server.banner if line.strip().startswith("curl ")]
        assert len(curls) == 2
        chat_curl, models_curl = curls
        assert chat_curl[:3] == ["curl", "-s", f"{server.url}/v1/chat/completions"]

        code, out = run_curl(chat_curl)
        assert code == 0, out
        answer = json.loads(out)
        assert answer["object"] == "chat.completion"
        assert answer["model"] == "chat-small"
        assert answer["choices"][0]["message"]["content"].endswith("You said: hello")

        code, out = run_curl(models_curl)
        assert code == 0
        assert [m["id"] for m in json.loads(out)["data"]] == ["chat-large", "chat-small", "embed"]
        # ... and it names the web UI, which answers at that address.
        ui = [line.split(": ", 1)[1] for line in server.banner if line.startswith("web UI: ")]
        assert ui == [f"{server.url}/ui/"], server.banner
        page = http("GET", ui[0], None, {}, timeout=60)
        assert page.status == 200 and "<title>llamaswap</title>" in page.body.decode()
        server.running()  # remember the demo's upstream PIDs for the orphan check
        # Ctrl-C, as the banner says.
        assert server.terminate(signal.SIGINT) == 0
    finally:
        server.terminate()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def run_cli(*args: str):
    """The click command in-process: these cases end before anything is served."""
    from click.testing import CliRunner

    from llamaswap.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_config_with_errors_is_refused_with_its_diagnostics(tmp_path):
    config = write(
        tmp_path, 'models:\n  a:\n    cmd: x --port ${PORT}\n    ttl: -5\nmatrix:\n  sets:\n    s: "a & "\n'
    )
    out = run_cli("serve", str(config), "--listen", "127.0.0.1:0")
    assert out.exit_code == 1
    assert out.stdout == ""  # no URL: nothing is served
    assert re.search(r"config\.yaml:\d+:\d+: error\[LS\d{3}\]", out.stderr)
    assert out.stderr.rstrip().endswith("the config has errors; not serving")


@pytest.mark.parametrize(
    "listen, message",
    [
        ("127.0.0.1:99999", "port must be between 0 and 65535"),
        ("127.0.0.1:http", "expected HOST:PORT, e.g. 127.0.0.1:8080"),
        # A URL pasted from a browser: said plainly, not "Name or service not known".
        ("http://127.0.0.1:8000", "expected HOST:PORT without a scheme or path, e.g. 127.0.0.1:8000"),
        ("localhost:8000/v1", "expected HOST:PORT without a scheme or path, e.g. localhost:8000"),
    ],
)
def test_a_bad_listen_address_is_a_usage_error(tmp_path, listen, message):
    config = write(tmp_path, "models:\n  a:\n    cmd: x --port ${PORT}\n")
    out = run_cli("serve", str(config), "--listen", listen)
    assert out.exit_code == 2
    assert f"Invalid value for '--listen': '{listen}': {message}" in out.stderr


def test_a_port_in_use_is_reported(tmp_path):
    config = write(tmp_path, "models:\n  a:\n    cmd: x --port ${PORT}\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_cli("serve", str(config), "--listen", f"127.0.0.1:{port}")
    assert out.exit_code == 2
    assert f"error: cannot listen on 127.0.0.1:{port}" in out.stderr


def test_help_shows_the_defaults():
    out = run_cli("serve", "--help")
    assert out.exit_code == 0
    assert "[CONFIG]" in out.stdout
    assert "127.0.0.1:8080" in out.stdout and "--log-level" in out.stdout
