"""Listing: the records of `/v1/models` as llama-swap writes them (pure).

One record per listed model; with includeAliasesInList one per alias too (`meta.llamaswap`
says which model it stands for); one per peer model (`peer/model`); one per listed selector.
Capabilities are rendered as llama-swap renders them (architecture, capabilities,
supported_parameters, context_length and `meta.n_ctx`); metadata keys those fields own are
dropped. Records are sorted by ID; a model's aliases keep their declared order, and names
registered by setParamsByID come after them. With a profile active, one per pin (type `profile`)
that no other record is named like.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from llamaswap.compiler.config import Capabilities, ModelConfig
from llamaswap.compiler.plan import Plan

CAPPED_METADATA = frozenset({"architecture", "capabilities", "supported_parameters", "context_length"})


def caps_empty(c: Capabilities) -> bool:
    return not c.in_ and not c.out and not c.tools and not c.reranker and c.context == 0


def render_capabilities(c: Capabilities) -> dict[str, Any]:
    """The top-level record fields for a model's capabilities ({} when none are set)."""
    if caps_empty(c):
        return {}
    out: dict[str, Any] = {}
    arch: dict[str, Any] = {}
    if c.in_:
        arch["input_modalities"] = list(c.in_)
    if c.out:
        arch["output_modalities"] = list(c.out)
    if c.in_ and c.out:
        arch["modality"] = "+".join(c.in_) + "->" + "+".join(c.out)
    if arch:
        out["architecture"] = arch
    caps: dict[str, Any] = {}
    if "image" in c.in_:
        caps["vision"] = True
    if c.in_ and c.out:
        pairs = {
            ("audio", "text"): "audio_transcriptions",
            ("text", "audio"): "audio_speech",
            ("text", "image"): "image_generation",
            ("image", "image"): "image_to_image",
        }
        for (i, o), name in pairs.items():
            if i in c.in_ and o in c.out:
                caps[name] = True
    if c.tools:
        caps["function_calling"] = True
        out["supported_parameters"] = ["tools", "tool_choice"]
    if c.reranker:
        caps["reranker"] = True
    if caps:
        out["capabilities"] = caps
    if c.context > 0:
        out["context_length"] = c.context
    return out


def model_aliases(plan: Plan, model_id: str) -> list[str]:
    """The model's aliases as llama-swap holds them: declared order, then setParamsByID names."""
    m = plan.config.models[model_id] if plan.config else None
    if m is None:
        return []
    out = [a for a in m.alias_ids() if plan.aliases.get(a) == model_id]
    out += [
        k
        for k in m.filters.set_params_by_id
        if k != model_id and plan.aliases.get(k) == model_id and k not in out
    ]
    return out


def _record(
    id_: str,
    created: int,
    name: str,
    description: str,
    metadata: Mapping[str, Any] | None,
    caps: Capabilities | None,
    status: str,
    internal: Mapping[str, Any],
) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": id_, "object": "model", "created": created, "owned_by": "llama-swap"}
    if name.strip():
        rec["name"] = name.strip()
    if description.strip():
        rec["description"] = description.strip()
    rendered = render_capabilities(caps) if caps is not None else {}
    rec.update(rendered)
    meta = dict(metadata or {})
    if rendered or (caps is not None and not caps_empty(caps)):
        meta = {k: v for k, v in meta.items() if k not in CAPPED_METADATA}
    meta.update(internal)
    box: dict[str, Any] = {}
    if meta:
        box["llamaswap"] = meta
    if rendered.get("context_length"):
        box["n_ctx"] = rendered["context_length"]
    if box:
        rec["meta"] = box
    rec["status"] = {"value": status}
    return rec


def model_records(
    plan: Plan,
    created: int,
    loaded: Callable[[str], bool],
    active: Callable[[str], bool] | None = None,
    profile: str | None = None,
) -> list[dict[str, Any]]:
    """Every `/v1/models` record. `loaded(model)`: the process is not stopped; `active(model)`:
    it is starting or ready (a selector counts as loaded then); defaults to `loaded`.
    `profile`: the active profile, whose pins are listed (type `profile`) unless empty or
    named like a model, alias, peer model or selector."""
    active = active or loaded
    c = plan.config
    data: list[dict[str, Any]] = []
    if c is None:
        return data
    for mid in plan.models:
        m: ModelConfig = c.models[mid]
        if m.unlisted:
            continue
        status = "loaded" if loaded(mid) else "unloaded"
        aliases = model_aliases(plan, mid)
        internal: dict[str, Any] = {"type": "model"}
        if aliases:
            internal["aliases"] = aliases
        data.append(
            _record(mid, created, m.name, m.description, m.metadata, m.capabilities, status, internal)
        )
        if c.include_aliases_in_list:
            entries = {a.id: a for a in m.aliases if not isinstance(a, str)}
            for alias in aliases:
                entry = entries.get(alias)
                if entry is not None and entry.unlisted:
                    continue
                if alias.strip():
                    data.append(
                        _record(
                            alias.strip(),
                            created,
                            (entry.name if entry and entry.name else m.name),
                            (entry.description if entry and entry.description else m.description),
                            m.metadata,
                            m.capabilities,
                            status,
                            {"type": "alias", "modelID": mid},
                        )
                    )
    for peer in plan.virtual.peers:
        for model in peer.models:
            data.append(
                _record(
                    peer.fqn(model),
                    created,
                    f"{peer.id}: {model}",
                    "",
                    None,
                    None,
                    "unloaded",
                    {"type": "peer", "peerID": peer.id},
                )
            )
    for sel in plan.virtual.selectors:
        if sel.unlisted:
            continue
        status = "unloaded"
        for target in sel.targets:
            real = plan.resolve_model(target)
            if real is not None and active(real):
                status = "loaded"
            if sel.strategy == "pin" or status == "loaded":
                break
        internal = {"type": "selector", "strategy": sel.strategy, "targets": list(sel.targets)}
        if sel.strategy == "spillover":
            internal["spillover"] = sel.spillover
        data.append(_record(sel.id, created, sel.name, sel.description, sel.metadata, None, status, internal))
    pinned = next((p for p in plan.virtual.profiles if p.name == profile), None)
    if pinned is not None:
        taken = set(plan.models) | set(plan.aliases) | {s.id for s in plan.virtual.selectors}
        for peer in plan.virtual.peers:
            taken.update(peer.fqn(m) for m in peer.models)
            taken.update(peer.models)
        for pin, target in pinned.pins:
            if target and pin not in taken:
                data.append(_record(pin, created, "", "", None, None, "unloaded", {"type": "profile"}))
    data.sort(key=lambda r: r["id"])
    return data
