"""Config: llama-swap's configuration, typed with pydantic v2 (strict, frozen).

These models hold values *after* env and macro substitution, so every field has its final
type. They do not decide anything: validation rules with llama-swap's messages live in
`load.py` (so each problem can be reported with a location), and matrix/group semantics
live in their own passes.

Field names are snake_case; the YAML spellings (camelCase) are the aliases.
"""

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Scalar = str | int | float | bool


# peers, profiles and selectors are checked node by node in virtual.py, with their own messages;
# a wrong shape here is left to it (one error, not two).
_Checked = Annotated[dict[str, Any], BeforeValidator(lambda v: v if isinstance(v, dict) else {})]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", populate_by_name=True)


class Filters(_Strict):
    strip_params: str = Field("", alias="stripParams")
    # Legacy spelling, folded into strip_params by the loader.
    strip_params_legacy: str = Field("", alias="strip_params")
    set_params: dict[str, Any] = Field(default_factory=dict, alias="setParams")
    set_params_by_id: dict[str, dict[str, Any]] = Field(default_factory=dict, alias="setParamsByID")

    def stripped_keys(self) -> tuple[str, ...]:
        """Sorted, de-duplicated keys to strip; `model` is protected."""
        raw = self.strip_params or self.strip_params_legacy
        keys = {k.strip() for k in raw.split(",")}
        keys.discard("")
        keys.discard("model")
        return tuple(sorted(keys))


class Timeouts(_Strict):
    """Upstream timeouts in seconds (llama-swap's keys; 0 disables one). `responseHeader`
    unset means llamaswap's default (runtime/limits.py), where llama-swap waits forever;
    `streamIdle` is a llamaswap extension."""

    connect: int = 30
    keepalive: int = 30
    response_header: int | None = Field(None, alias="responseHeader")
    tls_handshake: int = Field(10, alias="tlsHandshake")
    expect_continue: int = Field(1, alias="expectContinue")
    idle_conn: int = Field(90, alias="idleConn")
    stream_idle: int | None = Field(None, alias="streamIdle")


class Compat(_Strict):
    ignore_websockets: bool = Field(False, alias="ignoreWebsockets")


class Capabilities(_Strict):
    in_: tuple[str, ...] = Field((), alias="in")
    out: tuple[str, ...] = ()
    tools: bool = False
    reranker: bool = False
    context: int = 0


class AliasEntry(_Strict):
    """The object form of an alias (`- id: x, name: ..., unlisted: ...`)."""

    id: str
    name: str = ""
    description: str = ""
    unlisted: bool = False


class ModelConfig(_Strict):
    cmd: str = ""
    cmd_stop: str = Field("", alias="cmdStop")
    proxy: str = "http://localhost:${PORT}"
    aliases: tuple[str | AliasEntry, ...] = ()
    env: tuple[str, ...] = ()
    check_endpoint: str = Field("/health", alias="checkEndpoint")
    ttl: int = -1
    unload_timeout: int = Field(0, alias="unloadTimeout")
    unlisted: bool = False
    use_model_name: str = Field("", alias="useModelName")
    name: str = ""
    description: str = ""
    concurrency_limit: int = Field(0, alias="concurrencyLimit")
    filters: Filters = Field(default_factory=Filters)
    # Macro values are checked (and reported, LS306) by the macro pass.
    macros: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    send_loading_state: bool | None = Field(None, alias="sendLoadingState")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    # llamaswap extension: the key sent upstream (Authorization: Bearer, x-api-key) instead
    # of the client's, like a llama-swap peer's apiKey.
    api_key: str = Field("", alias="apiKey")
    compat: Compat = Field(default_factory=Compat)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    health_check_timeout: int | None = Field(None, alias="healthCheckTimeout")

    def alias_ids(self) -> tuple[str, ...]:
        return tuple(a if isinstance(a, str) else a.id for a in self.aliases)


class GroupConfig(_Strict):
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False
    members: tuple[str, ...] = ()


class MatrixConfig(_Strict):
    # Values are checked by the matrix passes (resolve.py), which report each problem with
    # its own code and location; here they are only required to be mappings.
    vars: dict[str, Any] = Field(default_factory=dict)
    evict_costs: dict[str, Any] = Field(default_factory=dict)
    sets: dict[str, Any] = Field(default_factory=dict)


class FifoSettings(_Strict):
    priority: dict[str, int] = Field(default_factory=dict)
    # llamaswap extensions: bounded waiting (seconds; None = the documented default), and the
    # window after which /health reports a stalled scheduler (seconds; None = derived).
    max_wait: float | None = None
    stall_timeout: float | None = None
    # llamaswap extension: seconds a request may wait for its grant before it gets 503
    # (None = the documented default, 0 = off).
    queue_timeout: float | None = None


