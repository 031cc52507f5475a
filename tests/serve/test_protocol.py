"""The wire format without Ray: what decodes, what is refused and with which close code."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy

from services.serve import protocol
from services.serve.config import ServeConfig
from tests.serve.conftest import make_observation, make_tiny_checkpoint

MAX = 1 << 20


def test_roundtrip_matches_openpi_client_packing():
    obs = make_observation(np.random.default_rng(0))
    out = protocol.decode_observation(msgpack_numpy.packb(obs), MAX)
    assert out.keys() == obs.keys()
    for k in obs:
        np.testing.assert_array_equal(out[k], obs[k])
    assert out["observation/image"].dtype == np.uint8


def _ndarray(dtype: str, shape, data: bytes) -> bytes:
    enc = {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}
    return msgpack.packb({"observation/image": enc})


@pytest.mark.parametrize(
    "payload, code, words",
    [
        (b"\xc1garbage", protocol.POLICY_VIOLATION, "not msgpack"),
        (msgpack.packb([1, 2, 3]), protocol.POLICY_VIOLATION, "must be a map"),
        (msgpack.packb({1: 2}), protocol.POLICY_VIOLATION, "map key"),
        (msgpack.packb({b"prompt": 2}), protocol.POLICY_VIOLATION, "keys must be strings"),
        (_ndarray("|O", [1], b"\0" * 8), protocol.POLICY_VIOLATION, "'|O'"),
        (_ndarray("|V4", [1], b"\0" * 4), protocol.POLICY_VIOLATION, "'|V4'"),
        (_ndarray("<c8", [1], b"\0" * 8), protocol.POLICY_VIOLATION, "'<c8'"),
        (_ndarray("i4,f8", [1], b"\0" * 12), protocol.POLICY_VIOLATION, "refused"),
        (_ndarray("nonsense", [1], b"\0"), protocol.POLICY_VIOLATION, "not a numpy dtype"),
        (_ndarray("|u1", [4, 4, 3], b"\0" * 5), protocol.POLICY_VIOLATION, "needs 48 bytes"),
        (_ndarray("|u1", [-1], b""), protocol.POLICY_VIOLATION, "not a valid shape"),
        (_ndarray("|u1", "abc", b""), protocol.POLICY_VIOLATION, "not a valid shape"),
        (b"\x91" * 200_000 + b"\xc0", protocol.POLICY_VIOLATION, "nested too deeply"),
        (b"\x00" * (MAX + 1), protocol.MESSAGE_TOO_BIG, "max_message_bytes"),
    ],
)
def test_refused_messages_name_the_problem(payload, code, words):
    with pytest.raises(protocol.RequestError) as e:
        protocol.decode_observation(payload, MAX)
    assert e.value.code == code
    assert words in str(e.value)


def test_json_observation_types():
    obs = make_observation(np.random.default_rng(1), size=8)
    body = json.dumps({k: v.tolist() if hasattr(v, "tolist") else v for k, v in obs.items()})
    out = protocol.from_json(body.encode(), MAX)
    assert out["observation/image"].dtype == np.uint8
    np.testing.assert_array_equal(out["observation/image"], obs["observation/image"])
    assert out["observation/state"].dtype == np.float32
    assert out["prompt"] == obs["prompt"]
    with pytest.raises(protocol.RequestError, match="observation/image is not a rectangular"):
        protocol.from_json(b'{"observation/image": [[1, 2], [3]]}', MAX)
    with pytest.raises(protocol.RequestError, match="numeric array"):
        protocol.from_json(b'{"observation/state": ["a", "b"]}', MAX)
    with pytest.raises(protocol.RequestError, match="not JSON"):
        protocol.from_json(b"{", MAX)
    with pytest.raises(protocol.RequestError, match="must be a map"):
        protocol.from_json(b"[1]", MAX)


def test_serve_config_validation(tmp_path):
    with pytest.raises(ValueError, match="checkpoint must be a checkpoint folder"):
        ServeConfig(checkpoint=str(tmp_path / "absent")).validate()
    with pytest.raises(ValueError, match="has no model.safetensors"):
        ServeConfig(checkpoint=str(tmp_path)).validate()
    tmp_path = make_tiny_checkpoint(tmp_path / "ckpt")  # a whole prunepi checkpoint
    ServeConfig(checkpoint=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="serve.max_batch_size must be an integer >= 1, got 0"):
        ServeConfig(checkpoint=str(tmp_path), max_batch_size=0).validate()
    with pytest.raises(ValueError, match="serve.route_prefix must be a path starting with '/'"):
        ServeConfig(checkpoint=str(tmp_path), route_prefix="x").validate()
    cfg = ServeConfig(checkpoint=str(tmp_path), port=1234, route_prefix="/k")
    assert cfg.ws_url == "ws://127.0.0.1:1234/k/"
    assert ServeConfig(checkpoint=str(tmp_path), port=1234).ws_url == "ws://127.0.0.1:1234"
