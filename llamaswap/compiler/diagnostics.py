"""Diagnostics: every problem the compiler finds, as a located value with a stable code.

Every pass reports through a `Reporter` (one per pass and file): it builds the located
value and collects it, so there is one way to say a problem.

Invariants:
- A Diagnostic never carries a Python exception; passes turn every failure into one.
- Codes are stable (tests and users' scripts match on them): LS1xx set-DSL syntax,
  LS2xx resolution and sets, LS3xx config schema, LS4xx lints and other warnings/info.
- Rendering is pure string building; printing belongs to the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


# code -> short title. The registry documents every code we emit; a test checks that
# every emitted code is registered.
CODES: dict[str, str] = {
    # LS1xx: set DSL syntax
    "LS100": "empty DSL expression",
    "LS101": "unexpected character",
    "LS102": "expected set name after '+'",
    "LS103": "missing closing parenthesis",
    "LS104": "unexpected token",
    "LS105": "unexpected token after expression",
    "LS106": "unterminated quoted identifier",
    "LS107": "empty quoted identifier",
    # LS2xx: resolution and sets
    "LS200": "matrix must define at least one set",
    "LS201": "unknown var or model",
    "LS202": "alias used where a real model ID is required",
    "LS203": "reference to an undefined set",
    "LS204": "circular reference between sets",
    "LS205": "invalid var key",
    "LS206": "var references an unknown model",
    "LS207": "evict cost must be a positive integer",
    "LS208": "evict_costs key is not a var or model",
    "LS209": "set DSL must be a string",
    "LS210": "matrix router selected but no matrix configured",
    "LS211": "legacy and routing blocks mixed",
    "LS212": "both groups and matrix at top level",
    "LS213": "duplicate group member",
    "LS214": "model in several groups",
    "LS215": "group member is not a model",
    "LS216": "unknown router",
    "LS217": "unknown scheduler",
    "LS218": "scheduler priority references an unknown model",
    "LS219": "unknown or invalid scheduling policy",
    "LS220": "a set's combination does not fit the devices",
    "LS221": "sets: auto without resources",
    "LS222": "sets: auto derives too many combinations",
    # LS3xx: config schema
    "LS300": "YAML syntax error",
    "LS301": "unknown key (no longer emitted: unknown keys are LS408 warnings)",
    "LS302": "wrong type",
    "LS303": "invalid value",
    "LS304": "duplicate key",
    "LS305": "environment variable not set or unusable",
    "LS306": "invalid macro declaration",
    "LS307": "unknown or unsubstituted macro",
    "LS308": "${PORT} in proxy but not in cmd",
    "LS309": "duplicate alias",
    "LS310": "invalid proxy URL",
    "LS311": "invalid API key",
    "LS313": "alias or model ID conflict",
    "LS314": "invalid profile",
    "LS315": "invalid selector",
    "LS316": "invalid peer",
    "LS317": "config sources conflict (-config-dir)",
    "LS318": "invalid resource size or budget",
    "LS319": "unknown device, or resources without devices",
    "LS320": "model cannot fit even alone",
    "LS321": "invalid model placement (split/devices)",
    # LS4xx: lints, warnings, info
    "LS400": "key recognised but not implemented by llamaswap",
    "LS401": "model in no set runs alone",
    "LS402": "redundant set",
    "LS403": "unused var",
    "LS404": "evict cost on a model that never shares a set",
    "LS405": "duplicate sets",
    "LS406": "preload entry dropped",
    "LS407": "deprecated or ignored key",
    "LS408": "unknown key (llama-swap ignores it)",
    "LS409": "llama-swap key in the wrong place",
    "LS410": "listen address in the config (a command-line flag)",
    "LS411": "model that cannot start as written",
    "LS412": "value llama-swap accepts but reads differently",
    "LS413": "model declares no resources",
    "LS414": "resources ignored by the groups engine",
    "LS415": "YAML document llama-swap does not read (after the first)",
    "LS450": "set kept symbolic (too large to expand)",
    "LS452": "symbolic set not checked against the resources",
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    file: str
    line: int | None = None
    column: int | None = None
    path: str | None = None
    hint: str | None = None
    # Length of the offending span (for the caret underline); 1 when unknown.
    length: int = 1

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def full_message(self) -> str:
        """Message with the hint folded in, for one-line formats (json, github)."""
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message

    def to_json(self) -> dict:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.full_message(),
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
        }

    def sort_key(self) -> tuple:
        return (
            self.file,
            self.line if self.line is not None else 1 << 30,
            self.column if self.column is not None else 0,
            self.code,
            self.message,
        )


class Located(Protocol):
    """Where a problem starts: 1-based line and column (`source.Pos` is one)."""

    @property
    def line(self) -> int: ...

    @property
    def column(self) -> int: ...


class Reporter:
    """Collects the diagnostics one pass finds in one file, in the order found."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.diagnostics: list[Diagnostic] = []

    def add(
        self,
        severity: Severity,
        code: str,
        message: str,
        pos: Located | None = None,
        path: str | None = None,
        hint: str | None = None,
        length: int = 1,
    ) -> None:
        """A problem at `pos` (None when it has no place in the text), `path` being the
        config path it concerns and `length` the width of the span to underline."""
        self.diagnostics.append(
            Diagnostic(
                severity,
                code,
                message,
                self.file,
                pos.line if pos is not None else None,
                pos.column if pos is not None else None,
                path,
                hint=hint,
                length=length,
            )
        )

    def error(
        self,
        code: str,
        message: str,
        pos: Located | None = None,
        path: str | None = None,
        hint: str | None = None,
        length: int = 1,
    ) -> None:
        self.add(Severity.ERROR, code, message, pos, path, hint, length)

    def warning(
        self,
        code: str,
        message: str,
        pos: Located | None = None,
        path: str | None = None,
        hint: str | None = None,
        length: int = 1,
    ) -> None:
        self.add(Severity.WARNING, code, message, pos, path, hint, length)

    def info(
        self,
        code: str,
        message: str,
        pos: Located | None = None,
        path: str | None = None,
        hint: str | None = None,
        length: int = 1,
    ) -> None:
        self.add(Severity.INFO, code, message, pos, path, hint, length)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """Stable, deterministic order: by file, line, column, code; duplicates dropped."""
    seen: set[Diagnostic] = set()
    unique = []
    for d in diagnostics:
        if d not in seen:
            seen.add(d)
            unique.append(d)
    return tuple(sorted(unique, key=Diagnostic.sort_key))


