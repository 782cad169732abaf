"""Source: YAML text -> a located tree (every key and value knows its line and column).

PyYAML composes the node graph (with marks); we convert it to our own small node types so
later passes can report `file:line:col` for any value, and even for a character inside a
string (used to point at a token inside a set DSL). `PathReporter` reports a problem by its
path in that tree.

Invariants:
- Plain scalars are typed as llama-swap's yaml.v3 decoder types them (`resolve_plain`):
  only true/false are booleans, `yes`/`on` stay strings, dates stay strings, and numbers
  follow Go (`1_000`, `0x1F`, `0777` octal).
- Merge keys (`<<: *anchor`) are applied; duplicate keys are reported, the last one wins.
- Nothing here raises on bad input: syntax errors come back as diagnostics.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from llamaswap.compiler.diagnostics import Diagnostic, Reporter, Severity

# How yaml.v3 (llama-swap's decoder) types a plain scalar: its resolve table, not YAML 1.2's
# core schema. It differs on numbers: `_` separators are dropped (`1_000`), Go's base prefixes
# are read (`0x`, `0o`, `0b`, with a sign too) and so is a leading 0 as octal (`0777` is 511);
# what fails as an integer but looks like a float is a float (`08` is 8.0, `1e3` 1000.0).
_INF, _NAN = float("inf"), float("nan")
_GO_WORDS: dict[str, Any] = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), _NAN),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), _INF),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -_INF),
}
_CORE_NULL_TEXT = dict.fromkeys(("", "~", "null", "Null", "NULL"), True)
_GO_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_GO_INT = re.compile(r"^[-+]?(?:0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)$")
_GO_TIMESTAMP = re.compile(
    r"^[0-9]{4}-(?P<m>[0-9]{1,2})-(?P<d>[0-9]{1,2})"
    r"(?:[Tt][0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]+)?(?:Z|[-+][0-9]{2}:[0-9]{2})"
    r"| [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]+)?)?$"
)


def is_go_timestamp(text: str) -> bool:
    """Whether yaml.v3 reads this plain scalar as a time (2024-07-18, 2024-07-18T10:00:00Z)."""
    m = _GO_TIMESTAMP.match(text)
    return m is not None and 1 <= int(m["m"]) <= 12 and 1 <= int(m["d"]) <= 31


def _go_int(plain: str) -> int | None:
    """strconv.ParseInt(plain, 0, 64), then ParseUint for what is past int64."""
    if not _GO_INT.match(plain):
        return None
    signed = plain[0] in "+-"
    body = plain[1:] if signed else plain
    base, digits = 10, body
    if len(body) > 1 and body[0] == "0":
        prefix = body[1].lower()
        base, digits = ({"x": 16, "b": 2, "o": 8}[prefix], body[2:]) if prefix in "xbo" else (8, body[1:])
    value = int(digits, base)
    value = -value if plain[0] == "-" else value
    if -(2**63) <= value < 2**63 or (not signed and value < 2**64):
        return value
    return None


def resolve_plain(text: str) -> Any:
    """Type a plain (unquoted) scalar the way yaml.v3 does. A timestamp stays a string
    (yaml.v3 reads it as a time only where the target is untyped; see is_go_timestamp)."""
    if text in _GO_WORDS:
        return _GO_WORDS[text]
    if text[0] == ".":
        return float(text) if _GO_FLOAT.match(text) else text
    if text[0] in "+-0123456789" and not is_go_timestamp(text):
        plain = text.replace("_", "")
        whole = _go_int(plain)
        if whole is not None:
            return whole
        if _GO_FLOAT.match(plain):
            return float(plain)
    return text


@dataclass(frozen=True, slots=True)
class Pos:
    """1-based line and column."""

    line: int
    column: int


@dataclass(slots=True)
class YScalar:
    value: Any
    pos: Pos
    end: Pos
    style: str | None  # None = plain, "'" single, '"' double, "|" literal, ">" folded
    tag: str | None = None
    # Map from index in `value` (when it is a str) to a source position, built lazily.
    _offsets: list[Pos] | None = None
    # Set when macro/env substitution changed the text: offsets no longer map to source.
    rewritten: bool = False
    raw: str = ""

    def position_of(self, index: int) -> Pos:
        """Source position of character `index` of this scalar's string value."""
        if self.rewritten or not isinstance(self.value, str):
            return self.pos
        if self._offsets is None:
            self._offsets = _offset_map(self)
        if not self._offsets:
            return self.pos
        if index < 0:
            index = 0
        if index >= len(self._offsets):
            last = self._offsets[-1]
            return Pos(last.line, last.column + (index - len(self._offsets) + 1))
        return self._offsets[index]

    def find_in_source(self, text: str) -> Pos | None:
        """Where `text` first appears in this scalar's source, even after substitution
        rewrote the value (so a leftover `${name}` can still be pointed at)."""
        if not text or not self.raw:
            return None
        index = self.raw.find(text)
        if index < 0:
            return None
        nl = self.raw.rfind("\n", 0, index)
        if nl < 0:
            return Pos(self.pos.line, self.pos.column + index)
        return Pos(self.pos.line + self.raw.count("\n", 0, index), index - nl)


