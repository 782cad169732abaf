"""Virtual model IDs: peers (remote servers), selectors and profiles, checked by llama-swap's
rules (reference §2.1, §2.5) and kept for the model listing.

Works on the located tree after macro substitution, so every problem points at its key or
value. llama-swap stops at its first error; here every one is reported.

Invariants: pure; never raises on user input; the result lists peers, selectors and profiles
in the order they are written; an entry with errors is left out of the result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llamaswap.compiler.config import Filters, Timeouts
from llamaswap.compiler.diagnostics import Diagnostic, Reporter
from llamaswap.compiler.goyaml import coerce
from llamaswap.compiler.source import PathReporter, Pos, YMap, YNode, YScalar, YSeq, to_python
from llamaswap.compiler.suggest import did_you_mean
from llamaswap.compiler.validate import validate_part

STRATEGIES = ("warm", "pin", "spillover")


@dataclass(frozen=True)
class Peer:
    id: str
    proxy: str
    api_key: str
    models: tuple[str, ...]  # de-duplicated, in written order
    filters: Filters = field(default_factory=Filters)
    timeouts: Timeouts = field(default_factory=Timeouts)

    def fqn(self, model: str) -> str:
        return f"{self.id}/{model}"


@dataclass(frozen=True)
class PeerRoute:
    """A name a request may use for a peer model: the peer, and the model's name there."""

    peer: Peer
    model: str

    @property
    def fqn(self) -> str:
        return self.peer.fqn(self.model)


@dataclass(frozen=True)
class Selector:
    id: str
    strategy: str
    targets: tuple[str, ...]
    spillover: int = 1
    name: str = ""
    description: str = ""
    unlisted: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    pins: tuple[tuple[str, str], ...]  # (pin, target); "" = the pin answers 404


@dataclass(frozen=True)
class Virtual:
    peers: tuple[Peer, ...] = ()
    selectors: tuple[Selector, ...] = ()
    profiles: tuple[Profile, ...] = ()
    # Every name routed to a peer: each `peer/model`, and each bare model name exactly one
    # peer lists (unless it is another peer's `peer/model`). Local IDs and aliases win over
    # a bare name; the caller asks here only for names that are not local.
    routes: Mapping[str, PeerRoute] = field(default_factory=dict, compare=False)

    def peer_fqns(self) -> tuple[str, ...]:
        return tuple(p.fqn(m) for p in self.peers for m in p.models)

    def route(self, name: str) -> PeerRoute | None:
        return self.routes.get(name)


def peer_routes(peers: tuple[Peer, ...]) -> dict[str, PeerRoute]:
    """The routing names of `peers` (see Virtual.routes), as llama-swap's peer router has them."""
    routes: dict[str, PeerRoute] = {}
    bare: dict[str, list[PeerRoute]] = {}
    for p in peers:
        for m in p.models:
            route = PeerRoute(p, m)
            routes.setdefault(route.fqn, route)
            bare.setdefault(m, []).append(route)
    for name, found in bare.items():
        if len(found) == 1 and name not in routes:
            routes[name] = found[0]
    return routes


def go_text(node: YNode | None) -> str | None:
    """The string llama-swap's decoder reads for a string key: any scalar, as written
    (numbers and booleans in their plain form); None for a mapping or a sequence."""
    if node is None:
        return ""
    if not isinstance(node, YScalar):
        return None
    v = node.value
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return str(int(v)) if "e" not in (node.raw or "").lower() else repr(v)
    return str(v)


_CTL = re.compile(r"[\x00-\x1f\x7f]")
_HEX2 = re.compile(r"%(?![0-9A-Fa-f]{2})")