class SchedulerSettingsConfig(_Strict):
    fifo: FifoSettings = Field(default_factory=FifoSettings)


class SchedulerConfig(_Strict):
    use: str = "fifo"
    # llamaswap: the scheduling policy, `NAME` or `{use: NAME, OPTION: VALUE, ...}` (checked
    # by load.py; names resolve in runtime/policies.py).
    policy: str | dict[str, Any] = "fifo"
    settings: SchedulerSettingsConfig = Field(default_factory=SchedulerSettingsConfig)

    @property
    def policy_name(self) -> str:
        use = self.policy.get("use") if isinstance(self.policy, dict) else self.policy
        return use.strip() if isinstance(use, str) else ""

    @property
    def policy_options(self) -> dict[str, Any]:
        if isinstance(self.policy, dict):
            return {k: v for k, v in self.policy.items() if k != "use"}
        return {}


class RouterSettings(_Strict):
    groups: dict[str, GroupConfig] = Field(default_factory=dict)
    matrix: MatrixConfig | None = None


class RouterConfig(_Strict):
    use: str = ""
    settings: RouterSettings = Field(default_factory=RouterSettings)


class RoutingConfig(_Strict):
    router: RouterConfig = Field(default_factory=RouterConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)


class OnStartup(_Strict):
    preload: tuple[str, ...] = ()


class Hooks(_Strict):
    on_startup: OnStartup = Field(default_factory=OnStartup)


class Performance(_Strict):
    disabled: bool = False
    every: str | int = "5s"


class Store(_Strict):
    path: str = ""


class UpstreamConfig(_Strict):
    ignore_paths: tuple[str, ...] = Field((), alias="ignorePaths")


class LlamaswapSettings(_Strict):
    """llamaswap's own settings (no llama-swap equivalent), under the `llamaswap` key."""

    shutdown_timeout: float = Field(30.0, alias="shutdownTimeout")  # drain deadline, seconds
    # Seconds a reload lets requests in flight on a model it restarts, evicts or removes
    # finish before they are ended (llama-swap's reload: a 30 s shutdown of its old server).
    reload_drain_timeout: float = Field(30.0, alias="reloadDrainTimeout")
    runtime_dir: str = Field("", alias="runtimeDir")  # state files; "" = $XDG_RUNTIME_DIR/llamaswap


class ServerConfig(_Strict):
    """llamaswap extension: limits of the HTTP server itself (None = the documented default
    in runtime/limits.py)."""

    max_body_bytes: int | None = Field(None, alias="maxBodyBytes")
    max_multipart_bytes: int | None = Field(None, alias="maxMultipartBytes")
    header_timeout: float | None = Field(None, alias="headerTimeout")
    body_timeout: float | None = Field(None, alias="bodyTimeout")
    keepalive_timeout: float | None = Field(None, alias="keepaliveTimeout")
    max_connections: int | None = Field(None, alias="maxConnections")
    allowed_hosts: tuple[str, ...] = Field((), alias="allowedHosts")
    allowed_origins: tuple[str, ...] = Field((), alias="allowedOrigins")


class Config(_Strict):
    health_check_timeout: int = Field(120, alias="healthCheckTimeout")
    log_level: str = Field("info", alias="logLevel")
    log_time_format: str = Field("", alias="logTimeFormat")
    log_to_stdout: str = Field("proxy", alias="logToStdout")
    log_requests: bool = Field(False, alias="logRequests")
    metrics_max_in_memory: int = Field(1000, alias="metricsMaxInMemory")
    capture_buffer: int = Field(5, alias="captureBuffer")
    store: Store | None = None
    ui: dict[str, Any] = Field(default_factory=dict)
    performance: Performance = Field(default_factory=Performance)
    start_port: int = Field(5800, alias="startPort")
    send_loading_state: bool = Field(False, alias="sendLoadingState")
    include_aliases_in_list: bool = Field(False, alias="includeAliasesInList")
    global_ttl: int = Field(0, alias="globalTTL")
    unload_timeout: int = Field(10, alias="unloadTimeout")
    macros: dict[str, Any] = Field(default_factory=dict)  # checked by the macro pass (LS306)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    api_keys: tuple[str, ...] = Field((), alias="apiKeys")
    hooks: Hooks = Field(default_factory=Hooks)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    groups: dict[str, GroupConfig] = Field(default_factory=dict)
    matrix: MatrixConfig | None = None
    peers: _Checked = Field(default_factory=dict)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    profiles: _Checked = Field(default_factory=dict)
    selectors: _Checked = Field(default_factory=dict)
    llamaswap: LlamaswapSettings = Field(default_factory=LlamaswapSettings)
