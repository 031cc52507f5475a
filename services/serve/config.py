"""`prunepi serve` settings: one frozen dataclass, validated before Ray starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServeConfig:
    """A Ray Serve app holding one eval-mode Policy per replica (services/serve/deployment.py)."""

    checkpoint: str  # checkpoint folder (policies/policy.py layout: config.json, weights, assets)
    host: str = "127.0.0.1"  # Serve HTTP bind address; loopback unless you mean to expose it
    port: int = 8000  # Serve HTTP port (openpi's serve_policy.py default: 8000)
    api_key: str | None = None  # when set, clients must send `Authorization: Api-Key <key>`
    num_replicas: int = 1  # policy replicas (each loads its own copy of the checkpoint)
    num_cpus_per_replica: float = 1.0  # Ray CPUs reserved per replica (torch threads follow)
    num_gpus_per_replica: float = 0.0  # Ray GPUs per replica; > 0 runs the policy on cuda
    max_batch_size: int = 8  # most observations fused into one infer_batch forward
    batch_wait_timeout_s: float = 0.01  # longest the first request waits for a batch to fill
    # Largest accepted observation (websocket frame or JSON body); Serve's proxy (uvicorn)
    # closes websocket frames above 16 MiB itself, with 1009 and no text frame.
    max_message_bytes: int = 8 * 1024**2
    max_connections_per_replica: int = 64  # open websockets + HTTP requests per replica
    prune: bool | None = None  # None: as the checkpoint says; True/False: pruner on/off
    app_name: str = "prunepi"  # Serve application name (several apps can share one Serve)
    route_prefix: str = "/"  # where the app is mounted; openpi clients connect to "/"
    # Serve's log level for this app's replicas and its per-request access log lines (the
    # demo keeps them off a terminal that prints the results table)
    log_level: str = "INFO"
    access_log: bool = True
    startup_timeout_s: float = 300.0  # start_serve waits this long for /healthz to answer

    def validate(self) -> None:
        """Raise ValueError naming the offending field and value."""
        if not (Path(self.checkpoint) / "config.json").is_file():
            raise ValueError(f"checkpoint must be a checkpoint folder, got {self.checkpoint!r}")
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(
                f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError(f"api_key must be None or non-empty, got {self.api_key!r}")
        positive = (
            "num_replicas",
            "max_batch_size",
            "max_message_bytes",
            "max_connections_per_replica",
            "startup_timeout_s",
        )
        for f in positive:
            if getattr(self, f) <= 0:
                raise ValueError(f"{f} must be positive, got {getattr(self, f)}")
        for f in ("num_cpus_per_replica", "num_gpus_per_replica", "batch_wait_timeout_s"):
            if getattr(self, f) < 0:
                raise ValueError(f"{f} must be >= 0, got {getattr(self, f)}")
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {self.route_prefix!r}")
        if self.prune not in (None, True, False):
            raise ValueError(f"prune must be None, True or False, got {self.prune!r}")

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