def go_url_error(raw: str) -> str | None:
    """Why Go's net/url.Parse refuses `raw`, or None when it accepts it. (Go is lenient:
    `localhost:8080` parses, as scheme "localhost"; so does a bare path.)"""
    if _CTL.search(raw):
        return "net/url: invalid control character in URL"
    rest = raw.split("#", 1)[0]
    scheme = ""
    for i, ch in enumerate(rest):
        if ch.isascii() and ch.isalpha():
            continue
        if ch.isdigit() or ch in "+-.":
            if i == 0:
                break
            continue
        if ch == ":":
            if i == 0:
                return "missing protocol scheme"
            scheme, rest = rest[:i].lower(), rest[i + 1 :]
        break
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/"):
        if scheme:
            return None  # opaque: mailto:x, localhost:8080
        if ":" in rest.split("/", 1)[0]:
            return "first path segment in URL cannot contain colon"
    if rest.startswith("//") and (scheme or not rest.startswith("///")):
        authority, _, path = rest[2:].partition("/")
        host = authority.rpartition("@")[2]
        if host.startswith("["):
            close = host.find("]")
            if close < 0:
                return "missing ']' in host"
            port = host[close + 1 :]
            if port and not re.fullmatch(r":[0-9]*", port):
                return f"invalid port {port!r} after host"
        elif ":" in host:
            port = host[host.index(":") :]
            if not re.fullmatch(r":[0-9]*", port):
                return f"invalid port {port!r} after host"
        if _HEX2.search(host):
            return "invalid URL escape"
        rest = path
    if _HEX2.search(rest):
        return "invalid URL escape"
    return None


class _Check(Reporter):
    """A Reporter that places a problem at a node of the tree (its whole scalar underlined)."""

    @property
    def diags(self) -> list[Diagnostic]:
        return self.diagnostics

    def error(
        self,
        code: str,
        message: str,
        at: YNode | None = None,
        path: str | None = None,
        hint: str | None = None,
        fallback: Pos | None = None,
    ) -> None:
        pos = at.pos if at is not None else fallback
        length = 1
        if isinstance(at, YScalar) and at.raw and at.pos.line == at.end.line:
            length = len(at.raw)
        super().error(code, message, pos, path, hint=hint, length=length)


def _entries(node: YNode | None) -> list[tuple[YScalar, YNode]]:
    return list(node.items) if isinstance(node, YMap) else []


def _str_list(node: YNode | None, path: str, what: str, ck: _Check, code: str) -> tuple[str, ...] | None:
    """A list of strings as llama-swap decodes one (null = empty); None after an error."""
    if node is None or (isinstance(node, YScalar) and node.value is None):
        return ()
    if not isinstance(node, YSeq):
        ck.error(
            "LS302",
            f"'{path}' must be a list of {what}",
            node,
            path,
            hint=f"write it as a YAML list: [{what[:-1] if what.endswith('s') else what}, ...]",
        )
        return None
    out: list[str] = []
    for i, item in enumerate(node.items):
        text = go_text(item)
        if text is None:
            ck.error("LS302", f"'{path}[{i}]' must be a string", item, f"{path}[{i}]")
            return None
        out.append(text)
    return tuple(out)


def check_virtual(
    root: YMap,
    file: str,
    models: Mapping[str, Any],
    aliases: Mapping[str, str],
    can_coexist: Callable[[tuple[str, ...]], str | None],
) -> tuple[Virtual, list[Diagnostic]]:
    """Check `peers`, `selectors` and `profiles` under `root`.

    `aliases` maps every alias (setParamsByID names included) to its model; `can_coexist`
    says why spillover targets (real IDs) can never run together, or None when they can."""
    ck = _Check(file)
    peers = _peers(root, ck, PathReporter(file, root))
    selector_nodes = _entries(root.get("selectors"))
    selector_ids = {str(k.value) for k, _ in selector_nodes}
    profiles_node = root.get("profiles")
    _namespace(root, peers, models, aliases, selector_ids, ck)

    def local(name: str) -> str | None:
        return name if name in models else aliases.get(name)

    def peer_model(name: str) -> str | None:
        """The FQN for a peer model name: exact FQN first, else a bare name one peer has."""
        for wanted in ("fqn", "bare"):
            found = {
                p.fqn(m) for p in peers for m in p.models if (p.fqn(m) if wanted == "fqn" else m) == name
            }
            if len(found) == 1:
                return found.pop()
            if found:
                return None  # ambiguous
        return None

    def base(name: str) -> str | None:
        return local(name) or peer_model(name)

    selectors = _selectors(
        root, selector_nodes, selector_ids, models, aliases, local, base, peer_model, can_coexist, ck
    )
    profiles = _profiles(profiles_node, selector_ids, base, ck)
    return Virtual(tuple(peers), tuple(selectors), tuple(profiles), peer_routes(tuple(peers))), ck.diags