@dataclass(slots=True)
class YSeq:
    items: list[YNode]
    pos: Pos
    end: Pos


@dataclass(slots=True)
class YMap:
    # Ordered (key, value) pairs; keys are scalars. Duplicates already removed.
    items: list[tuple[YScalar, YNode]]
    pos: Pos
    end: Pos

    def get(self, key: str) -> YNode | None:
        for k, v in self.items:
            if k.value == key:
                return v
        return None

    def key_node(self, key: str) -> YScalar | None:
        for k, _ in self.items:
            if k.value == key:
                return k
        return None

    def keys(self) -> list[str]:
        return [str(k.value) for k, _ in self.items]


YNode = YScalar | YSeq | YMap


@dataclass
class Document:
    file: str
    text: str
    root: YNode | None
    diagnostics: list[Diagnostic] = field(default_factory=list)


def _mark_pos(mark: Any) -> Pos:
    return Pos(mark.line + 1, mark.column + 1)


def _offset_map(s: YScalar) -> list[Pos]:
    """Best-effort map of each character of a one-line scalar back to its source column.

    Handles plain, single-quoted ('' escapes) and double-quoted (backslash escapes) scalars
    on one line; multi-line ones go through `_offset_map_multiline`.
    """
    value = s.value
    raw = s.raw
    if s.pos.line != s.end.line or "\n" in raw:
        return _offset_map_multiline(s)
    line, col = s.pos.line, s.pos.column
    if s.style is None:
        if raw.startswith(value):
            return [Pos(line, col + i) for i in range(len(value))]
        return []
    if s.style == "'":
        out: list[Pos] = []
        i = 1  # skip opening quote
        while i < len(raw) - 1 and len(out) < len(value):
            out.append(Pos(line, col + i))
            i += 2 if raw[i] == "'" and i + 1 < len(raw) and raw[i + 1] == "'" else 1
        return out if len(out) == len(value) else []
    if s.style == '"':
        out = []
        i = 1
        simple = {"0", "a", "b", "t", "\t", "n", "v", "f", "r", "e", " ", '"', "/", "\\", "N", "_", "L", "P"}
        widths = {"x": 2, "u": 4, "U": 8}
        while i < len(raw) - 1 and len(out) < len(value):
            out.append(Pos(line, col + i))
            if raw[i] == "\\" and i + 1 < len(raw):
                nxt = raw[i + 1]
                if nxt in widths:
                    i += 2 + widths[nxt]
                elif nxt in simple:
                    i += 2
                else:
                    return []
            else:
                i += 1
        return out if len(out) == len(value) else []
    return []


