"""The real Serve app through the unmodified openpi-client, plus the HTTP routes."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import websockets
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from tests.serve.conftest import make_observation, session_port

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

EXPECTED_METADATA = {
    "action_horizon": 10,
    "action_dim": 7,
    "image_size": 112,
    "total_tokens": 192,
    "pruning": True,
}


def _policy_metadata(client: WebsocketClientPolicy) -> dict:
    """The server's metadata less the replica id (which differs per replica)."""
    meta = dict(client.get_server_metadata())
    assert isinstance(meta.pop("replica"), str)
    assert meta.pop("torch_threads") == 1  # the replica's set count (num_cpus_per_replica 0.5)
    return meta


def _close(client: WebsocketClientPolicy) -> None:
    client._ws.close()  # openpi-client has no close(); its connection is `_ws`


def _post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _json_obs(obs: dict) -> bytes:
    return json.dumps(
        {k: v.tolist() if hasattr(v, "tolist") else v for k, v in obs.items()}
    ).encode()


def test_openpi_client_end_to_end(served, reference_policy):
    client = WebsocketClientPolicy(served.ws_url)
    try:
        assert _policy_metadata(client) == EXPECTED_METADATA
        rng = np.random.default_rng(0)
        obs = [make_observation(rng) for _ in range(2)]
        first, second = client.infer(obs[0]), client.infer(obs[1])
    finally:
        _close(client)
    for answer, o in zip((first, second), obs):
        assert set(answer) == {"actions", "policy_timing", "server_timing", "pruning"}
        assert answer["actions"].shape == (10, 7) and answer["actions"].dtype == np.float32
        # keep_ratio 0.25 of the 2 valid cameras' 128 patches (the third camera is masked)
        assert answer["pruning"] == {"kept_tokens": 32, "total_tokens": 192}
        assert answer["policy_timing"]["infer_ms"] > 0
        np.testing.assert_allclose(
            answer["actions"], reference_policy.infer(o)["actions"], rtol=1e-4, atol=1e-5
        )
    # openpi's server reports the previous round trip from the second answer on.
    assert set(first["server_timing"]) == {"infer_ms"}
    assert set(second["server_timing"]) == {"infer_ms", "prev_total_ms"}


def test_healthz_and_json_route(served, reference_policy):
    with urllib.request.urlopen(f"{served.url}/healthz", timeout=30) as r:
        assert r.status == 200 and r.read().strip() == b"OK"
    obs = make_observation(np.random.default_rng(1))
    status, body = _post(f"{served.url}/infer", _json_obs(obs))
    assert status == 200, body
    np.testing.assert_allclose(
        np.asarray(body["actions"], dtype=np.float32),
        reference_policy.infer(obs)["actions"],
        rtol=1e-4,
        atol=1e-5,
    )
    assert body["pruning"] == {"kept_tokens": 32, "total_tokens": 192}
    bad = dict(obs, **{"observation/state": [1.0, float("nan")] + [0.0] * 6})
    status, body = _post(f"{served.url}/infer", _json_obs(bad))
    assert status == 400 and "observation/state" in body["error"] and "NaN" in body["error"]
    status, body = _post(f"{served.url}/infer", b"\x00" * (2 << 20))
    assert status == 413 and "max_message_bytes" in body["error"]
    status, body = _post(f"{served.url}/infer", b'{"prompt": "x"}')
    assert status == 400 and "missing key" in body["error"]


def test_eight_concurrent_clients_batched_equal_one_at_a_time(served, reference_policy):
    n_clients, n_requests = 8, 3
    rng = np.random.default_rng(2)
    obs = [[make_observation(rng) for _ in range(n_requests)] for _ in range(n_clients)]
    answers: dict[tuple[int, int], dict] = {}
    errors: list[BaseException] = []
    clients = [WebsocketClientPolicy(served.ws_url) for _ in range(n_clients)]
    start = threading.Barrier(n_clients)

    def run(i: int) -> None:
        try:
            start.wait()
            for j in range(n_requests):
                answers[i, j] = clients[i].infer(obs[i][j])
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    for c in clients:
        _close(c)
    assert not errors, errors
    assert len(answers) == n_clients * n_requests
    for (i, j), answer in answers.items():
        np.testing.assert_allclose(
            answer["actions"], reference_policy.infer(obs[i][j])["actions"], rtol=1e-4, atol=1e-5
        )
    # Requests answered by one forward share its policy timing: fewer forwards than requests.
    forwards = {a["policy_timing"]["infer_ms"] for a in answers.values()}
    assert len(forwards) < len(answers), "no two concurrent requests were batched"


@pytest.fixture(scope="module")
def keyed(local_ray, tiny_checkpoint):
    """A second app on the same Serve: API key required, pruner forced off."""
    from services.serve import ServeConfig, start_serve

    cfg = ServeConfig(
        checkpoint=str(tiny_checkpoint),
        port=session_port(),
        api_key="s3cret",
        prune=False,
        num_cpus_per_replica=0.25,
        app_name="keyed",
        route_prefix="/keyed",
    )
    handle = start_serve(cfg)
    yield handle
    handle.stop()


def test_api_key_refused_then_accepted(keyed):
    for key in (None, "wrong"):
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:
            WebsocketClientPolicy(keyed.ws_url, api_key=key)
        assert e.value.response.status_code == 401
    obs = make_observation(np.random.default_rng(3))
    status, body = _post(f"{keyed.url}/infer", _json_obs(obs))
    assert status == 401 and "Api-Key" in body["error"]
    client = WebsocketClientPolicy(keyed.ws_url, api_key="s3cret")
    try:
        assert _policy_metadata(client) == dict(EXPECTED_METADATA, pruning=False)
        answer = client.infer(obs)
    finally:
        _close(client)
    # prune=False: the same checkpoint with its pruner off keeps every valid patch.
    assert answer["pruning"] == {"kept_tokens": 128, "total_tokens": 192}
    status, body = _post(f"{keyed.url}/infer", _json_obs(obs), {"Authorization": "Api-Key s3cret"})
    assert status == 200
    np.testing.assert_allclose(np.asarray(body["actions"]), answer["actions"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_replicas_share_the_clients(local_ray, tiny_checkpoint, reference_policy):
    from services.serve import ServeConfig, start_serve

    handle = start_serve(
        ServeConfig(
            checkpoint=str(tiny_checkpoint),
            port=session_port(),
            num_replicas=2,
            num_cpus_per_replica=0.25,
            app_name="two",
            route_prefix="/two",
        )
    )
    try:
        rng = np.random.default_rng(4)
        obs = [make_observation(rng) for _ in range(4)]
        clients = [WebsocketClientPolicy(handle.ws_url) for _ in obs]
        answers = [None] * len(obs)

        def run(i: int) -> None:
            answers[i] = clients[i].infer(obs[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(obs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        replicas = {c.get_server_metadata()["replica"] for c in clients}
        for c in clients:
            _close(c)
        assert len(replicas) == 2, replicas  # both replicas served (4 sticky connections)
        for o, a in zip(obs, answers):
            expected = reference_policy.infer(o)["actions"]
            np.testing.assert_allclose(a["actions"], expected, rtol=1e-4, atol=1e-5)
    finally:
        handle.stop()