def _peer_part(value: YMap, pid: str, name: str, cls: type[Any], ck: _Check, at: PathReporter) -> Any:
    """A peer's `filters` or `timeouts`, typed as a model's are (Go's decoder reads both into
    the same structs); problems are reported at their place, and their values left out."""
    node = value.get(name)
    if node is None or (isinstance(node, YScalar) and node.value is None):
        return cls()
    data = to_python(node)
    if isinstance(data, dict):
        # An empty value means unset, as for models; a peer's filters have no legacy spelling.
        data = {
            k: v for k, v in data.items() if v is not None and not (cls is Filters and k == "strip_params")
        }
    data, notes = coerce(data, cls)
    loc = ("peers", pid, name)
    for where, note in notes:
        at.warning_at("LS412", f"'peers.{pid}.{name}.{'.'.join(map(str, where))}': {note}", loc + where)
    before = len(at.diagnostics)
    part = validate_part(cls, data, at, loc)
    if part is None and len(at.diagnostics) == before:
        at.error_at("LS302", f"'peers.{pid}.{name}' must be a mapping", loc)
    ck.diags.extend(at.diagnostics)
    at.diagnostics.clear()
    return part if part is not None else cls()


def _peers(root: YMap, ck: _Check, at: PathReporter) -> list[Peer]:
    node = root.get("peers")
    if node is None or (isinstance(node, YScalar) and node.value is None):
        return []
    if not isinstance(node, YMap):
        ck.error("LS302", "'peers' must be a mapping of peer IDs to peers", node, "peers")
        return []
    out: list[Peer] = []
    for key, value in node.items:
        pid = str(key.value)
        path = f"peers.{pid}"
        if isinstance(value, YScalar) and value.value is None:
            out.append(Peer(pid, "", "", ()))  # llama-swap decodes a null peer as an empty one
            continue
        if not isinstance(value, YMap):
            ck.error("LS302", f"'{path}' must be a mapping (proxy, models, apiKey)", value, path)
            continue
        ok = True
        proxy = go_text(value.get("proxy"))
        api_key = go_text(value.get("apiKey"))
        for name, text in (("proxy", proxy), ("apiKey", api_key)):
            if text is None:
                ck.error("LS302", f"'{path}.{name}' must be a string", value.get(name), f"{path}.{name}")
                ok = False
        models = _str_list(value.get("models"), f"{path}.models", "model IDs", ck, "LS316")
        if models is None:
            ok = False
        if not ok:
            continue
        assert proxy is not None and models is not None
        if proxy == "":
            ck.error(
                "LS316",
                "a peer needs a 'proxy' URL",
                value.get("proxy") or key,
                f"{path}.proxy",
                hint="the base URL of the other server, e.g. http://10.0.0.2:8080",
            )
            continue
        why = go_url_error(proxy)
        if why is not None:
            ck.error(
                "LS316",
                f"proxy {proxy!r} is not a usable URL: {why}",
                value.get("proxy"),
                f"{path}.proxy",
            )
            continue
        if not models:
            ck.error(
                "LS316",
                "a peer must list at least one model",
                value.get("models") or key,
                f"{path}.models",
                hint="list the model IDs the peer serves",
            )
            continue
        filters = _peer_part(value, pid, "filters", Filters, ck, at)
        timeouts = _peer_part(value, pid, "timeouts", Timeouts, ck, at)
        for name, seconds in timeouts.model_dump(by_alias=True).items():
            if seconds is not None and seconds < 0:
                at.error_at(
                    "LS303",
                    "a timeout cannot be negative",
                    ("peers", pid, "timeouts", name),
                    hint="0 turns the timeout off",
                )
        ck.diags.extend(at.diagnostics)
        at.diagnostics.clear()
        out.append(Peer(pid, proxy, api_key or "", tuple(dict.fromkeys(models)), filters, timeouts))
    return out


