"""Requests/s and latency against concurrent clients: our batched Ray Serve deployment vs a
one-at-a-time websocket server built like openpi's `websocket_policy_server.py` (its event
loop blocks inside `policy.infer`, openpi issue #717). Same Policy, same checkpoint, same
machine, same CPU budget (one torch thread each), same unmodified openpi-client.

    .venv/bin/python benchmarks/serve_throughput.py [--checkpoint CKPT] [--seconds 8]

Without --checkpoint a random tiny π0.5 (pruner on, keep 25%) is built in a temp dir.
Writes benchmarks/results/serve_throughput.json and prints a table. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing as mp
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from prunepi import env
from prunepi.machine import machine_info

env.apply_defaults()

RESULTS = Path(__file__).parent / "results" / "serve_throughput.json"
TASKS = ["pick up the red block", "open the drawer", "put the bowl on the plate"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_checkpoint(folder: Path) -> Path:
    import torch

    from policies.normalize import NormStats
    from policies.pi05.config import get_preset
    from policies.pi05.model import Pi05Model
    from policies.policy import PolicyConfig, save_checkpoint
    from policies.pruning.config import PrunerConfig
    from policies.tokenizer import train_sentencepiece

    torch.manual_seed(0)
    pruning = PrunerConfig(enabled=True, budget="keep_ratio", keep_ratio=0.25)
    model = Pi05Model(dataclasses.replace(get_preset("tiny"), pruning=pruning)).eval()
    tok = train_sentencepiece(TASKS, folder / "spm.model", vocab_size=512)
    rng = np.random.default_rng(0)
    stats = {
        "state": NormStats.from_data(rng.normal(size=(256, 8))),
        "actions": NormStats.from_data(rng.uniform(-1, 1, size=(256, 7))),
    }
    return save_checkpoint(folder / "tiny", model, PolicyConfig(), tok, stats)


def observation(rng: np.random.Generator, size: int) -> dict:
    return {
        "observation/image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8).astype(np.float32),
        "prompt": TASKS[int(rng.integers(len(TASKS)))],
    }


# ---- the baseline: openpi's server loop, minimal -------------------------------------------


def sequential_server(checkpoint: str, port: int, ready) -> None:
    """openpi's WebsocketPolicyServer._handler without the extras: policy.infer runs on the
    event loop, so one request is served at a time whatever the number of clients."""
    import torch
    import websockets.asyncio.server as ws_server
    from openpi_client import msgpack_numpy

    from policies.policy import Policy

    torch.set_num_threads(1)
    policy = Policy.from_checkpoint(checkpoint)
    packer = msgpack_numpy.Packer()

    async def handler(ws) -> None:
        await ws.send(packer.pack(policy.metadata))
        prev_total = None
        while True:
            try:
                start = time.monotonic()
                obs = msgpack_numpy.unpackb(await ws.recv())
                t = time.monotonic()
                action = policy.infer(obs)  # blocks the loop, as openpi's does
                action["server_timing"] = {"infer_ms": (time.monotonic() - t) * 1000}
                if prev_total is not None:
                    action["server_timing"]["prev_total_ms"] = prev_total * 1000
                await ws.send(packer.pack(action))
                prev_total = time.monotonic() - start
            except Exception:
                return

    async def main() -> None:
        async with ws_server.serve(
            handler, "127.0.0.1", port, compression=None, max_size=None
        ) as server:
            ready.set()
            await server.serve_forever()

    asyncio.run(main())


# ---- load ----------------------------------------------------------------------------------


def measure(url: str, clients: int, seconds: float, size: int) -> dict:
    """`clients` openpi-clients in threads, each asking back-to-back for `seconds`."""
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    conns = [WebsocketClientPolicy(url) for _ in range(clients)]
    obs = [observation(np.random.default_rng(i), size) for i in range(clients)]
    for c, o in zip(conns, obs):  # warm-up, not timed
        c.infer(o)
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def run(i: int) -> None:
        barrier.wait()
        mine = []
        while time.monotonic() < deadline[0]:
            t = time.monotonic()
            conns[i].infer(obs[i])
            mine.append(time.monotonic() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start = time.monotonic()
    deadline[0] = start + seconds
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    for c in conns:
        c._ws.close()
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: tiny)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per point")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.01)
    parser.add_argument("--out", default=str(RESULTS))
    return parser.parse_args()


def measure_batched(checkpoint: str, args: argparse.Namespace, size: int) -> list[dict]:
    """Ray Serve with @serve.batch: one row per client count."""
    from services.serve import ServeConfig, start_serve

    serve_cfg = ServeConfig(
        checkpoint=checkpoint,
        port=free_port(),
        num_cpus_per_replica=1.0,  # Ray gives the replica OMP_NUM_THREADS=1
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_timeout_s,
        app_name="bench",
    )
    rows = []
    handle = start_serve(serve_cfg)
    try:
        for n in args.clients:
            rows.append(
                {"server": "ray_serve_batched", **measure(handle.ws_url, n, args.seconds, size)}
            )
            print(rows[-1], flush=True)
    finally:
        handle.stop()
    return rows


def measure_sequential(checkpoint: str, args: argparse.Namespace, size: int) -> list[dict]:
    """The openpi-style one-at-a-time websocket server, in its own process."""
    port = free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=sequential_server, args=(checkpoint, port, ready), daemon=True)
    proc.start()
    rows = []
    try:
        if not ready.wait(300):
            raise TimeoutError("the sequential server did not start within 300 s")
        for n in args.clients:
            url = f"ws://127.0.0.1:{port}"
            rows.append(
                {"server": "openpi_style_sequential", **measure(url, n, args.seconds, size)}
            )
            print(rows[-1], flush=True)
    finally:
        proc.terminate()
        proc.join(10)
    return rows


def side_by_side(rows: list[dict], clients: list[int]) -> list[str]:
    table = [
        f"{'clients':>7} | {'batched req/s':>13} {'p50 ms':>8} {'p99 ms':>8} | "
        f"{'sequential req/s':>16} {'p50 ms':>8} {'p99 ms':>8} | {'speed-up':>8}"
    ]
    for n in clients:
        b = next(r for r in rows if r["server"] == "ray_serve_batched" and r["clients"] == n)
        s = next(r for r in rows if r["server"] == "openpi_style_sequential" and r["clients"] == n)
        table.append(
            f"{n:>7} | {b['requests_per_s']:>13.2f} {b['p50_ms']:>8.1f} {b['p99_ms']:>8.1f} | "
            f"{s['requests_per_s']:>16.2f} {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} | "
            f"{b['requests_per_s'] / s['requests_per_s']:>7.2f}x"
        )
    return table


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve_bench_"))
    checkpoint = args.checkpoint or str(build_checkpoint(tmp))
    config = json.loads((Path(checkpoint) / "config.json").read_text())
    size = int(config["model"]["vision"]["image_size"])
    rows = measure_batched(checkpoint, args, size) + measure_sequential(checkpoint, args, size)
    table = side_by_side(rows, args.clients)
    print("\n".join(table))
    out = {
        "description": "openpi-client requests/s and latency vs concurrent clients; "
        "Ray Serve with @serve.batch vs an openpi-style one-at-a-time websocket server",
        "checkpoint": checkpoint if args.checkpoint else "random tiny pi0.5, keep_ratio 0.25",
        "machine": {
            **machine_info(),
            "load_avg_1m_at_end": os.getloadavg()[0],
            "note": "CPUs shared with other jobs; both servers run one torch thread",
        },
        "config": {
            "seconds_per_point": args.seconds,
            "max_batch_size": args.max_batch_size,
            "batch_wait_timeout_s": args.batch_wait_timeout_s,
        },
        "rows": rows,
        "table": table,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
