"""Build metadata: the version, and the commit and its date when llamaswap runs from a git
checkout ("unknown" otherwise). One source for `serve -version` and `GET /api/version`."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from llamaswap import __version__


@functools.cache
def build_info() -> dict[str, str]:
    """{"version", "commit", "build_date"} (llama-swap's `/api/version` keys); read once."""
    here = Path(__file__).resolve().parent
    commit, date = "unknown", "unknown"
    if (here.parent / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(here), "log", "-1", "--format=%h %cI"],
                capture_output=True,
                text=True,
                timeout=5,
                stdin=subprocess.DEVNULL,
            )
            if out.returncode == 0 and len(out.stdout.split()) == 2:
                commit, date = out.stdout.split()
        except (OSError, subprocess.SubprocessError):
            pass
    return {"version": __version__, "commit": commit, "build_date": date}


def version_line() -> str:
    """llama-swap's `-version` line: `version: X (commit), built at DATE`."""
    info = build_info()
    return f"version: {info['version']} ({info['commit']}), built at {info['build_date']}"
