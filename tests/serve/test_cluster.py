"""Every entry point on an existing cluster: a loopback `ray start --head` (free ports, its
own --temp-dir), joined by `prunepi rollout|serve|collect` (via --address or RAY_ADDRESS) and
by Ray Serve's own `serve run` (an import path with key=value args, and a config file).

Slow (a cluster start and seven CLI processes): `pytest -m slow`. A process ran on the
cluster when its pid left a driver log in the cluster's session; the cluster still answers
after each one; only this cluster is stopped (tests/ray_cluster.py's stop_cluster,
never `ray stop`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from tests.ray_cluster import BIN, REPO, free_ports, loopback_cluster
from tests.serve.conftest import make_observation

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(900)]

CHECK = """
import json, sys, ray
from ray import serve
ray.init(address=sys.argv[1], log_to_driver=False)
apps = sorted(serve.status().applications)
print(json.dumps({"cpus": ray.cluster_resources().get("CPU"), "apps": apps}))
"""


@pytest.fixture(scope="module")
def cluster():
    with loopback_cluster("prc", ("--include-dashboard=false",), MUJOCO_GL="egl") as (
        ports,
        env,
        temp_dir,
    ):
        yield f"127.0.0.1:{ports['--port']}", env, temp_dir


def _ran_on(temp_dir: Path, pid: int) -> bool:
    """Whether process `pid` connected to this cluster as a driver (Ray names each driver's
    core-worker log in the session's logs/ folder after its pid)."""
    logs = temp_dir / "session_latest" / "logs"
    return any(logs.glob(f"python-core-driver-*_{pid}.log"))


def _cluster_state(address: str, env: dict) -> dict:
    out = subprocess.run(
        [str(BIN / "python"), "-c", CHECK, address],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run(cmd: list[str], env: dict, cwd: Path) -> tuple[int, str]:
    """Run a CLI to completion: (its pid, its output)."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-6000:]
    return proc.pid, out


def _start(cmd: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    """A long-running CLI in its own process group (stopped with _stop)."""
    with open(log, "w") as f:
        return subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C to the process group (what `serve run` and `prunepi serve` clean up on)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-6000:]
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url}/healthz never answered:\n{log.read_text()[-6000:]}")


def _kept_tokens(port: int) -> int:
    client = WebsocketClientPolicy(f"ws://127.0.0.1:{port}")  # the unmodified openpi-client
    try:
        answer = client.infer(make_observation(np.random.default_rng(0)))
    finally:
        client._ws.close()
    assert answer["actions"].shape == (10, 7)
    return answer["pruning"]["kept_tokens"]


def test_rollout_and_collect_join_the_cluster(cluster, tiny_checkpoint, tmp_path):
    address, env, temp_dir = cluster
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    # Relative paths from another folder than the cluster's: the driver makes them absolute.
    pid, out = _run(
        [str(BIN / "prunepi"), "rollout", "--checkpoint", "ckpt", "--suite", "goal",
         "--tasks", "0", "--episodes-per-task", "1", "--max-steps", "5", "--num-workers", "1",
         "--out", "r.json", "--address", address],
        env, tmp_path,
    )  # fmt: skip
    assert _ran_on(temp_dir, pid), out[-3000:]
    assert json.loads((tmp_path / "r.json").read_text())["episodes"] == 1
    pid, out = _run(
        [str(BIN / "prunepi"), "collect", "--suite", "goal", "--episodes-per-task", "1",
         "--image-size", "32", "--num-workers", "2", "--out", "demos", "--no-progress"],
        dict(env, RAY_ADDRESS=address),  # as `ray job submit` would set it
        tmp_path,
    )  # fmt: skip
    assert _ran_on(temp_dir, pid), out[-3000:]
    info = json.loads((tmp_path / "demos" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 4  # the goal suite's 4 tasks
    assert _cluster_state(address, env)["cpus"] == 2.0  # the cluster lives on


def test_prunepi_serve_on_the_cluster(cluster, tiny_checkpoint, tmp_path):
    address, env, temp_dir = cluster
    (port,) = free_ports(1)
    log = tmp_path / "serve.log"
    proc = _start(
        [str(BIN / "prunepi"), "serve", "--checkpoint", str(tiny_checkpoint), "--port",
         str(port), "--num-cpus-per-replica", "0.5", "--address", address],
        env, tmp_path, log,
    )  # fmt: skip
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        assert _ran_on(temp_dir, proc.pid)
        assert _cluster_state(address, env)["apps"] == ["prunepi"]
        assert _kept_tokens(port) == 32  # the checkpoint's pruner: keep 25% of 128 patches
    finally:
        _stop(proc)
    assert proc.returncode == 0, log.read_text()[-6000:]
    # It stopped the Serve it started and left the cluster running.
    assert _cluster_state(address, env) == {"cpus": 2.0, "apps": []}


def test_serve_run_config_file(cluster, tiny_checkpoint, tmp_path):
    address, env, _ = cluster
    (port,) = free_ports(1)
    config = yaml.safe_load((REPO / "services/serve/serve_config.example.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    (application,) = config["applications"]
    application["args"].update(
        checkpoint=str(tiny_checkpoint), prune=False, num_cpus_per_replica=0.5
    )
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "serve_run.log"
    proc = _start([str(BIN / "serve"), "run", "--address", address, str(path)], env, REPO, log)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        assert _kept_tokens(port) == 128  # prune=false from the file's args: every patch
    finally:
        _stop(proc)
    assert _cluster_state(address, env) == {"cpus": 2.0, "apps": []}


def test_serve_run_import_path_with_args(cluster, tiny_checkpoint, tmp_path):
    address, env, _ = cluster
    (port,) = free_ports(1)
    # `serve run IMPORT_PATH` keeps a running Serve's http_options: start one on loopback.
    subprocess.run(
        [str(BIN / "serve"), "start", "--address", address, "--http-host", "127.0.0.1",
         "--http-port", str(port), "--proxy-location", "HeadOnly"],
        env=env, cwd=REPO, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    log = tmp_path / "serve_run.log"
    app = "services.serve.app:app_builder"
    cmd = [str(BIN / "serve"), "run", "--address", address, app]
    proc = _start(
        [*cmd, f"checkpoint={tiny_checkpoint}", "prune=true", "num_cpus_per_replica=0.5"],
        env, REPO, log,
    )  # fmt: skip
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        assert _kept_tokens(port) == 32
    finally:
        _stop(proc)
    assert _cluster_state(address, env) == {"cpus": 2.0, "apps": []}
    bad = subprocess.run(
        [*cmd, f"checkpoint={tiny_checkpoint}", "colour=red"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "unknown serve app arg `colour` (value 'red'); accepted: checkpoint" in bad.stderr
