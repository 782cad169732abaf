"""Load: YAML text -> a validated `Config`, the routing choice and every config diagnostic.

Pipeline (the order llama-swap validates in, reference §2): parse YAML with positions;
check keys; substitute env and macros and allocate ports; type with pydantic (strict);
check scalar rules; build aliases; normalise routing (legacy top-level `matrix`/`groups`
versus `routing.router`); check groups, the scheduler block and preload entries.

Invariant: never raises on user input; a broken part is reported and replaced by its
default so later checks still run and one run reports every problem.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from pydantic import ValidationError

from llamaswap.compiler.commands import CommandError, split_command
from llamaswap.compiler.config import Config, GroupConfig, ModelConfig
from llamaswap.compiler.diagnostics import Diagnostic, Severity
from llamaswap.compiler.group import DEFAULT_GROUP, Group
from llamaswap.compiler.keys import TOP, Key, check_keys
from llamaswap.compiler.macros import expand_macros
from llamaswap.compiler.source import Document, Pos, YMap, YNode, YScalar, YSeq, format_path, load_document, node_at, to_python

LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_TO_STDOUT = ("proxy", "upstream", "both", "none")


@dataclass
class Loaded:
    file: str
    doc: Document
    config: Config | None
    engine: str = "group"  # "matrix" | "group"
    matrix_block: YMap | None = None
    matrix_path: str = "matrix"
    groups: tuple[Group, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> real model ID
    ports: dict[str, int] = field(default_factory=dict)
    preload: tuple[str, ...] = ()
    priority: dict[str, int] = field(default_factory=dict)  # real model ID -> priority
    diagnostics: list[Diagnostic] = field(default_factory=list)


class _Checker:
    def __init__(self, file: str, root: YNode | None):
        self.file = file
        self.root = root
        self.diags: list[Diagnostic] = []

    def at(self, loc: tuple[Any, ...], key: bool = False) -> tuple[Pos | None, int]:
        """Position of the value (or key) at loc, and the length of its first source line."""
        node, key_node = node_at(self.root, loc)
        if key and key_node is not None:
            return key_node.pos, max(1, len(str(key_node.value)))
        if node is None:
            return None, 1
        if isinstance(node, YScalar) and node.raw and node.pos.line == node.end.line:
            return node.pos, max(1, len(node.raw))
        return node.pos, 1

    def add(self, severity: Severity, code: str, message: str, loc: tuple[Any, ...], hint: str | None = None,
            key: bool = False, pos: Pos | None = None, length: int = 1) -> None:
        if pos is not None:
            p = pos
        else:
            p, width = self.at(loc, key)
            length = max(length, width)
        self.diags.append(Diagnostic(severity, code, message, self.file, p.line if p else None,
                                     p.column if p else None, format_path(loc) or None, hint=hint, length=length))

    def error(self, code: str, message: str, loc: tuple[Any, ...], hint: str | None = None, key: bool = False,
              length: int = 1) -> None:
        self.add(Severity.ERROR, code, message, loc, hint, key, length=length)

    def warn(self, code: str, message: str, loc: tuple[Any, ...], hint: str | None = None, key: bool = False,
             length: int = 1) -> None:
        self.add(Severity.WARNING, code, message, loc, hint, key, length=length)


_PYDANTIC_TYPE_WORDS = {
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "string_type": "a string",
    "float_type": "a number",
    "dict_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, (tuple, list)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# pydantic adds the member type of a union to an error's loc ("str", "AliasEntry", …);
# those parts are not in the user's data and are dropped from the reported path.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none", "AliasEntry"})


def _user_loc(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, (list, tuple)) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        elif isinstance(part, str) and part in _UNION_TAGS:
            continue
        else:
            cur = None
        out.append(part)
    return tuple(out)


def _validate(data: dict, ck: _Checker) -> Config:
    """pydantic validation that never gives up: each failing value is reported, dropped,
    and validation retried so the rest of the config is still checked."""
    for _ in range(200):
        try:
            return Config.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        # One report per value: a union gives one error per member type.
        by_loc: dict[tuple[Any, ...], list[dict]] = {}
        for err in errors:
            by_loc.setdefault(_user_loc(data, tuple(err["loc"])), []).append(err)
        # When one member of a union got further (`{name: x}` as an alias object missing
        # its id), its deeper error is the useful one; drop the shallow "wrong type" ones.
        for loc in [loc for loc in by_loc if any(len(o) > len(loc) and o[:len(loc)] == loc for o in by_loc)]:
            del by_loc[loc]
        for loc, errs in by_loc.items():
            _report(loc, errs, ck)
        removed = False
        # Last first, so removing an item from a list does not shift the ones still to remove.
        for loc in reversed(list(by_loc)):
            if _delete(data, loc):
                removed = True
        if not removed:
            break
    return Config.model_validate({"models": {}})


def _report(loc: tuple[Any, ...], errs: list[dict], ck: _Checker) -> None:
    first = errs[0]
    value = first.get("input")
    if first["type"] == "missing":
        ck.error("LS302", f"'{format_path(loc)}' is required", loc[:-1])
        return
    wants: list[str] = []
    for err in errs:
        kind = err["type"]
        want = _PYDANTIC_TYPE_WORDS.get(kind)
        if want is None and kind.endswith("_type"):
            want = kind[:-5].replace("_", " ")
        if want is None:
            ck.error("LS302", f"'{format_path(loc)}': {err['msg']}", loc)
            return
        if want not in wants:
            wants.append(want)
    kinds = {e["type"] for e in errs}
    hint = None
    if "bool_type" in kinds and isinstance(value, str):
        hint = "write true or false (YAML 1.2: yes/no/on/off are strings)"
    elif kinds & {"int_type", "float_type"} and isinstance(value, str) and _numeric(value):
        hint = "remove the quotes around the number"
    elif kinds == {"string_type"} and isinstance(value, (int, float, bool)):
        hint = "quote the value to make it a string"
    want_text = " or ".join(wants)
    ck.error("LS302", f"'{format_path(loc)}' must be {want_text}, got {_describe(value)}", loc, hint=hint)


def _numeric(text: str) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return False
    return True


def _drop_nulls(data: Any, schema: Key) -> Any:
    """An empty YAML value (`aliases:`) means "not set", as in llama-swap's Go decoder: drop
    null values of typed keys so their defaults apply. User data (free keys) keeps its nulls."""
    if schema.free or not isinstance(data, dict):
        return data
    if schema.each is not None:
        return {k: ({} if v is None else _drop_nulls(v, schema.each)) for k, v in data.items()}
    children = schema.children or {}
    out = {}
    for k, v in data.items():
        spec = children.get(k)
        if spec is None:
            out[k] = v  # unknown key: already reported, ignored by the model
        elif v is None:
            continue
        else:
            out[k] = _drop_nulls(v, spec)
    return out


def _delete(data: Any, loc: tuple[Any, ...]) -> bool:
    """Remove the value at loc; when the path stops early (a required field is missing),
    remove the deepest value that exists on it. Lists (tuples) lose just that item."""
    steps: list[tuple[Any, Any]] = []  # (container, key) along the path
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            steps.append((cur, part))
            cur = cur[part]
        elif isinstance(cur, (list, tuple)) and isinstance(part, int) and 0 <= part < len(cur):
            steps.append((cur, part))
            cur = cur[part]
        else:
            break
    if not steps:
        return False
    _remove(steps, len(steps) - 1)
    return True


def _remove(steps: list[tuple[Any, Any]], depth: int) -> None:
    container, key = steps[depth]
    if isinstance(container, dict):
        del container[key]
    else:
        _replace(steps, depth - 1, tuple(x for i, x in enumerate(container) if i != key))


def _replace(steps: list[tuple[Any, Any]], depth: int, new: Any) -> None:
    container, key = steps[depth]
    if isinstance(container, dict):
        container[key] = new
    else:
        _replace(steps, depth - 1, tuple(new if i == key else x for i, x in enumerate(container)))


def load_config(text: str, file: str, env: Mapping[str, str]) -> Loaded:
    """Load and check a llama-swap config. `env` is the environment for `${env.X}`."""
    doc = load_document(text, file)
    loaded = Loaded(file=file, doc=doc, config=None)
    diags = loaded.diagnostics
    diags.extend(doc.diagnostics)
    root = doc.root
    if root is None:
        if not doc.diagnostics:
            diags.append(Diagnostic(Severity.ERROR, "LS303", "the config is empty", file, 1, 1, None,
                                    hint="define at least one model under 'models'"))
        return loaded
    if not isinstance(root, YMap):
        diags.append(Diagnostic(Severity.ERROR, "LS302", "the config must be a mapping of keys to values", file,
                                root.pos.line, root.pos.column, None))
        return loaded

    diags.extend(check_keys(root, file))
    macro_result = expand_macros(root, file, env)
    diags.extend(macro_result.diagnostics)
    loaded.ports = macro_result.ports

    ck = _Checker(file, root)
    for model_id, port in loaded.ports.items():
        if port > 65535:
            ck.error("LS303", f"model {model_id}: ${{PORT}} would be {port}, above 65535", ("models", model_id),
                     key=True, hint="lower startPort: ports are allocated one per model that uses ${PORT}")
    data = _drop_nulls(to_python(root), TOP)
    config = _validate(data, ck)
    loaded.config = config
    _check_scalars(config, ck)
    loaded.aliases = _build_aliases(config, ck)
    _check_models(config, loaded.aliases, ck)
    _normalise_routing(config, root, loaded, ck)
    _check_scheduler(config, loaded, ck)
    _check_preload(config, loaded, ck)
    if not config.models:
        ck.warn("LS303", "the config defines no models", ("models",), hint="add models under 'models'",
                key=True)
    diags.extend(ck.diags)
    return loaded


def _check_scalars(c: Config, ck: _Checker) -> None:
    if c.log_level not in LOG_LEVELS:
        ck.error("LS303", f"logLevel must be one of: {', '.join(LOG_LEVELS)}", ("logLevel",),
                 hint=_close(c.log_level, LOG_LEVELS))
    if c.log_to_stdout not in LOG_TO_STDOUT:
        ck.error("LS303", "logToStdout must be one of: proxy, upstream, both, none", ("logToStdout",),
                 hint=_close(c.log_to_stdout, LOG_TO_STDOUT))
    if c.start_port < 1:
        ck.error("LS303", "startPort must be greater than 1", ("startPort",))
    if c.start_port > 65535:
        ck.error("LS303", "startPort must be a TCP port (at most 65535)", ("startPort",))
    if c.global_ttl < 0:
        ck.error("LS303", "globalTTL must be >= 0", ("globalTTL",), hint="0 means never unload")
    if c.unload_timeout < 0:
        ck.error("LS303", "unloadTimeout must be >= 0", ("unloadTimeout",), hint="0 means the default, 10 s")
    if c.health_check_timeout < 0:
        ck.error("LS303", "healthCheckTimeout must be >= 0", ("healthCheckTimeout",),
                 hint="values below 15 become 15")
    for i, key in enumerate(c.api_keys):
        if key == "":
            ck.error("LS311", "empty api key found in apiKeys", ("apiKeys", i))
        elif " " in key:
            ck.error("LS311", f"apiKeys[{i}]: api key cannot contain spaces", ("apiKeys", i))


def _close(value: str, options: tuple[str, ...] | list[str]) -> str | None:
    guess = difflib.get_close_matches(str(value), list(options), n=1, cutoff=0.5)
    return f"did you mean '{guess[0]}'?" if guess else None


def _build_aliases(c: Config, ck: _Checker) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for model_id in sorted(c.models):
        m = c.models[model_id]
        for i, alias in enumerate(m.alias_ids()):
            loc = ("models", model_id, "aliases", i)
            if alias in aliases:
                ck.error("LS309", f"duplicate alias {alias} found in model: {model_id}", loc,
                         hint=f"'{alias}' is already an alias of '{aliases[alias]}'; aliases are unique across "
                              "models")
                continue
            if alias in c.models:
                ck.warn("LS313", f"alias '{alias}' of model '{model_id}' is also a model ID; the model wins",
                        loc, hint="remove the alias or rename one of them")
                continue
            aliases[alias] = model_id
    for model_id in sorted(c.models):
        m = c.models[model_id]
        for key in m.filters.set_params_by_id:
            loc = ("models", model_id, "filters", "setParamsByID", key)
            if key == model_id:
                continue
            if key in c.models:
                ck.error("LS313", f"model {model_id} filters.setParamsByID: key '{key}' conflicts with an existing "
                                  "model ID", loc, key=True)
                continue
            if key in aliases and aliases[key] != model_id:
                ck.error("LS309", f"duplicate alias '{key}' in model {model_id} filters.setParamsByID, already used "
                                  f"by model {aliases[key]}", loc, key=True)
                continue
            aliases[key] = model_id
    return aliases


def _check_models(c: Config, aliases: Mapping[str, str], ck: _Checker) -> None:
    for model_id in sorted(c.models):
        m: ModelConfig = c.models[model_id]
        base = ("models", model_id)
        if m.ttl < -1:
            ck.error("LS303", f"model {model_id}: invalid TTL value {m.ttl}", base + ("ttl",),
                     hint="use -1 for globalTTL, 0 for never, or a number of seconds")
        if m.unload_timeout < 0:
            ck.error("LS303", f"model {model_id}: invalid unloadTimeout value {m.unload_timeout}",
                     base + ("unloadTimeout",))
        if m.concurrency_limit < 0:
            ck.error("LS303", f"model {model_id}: concurrencyLimit must be >= 0", base + ("concurrencyLimit",),
                     hint="0 means the default of 10")
        cmd_node, cmd_key = node_at(ck.root, base + ("cmd",))
        if cmd_key is None or cmd_key.value != "cmd":
            cmd_node = None
        if not m.cmd.strip():
            # A cmd of the wrong type was reported already (LS302) and dropped.
            if not (isinstance(cmd_node, YScalar) and cmd_node.value is not None
                    and not isinstance(cmd_node.value, str)) and not isinstance(cmd_node, (YMap, YSeq)):
                ck.error("LS303", f"model {model_id}: cmd is required", base, key=True,
                         hint="the command that starts this model's server, e.g. llama-server --port ${PORT} "
                              "-m ...")
        else:
            try:
                split_command(m.cmd)
            except CommandError as exc:
                ck.error("LS303", f"model {model_id}: {exc}", base + ("cmd",),
                         hint="cmd is split like a shell would; check the quotes")
        if m.cmd_stop.strip():
            try:
                split_command(m.cmd_stop)
            except CommandError as exc:
                ck.error("LS303", f"model {model_id}: cmdStop: {exc}", base + ("cmdStop",))
        if "${PORT}" not in m.proxy:
            parts = urlsplit(m.proxy)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                ck.error("LS310", f"model {model_id}: invalid proxy URL: {m.proxy!r}", base + ("proxy",),
                         hint="write a base URL such as http://127.0.0.1:8080")
            else:
                try:
                    parts.port
                except ValueError:
                    ck.error("LS310", f"model {model_id}: invalid proxy URL: bad port in {m.proxy!r}",
                             base + ("proxy",))
        for i, entry in enumerate(m.env):
            if "=" not in entry or entry.startswith("="):
                ck.error("LS303", f"model {model_id}: env entry {entry!r} must look like NAME=value",
                         base + ("env", i))


def _normalise_routing(c: Config, root: YMap, loaded: Loaded, ck: _Checker) -> None:
    rtr = c.routing.router
    has_top = c.matrix is not None or bool(c.groups) or _present(root, ("matrix",))
    has_routing = rtr.use != "" or rtr.settings.matrix is not None or bool(rtr.settings.groups)
    if has_top and has_routing:
        which = "matrix" if _present(root, ("matrix",)) else "groups"
        ck.error("LS211", "config uses both the legacy top-level 'matrix'/'groups' keys and the new "
                          "'routing.router' block; please migrate the top-level keys into 'routing.router' and "
                          "remove them", (which,), key=True,
                 hint="move them under routing.router.settings and set routing.router.use")
        return
    groups = c.groups
    matrix_path = "matrix"
    use_matrix = False
    if has_top:
        if _present(root, ("matrix",)) and c.groups:
            ck.error("LS212", "config cannot use both 'groups' and 'matrix'", ("groups",), key=True,
                     hint="a config uses either groups or a matrix")
            return
        use_matrix = _present(root, ("matrix",))
    else:
        use = rtr.use
        if use == "matrix":
            if not _present(root, ("routing", "router", "settings", "matrix")):
                ck.error("LS210", "routing.router.use is 'matrix' but routing.router.settings.matrix is not set",
                         ("routing", "router", "use"))
                return
            use_matrix = True
            matrix_path = "routing.router.settings.matrix"
            if _present(root, ("routing", "router", "settings", "groups")):
                ck.warn("LS407", "routing.router.settings.groups is ignored because routing.router.use is 'matrix'",
                        ("routing", "router", "settings", "groups"), key=True,
                        hint="remove the groups, or set routing.router.use: group to use them")
        elif use in ("group", ""):
            groups = rtr.settings.groups
            if _present(root, ("routing", "router", "settings", "matrix")):
                ck.warn("LS407", "routing.router.settings.matrix is ignored because routing.router.use is "
                                 f"'{use or 'group'}'", ("routing", "router", "settings", "matrix"), key=True,
                        hint="set routing.router.use: matrix to use it")
        else:
            ck.error("LS216", f"routing.router.use: unknown router {use!r} (valid: group, matrix)",
                     ("routing", "router", "use"), hint=_close(use, ("group", "matrix")))
            return
    if use_matrix:
        loaded.engine = "matrix"
        loaded.matrix_path = matrix_path
        node, _ = node_at(root, tuple(matrix_path.split(".")))
        if isinstance(node, YMap):
            loaded.matrix_block = node
        # Anything else was already reported by the schema check (LS302).
        return
    loaded.engine = "group"
    group_base = ("groups",) if has_top else ("routing", "router", "settings", "groups")
    loaded.groups = _check_groups(groups, c, group_base, ck)


def _present(root: YMap, loc: tuple[str, ...]) -> bool:
    node, key = node_at(root, loc)
    if key is None or key.value != loc[-1]:
        return False
    return not (isinstance(node, YScalar) and node.value is None)


def _check_groups(groups: Mapping[str, GroupConfig], c: Config, base: tuple[str, ...],
                  ck: _Checker) -> tuple[Group, ...]:
    out: list[Group] = []
    member_of: dict[str, str] = {}
    for gid, g in groups.items():
        seen: set[str] = set()
        members: list[str] = []
        for i, member in enumerate(g.members):
            loc = base + (gid, "members", i)
            if member in seen:
                ck.error("LS213", f"duplicate model member {member} found in group: {gid}", loc)
                continue
            seen.add(member)
            if member in member_of:
                ck.error("LS214", f"model member {member} is used in multiple groups: {member_of[member]} and {gid}",
                         loc, hint="a model belongs to at most one group")
                continue
            if member not in c.models:
                real = None
                if member in (aliases := {a: mid for mid, m in c.models.items() for a in m.alias_ids()}):
                    real = aliases[member]
                hint = (f"'{member}' is an alias; use the real model ID '{real}'" if real
                        else _close(member, sorted(c.models)) or "group members must be model IDs from 'models'")
                ck.error("LS215", f"group {gid}: no model config for {member!r}", loc, hint=hint)
                continue
            member_of[member] = gid
            members.append(member)
        out.append(Group(gid, g.swap, g.exclusive, g.persistent, tuple(members)))
    orphans = sorted(m for m in c.models if m not in member_of)
    if not groups:
        orphans = sorted(c.models)
    if orphans or not groups:
        out.append(Group(DEFAULT_GROUP, True, True, False, tuple(orphans)))
    return tuple(out)


def _check_scheduler(c: Config, loaded: Loaded, ck: _Checker) -> None:
    sched = c.routing.scheduler
    if sched.use != "fifo":
        ck.error("LS217", f"routing.scheduler.use: unknown scheduler {sched.use!r} (valid: fifo)",
                 ("routing", "scheduler", "use"), hint="fifo is the only scheduler")
    fifo = sched.settings.fifo
    given_as: dict[str, str] = {}
    for model, prio in fifo.priority.items():
        loc = ("routing", "scheduler", "settings", "fifo", "priority", model)
        if model in c.models or model in loaded.aliases:
            # llama-swap validates alias keys but then never matches them; we resolve them.
            real = model if model in c.models else loaded.aliases[model]
            if real in given_as:
                ck.warn("LS313", f"routing.scheduler.settings.fifo.priority: {model!r} and {given_as[real]!r} "
                                 f"both name model {real!r}; the priority given last ({prio}) wins", loc, key=True,
                        hint="give each model one priority, under its real ID")
            given_as[real] = model
            loaded.priority[real] = prio
        else:
            ck.error("LS218", f"routing.scheduler.settings.fifo.priority references unknown model {model!r}", loc,
                     key=True, hint=_close(model, sorted(c.models)))
    if fifo.stall_timeout is not None and fifo.stall_timeout <= 0:
        ck.error("LS303", "routing.scheduler.settings.fifo.stall_timeout must be > 0 seconds",
                 ("routing", "scheduler", "settings", "fifo", "stall_timeout"),
                 hint="how long requests may wait with no progress before /health reports 503")
    if fifo.max_wait is not None and fifo.max_wait < 0:
        ck.error("LS303", "routing.scheduler.settings.fifo.max_wait must be >= 0 seconds",
                 ("routing", "scheduler", "settings", "fifo", "max_wait"), hint="0 turns bounded waiting off")


def _check_preload(c: Config, loaded: Loaded, ck: _Checker) -> None:
    out: list[str] = []
    for i, entry in enumerate(c.hooks.on_startup.preload):
        name = entry.strip()
        if not name:
            continue
        if name in c.models:
            real = name
        elif name in loaded.aliases:
            real = loaded.aliases[name]
        else:
            ck.warn("LS406", f"hooks.on_startup.preload: {name!r} is not a model or alias; it is dropped",
                    ("hooks", "on_startup", "preload", i), hint=_close(name, sorted(c.models)))
            continue
        if real not in out:
            out.append(real)
    loaded.preload = tuple(out)
