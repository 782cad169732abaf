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


def inline_comment(text: str) -> tuple[int, str] | None:
    """The first unquoted `#` that starts a word on a kept line of `text` (a shell would read
    it as a comment; llama-swap passes it and the rest of its line on as arguments): its index
    in `text` and that rest of the line. None when there is none."""
    quote: str | None = None
    offset = 0
    for line in text.splitlines(keepends=True):
        if quote is None and line.lstrip().startswith("#"):
            offset += len(line)
            continue  # a comment line: dropped
        word_start = True
        i = 0
        while i < len(line):
            ch = line[i]
            if quote is not None:
                if ch == quote:
                    quote = None
                elif ch == "\\" and quote == '"':
                    i += 1
                word_start = False
            elif ch == "\\":
                i += 1
                word_start = False
            elif ch in "'\"":
                quote = ch
                word_start = False
            elif ch == "#" and word_start:
                return offset + i, line[i:].strip()
            else:
                word_start = ch.isspace()
            i += 1
        offset += len(line)
    return None
