"""Keys: every config key llama-swap knows, and whether llamaswap implements it.

The check walks the located tree before anything else. Outcomes per key:
- implemented: nothing to say;
- known to llama-swap but not implemented by llamaswap (or ignored by llama-swap itself):
  a warning (LS400/LS407) that says so, and the key has no effect;
- unknown here: llama-swap ignores it, so it is a warning, never an error (`compile --strict`
  makes it one): LS408 with a "did you mean" hint, LS409 when it is a llama-swap key that
  belongs somewhere else (top-level `ttl`, a model's `tools`), LS410 for the listen address
  (`listen`, `host`, `port`), which is a command-line flag.

Invariant: the schema below is data; adding a key is a one-line change.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamaswap.compiler.diagnostics import Diagnostic, Reporter
from llamaswap.compiler.source import YMap, YNode, YScalar, YSeq
from llamaswap.compiler.suggest import closest

# Top-level keys with this prefix are ignored (docker compose's convention for extension
# fields), so a config can hold YAML anchors somewhere without tripping the unknown-key check.
EXTENSION_PREFIX = "x-"

OK = "ok"
UNIMPLEMENTED = "unimplemented"
IGNORED = "ignored"


@dataclass(frozen=True)
class Key:
    """A known key. `children` describes a mapping's fixed keys; `each` the value schema of
    a mapping with user-chosen keys (models, groups, …); `items` a sequence's items."""

    status: str = OK
    note: str = ""
    children: dict[str, Key] | None = None
    each: Key | None = None
    items: Key | None = None
    free: bool = False  # any content (user data such as metadata or setParams)


def _leaf(status: str = OK, note: str = "") -> Key:
    return Key(status=status, note=note)


def _map(children: dict[str, Key], status: str = OK, note: str = "") -> Key:
    return Key(status=status, note=note, children=children)


FREE = Key(free=True)

_TIMEOUTS = _map(
    {
        "connect": _leaf(),
        "keepalive": _leaf(),
        "responseHeader": _leaf(),
        "idleConn": _leaf(),
        "streamIdle": _leaf(),  # llamaswap extension
        "tlsHandshake": _leaf(
            IGNORED, "llamaswap bounds the whole connect, TLS included, by timeouts.connect"
        ),
        "expectContinue": _leaf(IGNORED, "llamaswap answers Expect: 100-continue itself"),
    }
)

_ALIAS_OBJECT = _map({"id": _leaf(), "name": _leaf(), "description": _leaf(), "unlisted": _leaf()})

MODEL = _map(
    {
        "cmd": _leaf(),
        "cmdStop": _leaf(),
        "proxy": _leaf(),
        "aliases": Key(items=Key(children=_ALIAS_OBJECT.children, free=False)),
        "env": _leaf(),
        "checkEndpoint": _leaf(),
        "ttl": _leaf(),
        "unloadTimeout": _leaf(),
        "unlisted": _leaf(),
        "useModelName": _leaf(),
        "name": _leaf(),
        "description": _leaf(),
        "concurrencyLimit": _leaf(),
        "filters": _map(
            {
                "stripParams": _leaf(),
                "strip_params": _leaf(note="legacy spelling of stripParams"),
                "setParams": FREE,
                "setParamsByID": FREE,
            }
        ),
        "macros": FREE,
        "metadata": FREE,
        "sendLoadingState": _leaf(),
        "timeouts": _TIMEOUTS,
        "apiKey": _leaf(),  # llamaswap extension: the key sent upstream
        "compat": _map({"ignoreWebsockets": _leaf()}),
        "capabilities": _map({k: _leaf() for k in ("in", "out", "tools", "reranker", "context")}),
        "healthCheckTimeout": _leaf(
            IGNORED, "llama-swap always overwrites it with the global healthCheckTimeout"
        ),
        "resources": FREE,  # llamaswap extension, checked by resources.py
    }
)

GROUP = _map({"swap": _leaf(), "exclusive": _leaf(), "persistent": _leaf(), "members": _leaf()})

MATRIX = _map({"vars": FREE, "evict_costs": FREE, "sets": FREE})

_PEER = _map(
    {
        "proxy": _leaf(),
        "models": _leaf(),
        "apiKey": _leaf(),
        "filters": _map({"stripParams": _leaf(), "setParams": FREE, "setParamsByID": FREE}),
        "timeouts": _TIMEOUTS,
    }
)

