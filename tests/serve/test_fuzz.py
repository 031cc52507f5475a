"""Seeded fuzz of malformed messages against the real Serve app (loopback only, bounded).

Every malformed message must get exactly one text frame naming the problem and a clean close
with a client-fault code (never 1011), while a well-behaved client keeps getting correct
answers, and the replica is the same one afterwards (no crash, no restart).
"""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.serve.conftest import make_observation

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]

NUM_MESSAGES = 220
CLIENT_FAULT_CODES = {1003, 1008, 1009}
KEYS = ("observation/image", "observation/wrist_image", "observation/state", "prompt")


def _nd(dtype: str, shape, data: bytes) -> dict:
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


def _with(obs: dict, key: str, value) -> bytes:
    """`obs` with one field replaced by an already-msgpack-able value."""
    return msgpack_numpy.packb(dict(obs, **{key: value}))


def malformed(rng: np.random.Generator, obs: dict, max_bytes: int) -> tuple[str, bytes | str]:
    """One malformed message of a randomly chosen kind."""
    valid = msgpack_numpy.packb(obs)
    key = KEYS[int(rng.integers(len(KEYS)))]
    img_key = KEYS[int(rng.integers(2))]
    kinds = {
        "random_bytes": lambda: rng.bytes(int(rng.integers(0, 3000))),
        "truncated": lambda: valid[: int(rng.integers(1, len(valid)))],
        "not_a_map": lambda: msgpack.packb(
            [1, "a", None, 2.5, b"x", [1, 2], True][int(rng.integers(7))]
        ),
        "missing_key": lambda: msgpack_numpy.packb({k: v for k, v in obs.items() if k != key}),
        "image_dtype": lambda: _with(
            obs,
            img_key,
            [
                np.zeros((112, 112, 3), np.int32),
                np.full((112, 112, 3), np.nan),
                np.zeros((112, 112, 3), bool),
                np.zeros((112, 112, 3), np.uint16),
            ][int(rng.integers(4))],
        ),
        "image_shape": lambda: _with(
            obs,
            img_key,
            [
                np.zeros((112, 112), np.uint8),
                np.zeros((112, 112, 4), np.uint8),
                np.zeros((0, 0, 3), np.uint8),
                np.zeros((1, 112, 112, 3), np.uint8),
                np.zeros((2049, 1, 3), np.uint8),
            ][int(rng.integers(5))],
        ),
        "state": lambda: _with(
            obs,
            "observation/state",
            [
                np.array([np.nan] * 8, np.float32),
                np.array([np.inf] + [0.0] * 7),
                np.zeros(7, np.float32),
                np.zeros((8, 1), np.float32),
                np.zeros(8, bool),
                "eight",
                [0.0] * 8,
            ][int(rng.integers(7))],
        ),
        "prompt": lambda: _with(
            obs,
            "prompt",
            [7, b"\xff\xfe\xfd", "x" * 5000, ["a"], None, 1.5][int(rng.integers(6))],
        ),
        "refused_dtype": lambda: _with(
            obs,
            key,
            _nd(
                ["|O", "|V8", "<c8", "<c16", "i4,f8", "bogus"][int(rng.integers(6))], [1], b"\0" * 8
            ),
        ),
        "bad_ndarray": lambda: _with(
            obs,
            key,
            [
                _nd("|u1", [112, 112, 3], b"\0" * 10),
                _nd("|u1", [-3], b""),
                _nd("<f4", [2**40], b""),
                _nd("|u1", "shape", b""),
                _nd("|u1", [1], "not bytes"),
            ][int(rng.integers(5))],
        ),
        "complex_scalar": lambda: _with(
            obs, key, {b"__npgeneric__": True, b"data": 1.0, b"dtype": "<c16"}
        ),
        "ext_type": lambda: _with(obs, key, msgpack.ExtType(5, rng.bytes(8))),
        "deep_nesting": lambda: b"\x91" * 200_000 + b"\xc0",
        "oversize": lambda: msgpack_numpy.packb(
            dict(obs, **{img_key: np.zeros((700, 700, 3), np.uint8)})
        ),
        "text_frame": lambda: "{'observation/image': ...}",
    }
    name = list(kinds)[int(rng.integers(len(kinds)))]
    payload = kinds[name]()
    if name == "oversize":
        assert len(payload) > max_bytes
    return name, payload


def send_raw(url: str, payload: bytes | str) -> tuple[list, int | None]:
    """Connect, read the metadata frame, send one frame; -> (frames after it, close code)."""
    frames = []
    with connect(url, compression=None, max_size=None, open_timeout=60) as ws:
        msgpack_numpy.unpackb(ws.recv(timeout=60))
        ws.send(payload)
        try:
            while True:
                frames.append(ws.recv(timeout=120))
        except ConnectionClosed as e:
            return frames, (e.rcvd.code if e.rcvd else None)
    return frames, None


def _replicas() -> set[str]:
    import ray

    return {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "PolicyDeployment" in a["name"]
    }


def test_fuzz_malformed_messages(served, reference_policy):
    rng = np.random.default_rng(1234)
    obs = make_observation(rng)
    expected = reference_policy.infer(obs)["actions"]
    replicas_before = _replicas()

    # A well-behaved openpi client keeps asking during the whole fuzz.
    stop, good, bad = threading.Event(), [], []

    def steady_client() -> None:
        client = WebsocketClientPolicy(served.ws_url)
        try:
            while not stop.is_set():
                good.append(client.infer(obs)["actions"])
        except BaseException as e:  # surfaced below
            bad.append(e)
        finally:
            client._ws.close()

    steady = threading.Thread(target=steady_client)
    steady.start()
    outcomes = []
    t0 = time.monotonic()
    try:
        for _ in range(NUM_MESSAGES):
            kind, payload = malformed(rng, obs, served.cfg.max_message_bytes)
            frames, code = send_raw(served.ws_url, payload)
            outcomes.append((kind, frames, code))
            assert time.monotonic() - t0 < 300, "fuzz took too long"
    finally:
        stop.set()
        steady.join(timeout=120)

    kinds = {k for k, _, _ in outcomes}
    assert len(outcomes) >= 200 and len(kinds) >= 12, kinds
    for kind, frames, code in outcomes:
        assert len(frames) == 1 and isinstance(frames[0], str), (kind, frames)
        assert frames[0].strip() and "Traceback" not in frames[0], (kind, frames[0])
        assert code in CLIENT_FAULT_CODES, (kind, code, frames[0])
    codes = {k: c for k, _, c in outcomes}
    assert codes.get("text_frame", 1003) == 1003 and codes.get("oversize", 1009) == 1009

    assert not bad, bad
    assert good, "the steady client got no answer during the fuzz"
    for actions in good:
        np.testing.assert_allclose(actions, expected, rtol=1e-4, atol=1e-5)
    # Still answering correctly afterwards, from the same replica.
    client = WebsocketClientPolicy(served.ws_url)
    try:
        np.testing.assert_allclose(client.infer(obs)["actions"], expected, rtol=1e-4, atol=1e-5)
    finally:
        client._ws.close()
    assert _replicas() == replicas_before
