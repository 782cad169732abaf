"""The hand-written set-DSL parser (compiler/parse.py) against the grammar it implements,
`llamaswap/grammar/sets.lark`, parsed by Lark's LALR parser with its contextual lexer (the
parser llamaswap used before): on every input the same tree, or the same error at the same
place with the same expected terminals. The error messages (LS101-LS107) are built from
those, so they cannot differ either."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Token, Transformer, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

from llamaswap.compiler import parse
from llamaswap.compiler.ast import And, Name, Node, Or, Ref
from llamaswap.grammar import sets_parser


class _ToAst(Transformer):
    def name(self, items: list[Token]) -> Node:
        tok = items[0]
        return Name(str(tok), False, tok.start_pos, tok.end_pos)

    def quoted(self, items: list[Token]) -> Node:
        tok = items[0]
        return Name(parse._unquote(str(tok)[1:-1]), True, tok.start_pos, tok.end_pos)

    def ref(self, items: list[Token]) -> Node:
        tok = items[0]
        return Ref(str(tok)[1:], tok.start_pos, tok.end_pos)

    def and_expr(self, items: list[Node]) -> Node:
        return And(tuple(items), items[0].start, items[-1].end)

    def or_expr(self, items: list[Node]) -> Node:
        return Or(tuple(items), items[0].start, items[-1].end)


def by_lark(text: str) -> tuple:
    try:
        tree = sets_parser().parse(text)
    except UnexpectedCharacters as exc:
        return ("char", exc.pos_in_stream)
    except UnexpectedToken as exc:
        tok = exc.token
        accepts = set(exc.interactive_parser.accepts()) if exc.interactive_parser else set(exc.expected)
        if tok.type == "$END":
            return ("token", "$END", frozenset(accepts))
        return ("token", tok.type, str(tok), tok.start_pos, frozenset(accepts))
    return ("ok", _ToAst().transform(tree) if isinstance(tree, Tree) else tree)


def by_hand(text: str, parser=parse._parse_hand) -> tuple:
    try:
        node = parser(text)
    except parse._BadChar as exc:
        return ("char", exc.pos)
    except parse._BadToken as exc:
        if exc.kind == "$END":
            return ("token", "$END", frozenset(exc.accepts))
        return ("token", exc.kind, exc.text, exc.start, frozenset(exc.accepts))
    return ("ok", node)


PIECES = [
    "a",
    "b1",
    "x.y-z",
    "é",
    "½",
    "_",
    "&",
    "|",
    "(",
    ")",
    "+",
    "+s",
    '"',
    '"q/m:4"',
    '"a\\"b"',
    "\\",
    " ",
    "\n",
    "\t",
    ",",
    "/",
    ":",
    "@",
    "!",
]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join))
def test_the_hand_parser_agrees_with_lark(text):
    # The reference above is Lark used directly; compile's own Lark path (parse._parse_lark,
    # which serve does not use) must read it the same way.
    assert by_hand(text) == by_lark(text) == by_hand(text, parse._parse_lark)


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "a & b | c",
        "(a | b) | c",
        "((a))",
        '"x/y" & +r',
        "a b",
        "a &",
        "(a",
        "a)",
        "()",
        "+",
        '"abc',
        "a+b",
        "a & (b | c))",
        "a\n& b",
        "",
    ],
)
def test_the_hand_parser_agrees_with_lark_on_the_usual_mistakes(text):
    assert by_hand(text) == by_lark(text) == by_hand(text, parse._parse_lark)


def test_parse_dsl_gives_the_same_result_with_either_parser():
    texts = ["a & (b | c)", "a &", "(a", "a b", '"x" & +s', "", "a,b", "+", '""', "a & | b"]
    try:
        parse.use_parser("hand")
        by_hand_parser = [parse.parse_dsl(t) for t in texts]
    finally:
        parse.use_parser("lark")
    assert [parse.parse_dsl(t) for t in texts] == by_hand_parser
    assert any(isinstance(r, parse.SyntaxProblem) for r in by_hand_parser)
