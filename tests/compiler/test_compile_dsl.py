"""The set DSL on its own: grammar (§3.1) and syntax errors with codes and offsets."""

from __future__ import annotations

import pytest

from llamaswap.compiler.ast import And, Name, Or, Ref, render
from llamaswap.compiler.parse import SyntaxProblem, parse_dsl


def shape(node):
    """A compact, comparable form of a parsed tree."""
    if isinstance(node, Name):
        return f'"{node.text}"' if node.quoted else node.text
    if isinstance(node, Ref):
        return "+" + node.name
    tag = "&" if isinstance(node, And) else "|"
    return (tag, *[shape(c) for c in node.children])


@pytest.mark.parametrize(
    "dsl, expected",
    [
        ("L", "L"),
        ("a & b", ("&", "a", "b")),
        ("a | b", ("|", "a", "b")),
        ("a | b & c", ("|", "a", ("&", "b", "c"))),  # & binds tighter than |
        ("a & b | c", ("|", ("&", "a", "b"), "c")),
        ("(a | b) & c", ("&", ("|", "a", "b"), "c")),
        ("a|b|c", ("|", "a", "b", "c")),  # n-ary chains
        ("a&b&c&d", ("&", "a", "b", "c", "d")),
        ("((a))", "a"),
        ("+llms & v", ("&", "+llms", "v")),
        ("  a\t&\n b  ", ("&", "a", "b")),  # whitespace anywhere
        ("a\u3000&\u00a0b", ("&", "a", "b")),  # Unicode whitespace too
        ("qwen2.5-7b_q4 & x", ("&", "qwen2.5-7b_q4", "x")),  # '.', '-', '_' in identifiers
        ("modèle & 模型 & ٣", ("&", "modèle", "模型", "٣")),  # Unicode letters and digits
        ('"org/model:q4" & v', ("&", '"org/model:q4"', "v")),
        ('"a \\" b" | c', ("|", '"a " b"', "c")),
        ("+set.v2-x", "+set.v2-x"),
    ],
)
def test_grammar(dsl, expected):
    node = parse_dsl(dsl)
    assert not isinstance(node, SyntaxProblem), node
    assert shape(node) == expected


def test_spans_are_code_point_offsets():
    node = parse_dsl('模型 & +ref & "q/x"')
    assert isinstance(node, And)
    spans = [(c.start, c.end) for c in node.children]
    assert spans == [(0, 2), (5, 9), (12, 17)]


@pytest.mark.parametrize(
    "dsl, code, offset, message",
    [
        ("", "LS100", 0, "the expression is empty"),
        ("  \t ", "LS100", 0, "the expression is empty"),
        ("a & org/b", "LS101", 7, "unexpected character '/'"),
        ("a @ b", "LS101", 2, "unexpected character '@'"),
        ("a, b", "LS101", 1, "unexpected character ','"),
        ("qwen:7b", "LS101", 4, "unexpected character ':'"),
        ("a & ½", "LS101", 4, "unexpected character '½'"),  # \w, but not a letter
        ("模型 & !", "LS101", 5, "unexpected character '!'"),  # rune index
        ("+", "LS102", 0, "'+' is not followed by a set name"),
        ("a & + b", "LS102", 4, "'+' is not followed by a set name"),
        ("(a | b", "LS103", 0, "'(' is not closed"),
        ("a & (b | (c)", "LS103", 4, "'(' is not closed"),
        ("()", "LS104", 1, 'unexpected ")"'),
        ("a &", "LS104", 2, "the expression ends too early"),
        ("a & | b", "LS104", 4, 'unexpected "|"'),
        ("& a", "LS104", 0, 'unexpected "&"'),
        ("a b", "LS105", 2, '"b" after the end of the expression'),
        ("a)", "LS105", 1, '")" after the end of the expression'),
        ("(a) (b)", "LS105", 4, '"(" after the end of the expression'),
        ('a & "org/m', "LS106", 4, "a quoted model ID is not closed"),
        ('a & ""', "LS107", 4, "empty quoted model ID"),
    ],
)
def test_syntax_errors(dsl, code, offset, message):
    problem = parse_dsl(dsl)
    assert isinstance(problem, SyntaxProblem)
    assert (problem.code, problem.offset, problem.message) == (code, offset, message)


def test_unexpected_character_hints_at_quoting():
    problem = parse_dsl("org/model")
    assert isinstance(problem, SyntaxProblem)
    assert '"org/model:q4"' in (problem.hint or "")


def test_deep_nesting_is_an_error_not_a_crash():
    problem = parse_dsl("(" * 5000 + "a" + ")" * 5000)
    assert isinstance(problem, SyntaxProblem) and problem.code == "LS104"


def test_long_flat_chains_parse():
    node = parse_dsl(" | ".join(f"m{i}" for i in range(5000)))
    assert isinstance(node, Or) and len(node.children) == 5000


@pytest.mark.parametrize("dsl", ["a & (b | c)", 'x | "a/b" & +r', "(a | b) & (c | d) & e", "a"])
def test_render_round_trips(dsl):
    node = parse_dsl(dsl)
    assert shape(parse_dsl(render(node))) == shape(node)
