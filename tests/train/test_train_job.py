"""The cluster path: `ray start --head` on loopback (free ports, own --temp-dir), then
`ray job submit --working-dir . -- python -m services.train ...` against its dashboard.

Slow (a cluster start, a job upload, a Ray Train run): `pytest -m slow`. Only the cluster
this test started is stopped: by the pids whose command line names its --temp-dir (never
`ray stop`, which would stop other people's Ray too).
"""

from __future__ import annotations

import subprocess

import pytest

from services.train.metrics import read_metrics
from services.train.state import list_checkpoints
from tests.ray_cluster import BIN, REPO, loopback_cluster

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture
def cluster():
    with loopback_cluster(
        "prt",
        ("--dashboard-host=127.0.0.1",),
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1",
        WANDB_MODE="offline",
    ) as (ports, env, _):
        yield f"http://127.0.0.1:{ports['--dashboard-port']}", env


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
