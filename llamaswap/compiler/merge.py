"""Merge: several config sources (`-config` then `-config-dir/*.yaml`) into one document,
by llama-swap's rules (its `internal/config/merge.go`, reference §1).

- Sources are merged in the order given (the caller sorts the directory's files by name).
  Empty files (or only comments) are skipped; a top level that is not a mapping is an error.
- Under an identity map (`models`, `groups`, `profiles`, `selectors`, `peers`, `matrix`,
  `routing.router.settings.groups`, `routing.router.settings.matrix`) each child names one
  thing: the same child in two sources is an error.
- Elsewhere mappings merge key by key, lists are concatenated, a null yields to a value,
  equal scalars agree, and different scalars or different kinds are an error.

The merged document is written out as YAML text for the one compile pipeline, together
with where each of its paths came from, so diagnostics can point into the source files.
Invariant: pure; never raises on user input.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from llamaswap.compiler.diagnostics import Diagnostic, Reporter
from llamaswap.compiler.source import Pos, YMap, YNode, YScalar, YSeq, load_document

IDENTITY_MAPS = frozenset(
    {
        "models",
        "groups",
        "profiles",
        "selectors",
        "peers",
        "matrix",
        "routing.router.settings.groups",
        "routing.router.settings.matrix",
    }
)


@dataclass(frozen=True)
class Source:
    name: str
    text: str


@dataclass
class Merged:
    text: str | None  # None when a source could not be merged
    diagnostics: list[Diagnostic]
    origins: dict[str, tuple[str, Pos]] = field(default_factory=dict)  # path -> (file, position)

    def locate(self, d: Diagnostic) -> Diagnostic:
        """`d` (found in the merged text) placed in the source file its path came from."""
        if d.path is None:
            return d
        path = d.path
        while path:
            if path in self.origins:
                file, pos = self.origins[path]
                exact = path == d.path
                return replace(
                    d, file=file, line=pos.line, column=pos.column, length=d.length if exact else 1
                )
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return d


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_null(node: YNode | None) -> bool:
    return node is None or (isinstance(node, YScalar) and node.value is None)


class _Merger:
    def __init__(self) -> None:
        self.origins: dict[str, tuple[str, Pos]] = {}

    def record(self, node: YNode, path: str, file: str, key_pos: Pos | None = None) -> None:
        """Remember where `node` (now at `path`) and everything under it came from."""
        # A scalar is pointed at by its value (as a single-file compile does); a block by its key.
        self.origins[path] = (file, node.pos if isinstance(node, YScalar) or key_pos is None else key_pos)
        if isinstance(node, YMap):
            for k, v in node.items:
                self.record(v, _join(path, str(k.value)), file, k.pos)
        elif isinstance(node, YSeq):
            for i, item in enumerate(node.items):
                self.record(item, f"{path}[{i}]", file)

    def mapping(self, dst: YMap, src: YMap, path: str, file: str, report: Reporter) -> bool:
        for key, value in src.items:
            name = str(key.value)
            child = _join(path, name)
            existing = dst.key_node(name)
            if existing is None:
                dst.items.append((key, value))
                self.record(value, child, file, key.pos)
                continue
            index = next(i for i, (k, _) in enumerate(dst.items) if k is existing)
            current = dst.items[index][1]
            if child in IDENTITY_MAPS:
                if not (isinstance(current, YMap) and isinstance(value, YMap)):
                    if _is_null(current) or _is_null(value):
                        if _is_null(current):
                            dst.items[index] = (existing, value)
                            self.record(value, child, file, key.pos)
                        continue
                    report.error(
                        "LS317",
                        f"conflict at {child!r}: expected a mapping, introduced by {file}",
                        key.pos,
                        child,
                        hint="this key maps names to definitions in every file",
                    )
                    return False
                for k2, v2 in value.items:
                    if current.key_node(str(k2.value)) is not None:
                        report.error(
                            "LS317",
                            f"duplicate {name} {str(k2.value)!r} found in {file} (already defined "
                            "in another config source)",
                            k2.pos,
                            _join(child, str(k2.value)),
                            hint=f"define {name}.{k2.value} in one file only",
                        )
                        return False
                    current.items.append((k2, v2))
                    self.record(v2, _join(child, str(k2.value)), file, k2.pos)
                continue
            merged = self.value(current, value, child, file, key, report)
            if merged is None:
                return False
            dst.items[index] = (existing, merged)
        return True

    def value(
        self, dst: YNode, src: YNode, path: str, file: str, key: YScalar, report: Reporter
    ) -> YNode | None:
        if isinstance(dst, YMap) and isinstance(src, YMap):
            return dst if self.mapping(dst, src, path, file, report) else None
        if isinstance(dst, YSeq) and isinstance(src, YSeq):
            start = len(dst.items)
            dst.items.extend(src.items)
            for i, item in enumerate(src.items):
                self.record(item, f"{path}[{start + i}]", file)
            return dst
        if _is_null(dst):
            self.record(src, path, file, key.pos)
            return src
        if _is_null(src):
            return dst
        if isinstance(dst, YScalar) and isinstance(src, YScalar):
            if dst.value == src.value and type(dst.value) is type(src.value):
                return dst
            report.error(
                "LS317",
                f"conflict at {path!r}: {file} sets a different value than a previous source",
                src.pos,
                path,
                hint="set it in one file only, or to the same value",
            )
            return None
        report.error(
            "LS317",
            f"conflict at {path!r}: a {_kind(src)} in {file}, a {_kind(dst)} in a previous source",
            src.pos,
            path,
        )
        return None


def _kind(node: YNode) -> str:
    return "mapping" if isinstance(node, YMap) else "list" if isinstance(node, YSeq) else "value"


class _QuotedDumper(yaml.SafeDumper):
    """Every string double-quoted, so the text reads back with the same types."""


_QuotedDumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style='"'))


def _plain(node: YNode | None) -> Any:
    if node is None:
        return None
    if isinstance(node, YScalar):
        return node.value
    if isinstance(node, YSeq):
        return [_plain(i) for i in node.items]
    return {str(k.value): _plain(v) for k, v in node.items}


def merge_sources(sources: list[Source]) -> Merged:
    """One document from `sources`, merged in order; errors are located in their file."""
    diagnostics: list[Diagnostic] = []
    merger = _Merger()
    merged: YMap | None = None
    for src in sources:
        report = Reporter(src.name)
        doc = load_document(src.text, src.name)
        diagnostics.extend(doc.diagnostics)
        if doc.diagnostics and any(d.is_error for d in doc.diagnostics):
            return Merged(None, diagnostics)
        root = doc.root
        if _is_null(root):
            continue
        if not isinstance(root, YMap):
            report.error("LS302", f"config {src.name}: top-level YAML must be a mapping", root.pos)  # type: ignore[union-attr]
            return Merged(None, diagnostics + report.diagnostics)
        if merged is None:
            merged = root
            merger.record(root, "", src.name)
            continue
        if not merger.mapping(merged, root, "", src.name, report):
            return Merged(None, diagnostics + report.diagnostics)
    text = (
        ""
        if merged is None
        else yaml.dump(
            _plain(merged), Dumper=_QuotedDumper, sort_keys=False, allow_unicode=True, width=1 << 20
        )
    )
    merger.origins.pop("", None)
    return Merged(text, diagnostics, merger.origins)
