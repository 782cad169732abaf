"""Macros: `${env.X}`, global and per-model macros, `${MODEL_ID}`, `${PORT}`, `${PID}`.

Works in place on the located tree of one compile run (the tree is private to the run), so
every substituted value keeps its position. llama-swap's rules (reference §2, §2.3):

1. `${env.NAME}` is substituted everywhere first; an unset variable is an error, and so is a
   value holding a newline, CR or NUL.
2. Macro declarations are checked: name < 64 chars, `^[a-zA-Z0-9_-]+$`, scalar value, no
   self-reference, not a reserved name (PID, PORT, MODEL_ID).
3. `cmd`/`cmdStop` lose their `#` comment lines; the default proxy is inserted. Global macros
   are applied to every top-level value except `models`; each model gets the merged list
   [MODEL_ID, globals…, model macros (override in place or append)], substituted in reverse
   declaration order, so a macro can use the ones declared before it.
   A value that is exactly `${name}` keeps the macro's scalar type.
4. `${PORT}`: models in sorted ID order; only a model whose cmd holds `${PORT}` takes a port,
   counting up from startPort. A hot reload pins ports (`keep_ports`, when startPort is the
   one they were allocated from): a pinned model keeps its port, the others count up past them. `${PORT}` in proxy without it in cmd is an error.
5. Nothing of the form `${…}` may remain, except `${PID}` in cmdStop and, in a model that
   declares `resources`, `${GPU}` / `${GPUS}` in cmd, cmdStop and env (substituted when the
   model starts, with the devices it was placed on; a user macro of that name wins).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from llamaswap.compiler.diagnostics import Diagnostic, Reporter
from llamaswap.compiler.keys import TOP
from llamaswap.compiler.source import Pos, YMap, YNode, YScalar, YSeq, is_go_timestamp, resolve_plain
from llamaswap.compiler.suggest import did_you_mean

ENV_REF = re.compile(r"\$\{env\.([a-zA-Z_][a-zA-Z0-9_]*)\}")
# What ${env.NAME} accepts as NAME.
_ENV_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
ANY_REF = re.compile(r"\$\{([^}]*)\}")
MACRO_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
RESERVED = ("PID", "PORT", "MODEL_ID")
# Left in place by the compiler and substituted at start time with the model's placement
# (resources): `${GPU}` the first device's id, `${GPUS}` all of them, comma-separated.
DEVICE_MACROS = ("GPU", "GPUS")
DEVICE_FIELDS = ("cmd", "cmdStop", "env")
TOP_KEYS = frozenset(TOP.children or {})
DEFAULT_PROXY = "http://localhost:${PORT}"


def go_format(value: Any) -> str:
    """Format a scalar the way Go's %v does for YAML-decoded values."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "+Inf" if value > 0 else "-Inf"
        return _go_float_text(value)
    if value is None:
        return "<nil>"
    return str(value)


def _reads_differently(value: str, style: str | None) -> bool:
    """Whether text substituted into a scalar of this style changes how YAML parses it: in a
    plain scalar a ' #' starts a comment and ': ' a mapping; in a single-quoted one a quote ends it."""
    if style is None:
        return " #" in value or ": " in value or value.endswith(":") or "\t#" in value
    if style == "'":
        return "'" in value
    return False