def _namespace(
    root: YMap,
    peers: list[Peer],
    models: Mapping[str, Any],
    aliases: Mapping[str, str],
    selector_ids: set[str],
    ck: _Check,
) -> None:
    """Peer model names `peer/model` are reserved: nothing else may be called that."""
    owner: dict[str, tuple[str, str]] = {}
    peers_node = root.get("peers")
    for p in peers:
        pnode = peers_node.key_node(p.id) if isinstance(peers_node, YMap) else None
        for m in p.models:
            fqn = p.fqn(m)
            if fqn in owner:
                other = owner[fqn]
                ck.error(
                    "LS316",
                    f"{fqn!r} names two peer models: {other[1]!r} of peer {other[0]!r} "
                    f"and {m!r} of peer {p.id!r}",
                    pnode,
                    f"peers.{p.id}.models",
                    hint="rename a peer or drop the model from one of them",
                )
                continue
            owner[fqn] = (p.id, m)
    if not owner:
        return
    models_node = root.get("models")
    for fqn in sorted(owner):
        if fqn in models:
            at = models_node.key_node(fqn) if isinstance(models_node, YMap) else None
            ck.error(
                "LS316",
                f"model ID {fqn!r} is also the name of a peer model",
                at,
                f"models.{fqn}",
                hint=f"peer {owner[fqn][0]!r} serves {owner[fqn][1]!r} under this name; rename the model",
            )
        elif fqn in aliases:
            ck.error(
                "LS316",
                f"alias {fqn!r} of model {aliases[fqn]!r} is also the name of a peer model",
                _alias_node(models_node, aliases[fqn], fqn),
                f"models.{aliases[fqn]}.aliases",
                hint="rename the alias",
            )
        if fqn in selector_ids:
            sel = root.get("selectors")
            ck.error(
                "LS316",
                f"selector ID {fqn!r} is also the name of a peer model",
                sel.key_node(fqn) if isinstance(sel, YMap) else None,
                f"selectors.{fqn}",
            )
        for pkey, pval in _entries(root.get("profiles")):
            pins = pval.get("pins") if isinstance(pval, YMap) else None
            if isinstance(pins, YMap) and pins.key_node(fqn) is not None:
                ck.error(
                    "LS316",
                    f"pin {fqn!r} of profile {pkey.value!r} is also the name of a peer model",
                    pins.key_node(fqn),
                    f"profiles.{pkey.value}.pins.{fqn}",
                )


def _alias_node(models_node: YNode | None, model: str, alias: str) -> YNode | None:
    m = models_node.get(model) if isinstance(models_node, YMap) else None
    if not isinstance(m, YMap):
        return None
    seq = m.get("aliases")
    if isinstance(seq, YSeq):
        for item in seq.items:
            if isinstance(item, YScalar) and go_text(item) == alias:
                return item
    filters = m.get("filters")
    by_id = filters.get("setParamsByID") if isinstance(filters, YMap) else None
    if isinstance(by_id, YMap) and by_id.key_node(alias) is not None:
        return by_id.key_node(alias)
    return m.items[0][0] if m.items else None


