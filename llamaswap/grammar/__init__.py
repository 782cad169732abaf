"""The set DSL grammar (`sets.lark`) and a cached LALR parser for it. Nothing else."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lark import Lark

GRAMMAR_PATH = Path(__file__).with_name("sets.lark")


@lru_cache(maxsize=1)
def sets_parser() -> Lark:
    """The LALR parser for set expressions (built once per process)."""
    return Lark(
        GRAMMAR_PATH.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        propagate_positions=False,
        maybe_placeholders=False,
        # Reuse the LALR tables between runs (a pickle in the temp dir, keyed by the
        # grammar's hash): a short `llamaswap compile` does not rebuild them.
        cache=True,
    )
