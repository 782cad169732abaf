"""The commands in README.md and docs/ work as written. A curl that sends a JSON body says
it is JSON. `curl -d` alone sends `application/x-www-form-urlencoded`, and serve answers such a
request with 400 (the model is read from a form, as in llama-swap), so a reader who pastes
the command gets an error instead of an answer. The README's pytest commands select what
their comments say."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_blocks(text: str) -> list[str]:
    """The bodies of the fenced blocks marked sh, bash, console or shell."""
    blocks, body, lang = [], [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                if lang in ("sh", "bash", "console", "shell"):
                    blocks.append("\n".join(body))
                lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def curl_commands(block: str) -> list[list[str]]:
    """Each curl command of a shell block, continuation lines joined, prompts dropped."""
    joined = re.sub(r"\\\n", " ", block)
    found = []
    for line in joined.splitlines():
        line = line.strip().removeprefix("$ ")
        if line.startswith("curl "):
            found.append(shlex.split(line, comments=True))
    return found


def json_curls_without_content_type() -> list[str]:
    bad = []
    for doc in DOCS:
        for block in shell_blocks(doc.read_text(encoding="utf-8")):
            for argv in curl_commands(block):
                bodies = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-d", "--data", "--data-raw")]
                if not any(b.lstrip().startswith(("{", "[")) for b in bodies):
                    continue
                headers = [argv[i + 1].lower() for i, a in enumerate(argv[:-1]) if a in ("-H", "--header")]
                if not any(re.fullmatch(r"content-type:\s*application/json.*", h) for h in headers):
                    bad.append(f"{doc.relative_to(ROOT)}: {shlex.join(argv)}")
    return bad


def test_the_scan_finds_curls():
    # Without this the test below would pass on docs it cannot parse.
    assert any(curl_commands(b) for doc in DOCS for b in shell_blocks(doc.read_text(encoding="utf-8")))


def test_every_documented_json_curl_sends_a_json_content_type():
    assert json_curls_without_content_type() == []


def readme_test_command(described: str) -> list[str]:
    """The pytest arguments of the README's test command whose comment says `described`."""
    for block in shell_blocks((ROOT / "README.md").read_text(encoding="utf-8")):
        for line in block.splitlines():
            if "-m pytest" in line and described in line:
                argv = shlex.split(line, comments=True)
                return argv[argv.index("pytest") + 1 :]
    raise AssertionError(f"README.md has no pytest command described as {described!r}")


def test_the_readme_command_without_the_e2e_tier_leaves_out_the_llamacpp_tier_too():
    # `-m` replaces pyproject's `-m 'not llamacpp'`: a command that says it leaves tiers out
    # must leave the llama.cpp tier out itself, or it builds llama-server (minutes) first.
    args = readme_test_command("without the end-to-end")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *args,
            "--collect-only",
            "-q",
            "-n",
            "0",
            "-p",
            "no:randomly",
            "tests/llamacpp",
            "tests/serve/test_serve_cli.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    collected = [line for line in out.stdout.splitlines() if "::" in line]
    assert not collected, collected
    assert "deselected" in out.stdout, out.stdout + out.stderr