def _selectors(
    root: YMap,
    nodes: list[tuple[YScalar, YNode]],
    selector_ids: set[str],
    models: Mapping[str, Any],
    aliases: Mapping[str, str],
    local: Callable[[str], str | None],
    base: Callable[[str], str | None],
    peer_model: Callable[[str], str | None],
    can_coexist: Callable[[tuple[str, ...]], str | None],
    ck: _Check,
) -> list[Selector]:
    node = root.get("selectors")
    if (
        node is not None
        and not isinstance(node, YMap)
        and not (isinstance(node, YScalar) and node.value is None)
    ):
        ck.error("LS302", "'selectors' must be a mapping of selector IDs to selectors", node, "selectors")
        return []
    out: list[Selector] = []
    for key, value in nodes:
        sid = str(key.value)
        path = f"selectors.{sid}"
        if isinstance(value, YScalar) and value.value is None:
            value = YMap([], value.pos, value.end)
        if not isinstance(value, YMap):
            ck.error("LS302", f"'{path}' must be a mapping (strategy, targets, ...)", value, path)
            continue
        errors = len(ck.diags)
        if sid.strip() == "":
            ck.error("LS315", "a selector needs a name", key, path)
        if sid in models:
            ck.error(
                "LS315",
                f"selector {sid!r} has the same name as a model",
                key,
                path,
                hint="a selector is a new, virtual model ID: give it a name no model uses",
            )
        elif sid in aliases:
            ck.error(
                "LS315",
                f"selector {sid!r} has the same name as a model alias",
                key,
                path,
                hint=f"'{sid}' is an alias of model '{aliases[sid]}'",
            )
        texts: dict[str, str] = {}
        for name in ("strategy", "name", "description"):
            text = go_text(value.get(name))
            if text is None:
                ck.error("LS302", f"'{path}.{name}' must be a string", value.get(name), f"{path}.{name}")
            texts[name] = text or ""
        strategy = texts["strategy"]
        if go_text(value.get("strategy")) is None:
            pass  # reported above
        elif strategy == "":
            ck.error(
                "LS315",
                "a selector needs a 'strategy'",
                value.get("strategy") or key,
                f"{path}.strategy",
                hint="one of: warm, pin, spillover",
            )
        elif strategy not in STRATEGIES:
            ck.error(
                "LS315",
                f"unknown strategy {strategy!r}",
                value.get("strategy"),
                f"{path}.strategy",
            )
        targets = _str_list(value.get("targets"), f"{path}.targets", "model IDs", ck, "LS315")
        if targets is not None and not targets:
            ck.error(
                "LS315",
                "a selector needs at least one target",
                value.get("targets") or key,
                f"{path}.targets",
            )
        spill = 1
        settings = value.get("settings")
        if isinstance(settings, YMap) and settings.get("spillover") is not None:
            s = settings.get("spillover")
            if isinstance(s, YScalar) and isinstance(s.value, (int, float)) and not isinstance(s.value, bool):
                spill = int(s.value)
            elif not (isinstance(s, YScalar) and s.value is None):
                ck.error(
                    "LS302",
                    f"'{path}.settings.spillover' must be a whole number",
                    s,
                    f"{path}.settings.spillover",
                )
        unlisted = value.get("unlisted")
        unlisted_v = isinstance(unlisted, YScalar) and unlisted.value is True
        resolved: list[str] = []
        local_targets: list[str] = []
        tnode = value.get("targets")
        for i, target in enumerate(targets or ()):
            at = tnode.items[i] if isinstance(tnode, YSeq) else None
            tpath = f"{path}.targets[{i}]"
            if target in selector_ids:
                ck.error(
                    "LS315",
                    f"{target!r} is a selector, and a selector's targets must be models",
                    at,
                    tpath,
                    hint="name models (or aliases) as targets",
                )
                continue
            if base(target) is None:
                ck.error(
                    "LS315",
                    f"unknown model {target!r}",
                    at,
                    tpath,
                    hint=did_you_mean(target, sorted(set(models) | set(aliases)), partial=True)
                    or "targets are model IDs, aliases or peer models",
                )
                continue
            real = local(target)
            if strategy == "warm" and real is None:
                ck.error(
                    "LS315",
                    f'selectors.{sid}.targets[{i}] must resolve to a local model for strategy "warm"',
                    at,
                    tpath,
                    hint="warm picks a loaded model; peers are never loaded",
                )
                continue
            if strategy == "spillover":
                if real is not None:
                    local_targets.append(real)
                    resolved.append(real)
                else:
                    resolved.append(peer_model(target) or target)
        if strategy == "spillover" and len(ck.diags) == errors:
            if spill < 1:
                ck.error(
                    "LS315",
                    "spillover must be at least 1",
                    settings.get("spillover") if isinstance(settings, YMap) else key,
                    f"{path}.settings.spillover",
                )
            dup = [t for i, t in enumerate(resolved) if t in resolved[:i]]
            if dup:
                ck.error(
                    "LS315",
                    f"two targets are the same model, {dup[0]!r}",
                    tnode,
                    f"{path}.targets",
                    hint="two targets name the same model (an alias and its model?)",
                )
            elif len(local_targets) > 1:
                why = can_coexist(tuple(local_targets))
                if why is not None:
                    ck.error(
                        "LS315",
                        why,
                        tnode,
                        f"{path}.targets",
                        hint="spillover sends requests to the next target while one is busy, so the targets "
                        "must be able to run together",
                    )
        if len(ck.diags) == errors:
            meta = value.get("metadata")
            out.append(
                Selector(
                    sid,
                    strategy,
                    tuple(targets or ()),
                    spill,
                    texts["name"].strip(),
                    texts["description"].strip(),
                    unlisted_v,
                    to_python(meta, list) if isinstance(meta, YMap) else {},
                )
            )
    return out