def _offset_map_multiline(s: YScalar) -> list[Pos]:
    """Map a multi-line scalar (block `|`/`>`, or a folded plain/quoted one) back to source.

    YAML folding only rewrites whitespace, so every non-blank character of the value is the
    next occurrence of that character in the raw text. An escape sequence breaks the
    correspondence; then nothing is mapped (every index points at the scalar start).
    """
    value, raw = s.value, s.raw
    if not raw:
        return []
    j = 0
    if s.style in ("|", ">"):
        nl = raw.find("\n")
        if nl < 0:
            return []
        j = nl + 1  # skip the block header (`|-`, `>2`, a comment …)
    elif s.style in ("'", '"'):
        j = 1
    if s.style == '"' and "\\" in raw:
        return []
    raw_index: list[int] = []
    for ch in value:
        if ch.isspace():
            raw_index.append(j)
            continue
        found = raw.find(ch, j)
        if found < 0 or raw[j:found].strip():
            return []
        raw_index.append(found)
        j = found + 1
    # raw index -> (line, column)
    line_starts = [0]
    for i, ch in enumerate(raw):
        if ch == "\n":
            line_starts.append(i + 1)
    out: list[Pos] = []
    for idx in raw_index:
        k = bisect.bisect_right(line_starts, idx) - 1
        if k == 0:
            out.append(Pos(s.pos.line, s.pos.column + idx))
        else:
            out.append(Pos(s.pos.line + k, idx - line_starts[k] + 1))
    return out


