"""Load: YAML text -> a validated `Config`, the routing choice and every config diagnostic.

Pipeline (the order llama-swap validates in, reference §2): parse YAML with positions;
check keys; substitute env and macros and allocate ports; type with pydantic (strict);
check scalar rules; build aliases; normalise routing (legacy top-level `matrix`/`groups`
versus `routing.router`); check groups, the scheduler block and preload entries.

Invariant: never raises on user input; a broken part is reported and replaced by its
default so later checks still run and one run reports every problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from llamaswap.compiler import goregexp
from llamaswap.compiler.commands import CommandError, inline_comment, split_command
from llamaswap.compiler.config import Config, GroupConfig, ModelConfig
from llamaswap.compiler.diagnostics import Diagnostic, Severity, has_errors
from llamaswap.compiler.goyaml import coerce
from llamaswap.compiler.group import DEFAULT_GROUP, Group
from llamaswap.compiler.keys import TOP, Key, check_keys
from llamaswap.compiler.macros import expand_macros
from llamaswap.compiler.source import (
    Document,
    PathReporter,
    Pos,
    YMap,
    YScalar,
    YSeq,
    format_path,
    load_document,
    node_at,
    to_python,
)
from llamaswap.compiler.suggest import LOOSE, did_you_mean
from llamaswap.compiler.validate import validate_config
from llamaswap.compiler.virtual import go_url_error

LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_TO_STDOUT = ("proxy", "upstream", "both", "none")
# logTimeFormat names llama-swap knows (Go time layouts); anything else means no timestamp.
LOG_TIME_FORMATS = (
    "ansic",
    "unixdate",
    "rubydate",
    "rfc822",
    "rfc822z",
    "rfc850",
    "rfc1123",
    "rfc1123z",
    "rfc3339",
    "rfc3339nano",
    "kitchen",
    "stamp",
    "stampmilli",
    "stampmicro",
    "stampnano",
)
MODALITIES = ("text", "audio", "image")
MIN_HEALTH_CHECK_TIMEOUT = 15


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


def load_config(
    text: str,
    file: str,
    env: Mapping[str, str],
    keep_ports: Mapping[str, int] | None = None,
    keep_start_port: int | None = None,
) -> Loaded:
    """Load and check a llama-swap config. `env` is the environment for `${env.X}`;
    `keep_ports` pins `${PORT}` allocations (hot reload, see macros.py)."""
    doc = load_document(text, file)
    root = doc.root
    ck = PathReporter(file, root)
    # The loader's reporter collects for the whole load: the YAML's, the sub-passes' and its own.
    loaded = Loaded(file=file, doc=doc, config=None, diagnostics=ck.diagnostics)
    ck.diagnostics.extend(doc.diagnostics)
    if root is None:
        if not has_errors(doc.diagnostics):
            # llama-swap starts on an empty file, with every default and no models.
            ck.warning(
                "LS303",
                "the config is empty: serving it lists no models",
                Pos(1, 1),
                hint="define models under 'models'",
            )
            loaded.config = Config.model_validate({})
            loaded.groups = (Group(DEFAULT_GROUP, True, True, False, ()),)
        return loaded
    if not isinstance(root, YMap):
        ck.error("LS302", "the config must be a mapping of keys to values", root.pos)
        return loaded

    ck.diagnostics.extend(check_keys(root, file))
    macro_result = expand_macros(root, file, env, keep_ports, keep_start_port)
    ck.diagnostics.extend(macro_result.diagnostics)
    loaded.ports = macro_result.ports

    for model_id, port in loaded.ports.items():
        if port > 65535:
            ck.warning_at(
                "LS411",
                f"${{PORT}} would be {port}, above 65535: it cannot start",
                ("models", model_id),
                key=True,
                hint="lower startPort: ports are allocated one per model that uses ${PORT}",
            )
    data = _drop_nulls(to_python(root), TOP)
    for model_id in _null_models(root):
        # llama-swap decodes a model whose value is null as an empty model: no cmd, no proxy.
        data["models"][model_id] = {"proxy": ""}
        ck.warning_at(
            "LS411",
            f"model {model_id} has no settings: it is listed, and requests for it fail "
            "(there is no cmd to start)",
            ("models", model_id),
            key=True,
            hint="give it a cmd (and a proxy if the server is not on ${PORT}), or remove it",
        )
    _type_auto_sets(data)
    data, notes = coerce(data, Config)
    for loc, note in notes:
        ck.warning_at("LS412", f"'{format_path(loc)}': {note}", loc)
    config = validate_config(data, ck)
    loaded.config = config
    _check_scalars(config, ck)
    loaded.aliases = _build_aliases(config, ck)
    _check_models(config, loaded.aliases, ck)
    _normalise_routing(config, root, loaded, ck)
    _check_scheduler(config, loaded, ck)
    _check_limits(config, ck)
    _check_preload(config, loaded, ck)
    models_refused = any(d.is_error and d.path == "models" for d in ck.diagnostics)  # said already
    if not config.models and not config.peers and not models_refused:  # peers' models are served too
        ck.warning_at(
            "LS303", "the config defines no models", ("models",), hint="add models under 'models'", key=True
        )
    return loaded


def _type_auto_sets(data: dict) -> None:
    """`sets: auto` (a llamaswap extension, see resources.py) is read by the matrix passes from
    the located tree; the typed config holds no sets for it."""

    def sub(d: Any, key: str) -> Any:
        return d.get(key) if isinstance(d, dict) else None

    for block in (sub(data, "matrix"), sub(sub(sub(sub(data, "routing"), "router"), "settings"), "matrix")):
        if isinstance(block, dict) and block.get("sets") == "auto":
            block["sets"] = {}


def _null_models(root: YMap) -> list[str]:
    models = root.get("models")
    if not isinstance(models, YMap):
        return []
    return [str(k.value) for k, v in models.items if isinstance(v, YScalar) and v.value is None]


def _check_scalars(c: Config, ck: PathReporter) -> None:
    if c.log_level.strip().lower() not in LOG_LEVELS:
        ck.warning_at(
            "LS412",
            f"logLevel {c.log_level!r} is not one of: {', '.join(LOG_LEVELS)}; it is read as info",
            ("logLevel",),
            hint=did_you_mean(c.log_level, LOG_LEVELS, cutoff=LOOSE),
        )
    if c.log_time_format and c.log_time_format.strip().lower() not in LOG_TIME_FORMATS:
        ck.warning_at(
            "LS412",
            f"logTimeFormat {c.log_time_format!r} is not a known format name; log lines get no timestamp",
            ("logTimeFormat",),
            hint=did_you_mean(c.log_time_format.lower(), LOG_TIME_FORMATS, cutoff=LOOSE)
            or f"use one of: {', '.join(LOG_TIME_FORMATS)} (names, not Go layouts)",
        )
    _check_blocks(c, ck)
    if c.log_to_stdout not in LOG_TO_STDOUT:
        ck.error_at(
            "LS303",
            f"logToStdout {c.log_to_stdout!r} is not one of proxy, upstream, both, none",
            ("logToStdout",),
            hint=did_you_mean(c.log_to_stdout, LOG_TO_STDOUT, cutoff=LOOSE)
            or "proxy: llamaswap's own lines; upstream: the models' output; both; or none",
        )
    if c.start_port < 1:
        ck.error_at(
            "LS303",
            f"startPort {c.start_port} is not a port",
            ("startPort",),
            hint="the first port ${PORT} hands out, e.g. 5800",
        )
    if c.start_port > 65535:
        ck.warning_at(
            "LS411",
            "startPort is above 65535: every model that uses ${PORT} fails to start",
            ("startPort",),
            hint="ports are allocated one per model from startPort",
        )
    if c.global_ttl < 0:
        ck.error_at(
            "LS303", f"globalTTL {c.global_ttl} is negative", ("globalTTL",), hint="0 means never unload"
        )
    if c.unload_timeout < 0:
        ck.error_at(
            "LS303",
            f"unloadTimeout {c.unload_timeout} is negative",
            ("unloadTimeout",),
            hint="0 means the default, 10 s",
        )
    if c.llamaswap.shutdown_timeout < 0:
        ck.error_at(
            "LS303",
            "llamaswap.shutdownTimeout must be >= 0",
            ("llamaswap", "shutdownTimeout"),
            hint="seconds in-flight requests may take to finish at shutdown; 0 = stop at once",
        )
    if not c.llamaswap.reload_drain_timeout >= 0:
        ck.error_at(
            "LS303",
            "llamaswap.reloadDrainTimeout must be >= 0",
            ("llamaswap", "reloadDrainTimeout"),
            hint="seconds requests in flight on a model a reload restarts, evicts or removes may "
            "take to finish; 0 = end them at once",
        )
    if c.health_check_timeout < MIN_HEALTH_CHECK_TIMEOUT:
        ck.warning_at(
            "LS412",
            f"healthCheckTimeout {c.health_check_timeout}: llama-swap waits at least "
            f"{MIN_HEALTH_CHECK_TIMEOUT} s for a model to become ready; llamaswap waits "
            f"{max(1, c.health_check_timeout)} s",
            ("healthCheckTimeout",),
            hint="seconds to wait for the health check; values below 1 become 1 "
            f"(below {MIN_HEALTH_CHECK_TIMEOUT} in llama-swap)",
        )
    for i, key in enumerate(c.api_keys):
        if key == "":
            ck.error_at("LS311", "an API key is empty", ("apiKeys", i), hint="remove the empty entry")
        elif " " in key:
            ck.error_at(
                "LS311",
                "an API key contains a space",
                ("apiKeys", i),
                hint="clients send the key in an Authorization header, where a space ends it",
            )


def _build_aliases(c: Config, ck: PathReporter) -> dict[str, str]:
    aliases: dict[str, str] = {}  # alias -> the model it stands for (routing)
    owner: dict[str, str] = {}  # every alias written, model IDs included (llama-swap's map)
    for model_id in sorted(c.models):
        m = c.models[model_id]
        for i, alias in enumerate(m.alias_ids()):
            loc: tuple[Any, ...] = ("models", model_id, "aliases", i)
            if alias in owner:
                ck.error_at(
                    "LS309",
                    f"model '{model_id}' lists alias '{alias}' twice"
                    if owner[alias] == model_id
                    else f"alias '{alias}' of model '{model_id}' is taken: model '{owner[alias]}' has it",
                    loc,
                    hint="an alias names one model, once: remove one of them",
                )
                continue
            owner[alias] = model_id
            if alias in c.models:
                ck.warning_at(
                    "LS313",
                    f"alias '{alias}' of model '{model_id}' is also a model ID; the model wins",
                    loc,
                    hint="remove the alias or rename one of them",
                )
                continue
            aliases[alias] = model_id
    for model_id in sorted(c.models):
        m = c.models[model_id]
        for key in m.filters.set_params_by_id:
            loc = ("models", model_id, "filters", "setParamsByID", key)
            if key == model_id:
                continue
            if key in c.models:
                ck.error_at(
                    "LS313",
                    f"setParamsByID key '{key}' of model '{model_id}' is the ID of another model",
                    loc,
                    key=True,
                    hint=f"every key but the model's own ID becomes an alias of '{model_id}': rename the key",
                )
                continue
            if key in aliases and aliases[key] != model_id:
                ck.error_at(
                    "LS309",
                    f"setParamsByID key '{key}' of model '{model_id}' is taken: it is an alias of model "
                    f"'{aliases[key]}'",
                    loc,
                    key=True,
                    hint=f"every key but the model's own ID becomes an alias of '{model_id}': rename the key",
                )
                continue
            aliases[key] = model_id
    return aliases


def _check_models(c: Config, aliases: Mapping[str, str], ck: PathReporter) -> None:
    for model_id in sorted(c.models):
        m: ModelConfig = c.models[model_id]
        base = ("models", model_id)
        if m.ttl < -1:
            ck.error_at(
                "LS303",
                f"ttl {m.ttl} is not a TTL",
                base + ("ttl",),
                hint="use -1 for globalTTL, 0 for never, or a number of seconds",
            )
        if m.unload_timeout < 0:
            ck.error_at(
                "LS303",
                f"unloadTimeout {m.unload_timeout} is negative",
                base + ("unloadTimeout",),
                hint="seconds a stop may take before the kill; 0 uses the global unloadTimeout",
            )
        if m.concurrency_limit < 0:
            ck.warning_at(
                "LS412",
                f"concurrencyLimit {m.concurrency_limit} is read as the default, 10",
                base + ("concurrencyLimit",),
                hint="0 means the default of 10",
            )
        caps = m.capabilities
        for side, values in (("in", caps.in_), ("out", caps.out)):
            for i, modality in enumerate(values):
                if modality not in MODALITIES:
                    ck.error_at(
                        "LS303",
                        f"{modality!r} is not a modality",
                        base + ("capabilities", side, i),
                        hint=did_you_mean(modality, MODALITIES, cutoff=LOOSE) or "one of: text, audio, image",
                    )
        if caps.context < 0:
            ck.error_at(
                "LS303",
                f"capabilities.context {caps.context} is negative",
                base + ("capabilities", "context"),
                hint="the context length in tokens; 0 = not given",
            )
        model_node, _ = node_at(ck.root, base)
        null_model = isinstance(model_node, YScalar) and model_node.value is None
        cmd_node, cmd_key = node_at(ck.root, base + ("cmd",))
        if cmd_key is None or cmd_key.value != "cmd":
            cmd_node = None
        if not m.cmd.strip():
            # A cmd of the wrong type was reported already (LS302) and dropped; a default proxy
            # without a cmd for its ${PORT} too (LS308); a null model has its own warning.
            wrong = (
                isinstance(cmd_node, YScalar)
                and cmd_node.value is not None
                and not isinstance(cmd_node.value, str)
            ) or isinstance(cmd_node, (YMap, YSeq))
            if not wrong and "${PORT}" not in m.proxy and not null_model:
                ck.warning_at(
                    "LS411",
                    f"model {model_id} has no cmd: it is listed, and requests for it fail (there "
                    "is nothing to start)",
                    base,
                    key=True,
                    hint="llama-swap loads such a model too and fails when it is requested; give it the "
                    "command that starts its server, e.g. llama-server --port ${PORT} -m ...",
                )
        else:
            try:
                split_command(m.cmd)
            except CommandError as exc:
                ck.warning_at(
                    "LS411",
                    f"{exc}: requests for it fail when it starts",
                    base + ("cmd",),
                    hint="cmd is split like a shell would; check the quotes",
                )
            else:
                _warn_inline_comment(m.cmd, cmd_node, base, ck)
        if m.cmd_stop.strip():
            try:
                split_command(m.cmd_stop)
            except CommandError as exc:
                ck.warning_at(
                    "LS411",
                    f"cmdStop: {exc}: it is stopped with SIGTERM instead",
                    base + ("cmdStop",),
                )
        if "${PORT}" not in m.proxy and m.proxy != "":
            why = go_url_error(m.proxy)
            parts = urlsplit(m.proxy)
            if why is not None:
                ck.error_at(
                    "LS310",
                    f"proxy {m.proxy!r} is not a URL: {why}",
                    base + ("proxy",),
                    hint="write a base URL such as http://127.0.0.1:8080",
                )
            elif parts.scheme not in ("http", "https") or not parts.netloc or not _port_ok(parts):
                ck.warning_at(
                    "LS412",
                    f"proxy {m.proxy!r} is not an http(s)://host:port URL: requests for it fail",
                    base + ("proxy",),
                    hint="write a base URL such as http://127.0.0.1:8080 (llama-swap accepts it too, and "
                    "fails the same way)",
                )
        for i, entry in enumerate(m.env):
            if "=" not in entry or entry.startswith("="):
                ck.warning_at(
                    "LS412",
                    f"env entry {entry!r} is not NAME=value; it is passed as is and sets nothing",
                    base + ("env", i),
                    hint="write NAME=value",
                )


def _normalise_routing(c: Config, root: YMap, loaded: Loaded, ck: PathReporter) -> None:
    rtr = c.routing.router
    has_top = c.matrix is not None or bool(c.groups) or _present(root, ("matrix",))
    has_routing = rtr.use != "" or rtr.settings.matrix is not None or bool(rtr.settings.groups)
    if has_top and has_routing:
        which = "matrix" if _present(root, ("matrix",)) else "groups"
        ck.error_at(
            "LS211",
            f"the top-level '{which}' and the 'routing.router' block are both set: a config routes one way",
            (which,),
            key=True,
            hint="move them under routing.router.settings and set routing.router.use",
        )
        return
    groups = c.groups
    matrix_path = "matrix"
    use_matrix = False
    if has_top:
        if _present(root, ("matrix",)) and c.groups:
            ck.error_at(
                "LS212",
                "'groups' and 'matrix' are both set",
                ("groups",),
                key=True,
                hint="a config uses either groups or a matrix",
            )
            return
        use_matrix = _present(root, ("matrix",))
    else:
        use = rtr.use
        if use == "matrix":
            if not _present(root, ("routing", "router", "settings", "matrix")):
                ck.error_at(
                    "LS210",
                    "routing.router.use is 'matrix', but there is no routing.router.settings.matrix",
                    ("routing", "router", "use"),
                    hint="write the matrix (vars, sets) under routing.router.settings.matrix",
                )
                return
            use_matrix = True
            matrix_path = "routing.router.settings.matrix"
            if _present(root, ("routing", "router", "settings", "groups")):
                ck.warning_at(
                    "LS407",
                    "routing.router.settings.groups is ignored because routing.router.use is 'matrix'",
                    ("routing", "router", "settings", "groups"),
                    key=True,
                    hint="remove the groups, or set routing.router.use: group to use them",
                )
        elif use in ("group", ""):
            groups = rtr.settings.groups
            if _present(root, ("routing", "router", "settings", "matrix")):
                ck.warning_at(
                    "LS407",
                    "routing.router.settings.matrix is ignored because routing.router.use is "
                    f"'{use or 'group'}'",
                    ("routing", "router", "settings", "matrix"),
                    key=True,
                    hint="set routing.router.use: matrix to use it",
                )
        else:
            ck.error_at(
                "LS216",
                f"unknown router {use!r}",
                ("routing", "router", "use"),
                hint=did_you_mean(use, ("group", "matrix"), cutoff=LOOSE)
                or "the routers are group and matrix",
            )
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


def _warn_inline_comment(cmd: str, node: Any, base: tuple[str, ...], ck: PathReporter) -> None:
    """A `# …` after arguments in cmd is no comment for llama-swap (only whole lines starting
    with `#` are dropped): the program gets it as arguments, and llama-server refuses them."""
    found = inline_comment(cmd)
    if found is None:
        return
    index, rest = found
    shown = rest if len(rest) <= 40 else rest[:37] + "..."
    pos = None
    if isinstance(node, YScalar):
        pos = node.find_in_source(rest) if node.rewritten else node.position_of(index)
    ck.add(
        Severity.WARNING,
        "LS412",
        f"'#' after arguments in cmd is not a comment: the program gets {shown!r} as arguments",
        pos,
        format_path(base + ("cmd",)),
        "only lines that start with '#' are dropped; put the comment on a line of its own",
        len(rest.splitlines()[0]) if pos is not None else 1,
    )


def _check_groups(
    groups: Mapping[str, GroupConfig], c: Config, base: tuple[str, ...], ck: PathReporter
) -> tuple[Group, ...]:
    out: list[Group] = []
    member_of: dict[str, str] = {}
    for gid, g in groups.items():
        if gid == DEFAULT_GROUP:
            # llama-swap overwrites a written '(default)' with its own group of the models in no
            # other group (swap and exclusive); it cannot be tuned. Models written into it stay
            # in it here (llama-swap would leave them in no group, so nothing could start them).
            ck.warning_at(
                "LS412",
                "group '(default)' is llama-swap's own group for the models in no other group: its "
                "settings are replaced by swap: true, exclusive: true, persistent: false",
                base + (gid,),
                hint="to let those models run beside other groups, put them in a group of your own "
                "with exclusive: false",
                key=True,
            )
        seen: set[str] = set()
        members: list[str] = []
        for i, member in enumerate(g.members):
            loc = base + (gid, "members", i)
            if member in seen:
                ck.error_at("LS213", f"group '{gid}' lists '{member}' twice", loc, hint="remove one of them")
                continue
            seen.add(member)
            if member in member_of:
                ck.error_at(
                    "LS214",
                    f"model '{member}' is in two groups, '{member_of[member]}' and '{gid}'",
                    loc,
                    hint="a model belongs to at most one group",
                )
                continue
            if member not in c.models:
                aliases = {a: mid for mid, m in c.models.items() for a in m.alias_ids()}
                if member in aliases:
                    # llama-swap starts: it makes a process for the alias that no request
                    # reaches (requests name the model), and puts the model in no group of
                    # its own, so in '(default)'.
                    ck.warning_at(
                        "LS412",
                        f"group '{gid}' names '{member}', an alias of '{aliases[member]}': llama-swap "
                        f"ignores it, so '{aliases[member]}' is in no group here and runs in '(default)'",
                        loc,
                        hint=f"use the model ID: - {aliases[member]}",
                    )
                    continue
                hint = (
                    did_you_mean(member, sorted(c.models), cutoff=LOOSE)
                    or "group members must be model IDs from 'models'"
                )
                ck.error_at("LS215", f"group '{gid}' names '{member}', which is not a model", loc, hint=hint)
                continue
            member_of[member] = gid
            members.append(member)
        if gid != DEFAULT_GROUP:
            out.append(Group(gid, g.swap, g.exclusive, g.persistent, tuple(members)))
    orphans = sorted(m for m in c.models if member_of.get(m, DEFAULT_GROUP) == DEFAULT_GROUP)
    if not groups:
        orphans = sorted(c.models)
    if orphans or not groups:
        out.append(Group(DEFAULT_GROUP, True, True, False, tuple(orphans)))
    return tuple(out)


def _check_scheduler(c: Config, loaded: Loaded, ck: PathReporter) -> None:
    sched = c.routing.scheduler
    if sched.use != "fifo":
        ck.error_at(
            "LS217",
            f"unknown scheduler {sched.use!r}",
            ("routing", "scheduler", "use"),
            hint="fifo is the only scheduler",
        )
    fifo = sched.settings.fifo
    given_as: dict[str, str] = {}
    for model, prio in fifo.priority.items():
        loc = ("routing", "scheduler", "settings", "fifo", "priority", model)
        if model in c.models or model in loaded.aliases:
            # llama-swap validates alias keys but then never matches them; we resolve them.
            real = model if model in c.models else loaded.aliases[model]
            if real in given_as:
                ck.warning_at(
                    "LS313",
                    f"routing.scheduler.settings.fifo.priority: {model!r} and {given_as[real]!r} "
                    f"both name model {real!r}; the priority given last ({prio}) wins",
                    loc,
                    key=True,
                    hint="give each model one priority, under its real ID",
                )
            given_as[real] = model
            loaded.priority[real] = prio
        else:
            ck.error_at(
                "LS218",
                f"a priority for {model!r}, which is not a model or an alias",
                loc,
                key=True,
                hint=did_you_mean(model, sorted(c.models), cutoff=LOOSE)
                or "priority keys are model IDs or aliases",
            )
    if fifo.stall_timeout is not None and fifo.stall_timeout <= 0:
        ck.error_at(
            "LS303",
            "routing.scheduler.settings.fifo.stall_timeout must be > 0 seconds",
            ("routing", "scheduler", "settings", "fifo", "stall_timeout"),
            hint="how long requests may wait with no progress before /health reports 503",
        )
    if fifo.max_wait is not None and fifo.max_wait < 0:
        ck.error_at(
            "LS303",
            "routing.scheduler.settings.fifo.max_wait must be >= 0 seconds",
            ("routing", "scheduler", "settings", "fifo", "max_wait"),
            hint="0 turns bounded waiting off",
        )


PolicyCheck = Callable[[str, Mapping[str, Any]], "tuple[str | None, str, str | None] | None"]


def check_scheduling_policy(loaded: Loaded, check: PolicyCheck | None) -> list[Diagnostic]:
    """`routing.scheduler.policy`: a name, or a mapping with `use: NAME` and the policy's
    options. The shape is checked here; the name and options by `check` (see
    CompileOptions.policy_check), each problem located at the name or at the option."""
    c = loaded.config
    if c is None:
        return []
    ck = PathReporter(loaded.file, loaded.doc.root)
    policy = c.routing.scheduler.policy
    loc: tuple[Any, ...] = ("routing", "scheduler", "policy")
    name_loc = loc + ("use",) if isinstance(policy, dict) else loc
    name = c.routing.scheduler.policy_name
    if not name:
        what = "routing.scheduler.policy.use" if isinstance(policy, dict) else "routing.scheduler.policy"
        ck.error_at(
            "LS219",
            f"{what} must name a scheduling policy",
            name_loc if isinstance(policy, str) or "use" in policy else loc,
            hint="e.g. policy: hold, or {use: hold, budget: 1} (default: fifo)",
        )
        return ck.diagnostics
    if check is not None:
        problem = check(name, c.routing.scheduler.policy_options)
        if problem is not None:
            option, message, hint = problem
            where, key = (
                (loc + (option,), True)
                if option is not None and isinstance(policy, dict) and option in policy
                else (name_loc, False)
            )
            ck.error_at("LS219", f"routing.scheduler.policy: {message}", where, hint=hint, key=key)
    return ck.diagnostics


def _check_limits(c: Config, ck: PathReporter) -> None:
    """Limits and timeouts (llamaswap's `server` block, `fifo.queue_timeout`, model
    `timeouts`): numbers >= 0, where 0 turns the limit off."""
    fifo = c.routing.scheduler.settings.fifo
    if fifo.queue_timeout is not None and fifo.queue_timeout < 0:
        ck.error_at(
            "LS303",
            "routing.scheduler.settings.fifo.queue_timeout must be >= 0 seconds",
            ("routing", "scheduler", "settings", "fifo", "queue_timeout"),
            hint="0 turns the queue deadline off",
        )
    for key, value in c.server.model_dump(by_alias=True).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            ck.error_at("LS303", f"server.{key} must be >= 0", ("server", key), hint="0 turns the limit off")
    for mid, m in c.models.items():
        for key, value in m.timeouts.model_dump(by_alias=True).items():
            if value is not None and value < 0:
                ck.error_at(
                    "LS303",
                    f"models.{mid}.timeouts.{key} must be >= 0 seconds",
                    ("models", mid, "timeouts", key),
                    hint="0 turns the timeout off",
                )


def _check_preload(c: Config, loaded: Loaded, ck: PathReporter) -> None:
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
            ck.warning_at(
                "LS406",
                f"hooks.on_startup.preload: {name!r} is not a model or alias; it is dropped",
                ("hooks", "on_startup", "preload", i),
                hint=did_you_mean(name, sorted(c.models), cutoff=LOOSE),
            )
            continue
        if real not in out:
            out.append(real)
    loaded.preload = tuple(out)


def _port_ok(parts: Any) -> bool:
    try:
        parts.port
    except ValueError:
        return False
    return True


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def go_duration(text: str) -> float | None:
    """Seconds for a Go duration string (`5s`, `1m30s`, `500ms`); None when Go refuses it."""
    t = text.strip()
    sign = -1.0 if t.startswith("-") else 1.0
    t = t.lstrip("+-")
    if t == "0":
        return 0.0
    if not t:
        return None
    pos, total = 0, 0.0
    for m in _DURATION.finditer(t):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total if pos == len(t) else None


def _check_blocks(c: Config, ck: PathReporter) -> None:
    """performance, store and upstream: the checks llama-swap makes when it decodes them."""
    every = c.performance.every
    if isinstance(every, str):
        seconds = go_duration(every)
        if seconds is None:
            ck.error_at(
                "LS302",
                f"performance.every: {every!r} is not a duration",
                ("performance", "every"),
                hint="write it like 5s, 30s or 1m",
            )
        elif seconds < 5:
            ck.error_at(
                "LS303",
                f"performance: every must be at least 5s, got {every.strip()}",
                ("performance", "every"),
                hint="hardware is polled at most every 5 s",
            )
    elif every != 0:
        ck.error_at(
            "LS302",
            f"performance.every: the number {every} is not a duration",
            ("performance", "every"),
            hint=f"write the unit: {every}s",
        )
    activity = c.ui.get("activity")
    if isinstance(activity, dict) and "session_id" in activity:
        names = activity["session_id"]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            ck.error_at(
                "LS302",
                "ui.activity.session_id must be a list of header names",
                ("ui", "activity", "session_id"),
                hint="e.g. session_id: [X-Session-ID]",
            )
    if c.store is not None and c.store.path.strip() == "":
        ck.error_at(
            "LS303",
            "store.path must not be empty",
            ("store", "path"),
            hint="the SQLite file for the activity store, e.g. /var/lib/llama-swap/activity.db",
        )
    for i, pattern in enumerate(c.upstream.ignore_paths):
        why = goregexp.translate(pattern)
        if isinstance(why, goregexp.Refused):
            ck.error_at(
                "LS303",
                f"upstream.ignorePaths: invalid regular expression {pattern!r}: {why.reason} "
                f"(at character {why.column + 1} of the pattern)",
                ("upstream", "ignorePaths", i),
                hint="RE2 syntax (Go's regexp), searched in the path after /upstream/<model>, "
                "e.g. '^/static/' or '\\.(js|css)$'; no look-around or back-references",
            )