LEGACY_PROFILES = "a profile is a mapping with 'description' and 'pins'; the old list form is no longer read"


def _profiles(
    node: YNode | None, selector_ids: set[str], base: Callable[[str], str | None], ck: _Check
) -> list[Profile]:
    if node is None or (isinstance(node, YScalar) and node.value is None):
        return []
    if not isinstance(node, YMap):
        ck.error("LS302", "'profiles' must be a mapping of profile names to profiles", node, "profiles")
        return []
    out: list[Profile] = []
    for key, value in node.items:
        name = str(key.value)
        path = f"profiles.{name}"
        if isinstance(value, YScalar) and value.value is None:
            value = YMap([], value.pos, value.end)
        if not isinstance(value, YMap):
            ck.error(
                "LS314",
                LEGACY_PROFILES,
                value,
                path,
                hint=f"write it as  {name}: {{description: ..., pins: {{requested-id: model-id}}}}",
            )
            continue
        errors = len(ck.diags)
        description = go_text(value.get("description"))
        if description is None:
            ck.error(
                "LS302",
                f"'{path}.description' must be a string",
                value.get("description"),
                f"{path}.description",
            )
        pins_node = value.get("pins")
        pins: list[tuple[str, str]] = []
        if (
            pins_node is not None
            and not isinstance(pins_node, YMap)
            and not (isinstance(pins_node, YScalar) and pins_node.value is None)
        ):
            ck.error(
                "LS302",
                f"'{path}.pins' must be a mapping of requested IDs to model IDs",
                pins_node,
                f"{path}.pins",
            )
            continue
        for pkey, pval in _entries(pins_node):
            target = go_text(pval)
            if target is None:
                ck.error(
                    "LS302",
                    f"'{path}.pins.{pkey.value}' must be a model ID (or null)",
                    pval,
                    f"{path}.pins.{pkey.value}",
                )
                continue
            pins.append((str(pkey.value), target))
        if len(ck.diags) != errors:
            continue
        if name.strip() == "":
            ck.error("LS314", "a profile needs a name", key, path)
        if not pins:
            ck.error(
                "LS314",
                "a profile needs at least one pin",
                pins_node or key,
                f"{path}.pins",
                hint="pins map a requested model ID to the model that answers it",
            )
        for (pin, target), (pkey, pval) in zip(pins, _entries(pins_node)):
            if pin.strip() == "":
                ck.error("LS314", "a pin needs a name", pkey, f"{path}.pins")
            if target == "" or base(target) is not None or target in selector_ids:
                continue
            ck.error(
                "LS314",
                f"unknown model {target!r}",
                pval,
                f"{path}.pins.{pin}",
                hint="a pin's target is a model ID, alias, selector or peer model (null disables the pin)",
            )
        if len(ck.diags) == errors:
            out.append(Profile(name, (description or ""), tuple(pins)))
    return out
