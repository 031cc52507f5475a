"""The cluster path: `ray start --head` on loopback (free ports, own --temp-dir), then
`ray job submit --working-dir . -- python -m services.train ...` against its dashboard.

Slow (a cluster start, a job upload, a Ray Train run): `pytest -m slow`. Only the cluster
this test started is stopped: by the pids whose command line names its --temp-dir (never
`ray stop`, which would stop other people's Ray too).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from services.train.metrics import read_metrics
from services.train.state import list_checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
    "--object-manager-port",
    "--node-manager-port",
)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _uses(proc: Path, temp_dir: str) -> bool:
    """Whether a process names `temp_dir` in its command line or holds a file under it (Ray's
    agents rename their process title but keep their logs there open)."""
    try:
        if temp_dir in (proc / "cmdline").read_bytes().decode(errors="replace"):
            return True
        return any(temp_dir in os.readlink(fd) for fd in (proc / "fd").iterdir())
    except OSError:
        return False


def cluster_pids(temp_dir: str) -> list[int]:
    """Processes of the cluster started with `temp_dir`."""
    me = os.getpid()
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and int(p.name) != me and _uses(p, temp_dir)
    ]


def stop_cluster(temp_dir: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in cluster_pids(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while cluster_pids(temp_dir) and time.time() < deadline:
            time.sleep(0.2)


@pytest.fixture
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="prt", dir="/tmp")  # short: unix socket paths
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '')}",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1",
        WANDB_MODE="offline",
    )
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--num-cpus=2",
        f"--temp-dir={temp_dir}",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=180)
        yield f"http://127.0.0.1:{ports['--dashboard-port']}", env
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_training(cluster, tiny_lerobot, tmp_path):
    address, env = cluster
    run = tmp_path / "run"
    cmd = [
        str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
        "--", "python", "-m", "services.train",
        "--preset", "tiny", "--data", str(tiny_lerobot), "--out", str(run),
        "--steps", "4", "--workers", "2", "--batch-size", "4", "--save-every", "1",
        "--keep-checkpoints", "2",
        "--image-size", "28", "--cpus-per-worker", "0.5", "--wandb-mode", "disabled",
    ]  # fmt: skip
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    log = out.stdout[-4000:] + out.stderr[-4000:]
    assert out.returncode == 0, log
    assert "succeeded" in log, log
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3, 4]
    assert [s for s, _ in list_checkpoints(run)] == [3, 4]  # keep_checkpoints=2
