"""`prunepi serve` settings: one frozen dataclass, validated before Ray starts."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.pruning.config import PrunerConfig
from prunepi.checks import (
    Rule,
    check_fields,
    int_at_least,
    is_int,
    one_of,
    real_above,
    real_at_least,
)
from prunepi.env import check_address


@dataclass(frozen=True)
class ServeConfig:
    """A Ray Serve app holding one eval-mode Policy per replica (services/serve/deployment.py)."""

    # checkpoint folder: prunepi's (config.json, weights, assets) or openpi's as it is
    # (model.safetensors, assets/<asset_id>/norm_stats.json; then preset and tokenizer_path)
    checkpoint: str
    host: str = "127.0.0.1"  # Serve HTTP bind address; loopback unless you mean to expose it
    port: int = 8000  # Serve HTTP port (openpi's serve_policy.py default: 8000)
    api_key: str | None = None  # when set, clients must send `Authorization: Api-Key <key>`
    num_replicas: int = 1  # policy replicas (each loads its own copy of the checkpoint)
    num_cpus_per_replica: float = 1.0  # Ray CPUs reserved per replica (torch threads follow)
    num_gpus_per_replica: float = 0.0  # Ray GPUs per replica; > 0 runs the policy on cuda
    max_batch_size: int = 8  # most observations fused into one infer_batch forward
    batch_wait_timeout_s: float = 0.01  # longest the first request waits for a batch to fill
    # Largest accepted observation (websocket frame or JSON body). HTTP: a larger
    # Content-Length is refused (413) before the body is read, a longer body once it passes
    # this. Websocket: Serve's proxy (uvicorn) closes frames above 16 MiB on their header,
    # with 1009 and no text frame; smaller ones reach the replica whole and get a text frame
    # and 1009 when above this (protocol.PROXY_WS_MAX_BYTES).
    max_message_bytes: int = 8 * 1024**2
    max_connections_per_replica: int = 64  # open websockets + HTTP requests per replica
    prune: bool | None = None  # None: as the checkpoint says; True/False: pruner on/off
    # -- an openpi checkpoint folder, which says none of this itself (policies/loading.py) --
    preset: str | None = None  # model sizes and head counts: pi05 | pi05_libero | tiny
    model_config: str | None = None  # or a JSON of model sizes (Pi05Config / openpi fixture)
    tokenizer_path: str | None = None  # sentencepiece .model: PaliGemma's for openpi's π0.5
    norm_stats: str | None = None  # norm_stats.json (or its folder); None: from assets/
    asset_id: str | None = None  # assets/<asset_id>/ to use when several (openpi: a/b ids)
    state_dim: int | None = None  # raw state width; None: the norm stats' state length
    env_action_dim: int | None = None  # actions returned; None: the norm stats' action length
    # the sampler's fixed noise draw (policies/loading.py LoadOptions); None: the checkpoint's
    noise_seed: int | None = None
    # Pruner config, for either layout (it replaces a prunepi checkpoint's). Left at its
    # defaults: the checkpoint's own pruner (an openpi folder has none).
    pruning: PrunerConfig = field(default_factory=PrunerConfig)
    app_name: str = "prunepi"  # Serve application name (several apps can share one Serve)
    route_prefix: str = "/"  # where the app is mounted; openpi clients connect to "/"
    # Serve's log level for this app's replicas and its per-request access log lines (the
    # demo keeps them off a terminal that prints the results table)
    log_level: str = "INFO"
    access_log: bool = True
    startup_timeout_s: float = 300.0  # start_serve waits this long for /healthz to answer
    # Ray cluster to join (HOST:PORT, "auto", ray://HOST:PORT); None: RAY_ADDRESS if set (as
    # `ray job submit` sets it), else the embedded local Ray; "local": always embedded. On a
    # cluster whose Serve already runs, its http_options (host, port) are kept.
    address: str | None = None

    def validate(self) -> None:
        """Raise ValueError naming the offending field and value."""
        check_fields("serve", self, SERVE_RULES)
        check_address("address", self.address)
        # Last (it reads the weights' header and the tokenizer): either layout, saying what
        # an openpi folder lacks, before any replica tries to load it.
        from policies.loading import LoadOptions, plan_load  # torch: only when validating

        plan_load(self.checkpoint, LoadOptions.of(self), self.prune)

    @property
    def device(self) -> str:
        return "cuda" if self.num_gpus_per_replica > 0 else "cpu"

    @property
    def url(self) -> str:
        """Base HTTP URL of the app (a 0.0.0.0 bind is reached through loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{self.route_prefix.rstrip('/')}"

    @property
    def ws_url(self) -> str:
        """What openpi-client's WebsocketClientPolicy(host=...) takes. Under a route prefix
        the trailing slash matters: Starlette matches the websocket route "/" only then."""
        return "ws" + self.url[len("http") :] + ("/" if self.route_prefix != "/" else "")


SERVE_RULES = {
    "log_level": one_of(("DEBUG", "INFO", "WARNING", "ERROR")),
    "port": Rule(lambda v: is_int(v) and 0 <= v <= 65535, "in [0, 65535]"),
    "api_key": Rule(
        lambda v: v is None or (isinstance(v, str) and bool(v.strip())), "None or non-empty"
    ),
    **dict.fromkeys(
        ("num_replicas", "max_batch_size", "max_message_bytes", "max_connections_per_replica"),
        int_at_least(1),
    ),
    "startup_timeout_s": real_above(0),
    **dict.fromkeys(
        ("num_cpus_per_replica", "num_gpus_per_replica", "batch_wait_timeout_s"), real_at_least(0)
    ),
    "route_prefix": Rule(
        lambda v: isinstance(v, str) and v.startswith("/"), "a path starting with '/'"
    ),
    "prune": Rule(lambda v: v in (None, True, False), "None, True or False"),
}