def _go_float_text(value: float) -> str:
    """A finite float as Go's fmt %v writes it: the shortest digits that read back, in %e form
    when the exponent is below -4 or 6 and above (1e+06, 1.5e-05), else plain (123456.7, 8)."""
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exp = Decimal(repr(value)).as_tuple()
    assert isinstance(exp, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exp += len(digit_tuple) - len(digits)
    point = len(digits) + exp - 1  # the decimal exponent of the first digit
    neg = "-" if sign else ""
    if point < -4 or point >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{neg}{mantissa}e{'+' if point >= 0 else '-'}{abs(point):02d}"
    if point >= 0:
        whole, frac = digits[: point + 1].ljust(point + 1, "0"), digits[point + 1 :]
    else:
        whole, frac = "0", "0" * (-point - 1) + digits
    return neg + whole + ("." + frac if frac else "")


@dataclass
class MacroResult:
    ports: dict[str, int]  # model ID -> allocated port
    diagnostics: list[Diagnostic]


class _Pass:
    def __init__(
        self,
        file: str,
        root: YMap,
        env: Mapping[str, str],
        keep_ports: Mapping[str, int] | None = None,
        keep_start_port: int | None = None,
    ):
        self.file = file
        self.root = root
        self.env = env
        self.keep_ports = dict(keep_ports or {})
        self.keep_start_port = keep_start_port
        self.report = Reporter(file)
        # Macro declarations in scope: name -> (config path, value scalar).
        self.last_nodes: dict[str, tuple[str, YScalar]] = {}
        self.origins: dict[str, tuple[str, YScalar]] = {}
        self.reported_origins: set[tuple[str, str]] = set()

    # -- helpers -------------------------------------------------------------------------
    def scalars(self, node: YNode | None, path: str, keys: bool = False):
        """Yield (path, scalar) for every scalar value below node (and keys if asked)."""
        if node is None:
            return
        if isinstance(node, YScalar):
            yield path, node
        elif isinstance(node, YSeq):
            for i, item in enumerate(node.items):
                yield from self.scalars(item, f"{path}[{i}]", keys)
        else:
            for k, v in node.items:
                child = f"{path}.{k.value}" if path else str(k.value)
                if keys:
                    yield child + " (key)", k
                yield from self.scalars(v, child, keys)

    # -- 1. environment ------------------------------------------------------------------
    def substitute_env(self) -> None:
        for path, s in self.scalars(self.root, "", keys=True):
            if not isinstance(s.value, str) or "${env." not in s.value:
                continue
            text = s.value
            out = []
            last = 0
            ok = True
            for m in ENV_REF.finditer(text):
                name = m.group(1)
                value = self.env.get(name)
                if value is None:
                    self.report.error(
                        "LS305",
                        f"environment variable '{name}' is not set",
                        s.position_of(m.start()),
                        path.removesuffix(" (key)"),
                        hint=f"export {name}=... before running, or remove the reference",
                        length=len(m.group(0)),
                    )
                    ok = False
                    continue
                if any(c in value for c in "\n\r\0"):
                    self.report.error(
                        "LS305",
                        f"environment variable '{name}' contains a newline, carriage return or NUL",
                        s.position_of(m.start()),
                        path.removesuffix(" (key)"),
                        length=len(m.group(0)),
                    )
                    ok = False
                    continue
                if s.style != '"':
                    # llama-swap substitutes into the YAML text, escaping \ and " for a
                    # double-quoted string; anywhere else the escapes stay in the value.
                    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
                    if escaped != value:
                        self.report.warning(
                            "LS412",
                            f"environment variable '{name}' holds a backslash or a double quote: "
                            f"llama-swap escapes them, and outside double quotes the escapes stay "
                            f"(it reads: {escaped})",
                            s.position_of(m.start()),
                            path.removesuffix(" (key)"),
                            hint=f'write it in double quotes ("...${{env.{name}}}...") to get the value as it is',
                            length=len(m.group(0)),
                        )
                        value = escaped
                    if _reads_differently(value, s.style):
                        self.report.warning(
                            "LS412",
                            f"the value of environment variable '{name}' changes how this YAML reads: "
                            "llama-swap substitutes it into the text before parsing, so it is cut at a "
                            "' #' comment, or breaks the line's syntax",
                            s.position_of(m.start()),
                            path.removesuffix(" (key)"),
                            hint=f'write it in double quotes ("...${{env.{name}}}...")',
                            length=len(m.group(0)),
                        )
                out.append(text[last : m.start()])
                out.append(value)
                last = m.end()
            if not ok:
                continue
            out.append(text[last:])
            new = "".join(out)
            if new != text:
                whole = ENV_REF.fullmatch(text) is not None
                s.value = resolve_plain(new) if (whole and s.style is None) else new
                s.rewritten = True

    # -- 2. declarations -----------------------------------------------------------------
    def declared(self, node: YNode | None, path: str, prefix: str) -> list[tuple[str, Any]]:
        """Validated (name, value) macro list, in declaration order."""
        if node is None or (isinstance(node, YScalar) and node.value is None):
            return []
        if not isinstance(node, YMap):
            self.report.error("LS306", f"{prefix}macros must be a mapping", node.pos, path)
            return []
        out: list[tuple[str, Any]] = []
        self.last_nodes = {}
        for k, v in node.items:
            name = str(k.value)
            kpath = f"{path}.{name}"
            bad = False
            if len(name) >= 64:
                self.report.error(
                    "LS306",
                    f"{prefix}macro name '{name}' exceeds maximum length of 63 characters",
                    k.pos,
                    kpath,
                    length=len(name),
                )
                bad = True
            elif not MACRO_NAME.match(name):
                self.report.error(
                    "LS306",
                    f"{prefix}macro name '{name}' must match ^[a-zA-Z0-9_-]+$",
                    k.pos,
                    kpath,
                    hint="use letters, digits, '_' or '-' only",
                    length=max(1, len(name)),
                )
                bad = True
            if name in RESERVED:
                self.report.error(
                    "LS306",
                    f"{prefix}macro name '{name}' is reserved",
                    k.pos,
                    kpath,
                    hint="PID, PORT and MODEL_ID are provided by llamaswap",
                    length=len(name),
                )
                bad = True
            if not isinstance(v, YScalar) or v.value is None:
                self.report.error(
                    "LS306", f"{prefix}macro '{name}' must be a string, number or boolean", v.pos, kpath
                )
                bad = True
            elif v.style is None and isinstance(v.value, str) and is_go_timestamp(v.value):
                # yaml.v3 reads a plain date as a time, which llama-swap refuses as a macro value.
                self.report.error(
                    "LS306",
                    f"{prefix}macro '{name}' is a date to YAML ({v.value}); a macro must be a string, "
                    "number or boolean",
                    v.pos,
                    kpath,
                    hint=f'quote it: {name}: "{v.value}"',
                    length=len(v.value),
                )
                bad = True
            elif isinstance(v.value, str) and f"${{{name}}}" in v.value:
                self.report.error(
                    "LS306",
                    f"{prefix}macro '{name}' contains self-reference",
                    v.position_of(v.value.index(f"${{{name}}}")),
                    kpath,
                    length=len(name) + 3,
                )
                bad = True
            if not bad:
                assert isinstance(v, YScalar)
                out.append((name, v.value))
                self.last_nodes[name] = (kpath, v)
        return out

    # -- 3. substitution -----------------------------------------------------------------
    @staticmethod
    def apply(s: YScalar, macros: list[tuple[str, Any]]) -> None:
        """Substitute macros into one scalar, last declared first."""
        if not isinstance(s.value, str) or "${" not in s.value:
            return
        value: Any = s.value
        for name, mval in reversed(macros):
            if not isinstance(value, str):
                break
            slug = f"${{{name}}}"
            if slug not in value:
                continue
            if value == slug:
                value = mval
            else:
                value = value.replace(slug, go_format(mval))
        if value != s.value or type(value) is not type(s.value):
            s.value = value
            s.rewritten = True

    @staticmethod
    def strip_comments(s: YScalar) -> None:
        if not isinstance(s.value, str):
            return
        lines = s.value.split("\n")
        kept = [ln for ln in lines if not ln.lstrip().startswith("#")]
        if len(kept) != len(lines):
            s.value = "\n".join(kept)
            s.rewritten = True

    def run(self) -> dict[str, int]:
        self.substitute_env()
        global_macros = self.declared(self.root.get("macros"), "macros", "")
        global_nodes = dict(self.last_nodes)
        models = self.root.get("models")

        for k, v in self.root.items:
            if k.value in ("models", "macros") or str(k.value).startswith("x-"):
                continue
            for _, s in self.scalars(v, str(k.value)):
                self.apply(s, global_macros)
        # Read after the global macros, as llama-swap does: `startPort: ${base}` works.
        sp = self.root.get("startPort")
        start_port = sp.value if isinstance(sp, YScalar) and type(sp.value) is int and sp.value >= 1 else 5800

        ports: dict[str, int] = {}
        if not isinstance(models, YMap):
            self.global_leftovers(global_macros, global_nodes)
            return ports
        next_port = start_port
        present = {str(k.value) for k, _ in models.items}
        pinned = (
            {m: p for m, p in self.keep_ports.items() if m in present}
            if self.keep_start_port == start_port
            else {}
        )
        taken = set(pinned.values())
        for mk, model in sorted(models.items, key=lambda kv: str(kv[0].value)):
            model_id = str(mk.value)
            mpath = f"models.{model_id}"
            if not isinstance(model, YMap):
                continue
            prefix = f"model {model_id}: "
            own = self.declared(model.get("macros"), f"{mpath}.macros", prefix)
            self.origins = {**global_nodes, **self.last_nodes}
            merged: list[tuple[str, Any]] = [("MODEL_ID", model_id), *global_macros]
            for name, value in own:
                for i, (existing, _) in enumerate(merged):
                    if existing == name:
                        merged[i] = (name, value)
                        break
                else:
                    merged.append((name, value))

            for field_name in ("cmd", "cmdStop"):
                s = model.get(field_name)
                if isinstance(s, YScalar):
                    self.strip_comments(s)
            if model.get("proxy") is None:
                key = YScalar("proxy", mk.pos, mk.end, None, rewritten=True)
                model.items.append((key, YScalar(DEFAULT_PROXY, mk.pos, mk.end, None, rewritten=True)))

            for k, v in model.items:
                if k.value == "macros":
                    continue
                for _, s in self.scalars(v, f"{mpath}.{k.value}"):
                    self.apply(s, merged)
            self.rewrite_keys(model.get("filters"), merged, mpath)

            cmd = model.get("cmd")
            proxy = model.get("proxy")
            cmd_has_port = isinstance(cmd, YScalar) and isinstance(cmd.value, str) and "${PORT}" in cmd.value
            proxy_has_port = (
                isinstance(proxy, YScalar) and isinstance(proxy.value, str) and "${PORT}" in proxy.value
            )
            # A cmd of the wrong type has its own error; ${PORT} is moot. No cmd at all is fine for
            # llama-swap only with a proxy that needs no ${PORT} (the default proxy does).
            cmd_wrong_type = cmd is not None and not (
                isinstance(cmd, YScalar) and (cmd.value is None or isinstance(cmd.value, str))
            )
            if proxy_has_port and not cmd_has_port and not cmd_wrong_type:
                assert isinstance(proxy, YScalar)
                explicit = not (proxy.rewritten and proxy.pos == mk.pos)
                at = proxy.position_of(proxy.value.index("${PORT}")) if explicit else mk.pos
                self.report.error(
                    "LS308",
                    "proxy uses ${PORT}, but cmd does not ask for a port",
                    at,
                    f"{mpath}.proxy",
                    hint=(
                        (
                            f"cmd listens on {fixed}: write proxy: {fixed}, or use --port ${{PORT}} in cmd"
                            if (fixed := fixed_listen_url(cmd)) is not None
                            else "put ${PORT} in cmd (e.g. --port ${PORT}) or set proxy to the server's real URL"
                        )
                        if explicit
                        else "a model without cmd needs a proxy with its server's URL (e.g. http://192.168.1.10:8080)"
                        if not isinstance(cmd, YScalar) or not str(cmd.value or "").strip()
                        else (
                            f"the default proxy is http://localhost:${{PORT}}, but cmd listens on {fixed}: add "
                            f"proxy: {fixed}, or use --port ${{PORT}} in cmd"
                        )
                        if (fixed := fixed_listen_url(cmd)) is not None
                        else "the default proxy is http://localhost:${PORT}: add --port ${PORT} to cmd, or set "
                        "proxy to the server's URL"
                    ),
                    length=len(model_id) if not explicit else len("${PORT}"),
                )
            elif cmd_has_port:
                port = pinned.get(model_id)
                if port is None:
                    while next_port in taken:
                        next_port += 1
                    port = next_port
                    next_port += 1
                ports[model_id] = port
                port_macro = [("PORT", port)]
                for k, v in model.items:
                    if k.value == "macros":
                        continue
                    for _, s in self.scalars(v, f"{mpath}.{k.value}"):
                        self.apply(s, port_macro)

            known = [name for name, _ in merged] + ["PORT"]
            placed = model.key_node("resources") is not None
            for k, v in model.items:
                if k.value == "macros":
                    continue
                for path, s in self.scalars(v, f"{mpath}.{k.value}"):
                    if k.value == "proxy" and proxy_has_port and not cmd_has_port:
                        continue  # already reported (LS308)
                    if k.value == "cmd" and cmd_wrong_type:
                        continue  # a cmd that is not a string has its own error (LS302)
                    self.leftovers(
                        s,
                        path,
                        known,
                        allow_pid=(k.value == "cmdStop"),
                        port_allocated=cmd_has_port,
                        devices=(placed, k.value in DEVICE_FIELDS),
                    )
        self.global_leftovers(global_macros, global_nodes)
        return ports

    def global_leftovers(
        self, global_macros: list[tuple[str, Any]], global_nodes: dict[str, tuple[str, YScalar]]
    ) -> None:
        """Leftovers outside models (global macros only), with or without a models block."""
        known_global = [name for name, _ in global_macros]
        self.origins = global_nodes
        for k, v in self.root.items:
            if k.value in ("models", "macros") or str(k.value) not in TOP_KEYS:
                continue  # llama-swap checks only the keys it knows (a `defs:` of anchors is free)
            for path, s in self.scalars(v, str(k.value)):
                self.leftovers(s, path, known_global, allow_pid=False, model_scope=False)

    def rewrite_keys(self, filters: YNode | None, merged: list[tuple[str, Any]], mpath: str) -> None:
        """setParamsByID keys may hold macros (`${MODEL_ID}:high`). Two keys that expand to the
        same name are refused, as llama-swap refuses them (it would keep one of the two)."""
        if not isinstance(filters, YMap):
            return
        by_id = filters.get("setParamsByID")
        if not isinstance(by_id, YMap):
            return
        seen: dict[str, str] = {}
        for k, _ in by_id.items:
            written = k.value if isinstance(k.value, str) else go_format(k.value)
            self.apply(k, merged)
            if not isinstance(k.value, str):
                k.value = go_format(k.value)
            if k.value in seen:
                self.report.error(
                    "LS304",
                    f"setParamsByID keys '{seen[k.value]}' and '{written}' both resolve to '{k.value}'",
                    k.pos,
                    f"{mpath}.filters.setParamsByID",
                    hint="each key names one requested model ID; merge the two entries",
                    length=len(written),
                )
            else:
                seen[k.value] = written

    def leftovers(
        self,
        s: YScalar,
        path: str,
        known: list[str],
        allow_pid: bool,
        model_scope: bool = True,
        port_allocated: bool = True,
        devices: tuple[bool, bool] = (False, False),  # (model declares resources, cmd/cmdStop/env)
    ) -> None:
        if not isinstance(s.value, str) or "${" not in s.value:
            return
        for m in ANY_REF.finditer(s.value):
            name = m.group(1)
            if name == "PID" and allow_pid:
                continue
            if name in DEVICE_MACROS and model_scope and all(devices):
                continue  # substituted when the model starts, with its placement
            if ENV_REF.fullmatch(m.group(0)):
                continue  # an unusable environment variable, already reported (LS305)
            length = len(m.group(0))
            where, at_path = path, path
            if not s.rewritten:
                pos: Pos | None = s.position_of(m.start())
            else:
                pos = s.find_in_source(m.group(0))
                if pos is None:
                    # Brought in by a macro's value: point at that declaration, once.
                    origin = self.origin_of(m.group(0))
                    if origin is None:
                        pos, length = s.pos, 1
                    else:
                        macro, (decl_path, decl) = origin
                        if (decl_path, m.group(0)) in self.reported_origins:
                            continue
                        self.reported_origins.add((decl_path, m.group(0)))
                        found = (
                            decl.find_in_source(m.group(0))
                            if decl.rewritten
                            else decl.position_of(str(decl.value).index(m.group(0)))
                        )
                        pos = found or decl.pos
                        where, at_path = f"{path}, through macro '{macro}'", decl_path
            via = "" if where == at_path else f" (in {where})"
            if name == "PID":
                self.report.error(
                    "LS307",
                    f"'${{PID}}' has a value only in cmdStop{via}",
                    pos,
                    at_path,
                    hint="${PID} is the upstream's process ID, known when it is stopped: e.g. cmdStop: kill ${PID}",
                    length=length,
                )
            elif name in DEVICE_MACROS:
                if not model_scope:
                    message = f"'${{{name}}}' has a value only inside a model{via}"
                    hint = "it names the devices a model is placed on"
                elif not devices[0]:
                    message = (
                        f"'${{{name}}}' has no value{via}: the model declares no resources, so it is placed "
                        "on no device"
                    )
                    hint = (
                        "add resources: {vram: ...} to the model (and devices under the top-level resources)"
                    )
                else:
                    message = f"'${{{name}}}' has a value only in cmd, cmdStop and env{via}"
                    hint = "${GPU} and ${GPUS} are substituted when the model starts, in what starts it"
                self.report.error("LS307", message, pos, at_path, hint=hint, length=length)
            elif name == "PORT" and model_scope and not port_allocated:
                self.report.error(
                    "LS307",
                    f"'${{PORT}}' has no value{via}: the model's cmd does not use ${{PORT}}, so it gets no port",
                    pos,
                    at_path,
                    hint="add --port ${PORT} to cmd, or write the port number",
                    length=length,
                )
            elif name in ("PORT", "MODEL_ID") and model_scope:
                self.report.error(
                    "LS307",
                    f"'${{{name}}}' has no value here{via}",
                    pos,
                    at_path,
                    length=length,
                )
            elif name in ("PORT", "MODEL_ID"):
                self.report.error(
                    "LS307",
                    f"'${{{name}}}' has a value only inside a model{via}",
                    pos,
                    at_path,
                    length=length,
                )
            elif name in known:
                # Declared, yet left over: macros are substituted last-declared first, so a
                # macro can only use macros declared before it.
                self.report.error(
                    "LS307",
                    f"macro '${{{name}}}' is used before it is declared{via}",
                    pos,
                    at_path,
                    hint=f"a macro can use only the macros declared above it: move '{name}' up",
                    length=length,
                )
            else:
                suggestion = did_you_mean(name, known, written="${{{}}}")
                if name.startswith("env."):
                    suggestion = "environment references look like ${env.NAME} with NAME matching [a-zA-Z_][a-zA-Z0-9_]*"
                elif suggestion is None and name.isupper() and _ENV_NAME.fullmatch(name):
                    # ${HOME} as a shell reads it (an upper-case name, so the hint does not depend on the
                    # environment): llama-swap's macros are not the environment.
                    suggestion = (
                        f"macros are not environment variables: write ${{env.{name}}} for the "
                        f"environment's {name}, or declare {name} under 'macros'"
                    )
                hint = suggestion or "declare it under 'macros' (globally or in the model) before using it"
                self.report.error(
                    "LS307",
                    f"unknown macro '${{{name}}}'{via}",
                    pos,
                    at_path,
                    hint=hint,
                    length=length,
                )

    def origin_of(self, text: str) -> tuple[str, tuple[str, YScalar]] | None:
        """The macro declaration (in scope) whose value holds `text` literally."""
        for name, (decl_path, decl) in reversed(list(self.origins.items())):
            if isinstance(decl.value, str) and text in decl.value:
                return name, (decl_path, decl)
        return None


_FIXED_PORT = re.compile(r"(?:^|\s)(?:--port|--listen-port|-p)(?:=|\s+)(\d{1,5})(?![\d.])")
_FIXED_HOST = re.compile(r"(?:^|\s)--host(?:=|\s+)(\S+)")


def fixed_listen_url(cmd: YNode | None) -> str | None:
    """`http://host:port` for a cmd that names its own port (`--port 9602`), for a hint."""
    if not isinstance(cmd, YScalar) or not isinstance(cmd.value, str):
        return None
    port = _FIXED_PORT.search(cmd.value)
    if port is None or not 0 < int(port.group(1)) < 65536:
        return None
    host = _FIXED_HOST.search(cmd.value)
    name = host.group(1).strip("'\"") if host is not None else "127.0.0.1"
    if name in ("0.0.0.0", "::", "[::]", "") or "$" in name:
        name = "127.0.0.1"
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return f"http://{name}:{port.group(1)}"


def expand_macros(
    root: YMap,
    file: str,
    env: Mapping[str, str],
    keep_ports: Mapping[str, int] | None = None,
    keep_start_port: int | None = None,
) -> MacroResult:
    """Run env substitution, macro expansion and port allocation over `root`, in place.
    `keep_ports` (model -> port, allocated from `keep_start_port`) pins ports on a reload."""
    p = _Pass(file, root, env, keep_ports, keep_start_port)
    ports = p.run()
    return MacroResult(ports, p.report.diagnostics)