class _PyComposer(yaml.SafeLoader):
    """SafeLoader whose scalars resolve with the YAML 1.2 core schema, and where an anchor
    may be defined again (YAML 1.2 and yaml.v3 allow it: an alias names the most recent
    node with that anchor; PyYAML refuses it). libyaml's composer refuses it too, and
    `_compose` then composes again with this one."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if not self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            if anchor is not None:
                self.anchors.pop(anchor, None)
        return super().compose_node(parent, index)


# libyaml's parser when PyYAML has it (several times faster); marks are character indices
# into the text either way.
_Composer: type[yaml.SafeLoader | yaml.CSafeLoader] = _PyComposer
if getattr(yaml, "__with_libyaml__", False):

    class _CComposer(yaml.CSafeLoader):
        """CSafeLoader whose scalars resolve with the YAML 1.2 core schema."""

    _Composer = _CComposer

# Drop YAML 1.1 implicit resolvers (we type plain scalars ourselves with resolve_plain),
# keeping only the merge key.
for _cls in {_PyComposer, _Composer}:
    _cls.yaml_implicit_resolvers = {}
    _cls.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


MAX_VALUES = 200_000  # values after expanding aliases; real configs have a few thousand


def _expanded_size(node: Node, memo: dict[int, int], depth: int = 0) -> int:
    """How many values the document holds once every alias is expanded (shared nodes are
    counted once per use), computed without expanding anything."""
    key = id(node)
    got = memo.get(key)
    if got is not None:
        return got
    if depth > 200:
        return MAX_VALUES + 1
    total = 1
    if isinstance(node, SequenceNode):
        for child in node.value:
            total += _expanded_size(child, memo, depth + 1)
            if total > MAX_VALUES:
                break
    elif isinstance(node, MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, memo, depth + 1) + _expanded_size(v, memo, depth + 1)
            if total > MAX_VALUES:
                break
    memo[key] = total
    return total


def _convert(node: Node, report: Reporter, path: str, depth: int = 0, text: str = "") -> YNode:
    pos, end = _mark_pos(node.start_mark), _mark_pos(node.end_mark)
    if depth > 64:
        report.error("LS300", "YAML nesting is too deep", pos, path or None)
        return YScalar(None, pos, end, None)
    if isinstance(node, ScalarNode):
        raw = ""
        if node.end_mark.index >= node.start_mark.index:
            raw = text[node.start_mark.index : node.end_mark.index]
        if not node.style and node.tag in ("tag:yaml.org,2002:str", None) and not _explicit_tag(node):
            value: Any = resolve_plain(node.value)
        else:
            value = _typed_scalar(node)
        return YScalar(value, pos, end, node.style or None, node.tag, raw=raw)
    if isinstance(node, SequenceNode):
        children = [
            _convert(child, report, f"{path}[{i}]", depth + 1, text) for i, child in enumerate(node.value)
        ]
        return YSeq(children, pos, end)
    if isinstance(node, MappingNode):
        own_keys = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        try:
            _FLATTENER.flatten_mapping(node)
        except yaml.YAMLError as exc:
            report.error("LS300", f"bad merge key: {exc}", pos, path or None)
        merged = {id(k) for k, _ in node.value if id(k) not in own_keys}
        items: list[tuple[YScalar, YNode]] = []
        key_nodes: list[Node] = []
        index: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = _convert(key_node, report, path, depth + 1, text)
            if not isinstance(key, YScalar):
                report.error("LS302", "mapping keys must be scalars", key.pos, path or None)
                continue
            if key.value is None:
                key.value = ""
            elif not isinstance(key.value, str):
                key.value = key.raw.strip("'\"") if key.raw else str(key.value)
            child_path = f"{path}.{key.value}" if path else str(key.value)
            value = _convert(value_node, report, child_path, depth + 1, text)
            if key.value in index:
                first_key_node = key_nodes[index[key.value]]
                # Keys brought in by a merge (`<<`) may be overridden, as YAML specifies.
                if id(key_node) not in merged and id(first_key_node) not in merged:
                    first = items[index[key.value]][0]
                    report.error(
                        "LS304",
                        f"duplicate key {key.value!r} (first defined on line {first.pos.line})",
                        key.pos,
                        child_path,
                        hint="remove one of them; llama-swap refuses duplicate keys too",
                        length=max(1, len(str(key.value))),
                    )
                items[index[key.value]] = (key, value)
                key_nodes[index[key.value]] = key_node
            else:
                index[key.value] = len(items)
                items.append((key, value))
                key_nodes.append(key_node)
        return YMap(items, pos, end)
    return YScalar(None, pos, end, None)


def _explicit_tag(node: ScalarNode) -> bool:
    return node.tag not in (None, "tag:yaml.org,2002:str", "!")


def _typed_scalar(node: ScalarNode) -> Any:
    if node.style:
        return node.value  # quoted or block scalar: always a string
    tag = node.tag
    if tag == "tag:yaml.org,2002:int":
        try:
            return int(node.value, 0)
        except ValueError:
            return node.value
    if tag == "tag:yaml.org,2002:float":
        try:
            return float(node.value)
        except ValueError:
            return node.value
    if tag == "tag:yaml.org,2002:bool":
        return node.value.lower() in ("true", "yes", "on")
    if tag == "tag:yaml.org,2002:null":
        return None
    return resolve_plain(node.value)


class _Flattener(yaml.constructor.SafeConstructor):
    """Only used for its flatten_mapping (merge-key handling)."""


_FLATTENER = _Flattener()


def _compose_first(
    text: str, loader: type[yaml.SafeLoader | yaml.CSafeLoader]
) -> tuple[Node | None, Pos | None]:
    """The first document's node, as yaml.v3's Unmarshal reads only the first document;
    and where a next document starts, if one does (it is not parsed)."""
    ld = loader(text)
    try:
        node = ld.get_node() if ld.check_node() else None
        if isinstance(node, ScalarNode) and not node.style and _CORE_NULL_TEXT.get(node.value, False):
            node = None  # an empty (or null) document is an empty config to yaml.v3
        following = None if ld.check_event(yaml.StreamEndEvent) else ld.peek_event()
        return node, None if following is None else _mark_pos(following.start_mark)
    finally:
        ld.dispose()


def _compose(text: str) -> tuple[Node | None, Pos | None]:
    """Compose with libyaml when available; on an error, compose again with the pure-Python
    parser so the message (part of golden output) does not depend on the installation."""
    if _Composer is _PyComposer:
        return _compose_first(text, _PyComposer)
    try:
        return _compose_first(text, _Composer)
    except yaml.YAMLError as fast_error:
        try:
            return _compose_first(text, _PyComposer)
        except yaml.YAMLError:
            raise
        except Exception:  # pragma: no cover - the pure parser should fail the same way
            raise fast_error from None


def load_document(text: str, file: str) -> Document:
    """Parse YAML text into a located tree; syntax errors become LS300 diagnostics."""
    report = Reporter(file)
    try:
        node, more = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = Pos(mark.line + 1, mark.column + 1) if mark is not None else None
        problem = exc.problem or "invalid YAML"
        message = problem
        if exc.context:
            cm = exc.context_mark
            started = (
                f"started at line {cm.line + 1}, column {cm.column + 1}"
                if cm is not None and mark is not None and cm.line != mark.line
                else ""
            )
            if problem.startswith("but "):  # "expected a single document …, but found another"
                message = f"{exc.context}, {problem}" + (f" ({started})" if started else "")
            else:  # "… (while parsing a flow sequence started at …)"
                message = f"{problem} ({exc.context}" + (f" {started}" if started else "") + ")"
        hint = (
            "indent with spaces: YAML does not allow tabs in indentation"
            if "'\\t'" in problem
            else "check indentation and quoting around this point"
        )
        report.error("LS300", f"YAML syntax error: {message}", at, hint=hint)
        return Document(file, text, None, report.diagnostics)
    except yaml.YAMLError as exc:
        report.error("LS300", f"YAML error: {exc}")
        return Document(file, text, None, report.diagnostics)
    except RecursionError:
        report.error("LS300", "YAML nesting is too deep")
        return Document(file, text, None, report.diagnostics)
    if more is not None:
        report.warning(
            "LS415",
            "a second YAML document starts here: llama-swap reads only the first, and ignores the rest",
            more,
            hint="remove this '---' (and what follows it), or move what follows into the first document",
            length=3,
        )
    if node is None:
        return Document(file, text, None, report.diagnostics)
    if _expanded_size(node, {}) > MAX_VALUES:
        report.error(
            "LS300",
            f"the YAML expands to more than {MAX_VALUES:,} values once its aliases (*name) are expanded",
            Pos(1, 1),
            hint="a config this large is almost certainly an alias bomb; use fewer nested aliases",
        )
        return Document(file, text, None, report.diagnostics)
    try:
        root = _convert(node, report, "", 0, text)
    except RecursionError:
        report.error("LS300", "YAML nesting is too deep")
        return Document(file, text, None, report.diagnostics)
    return Document(file, text, root, report.diagnostics)


def to_python(node: YNode | None, seq: type = tuple) -> Any:
    """Plain data: dicts (ordered), sequences as `seq`, typed scalars."""
    if node is None:
        return None
    if isinstance(node, YScalar):
        return node.value
    if isinstance(node, YSeq):
        return seq(to_python(i, seq) for i in node.items)
    return {str(k.value): to_python(v, seq) for k, v in node.items}


def node_at(root: YNode | None, loc: tuple[Any, ...]) -> tuple[YNode | None, YScalar | None]:
    """Follow a pydantic-style loc through the tree: (deepest node reached, its key)."""
    node = root
    key: YScalar | None = None
    for part in loc:
        if isinstance(node, YMap) and isinstance(part, str):
            k = node.key_node(part)
            if k is None:
                return node, key
            key, node = k, node.get(part)
        elif isinstance(node, YSeq) and isinstance(part, int) and 0 <= part < len(node.items):
            node = node.items[part]
        else:
            return node, key
    return node, key


def format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class PathReporter(Reporter):
    """A Reporter that also places a problem by its path in the located tree, such as
    `("models", "a", "cmd")`: at the value found there (or at its key), underlining the
    value's source when it fits on one line. A path that stops early points at the deepest
    node it reaches."""

    def __init__(self, file: str, root: YNode | None) -> None:
        super().__init__(file)
        self.root = root

    def locate(self, loc: tuple[Any, ...], key: bool = False) -> tuple[Pos | None, int]:
        """Position of the value (or key) at loc, and the length of its first source line."""
        node, key_node = node_at(self.root, loc)
        if key and key_node is not None:
            return key_node.pos, max(1, len(str(key_node.value)))
        if node is None:
            return None, 1
        if isinstance(node, YScalar) and node.raw and node.pos.line == node.end.line:
            return node.pos, max(1, len(node.raw))
        return node.pos, 1

    def add_at(
        self,
        severity: Severity,
        code: str,
        message: str,
        loc: tuple[Any, ...],
        hint: str | None = None,
        key: bool = False,
        length: int = 1,
    ) -> None:
        pos, width = self.locate(loc, key)
        self.add(severity, code, message, pos, format_path(loc) or None, hint, max(length, width))

    def error_at(
        self,
        code: str,
        message: str,
        loc: tuple[Any, ...],
        hint: str | None = None,
        key: bool = False,
        length: int = 1,
    ) -> None:
        self.add_at(Severity.ERROR, code, message, loc, hint, key, length)

    def warning_at(
        self,
        code: str,
        message: str,
        loc: tuple[Any, ...],
        hint: str | None = None,
        key: bool = False,
        length: int = 1,
    ) -> None:
        self.add_at(Severity.WARNING, code, message, loc, hint, key, length)
