"""Commands: turn a model's `cmd` / `cmdStop` text into an argv, like a shell would, but
without ever running a shell.

Rules (llama-swap's SanitizeCommand): lines whose first non-blank character is `#` are
dropped; a trailing backslash joins a line with the next; the result is split with POSIX
shell quoting rules (shlex). Pure: shared by the compiler (to report a bad cmd at compile
time) and the process supervisor (to spawn it).
"""

from __future__ import annotations

import shlex


class CommandError(ValueError):
    """The command text cannot be split (empty, or unbalanced quotes)."""


def join_lines(text: str) -> str:
    """Drop comment lines and join backslash continuations; keep other newlines as spaces."""
    kept = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    out: list[str] = []
    for line in kept:
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            out.append(stripped[:-1] + " ")
        else:
            out.append(line + "\n")
    return "".join(out)


def split_command(text: str) -> list[str]:
    """argv for `text`; raises CommandError when it is empty or cannot be split."""
    try:
        argv = shlex.split(join_lines(text), comments=False, posix=True)
    except ValueError as exc:
        raise CommandError(f"cannot split command: {exc}") from None
    if not argv:
        raise CommandError("empty command")
    return argv
