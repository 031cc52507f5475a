"""`prunepi serve --checkpoint <openpi folder>`: a released-π0.5-style folder (no prunepi
config.json) served pruned zero-shot by the parameter-free scorer, answering the unmodified
openpi-client. Shares the session's Ray and Serve (tests/serve/conftest.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from policies.loading import LoadOptions, load_policy
from policies.pi05.checkpoint import CheckpointError
from policies.pruning.config import PrunerConfig
from services.serve.config import ServeConfig
from tests.openpi_folder import (
    fixture_model_config,
    libero_observation,
    make_openpi_folder,
    make_tokenizer,
)
from tests.serve.conftest import session_port

pytestmark = pytest.mark.ray

KEEP = PrunerConfig(enabled=True, scorer="lightvla", budget="keep_tokens", keep_tokens=16)


@pytest.fixture(scope="module")
def openpi_cfg(tmp_path_factory) -> ServeConfig:
    root = tmp_path_factory.mktemp("openpi_serve")
    return ServeConfig(
        checkpoint=str(make_openpi_folder(root / "ckpt")),
        model_config=str(fixture_model_config()),
        tokenizer_path=str(make_tokenizer(root / "tok.model")),
        pruning=KEEP,
        port=session_port(),
        num_cpus_per_replica=0.25,
        app_name="openpi",
        route_prefix="/openpi",
    )


def test_serve_config_says_what_an_openpi_folder_lacks(openpi_cfg):
    openpi_cfg.validate()
    with pytest.raises(CheckpointError, match="carries no tokenizer.*paligemma_tokenizer"):
        dataclasses.replace(openpi_cfg, tokenizer_path=None).validate()
    with pytest.raises(CheckpointError, match="vision.width = 1152 but the checkpoint has 32"):
        dataclasses.replace(openpi_cfg, model_config=None, preset="pi05_libero").validate()
    lowrank = dataclasses.replace(KEEP, scorer="lowrank")
    with pytest.raises(CheckpointError, match="'lowrank' has learnable weights"):
        dataclasses.replace(openpi_cfg, pruning=lowrank).validate()
    with pytest.raises(CheckpointError, match="prune=True but the model .* has no pruner"):
        dataclasses.replace(openpi_cfg, pruning=PrunerConfig(), prune=True).validate()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_openpi_client_gets_pruned_actions_from_an_openpi_folder(local_ray, openpi_cfg):
    from services.serve import start_serve

    handle = start_serve(openpi_cfg)
    try:
        client = WebsocketClientPolicy(handle.ws_url)
        try:
            meta = client.get_server_metadata()
            obs = libero_observation(np.random.default_rng(5))
            answer = client.infer(obs)
        finally:
            client._ws.close()  # openpi-client has no close()
    finally:
        handle.stop()
    assert isinstance(meta.pop("replica"), str)  # which replica answers this connection
    assert meta.pop("torch_threads") == 1  # set from num_cpus_per_replica=0.25, not Ray's env
    assert meta == {
        "action_horizon": 10,
        "action_dim": 7,
        "image_size": 224,
        "total_tokens": 768,
        "pruning": True,
    }
    assert answer["actions"].shape == (10, 7) and answer["actions"].dtype == np.float32
    assert answer["pruning"] == {"kept_tokens": 16, "total_tokens": 768}
    local = load_policy(openpi_cfg.checkpoint, LoadOptions.of(openpi_cfg))
    np.testing.assert_allclose(answer["actions"], local.infer(obs)["actions"], rtol=1e-4, atol=1e-5)
