"""Parse: one set-DSL string -> AST, or a located syntax error.

Uses the LALR parser from `llamaswap.grammar`. Errors carry llama-swap's wording
(reference §3.3) plus what was expected, and the 0-based code-point offset of the offending
character inside the DSL string; the caller turns that offset into a file position.

Invariant: never raises on any input string.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from lark import Token, Transformer, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedToken

from llamaswap.compiler.ast import And, Name, Node, Or, Ref
from llamaswap.grammar import sets_parser

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


def _span(tok: Token) -> tuple[int, int]:
    assert tok.start_pos is not None and tok.end_pos is not None  # lark's lexer always sets them
    return tok.start_pos, tok.end_pos


class _ToAst(Transformer):
    def name(self, items: list[Token]) -> Node:
        tok = items[0]
        return Name(str(tok), False, *_span(tok))

    def quoted(self, items: list[Token]) -> Node:
        tok = items[0]
        raw = str(tok)[1:-1]
        text = []
        i = 0
        while i < len(raw):
            if raw[i] == "\\" and i + 1 < len(raw):
                text.append(raw[i + 1])
                i += 2
            else:
                text.append(raw[i])
                i += 1
        return Name("".join(text), True, *_span(tok))

    def ref(self, items: list[Token]) -> Node:
        tok = items[0]
        return Ref(str(tok)[1:], *_span(tok))

    def and_expr(self, items: list[Node]) -> Node:
        return And(tuple(items), items[0].start, items[-1].end)

    def or_expr(self, items: list[Node]) -> Node:
        return Or(tuple(items), items[0].start, items[-1].end)


_TO_AST = _ToAst()


def _prefix_parses(text: str) -> bool:
    if not text.strip():
        return False
    try:
        sets_parser().parse(text)
        return True
    except LarkError:
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
        tree = sets_parser().parse(dsl)
    except UnexpectedCharacters as exc:
        pos = exc.pos_in_stream
        assert pos is not None  # always set for UnexpectedCharacters
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
    except UnexpectedToken as exc:
        tok = exc.token
        accepts = set(exc.interactive_parser.accepts()) if exc.interactive_parser else set(exc.expected)
        expected = _expected(accepts)
        if tok.type == "$END":
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
        start = tok.start_pos if tok.start_pos is not None else 0
        text = str(tok)
        if _prefix_parses(dsl[:start]):
            hint = f"expected {expected}"
            if tok.type in ("NAME", "QUOTED", "REF", "LPAR"):
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
    except LarkError as exc:  # pragma: no cover - defensive: any other parser failure
        return SyntaxProblem("LS104", f"cannot parse: {exc.__class__.__name__}", 0)
    node = _TO_AST.transform(tree) if isinstance(tree, Tree) else tree
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
