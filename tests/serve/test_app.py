"""The Serve application builder (`serve run services.serve.app:app_builder ...`, config
files) and the HTTP body cap, without a running Ray."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from services.serve import protocol
from services.serve.app import SERVE_OWNED, accepted_args, app_builder, config_from_args

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "services" / "serve" / "serve_config.example.yaml"


@pytest.fixture
def ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint  # ServeConfig.validate reads its config, weights' header, tokenizer


def test_serve_run_strings_become_typed_fields(ckpt, monkeypatch):
    monkeypatch.chdir(ckpt.parent)
    cfg = config_from_args(
        {
            "checkpoint": ckpt.name,  # relative to where `serve run` runs
            "prune": "false",
            "num_replicas": "2",
            "num_cpus_per_replica": "0.5",
            "api_key": "none",
            "max_message_bytes": "1048576",
        }
    )
    assert cfg.checkpoint == str(ckpt.resolve())  # absolute for the replicas
    assert cfg.prune is False and cfg.num_replicas == 2 and cfg.num_cpus_per_replica == 0.5
    assert cfg.api_key is None and cfg.max_message_bytes == 1 << 20


def test_config_file_values_keep_their_yaml_types(ckpt):
    cfg = config_from_args({"checkpoint": str(ckpt), "prune": None, "max_batch_size": 4})
    assert cfg.prune is None and cfg.max_batch_size == 4
    assert config_from_args({"checkpoint": str(ckpt), "prune": True}).prune is True
    pruning = {"enabled": True, "budget": "keep_ratio", "keep_ratio": 0.5}
    cfg = config_from_args({"checkpoint": str(ckpt), "pruning": pruning})
    assert cfg.pruning.keep_ratio == 0.5  # a nested mapping in YAML...
    text = '{"enabled": true, "budget": "keep_ratio", "keep_ratio": 0.5}'
    assert config_from_args({"checkpoint": str(ckpt), "pruning": text}) == cfg  # ...or JSON


@pytest.mark.parametrize(
    "args, words",
    [
        ({"colour": "red"}, ["unknown serve app arg `colour`", "'red'", "accepted:", "prune"]),
        ({"port": "9000"}, ["`port` is set by Serve", "http_options.port"]),
        ({"route_prefix": "/x"}, ["`route_prefix` is set by Serve", "route_prefix"]),
        ({"num_replicas": "two"}, ["`num_replicas` must be an int", "'two'"]),
        ({"num_replicas": "0"}, ["serve.num_replicas must be an integer >= 1, got 0"]),
        ({"prune": "maybe"}, ["`prune` must be a boolean", "'maybe'"]),
        ({"batch_wait_timeout_s": "soon"}, ["`batch_wait_timeout_s` must be a number"]),
        ({"api_key": 7}, ["`api_key` must be a string", "7"]),
        ({"pruning": "{oops"}, ["`pruning` must be a mapping of PrunerConfig fields"]),
        ({"pruning": {"colour": 1}}, ["`pruning` must be a mapping", "keep_ratio", "'colour'"]),
    ],
)
def test_bad_args_name_the_key_and_value(ckpt, args, words):
    with pytest.raises(ValueError) as e:
        config_from_args({"checkpoint": str(ckpt), **args})
    for w in words:
        assert w in str(e.value), str(e.value)


def test_missing_or_bad_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="`checkpoint` is required"):
        config_from_args({"prune": "true"})
    with pytest.raises(ValueError, match="checkpoint must be .*nowhere"):
        config_from_args({"checkpoint": str(tmp_path / "nowhere")})


def test_accepted_args_are_servconfig_fields_serve_does_not_own():
    accepted = accepted_args()
    assert "checkpoint" in accepted and "max_message_bytes" in accepted
    assert not set(accepted) & set(SERVE_OWNED)


def test_ray_serve_calls_the_builder(ckpt):
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    # What `serve run services.serve.app:app_builder checkpoint=...` calls.
    app = call_user_app_builder_with_args_if_necessary(app_builder, {"checkpoint": str(ckpt)})
    assert isinstance(app, Application)


def test_example_config_file_is_a_serve_config(ckpt):
    from ray.serve.schema import ServeDeploySchema

    body = yaml.safe_load(EXAMPLE.read_text())
    schema = ServeDeploySchema.model_validate(body)
    (application,) = schema.applications
    assert application.import_path == "services.serve.app:app_builder"
    assert schema.http_options.host == "127.0.0.1"
    cfg = config_from_args(dict(application.args, checkpoint=str(ckpt)))
    assert cfg.max_message_bytes == 8 * 1024**2


class Chunks:
    """An async body stream that counts how many chunks were pulled."""

    def __init__(self, n: int, size: int):
        self.n, self.size, self.pulled = n, size, 0

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if self.pulled == self.n:
            raise StopAsyncIteration
        self.pulled += 1
        return b"x" * self.size


def _read(chunks: Chunks, content_length: str | None, cap: int) -> bytes:
    return asyncio.run(protocol.read_body(chunks, content_length, cap))


def test_read_body_refuses_a_large_content_length_before_reading():
    chunks = Chunks(10, 100)
    with pytest.raises(protocol.RequestError) as e:
        _read(chunks, "1000", cap=500)
    assert e.value.code == protocol.MESSAGE_TOO_BIG and "Content-Length" in str(e.value)
    assert chunks.pulled == 0


def test_read_body_stops_at_the_chunk_past_the_cap():
    for content_length in (None, "10"):  # chunked transfer, or a body longer than it said
        chunks = Chunks(10, 100)
        with pytest.raises(protocol.RequestError) as e:
            _read(chunks, content_length, cap=250)
        assert e.value.code == protocol.MESSAGE_TOO_BIG and "250" in str(e.value)
        assert chunks.pulled == 3
    assert _read(Chunks(3, 100), "300", cap=300) == b"x" * 300
    with pytest.raises(protocol.RequestError, match="Content-Length must be an integer"):
        _read(Chunks(1, 1), "ten", cap=300)
