"""The set DSL's abstract syntax tree.

Parse-level nodes keep the character span of their source inside the DSL string (`start`,
`end`, 0-based code-point offsets) so later passes can point at the offending token.
After resolution, `Name` leaves become `Leaf` nodes holding real model IDs.

Invariants: nodes are immutable; `Or`/`And` are n-ary with at least two children
(`a|b|c` is one Or with three children).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier as written: a var key or a model ID (quoted when `quoted`)."""

    text: str
    quoted: bool
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Leaf:
    """A resolved identifier: one real model ID."""

    model: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Ref:
    """`+name`: inline the whole family of another set."""

    name: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]
    start: int
    end: int


Node = Union[Name, Leaf, Ref, And, Or]


def walk(node: Node):
    """Pre-order traversal."""
    yield node
    if isinstance(node, (And, Or)):
        for child in node.children:
            yield from walk(child)


def render(node: Node) -> str:
    """Canonical DSL text for a (resolved or parsed) tree; quotes IDs that need it."""
    if isinstance(node, Leaf):
        return quote_id(node.model)
    if isinstance(node, Name):
        return quote_id(node.text) if node.quoted else node.text
    if isinstance(node, Ref):
        return f"+{node.name}"
    if isinstance(node, And):
        return " & ".join(render(c) if not isinstance(c, Or) else f"({render(c)})" for c in node.children)
    return " | ".join(render(c) for c in node.children)


def is_plain_ident(text: str) -> bool:
    return bool(text) and all(
        c in "_-." or unicodedata.category(c).startswith("L") or unicodedata.category(c) == "Nd" for c in text
    )


def quote_id(text: str) -> str:
    if is_plain_ident(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