TOP = _map(
    {
        "healthCheckTimeout": _leaf(),
        "logLevel": _leaf(),
        "logTimeFormat": _leaf(),
        "logToStdout": _leaf(),
        "logRequests": _leaf(IGNORED, "llama-swap parses it but never uses it"),
        "metricsMaxInMemory": _leaf(),  # the activity store's in-memory window (runtime/activity.py)
        "captureBuffer": _leaf(UNIMPLEMENTED, "request/response capture is not implemented"),
        "store": _map({"path": _leaf()}),  # the activity store's SQLite file
        # Sent to the web UI as its uiConfig event, as llama-swap does.
        "ui": _map(
            {
                "activity": _map(
                    {
                        "session_id": _leaf()  # headers whose value the Activity page shows
                    }
                )
            }
        ),
        "performance": _map(
            {"disabled": _leaf(), "every": _leaf()}, UNIMPLEMENTED, "hardware monitoring is not implemented"
        ),
        "startPort": _leaf(),
        "sendLoadingState": _leaf(),
        "includeAliasesInList": _leaf(),
        "globalTTL": _leaf(),
        "unloadTimeout": _leaf(),
        "macros": FREE,
        "models": Key(each=MODEL),
        "apiKeys": _leaf(),
        "llamaswap": _map({"shutdownTimeout": _leaf(), "reloadDrainTimeout": _leaf(), "runtimeDir": _leaf()}),
        "hooks": _map({"on_startup": _map({"preload": _leaf()})}),
        "routing": _map(
            {
                "router": _map(
                    {
                        "use": _leaf(),
                        "settings": _map({"groups": Key(each=GROUP), "matrix": MATRIX}),
                    }
                ),
                "scheduler": _map(
                    {
                        "use": _leaf(),
                        "policy": FREE,  # a name, or {use: NAME, options...}: checked by load.py
                        "settings": _map(
                            {
                                "fifo": _map(
                                    {
                                        "priority": FREE,
                                        "max_wait": _leaf(),
                                        "stall_timeout": _leaf(),
                                        "queue_timeout": _leaf(),
                                    }
                                )
                            }
                        ),
                    }
                ),
            }
        ),
        "groups": Key(each=GROUP),
        "matrix": MATRIX,
        "peers": Key(each=_PEER),
        "upstream": _map({"ignorePaths": _leaf()}),
        "server": _map(
            {  # llamaswap extension: limits of the HTTP server (docs/guarantees.md)
                k: _leaf()
                for k in (
                    "maxBodyBytes",
                    "maxMultipartBytes",
                    "headerTimeout",
                    "bodyTimeout",
                    "keepaliveTimeout",
                    "maxConnections",
                    "allowedHosts",
                    "allowedOrigins",
                )
            }
        ),
        "profiles": Key(each=_map({"description": _leaf(), "pins": FREE})),
        "selectors": Key(
            each=_map(
                {
                    "strategy": _leaf(),
                    "targets": _leaf(),
                    "settings": _map({"spillover": _leaf()}),
                    "name": _leaf(),
                    "description": _leaf(),
                    "unlisted": _leaf(),
                    "metadata": FREE,
                }
            )
        ),
        "resources": FREE,  # llamaswap extension: devices and budgets, checked by resources.py
    }
)


def check_keys(root: YNode | None, file: str) -> list[Diagnostic]:
    """Report unknown, misplaced and known-but-inert keys under `root` (all warnings)."""
    report = Reporter(file)
    if isinstance(root, YMap):
        _check_map(root, TOP, "", report)
    return report.diagnostics


# Keys people write at the top level for the listen address: command-line flags in
# llama-swap (-listen) and llamaswap (--listen), ignored in a config file.
LISTEN_KEYS = frozenset({"listen", "host", "port", "address", "bind", "listenAddress", "listen_address"})

# Mistakes seen in real configs that similarity alone does not catch: (where, key) -> advice.
ADVICE: dict[tuple[str, str], str] = {
    ("group", "models"): "did you mean 'members'? A group lists its models under members",
    ("group", "model"): "did you mean 'members'? A group lists its models under members",
    ("top", "ttl"): "set ttl per model (models.<id>.ttl), or globalTTL for every model",
    ("top", "defaultTTL"): "did you mean 'globalTTL'?",
    (
        "model",
        "unload",
    ): "llama-swap unloads after ttl seconds idle (models.<id>.ttl); unloadTimeout is the stop grace period",
    (
        "model",
        "port",
    ): "a model's address is its proxy (proxy: http://127.0.0.1:8081); for a port llama-swap picks, "
    "write --port ${PORT} in cmd and leave proxy out",
}


def _walk(schema: Key, where: str, out: dict[str, list[str]]) -> None:
    if schema.free:
        return
    if schema.each is not None:
        _walk(schema.each, f"{where}.<id>" if where else "<id>", out)
        return
    if schema.items is not None:
        _walk(schema.items, f"{where}[]", out)
    for name, child in (schema.children or {}).items():
        path = f"{where}.{name}" if where else name
        out.setdefault(name, []).append(path)
        _walk(child, path, out)


_KNOWN_AT: dict[str, list[str]] = {}


