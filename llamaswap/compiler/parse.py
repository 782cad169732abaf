"""Parse: one set-DSL string -> AST, or a located syntax error.

The grammar is `llamaswap/grammar/sets.lark`. Two parsers read it and give the same trees and
the same errors (a property test holds them to it): Lark's LALR parser, the default
(`compile`, `plan`, `graph`, `check`), and a recursive descent of the same terminals that
`serve` selects (`use_parser("hand")`): a server's start-up then imports no Lark (~1.5 MB of
resident memory and ~50 ms less). Errors carry llama-swap's wording (reference §3.3) plus
what was expected, and the 0-based code-point offset of the offending character inside the
DSL string; the caller turns that offset into a file position.

Invariant: never raises on any input string.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from llamaswap.compiler.ast import And, Name, Node, Or, Ref

MAX_DEPTH = 100

TOKEN_WORDS = {
    "AMPERSAND": '"&"',
    "VBAR": '"|"',
    "LPAR": '"("',
    "RPAR": '")"',
    "NAME": "a model or var name",
    "QUOTED": "a quoted model ID",
    "REF": "a +set reference",
    "$END": "the end of the expression",
}


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    code: str
    message: str
    offset: int  # 0-based code-point index into the DSL string
    length: int = 1
    hint: str | None = None


def _expected(accepts: set[str]) -> str:
    words = [
        TOKEN_WORDS.get(t, t)
        for t in sorted(accepts, key=lambda t: list(TOKEN_WORDS).index(t) if t in TOKEN_WORDS else 99)
    ]
    if not words:
        return "nothing"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _valid_ident_char(c: str) -> bool:
    if c in "_-.":
        return True
    cat = unicodedata.category(c)
    return cat.startswith("L") or cat == "Nd"


# The grammar of `llamaswap/grammar/sets.lark`, parsed by hand, for serve (Lark's LALR parser
# with its contextual lexer, import and all, costs a server ~1.6 MB). The terminals are the
# grammar's; an error is what that parser reports: a character no terminal matches
# (`_BadChar`), or a token, or the end, where the parser state accepts other terminals
# (`_BadToken`, with the terminals that state accepts). A property test checks every outcome
# against the Lark parser (tests/compiler/test_parse_lark.py).
_TOKEN = re.compile(
    r'\s+|(?P<NAME>[\w.\-]+)|(?P<REF>\+[\w.\-]+)|(?P<QUOTED>"(?:[^"\\\n]|\\.)*")'
    r"|(?P<AMPERSAND>&)|(?P<VBAR>\|)|(?P<LPAR>\()|(?P<RPAR>\))"
)
_OPERAND = frozenset({"NAME", "QUOTED", "REF", "LPAR"})
_AFTER_TOP = frozenset({"AMPERSAND", "VBAR", "$END"})
_AFTER_INNER = frozenset({"AMPERSAND", "VBAR", "RPAR"})
_CLOSE = frozenset({"RPAR"})
_END = frozenset({"$END"})


class _BadChar(Exception):
    def __init__(self, pos: int) -> None:
        self.pos = pos


class _BadToken(Exception):
    def __init__(self, kind: str, text: str, start: int, accepts: frozenset[str]) -> None:
        self.kind, self.text, self.start, self.accepts = kind, text, start, accepts


def _unquote(raw: str) -> str:
    text = []
    i = 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw):
            text.append(raw[i + 1])
            i += 2
        else:
            text.append(raw[i])
            i += 1
    return "".join(text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0  # offset in `text` of the next token to lex
        self.depth = 0

    def _next(self, accepts: frozenset[str]) -> tuple[str, str, int, int]:
        """The next token, which must be one of `accepts` (raises _BadChar, _BadToken)."""
        text = self.text
        while True:
            if self.pos >= len(text):
                tok = ("$END", "", len(text), len(text))
                break
            m = _TOKEN.match(text, self.pos)
            if m is None:
                raise _BadChar(self.pos)
            self.pos = m.end()
            if m.lastgroup is not None:
                tok = (m.lastgroup, m.group(), m.start(), m.end())
                break
        if tok[0] not in accepts:
            if accepts is not _OPERAND and tok[0] in ("RPAR", "$END"):
                # The LALR tables reduce the expression so far on ')' or the end (one state
                # after an operand, whatever the depth), then accept only this depth's closer.
                accepts = _CLOSE if accepts is _AFTER_INNER else _END
            raise _BadToken(tok[0], tok[1], tok[2], accepts)
        return tok

    def _after(self) -> frozenset[str]:
        return _AFTER_INNER if self.depth else _AFTER_TOP

    def parse(self) -> Node:
        node, tok = self._or(self._next(_OPERAND))
        assert tok[0] == "$END"
        return node

    def _or(self, tok: tuple[str, str, int, int]) -> tuple[Node, tuple[str, str, int, int]]:
        """An or_expr starting at operand token `tok`; returns it and the token after it."""
        first, tok = self._and(tok)
        items = [first]
        while tok[0] == "VBAR":
            item, tok = self._and(self._next(_OPERAND))
            items.append(item)
        if len(items) == 1:
            return first, tok
        return Or(tuple(items), items[0].start, items[-1].end), tok

    def _and(self, tok: tuple[str, str, int, int]) -> tuple[Node, tuple[str, str, int, int]]:
        first = self._atom(tok)
        items = [first]
        tok = self._next(self._after())
        while tok[0] == "AMPERSAND":
            items.append(self._atom(self._next(_OPERAND)))
            tok = self._next(self._after())
        if len(items) == 1:
            return first, tok
        return And(tuple(items), items[0].start, items[-1].end), tok

    def _atom(self, tok: tuple[str, str, int, int]) -> Node:
        kind, text, start, end = tok
        if kind == "NAME":
            return Name(text, False, start, end)
        if kind == "QUOTED":
            return Name(_unquote(text[1:-1]), True, start, end)
        if kind == "REF":
            return Ref(text[1:], start, end)
        # LPAR
        self.depth += 1
        node, close = self._or(self._next(_OPERAND))
        assert close[0] == "RPAR"
        self.depth -= 1
        return node


class _Unparsable(Exception):
    """Any other failure of Lark's parser (defensive: LALR reports only the two above)."""


