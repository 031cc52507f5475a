"""Start the policy server on the Ray this process is connected to, else on the cluster
`ServeConfig.address` / RAY_ADDRESS names, else on an embedded local Ray.

`start_serve(cfg)` returns once `GET /healthz` answers (tests, demo, rollout);
`run_serve(cfg)` blocks until Ctrl-C (the `prunepi serve` entry point).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from prunepi import env
from services.serve.config import ServeConfig

log = logging.getLogger(__name__)


@dataclass
class ServeHandle:
    """A running app; `stop()` undoes exactly what `start_serve` started."""

    cfg: ServeConfig
    # this call started the embedded Ray or connected to a cluster: stop() shuts the embedded
    # Ray down, or only disconnects from the cluster, which lives on (ray.shutdown's docstring)
    started_ray: bool
    started_serve: bool  # this call started Serve: stop() shuts Serve down; else deletes the app

    @property
    def url(self) -> str:
        return self.cfg.url

    @property
    def ws_url(self) -> str:
        return self.cfg.ws_url

    def stop(self) -> None:
        import ray
        from ray import serve

        if self.started_serve:
            serve.shutdown()
        else:
            serve.delete(self.cfg.app_name)
        if self.started_ray:
            ray.shutdown()


def _serve_running() -> bool:
    from ray import serve

    status = serve.status()
    return bool(status.proxies or status.applications)


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = e
        time.sleep(0.25)
    raise TimeoutError(
        f"policy server at {url}/healthz did not answer within {timeout_s} s ({last}); if Serve "
        "was already running in this Ray with other http_options, they were kept"
    )


def start_serve(cfg: ServeConfig, num_cpus: int = 2) -> ServeHandle:
    """Deploy `cfg` as a Serve app (starting Ray and Serve when needed); non-blocking."""
    cfg.validate()
    env.apply_defaults()
    # Replicas load the checkpoint in Ray's worker folders (a cluster's), not in this one.
    cfg = dataclasses.replace(cfg, checkpoint=env.absolute_path(cfg.checkpoint))
    from ray import serve

    from services.serve.deployment import build_app

    started_ray = env.connect_ray(cfg.address, num_cpus=num_cpus)
    started_serve = not _serve_running()
    logging_config = {"log_level": cfg.log_level, "enable_access_log": cfg.access_log}
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config=logging_config)
    try:
        serve.run(
            build_app(cfg),
            name=cfg.app_name,
            route_prefix=cfg.route_prefix,
            blocking=False,
            logging_config=logging_config,
        )
        wait_healthy(cfg.url, cfg.startup_timeout_s)
    except BaseException:
        ServeHandle(cfg, started_ray, started_serve).stop()
        raise
    log.info("policy server %s ready at %s", cfg.app_name, cfg.ws_url)
    return ServeHandle(cfg, started_ray, started_serve)


def run_serve(cfg: ServeConfig) -> None:
    """`prunepi serve`: serve until interrupted, then shut down what was started."""
    handle = start_serve(cfg)
    print(f"serving {cfg.checkpoint} at {cfg.ws_url} (GET {cfg.url}/healthz, POST {cfg.url}/infer)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
