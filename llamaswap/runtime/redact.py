"""Redact: the values of `${env.X}` references never leave llamaswap through its operator
endpoints (`/running`, `/logs`, `/logs/stream/...`), its own log lines, or an error message.

The config's text says which variables it references; their values (as the compiler saw
them) are replaced by the reference itself, `${env.X}`, wherever they occur, longest value
first. Values shorter than MIN_SECRET characters are left alone: they cannot be told apart
from ordinary text (a port, a flag) and replacing them would garble every line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from llamaswap.compiler.macros import ENV_REF
from llamaswap.compiler.plan import Plan

MIN_SECRET = 4


class Redactor:
    def __init__(self, values: Mapping[str, str]) -> None:
        """`values`: variable name -> value."""
        pairs = [(v, f"${{env.{k}}}") for k, v in values.items() if len(v) >= MIN_SECRET]
        self._pairs = tuple(sorted(pairs, key=lambda p: -len(p[0])))

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def __call__(self, text: str) -> str:
        for value, ref in self._pairs:
            if value in text:
                text = text.replace(value, ref)
        return text

    @classmethod
    def for_plan(cls, plan: Plan, text: str | None = None) -> Redactor:
        """The redactor for a plan compiled from `text` (read from `plan.file` if not given)."""
        if text is None:
            try:
                text = Path(plan.file).read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = ""
        env = plan.options.env
        names = {m.group(1) for m in ENV_REF.finditer(text)}
        return cls({n: env[n] for n in sorted(names) if n in env})


class RedactFilter(logging.Filter):
    """Redacts every record that passes through the handler it is attached to."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
