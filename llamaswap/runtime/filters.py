"""Filters: rewrite a request body for the upstream. Pure.

JSON bodies. Order (llama-swap `internal/server/filters.go`): `useModelName` rewrites `model`;
then `filters.stripParams` removes keys (sorted, de-duplicated); then `filters.setParams` sets
keys (sorted); then `filters.setParamsByID[<requested name>]`. Keys are dotted paths (`a.b` is
key `b` inside object `a`; `\\.` is a literal dot). `model` is protected from strip and set.

Multipart bodies (audio transcriptions, image edits): the `model` field is read, and with
`useModelName` replaced, at the byte level: every other byte of the body (file parts
included) reaches the upstream unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from email.message import Message
from typing import Any

from llamaswap.compiler.config import Filters, ModelConfig

PROTECTED = frozenset({"model"})


def split_path(path: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(path):
        c = path[i]
        if c == "\\" and i + 1 < len(path):
            cur.append(path[i + 1])
            i += 2
            continue
        if c == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def delete_path(body: dict, path: str) -> None:
    parts = split_path(path)
    node: Any = body
    for p in parts[:-1]:
        if not isinstance(node, dict) or p not in node:
            return
        node = node[p]
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def set_path(body: dict, path: str, value: Any) -> None:
    parts = split_path(path)
    node: Any = body
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[parts[-1]] = copy.deepcopy(value)


def needs_rewrite(model: ModelConfig, requested: str) -> bool:
    return bool(model.use_model_name) or filters_apply(model.filters, requested)


def filters_apply(f: Filters, requested: str) -> bool:
    return bool(f.stripped_keys() or f.set_params or requested in f.set_params_by_id)


def rewrite_body(body: dict, model: ModelConfig, requested: str) -> dict:
    """The body to send upstream (a new dict; `body` is not changed, nested objects neither)."""
    return apply_filters(body, model.filters, requested, model.use_model_name)


def apply_filters(body: dict, f: Filters, requested: str, use_model_name: str = "") -> dict:
    """`body` rewritten by `f` (a model's or a peer's filters) for the `requested` name,
    `model` first set to `use_model_name` if given (a new dict; `body` is not changed)."""
    out = copy.deepcopy(body)
    if use_model_name:
        out["model"] = use_model_name
    for key in f.stripped_keys():
        if split_path(key)[0] not in PROTECTED:
            delete_path(out, key)
    _apply_set(out, f.set_params)
    by_id: Mapping[str, Any] | None = f.set_params_by_id.get(requested)
    if by_id:
        _apply_set(out, by_id)
    return out


def _apply_set(out: dict, params: Mapping[str, Any]) -> None:
    for key in sorted(params):
        if split_path(key)[0] in PROTECTED:
            continue
        set_path(out, key, params[key])


# -- multipart/form-data ----------------------------------------------------------------------


def multipart_boundary(content_type: str) -> bytes | None:
    """The boundary of a `multipart/form-data` Content-Type header, or None."""
    msg = Message()
    msg["Content-Type"] = content_type
    if msg.get_content_type() != "multipart/form-data":
        return None
    boundary = msg.get_param("boundary")
    return boundary.encode("latin-1") if isinstance(boundary, str) and boundary else None


def _field_name(head: bytes) -> str | None:
    for line in head.split(b"\r\n"):
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == b"content-disposition":
            msg = Message()
            msg["Content-Disposition"] = value.strip().decode("latin-1")
            name = msg.get_param("name", header="content-disposition")
            return name if isinstance(name, str) else None
    return None


def _parts(raw: bytes, boundary: bytes) -> list[bytes]:
    # A multipart body is preamble, then parts each introduced by `--boundary`, then
    # `--boundary--`; the boundary never occurs inside a part, so splitting on it is exact.
    return raw.split(b"--" + boundary)


def multipart_field(raw: bytes, boundary: bytes, name: str) -> bytes | None:
    """The value of the first form field called `name`, or None."""
    for part in _parts(raw, boundary)[1:-1]:
        head, sep, body = part.partition(b"\r\n\r\n")
        if sep and _field_name(head) == name:
            return body[:-2] if body.endswith(b"\r\n") else body
    return None


def replace_multipart_field(raw: bytes, boundary: bytes, name: str, value: bytes) -> bytes:
    """`raw` with the value of every form field called `name` replaced by `value`."""
    parts = _parts(raw, boundary)
    for i in range(1, len(parts) - 1):
        head, sep, body = parts[i].partition(b"\r\n\r\n")
        if sep and _field_name(head) == name:
            parts[i] = head + sep + value + (b"\r\n" if body.endswith(b"\r\n") else b"")
    return (b"--" + boundary).join(parts)


class MultipartModelScanner:
    """Finds the `model` field of a multipart body that arrives piece by piece, so that a
    request can be routed (and its model field rewritten) without reading the whole body.

    Feed it the bytes read so far (always the same growing buffer); it remembers how far it
    has looked, so each byte is searched about once."""

    def __init__(self, boundary: bytes) -> None:
        self.delim = b"--" + boundary
        self._part: int | None = None  # start of the delimiter opening the current part
        self._search = 0

    def feed(self, buf: bytes | bytearray) -> tuple[str, int] | None:
        """(the model, the index where its part ends: the next delimiter) once the whole
        model field has been read; None until then (or if there is none)."""
        d = self.delim
        while True:
            if self._part is None:
                i = buf.find(d, self._search)
                if i == -1:
                    self._search = max(0, len(buf) - len(d) + 1)
                    return None
                self._part, self._search = i, i + len(d)
            j = buf.find(d, self._search)
            if j == -1:
                self._search = max(self._part + len(d), len(buf) - len(d) + 1)
                return None
            start = self._part + len(d)
            k = buf.find(b"\r\n\r\n", start, j)
            if k != -1 and _field_name(bytes(buf[start:k])) == "model":
                value = bytes(buf[k + 4 : j])
                if value.endswith(b"\r\n"):
                    value = value[:-2]
                return value.decode("utf-8", "replace").strip(), j
            self._part, self._search = j, j + len(d)


def replace_multipart_head_model(head: bytes, boundary: bytes, end: int, value: bytes) -> bytes:
    """`head` (the start of a multipart body) with the `model` field that ends at `end`
    replaced; the bytes from `end` on are untouched."""
    delim = b"--" + boundary
    return replace_multipart_field(head[:end] + delim, boundary, "model", value)[: -len(delim)] + head[end:]
