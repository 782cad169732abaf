"""Banner: what `llamaswap serve` prints once it listens (pure string building).

The curl lines work as printed: they name a model `/v1/models` lists (one compile did not
warn cannot start, LS411, when there is one), carry an API key
placeholder when the config sets apiKeys, and write IPv6 addresses in brackets.
"""

from __future__ import annotations

import json
import shlex

from llamaswap.compiler.plan import Plan

KEY_PLACEHOLDER = "YOUR_API_KEY"


def display_host(bound_host: str) -> str:
    """The host to put in a URL for an address we listen on (wildcards become loopback)."""
    if bound_host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bound_host == "::":
        return "[::1]"
    if ":" in bound_host:
        return f"[{bound_host}]"
    return bound_host


def base_url(bound_host: str, port: int, tls: bool = False) -> str:
    return f"{'https' if tls else 'http'}://{display_host(bound_host)}:{port}"


def cannot_start(plan: Plan) -> frozenset[str]:
    """Models compile warned cannot start as written (LS411: no cmd, a cmd that cannot be
    split, a port above 65535): a curl naming one would get a 500."""
    paths = [d.path for d in plan.diagnostics if d.code == "LS411" and d.path]
    return frozenset(
        m for m in plan.models for p in paths if p == f"models.{m}" or p.startswith(f"models.{m}.")
    )


def example_model(plan: Plan) -> str | None:
    """A model ID the listing shows: the first listed model that can start, else the first
    listed one, else a selector, else any."""
    c = plan.config
    listed = [mid for mid in plan.models if c is None or not c.models[mid].unlisted]
    broken = cannot_start(plan)
    for mid in listed:
        if mid not in broken:
            return mid
    if listed:
        return listed[0]
    for sel in plan.virtual.selectors:
        if not sel.unlisted:
            return sel.id
    if plan.virtual.peers:
        return plan.virtual.peer_fqns()[0]
    return plan.models[0] if plan.models else None


def banner(
    plan: Plan,
    what: str,
    bound_host: str,
    port: int,
    loop: str,
    version: str,
    tls: bool = False,
    prefer: str | None = None,
) -> list[tuple[str, bool]]:
    """(line, to_stderr) pairs, in order. `prefer`: the model the curl should name, if known."""
    url = base_url(bound_host, port, tls)
    n = len(plan.models)
    out: list[tuple[str, bool]] = [
        (
            f"llamaswap {version} serving {what} on {url} ({n} model{'' if n == 1 else 's'}, {plan.engine} engine, "
            f"{loop})",
            False,
        )
    ]
    if bound_host not in ("127.0.0.1", "localhost", "::1"):
        out.append(
            (f"note: listening on {bound_host or 'every interface'}: reachable from other hosts", True)
        )
    auth = []
    if plan.config is not None and plan.config.api_keys:
        auth = ["-H", f"Authorization: Bearer {KEY_PLACEHOLDER}"]
    insecure = ["-k"] if tls else []
    example = prefer if prefer is not None and plan.resolve_model(prefer) else example_model(plan)
    out.append(("try:", False))
    if example is not None:
        body = json.dumps({"model": example, "messages": [{"role": "user", "content": "hello"}]})
        out.append(
            (
                "  "
                + shlex.join(
                    [
                        "curl",
                        "-s",
                        *insecure,
                        f"{url}/v1/chat/completions",
                        *auth,
                        "-H",
                        "Content-Type: application/json",
                        "-d",
                        body,
                    ]
                ),
                False,
            )
        )
    else:
        out.append(("  " + shlex.join(["curl", "-s", *insecure, f"{url}/health"]), False))
    out.append(("  " + shlex.join(["curl", "-s", *insecure, f"{url}/v1/models", *auth]), False))
    if example is None:
        out.append(
            ("note: the config defines no models, so /v1/models lists none; add them under 'models'", True)
        )
    if auth:
        out.append((f"note: replace {KEY_PLACEHOLDER} with one of the config's apiKeys", True))
    # The UI: models, live state, logs, load/unload (a browser asks for the key, if any).
    out.append((f"web UI: {url}/ui/", False))
    out.append(("stop with Ctrl-C", True))
    return out
