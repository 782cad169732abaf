"""Argv: llama-swap's command line, read by llamaswap's.

llama-swap uses Go's flag package: `-config X`, `--config X`, `-config=X`, booleans as
`-version` or `-watch-config=true`. click reads only `--long` options, so main() passes the
command line through `normalise` first: each llama-swap flag is rewritten to its `--long`
form, and a command line that starts with one (`llamaswap -config X -listen :8080`, the
llama-swap way) runs `serve`. Any other single-dash word among serve's arguments becomes
`--word` too, so click names it in its error (with a "did you mean"); values, negative
numbers and everything outside serve are left as they are. Pure.
"""

from __future__ import annotations

# llama-swap's flags (and -log-level, -log-format, which llamaswap adds), valued or boolean.
VALUED = frozenset(
    {"config", "config-dir", "listen", "tls-cert-file", "tls-key-file", "log-level", "log-format"}
)
BOOLEAN = frozenset({"version", "watch-config"})
# serve's other valued options: the word after one is its value, never an option.
SERVE_VALUED = frozenset({"shutdown-timeout", "expand-budget"})
FALSE_WORDS = frozenset({"false", "0", "f", "F", "FALSE", "False"})
TRUE_WORDS = frozenset({"true", "1", "t", "T", "TRUE", "True"})


def _flag(arg: str) -> tuple[str, str | None] | None:
    """(name, value after '=') when `arg` is one of llama-swap's flags, in either dash form."""
    if arg.startswith("--"):
        body = arg[2:]
    elif arg.startswith("-") and len(arg) > 2:
        body = arg[1:]
    else:
        return None
    name, sep, value = body.partition("=")
    if name in VALUED or name in BOOLEAN:
        return name, value if sep else None
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _takes_value(arg: str) -> bool:
    return arg.startswith("--") and "=" not in arg and arg[2:] in VALUED | SERVE_VALUED


def _rewrite(args: list[str]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        flag = _flag(arg)
        if flag is None:
            is_value = bool(out) and _takes_value(out[-1])
            if not is_value and arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
                if not _is_number(arg):
                    # Any other Go-style word: serve has no short options but -h, so click
                    # should name it (and suggest the option meant), not its first letter.
                    arg = "-" + arg
            out.append(arg)
            continue
        name, value = flag
        if name in BOOLEAN:
            if value is None or value in TRUE_WORDS:
                out.append(f"--{name}")
            elif value not in FALSE_WORDS:
                out.append(f"--{name}={value}")  # click reports the bad value
            continue
        out.append(f"--{name}" if value is None else f"--{name}={value}")
    return out


def normalise(argv: list[str]) -> list[str]:
    """The command line (without the program name) as click should read it."""
    if not argv:
        return argv
    if argv[0] == "serve":
        return ["serve", *_rewrite(argv[1:])]
    first = _flag(argv[0])
    # `--version` alone stays llamaswap's own; `-version` is llama-swap's (version and commit).
    if first is not None and argv[0] != "--version":
        return ["serve", *_rewrite(argv)]
    return argv