def _parse_hand(text: str) -> Node:
    """Raises _BadChar or _BadToken."""
    return _Parser(text).parse()


def _lark_ast(tree: Any) -> Node:
    """A Lark parse tree of sets.lark as the AST (the rules `name`, `quoted`, `ref`,
    `and_expr`, `or_expr`; `?` rules with one child are inlined by Lark)."""
    kind, kids = tree.data, tree.children
    if kind in ("name", "quoted", "ref"):
        tok = kids[0]
        text, start, end = str(tok), tok.start_pos, tok.end_pos
        if kind == "name":
            return Name(text, False, start, end)
        if kind == "quoted":
            return Name(_unquote(text[1:-1]), True, start, end)
        return Ref(text[1:], start, end)
    items = tuple(_lark_ast(k) for k in kids)
    if kind == "and_expr":
        return And(items, items[0].start, items[-1].end)
    if kind == "or_expr":
        return Or(items, items[0].start, items[-1].end)
    raise _Unparsable(f"unknown rule {kind}")


def _parse_lark(text: str) -> Node:
    """The design's parser: sets.lark through Lark (raises _BadChar, _BadToken, _Unparsable)."""
    from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedToken

    from llamaswap.grammar import sets_parser

    try:
        tree = sets_parser().parse(text)
    except UnexpectedCharacters as exc:
        raise _BadChar(exc.pos_in_stream or 0) from None
    except UnexpectedToken as exc:
        tok = exc.token
        parser = exc.interactive_parser
        accepts = frozenset(parser.accepts() if parser else exc.expected)
        raise _BadToken(tok.type, str(tok), tok.start_pos or 0, accepts) from None
    except LarkError as exc:
        raise _Unparsable(exc.__class__.__name__) from None
    return _lark_ast(tree)


_PARSERS = {"lark": _parse_lark, "hand": _parse_hand}
_parse = _parse_lark


def use_parser(name: str) -> None:
    """Which parser reads the DSL from now on in this process: "lark" (the default) or
    "hand" (serve: no Lark import at start-up). Both give the same trees and errors."""
    global _parse
    _parse = _PARSERS[name]


def _prefix_parses(text: str) -> bool:
    if not text.strip():
        return False
    try:
        _parse(text)
        return True
    except (_BadChar, _BadToken, _Unparsable):
        return False


