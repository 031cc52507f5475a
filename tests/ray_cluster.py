"""A loopback `ray start --head` for the cluster tests: free ports, its own --temp-dir, and a
stop that ends only the processes of that cluster (never `ray stop`, which would stop every
Ray of the user)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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


@contextmanager
def loopback_cluster(
    prefix: str, head_flags: tuple[str, ...], **env_vars: str
) -> Iterator[tuple[dict[str, int], dict[str, str], Path]]:
    """-> (ports by flag, the environment to run Ray commands in, the temp dir)."""
    temp_dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: unix socket paths
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '')}",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        **env_vars,
    )
    cmd = [
        str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--num-cpus=2",
        f"--temp-dir={temp_dir}", *head_flags,
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]  # fmt: skip
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=180)
        yield ports, env, Path(temp_dir)
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