def render_text(diagnostics: Sequence[Diagnostic], sources: dict[str, str] | None = None) -> str:
    """Compiler-style text: `file:line:col: error[LS201]: message`, the source line, a caret."""
    sources = sources or {}
    out: list[str] = []
    for d in diagnostics:
        loc = d.file
        if d.line is not None:
            loc += f":{d.line}"
            if d.column is not None:
                loc += f":{d.column}"
        head = f"{loc}: {d.severity.value}[{d.code}]: {d.message}"
        if d.path:
            head += f" [at {d.path}]"
        out.append(head)
        text = sources.get(d.file)
        if text is not None and d.line is not None:
            lines = text.splitlines()
            if 1 <= d.line <= len(lines):
                src = lines[d.line - 1].replace("\t", " ")
                gutter = f"{d.line:>4} | "
                out.append(f"{gutter}{src}")
                if d.column is not None:
                    width = max(1, min(d.length, max(1, len(src) - d.column + 1)))
                    out.append(" " * (len(gutter) - 2) + "| " + " " * (d.column - 1) + "^" * width)
        if d.hint:
            out.append(f"     = help: {d.hint}")
    if diagnostics:
        counts = summarize(diagnostics)
        out.append(counts)
    return "\n".join(out) + ("\n" if out else "")


def summarize(diagnostics: Sequence[Diagnostic]) -> str:
    n_err = sum(1 for d in diagnostics if d.severity is Severity.ERROR)
    n_warn = sum(1 for d in diagnostics if d.severity is Severity.WARNING)
    n_info = sum(1 for d in diagnostics if d.severity is Severity.INFO)

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    parts = [plural(n_err, "error"), plural(n_warn, "warning")]
    if n_info:
        parts.append(plural(n_info, "note"))
    return ", ".join(parts)


def _gh_escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_escape_prop(s: str) -> str:
    return _gh_escape_data(s).replace(":", "%3A").replace(",", "%2C")


def render_github(diagnostics: Sequence[Diagnostic]) -> str:
    """GitHub workflow commands: `::error file=F,line=L,col=C,title=CODE::message`."""
    level = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}
    out = []
    for d in diagnostics:
        props = [f"file={_gh_escape_prop(d.file)}"]
        if d.line is not None:
            props.append(f"line={d.line}")
            if d.column is not None:
                props.append(f"col={d.column}")
        props.append(f"title={_gh_escape_prop(d.code)}")
        msg = d.full_message()
        if d.path:
            msg += f" [at {d.path}]"
        out.append(f"::{level[d.severity]} {','.join(props)}::{_gh_escape_data(msg)}")
    return "\n".join(out) + ("\n" if out else "")


def render_json_list(diagnostics: Sequence[Diagnostic]) -> list[dict]:
    return [d.to_json() for d in diagnostics]


def dumps(obj: object) -> str:
    """Deterministic JSON used for every artifact we print or write."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