def parse_dsl(dsl: str) -> Node | SyntaxProblem:
    """Parse one set expression."""
    if not dsl.strip():
        return SyntaxProblem(
            "LS100",
            "the expression is empty",
            0,
            max(1, len(dsl)),
            hint='write at least one model, e.g. "a & b" or "a | b"',
        )
    depth = deepest = 0
    for i, c in enumerate(dsl):
        if c == "(":
            depth += 1
            if depth > MAX_DEPTH:
                return SyntaxProblem(
                    "LS104",
                    f"parentheses nested deeper than {MAX_DEPTH} levels",
                    i,
                    hint="split the expression into several sets joined with +references",
                )
        elif c == ")":
            depth -= 1
        deepest = max(deepest, depth)
    try:
        node = _parse(dsl)
    except _BadChar as exc:
        pos = exc.pos
        ch = dsl[pos] if 0 <= pos < len(dsl) else ""
        if ch == "+":
            return SyntaxProblem(
                "LS102",
                "'+' is not followed by a set name",
                pos,
                hint="write +name with no space after '+'",
            )
        if ch == '"':
            return SyntaxProblem(
                "LS106",
                "a quoted model ID is not closed",
                pos,
                len(dsl) - pos,
                hint='close the quoted model ID with "',
            )
        hint = None
        if ch in "/:@":
            hint = f'model IDs containing {ch!r} must be quoted, e.g. "org/model:q4", or named through a var'
        elif ch == ",":
            hint = "use '|' for alternatives and '&' for models that run together"
        return SyntaxProblem("LS101", f"unexpected character {ch!r}", pos, hint=hint)
    except _BadToken as exc:
        accepts = set(exc.accepts)
        expected = _expected(accepts)
        if exc.kind == "$END":
            pos = len(dsl.rstrip())
            if "RPAR" in accepts:
                return SyntaxProblem(
                    "LS103",
                    "'(' is not closed",
                    _unclosed_paren(dsl, pos),
                    hint="add ')' to close the group opened here",
                )
            return SyntaxProblem(
                "LS104",
                "the expression ends too early",
                max(0, pos - 1),
                hint=f"expected {expected}",
            )
        start = exc.start
        text = exc.text
        if _prefix_parses(dsl[:start]):
            hint = f"expected {expected}"
            if exc.kind in ("NAME", "QUOTED", "REF", "LPAR"):
                hint = f"join names with '&' (run together) or '|' (alternatives); expected {expected}"
            return SyntaxProblem(
                "LS105",
                f'"{text}" after the end of the expression',
                start,
                max(1, len(text)),
                hint=hint,
            )
        return SyntaxProblem(
            "LS104",
            f'unexpected "{text}"',
            start,
            max(1, len(text)),
            hint=f"expected {expected}",
        )
    except _Unparsable as exc:  # pragma: no cover - defensive: any other parser failure
        return SyntaxProblem("LS104", f"cannot parse: {exc}", 0)
    for n in _names(node):
        if n.quoted:
            if not n.text:
                return SyntaxProblem(
                    "LS107",
                    "empty quoted model ID",
                    n.start,
                    n.end - n.start,
                    hint="write the model ID between the quotes",
                )
            continue
        for i, c in enumerate(n.text):
            if not _valid_ident_char(c):
                pos = n.start + i
                return SyntaxProblem(
                    "LS101",
                    f"unexpected character {c!r}",
                    pos,
                    hint="quote the model ID to use other characters",
                )
    for r in _refs(node):
        for i, c in enumerate(r.name):
            if not _valid_ident_char(c):
                pos = r.start + 1 + i
                return SyntaxProblem("LS101", f"unexpected character {c!r}", pos)
    return node


def _unclosed_paren(dsl: str, fallback: int) -> int:
    """Offset of the innermost '(' still open at the end of `dsl` (quoted IDs skipped)."""
    stack: list[int] = []
    in_quote = False
    i = 0
    while i < len(dsl):
        c = dsl[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "(":
            stack.append(i)
        elif c == ")" and stack:
            stack.pop()
        i += 1
    return stack[-1] if stack else max(0, fallback - 1)


def _names(node: Node):
    if isinstance(node, Name):
        yield node
    elif isinstance(node, (And, Or)):
        for c in node.children:
            yield from _names(c)


def _refs(node: Node):
    if isinstance(node, Ref):
        yield node
    elif isinstance(node, (And, Or)):
        for c in node.children:
            yield from _refs(c)
