"""Graphviz: DOT text -> SVG or PNG through Graphviz's `dot` program (the edge: a subprocess).

`dot` is looked up on PATH when called; without it `GraphvizMissing` names the package to
install. Nothing else in llamaswap runs Graphviz.
"""

from __future__ import annotations

import shutil
import subprocess

INSTALL_HINT = (
    "install Graphviz: `apt-get install graphviz` (Debian, Ubuntu), `dnf install graphviz` "
    "(Fedora), `brew install graphviz` (macOS)"
)
RENDER_FORMATS = ("svg", "png")


class GraphvizError(Exception):
    pass


class GraphvizMissing(GraphvizError):
    def __init__(self) -> None:
        super().__init__(
            f"Graphviz's `dot` program is not installed (not found on PATH); {INSTALL_HINT}, "
            "or use --format dot and render it elsewhere"
        )


def find_dot() -> str | None:
    return shutil.which("dot")


def render(dot_text: str, fmt: str, timeout: float = 120.0) -> bytes:
    """Lay out and draw `dot_text` as `fmt` ("svg" or "png")."""
    if fmt not in RENDER_FORMATS:
        raise ValueError(f"unknown Graphviz output format {fmt!r}")
    exe = find_dot()
    if exe is None:
        raise GraphvizMissing()
    try:
        proc = subprocess.run(
            [exe, f"-T{fmt}"],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GraphvizError(f"Graphviz's dot did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise GraphvizError(f"cannot run {exe}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip()
        raise GraphvizError(f"Graphviz's dot failed (exit {proc.returncode}): {detail}")
    return proc.stdout