def known_at(name: str) -> list[str]:
    """Every schema path where `name` is a key (`models.<id>.ttl`, ...)."""
    if not _KNOWN_AT:
        _walk(TOP, "", _KNOWN_AT)
    return _KNOWN_AT.get(name, [])


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _kind(schema: Key) -> str:
    """What kind of mapping `schema` describes: top, model, group or other. Decided by the
    schema, not the dotted path: model and group IDs often hold dots (`qwen3.5-9b`)."""
    if schema is TOP:
        return "top"
    if schema is MODEL:
        return "model"
    if schema is GROUP:
        return "group"
    return "other"


def _unknown_key(name: str, path: str, schema: Key, k: YScalar, v: YNode, report: Reporter) -> None:
    """LS408/LS409/LS410: a key llama-swap ignores here, with the most useful hint."""
    child_path = f"{path}.{name}" if path else name
    where = f"'{path}'" if path else "the top level"
    kind = _kind(schema)
    known = list(schema.children or {})
    code = "LS408"
    message = f"unknown key '{name}' in {where}; llama-swap ignores it"
    advice = ADVICE.get((kind, name))
    close = closest(name, known, fold=True)
    known_at("")
    elsewhere = [p for p in known_at(name) if p.rsplit(".", 1)[0] != path]
    misplaced = (
        (
            f"'{name}' is not a key of {where} (llama-swap knows it at {elsewhere[0]}); llama-swap "
            "ignores it here"
        )
        if elsewhere
        else message
    )
    if kind == "top" and name in LISTEN_KEYS:
        code = "LS410"
        message = (
            f"'{name}' is not a config key: the listen address is a command-line flag, and llama-swap "
            "ignores it here"
        )
        hint = (
            "start with  llamaswap serve CONFIG --listen 0.0.0.0:8080  (llama-swap's form, -listen :8080, "
            "works too)"
        )
    elif advice is not None:
        if elsewhere and not advice.startswith("did you mean"):
            code, message = "LS409", misplaced
        hint = advice
    elif close is not None and _norm(close) == _norm(name):
        hint = f"did you mean '{close}'? (keys are case-sensitive)"
        if close == "healthCheckTimeout" and kind == "model":
            hint = (
                "did you mean 'healthCheckTimeout'? It is a top-level key: llama-swap uses one health check "
                "timeout for every model"
            )
    elif elsewhere:
        code, message = "LS409", misplaced
        hint = f"move it to {elsewhere[0]}"
    elif close is not None:
        hint = f"did you mean '{close}'?"
        if kind == "top" and isinstance(v, (YMap, YSeq)):
            hint += f" (if it only holds YAML anchors, name it 'x-{name}')"
    else:
        folded = [p for n, ps in _KNOWN_AT.items() if _norm(n) == _norm(name) for p in ps]
        if folded:
            code, hint = "LS409", f"did you mean {folded[0]}?"
        elif kind == "model":
            hint = "to keep your own data with a model, put it under metadata (shown in /v1/models)"
        elif kind == "top" and isinstance(v, (YMap, YSeq)):
            hint = (
                f"if it only holds YAML anchors, name it 'x-{name}': llamaswap does not warn about x- keys; "
                f"known keys here: {', '.join(known)}"
            )
        else:
            hint = f"known keys here: {', '.join(known)}"
    report.warning(code, message, k.pos, child_path, hint=hint, length=max(1, len(name)))


def _check_map(node: YMap, schema: Key, path: str, report: Reporter) -> None:
    if schema.free:
        return
    if schema.each is not None:
        for k, v in node.items:
            _check_value(v, schema.each, f"{path}.{k.value}" if path else str(k.value), report)
        return
    children = schema.children or {}
    for k, v in node.items:
        name = str(k.value)
        child_path = f"{path}.{name}" if path else name
        spec = children.get(name)
        if spec is None and not path and name.startswith(EXTENSION_PREFIX):
            continue  # an extension field: a place to keep YAML anchors (`x-base: &base ...`)
        if spec is None:
            _unknown_key(name, path, schema, k, v, report)
            continue
        if spec.status in (UNIMPLEMENTED, IGNORED):
            code = "LS400" if spec.status == UNIMPLEMENTED else "LS407"
            what = (
                "llamaswap does not implement '{0}' yet; it has no effect"
                if spec.status == UNIMPLEMENTED
                else "'{0}' is ignored"
            )
            msg = what.format(name)
            report.warning(code, msg, k.pos, child_path, hint=spec.note or None, length=max(1, len(name)))
            continue
        _check_value(v, spec, child_path, report)


def _check_value(node: YNode, spec: Key, path: str, report: Reporter) -> None:
    if spec.free:
        return
    if isinstance(node, YMap) and (spec.children is not None or spec.each is not None):
        _check_map(node, spec, path, report)
    elif isinstance(node, YSeq) and spec.items is not None:
        for i, item in enumerate(node.items):
            if isinstance(item, YMap):
                _check_map(item, spec.items, f"{path}[{i}]", report)
