"""prunepi.env.connect_ray: which Ray every entry point joins, decided without starting one."""

from __future__ import annotations

import pytest

from prunepi import env

pytestmark = pytest.mark.ray

HOOK = {"worker_process_setup_hook": "prunepi.env.quiet_ray_logs"}
LOCAL_ONLY = ("num_cpus", "object_store_memory", "include_dashboard", "_node_ip_address")


def test_cluster_address_prefers_the_field_then_ray_address():
    assert env.cluster_address("10.0.0.1:6379", {"RAY_ADDRESS": "auto"}) == "10.0.0.1:6379"
    assert env.cluster_address(None, {"RAY_ADDRESS": "127.0.0.1:6380"}) == "127.0.0.1:6380"
    assert env.cluster_address(None, {"RAY_ADDRESS": ""}) is None
    assert env.cluster_address(None, {}) is None
    # "local" always means the embedded Ray, even where RAY_ADDRESS names a cluster
    assert env.cluster_address("local", {"RAY_ADDRESS": "127.0.0.1:6380"}) is None
    assert env.cluster_address(None, {"RAY_ADDRESS": "local"}) is None


def test_init_kwargs_join_without_local_options():
    joined = env.ray_init_kwargs("127.0.0.1:6379", num_cpus=4)
    assert joined["address"] == "127.0.0.1:6379"
    assert joined["runtime_env"] == HOOK
    # Ray refuses these when connecting to an existing cluster
    assert not set(LOCAL_ONLY) & set(joined)
    local = env.ray_init_kwargs(None, num_cpus=4)
    assert local["address"] == "local"  # immune to RAY_ADDRESS
    assert local["num_cpus"] == 4 and local["_node_ip_address"] == "127.0.0.1"
    assert local["include_dashboard"] is False
    assert local["runtime_env"] == HOOK


class FakeRay:
    def __init__(self, initialized: bool):
        self.initialized = initialized
        self.calls: list[dict] = []

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs) -> None:
        self.calls.append(kwargs)
        self.initialized = True


@pytest.fixture
def fake_ray(monkeypatch):
    import ray

    fake = FakeRay(initialized=False)
    monkeypatch.setattr(ray, "is_initialized", fake.is_initialized)
    monkeypatch.setattr(ray, "init", fake.init)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return fake


def test_connect_ray_reuses_joins_or_starts(fake_ray, monkeypatch):
    fake_ray.initialized = True
    assert env.connect_ray("127.0.0.1:1", num_cpus=2) is False  # already connected: not ours
    assert fake_ray.calls == []
    fake_ray.initialized = False
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")  # what `ray job submit` sets
    assert env.connect_ray(None, num_cpus=2) is True
    assert fake_ray.calls[-1]["address"] == "127.0.0.1:6390"
    assert "num_cpus" not in fake_ray.calls[-1]
    fake_ray.initialized = False
    assert env.connect_ray("127.0.0.1:7000", num_cpus=2) is True  # --address beats the env
    assert fake_ray.calls[-1]["address"] == "127.0.0.1:7000"
    fake_ray.initialized = False
    assert env.init_local_ray(num_cpus=3) is True  # tests' embedded Ray ignores RAY_ADDRESS
    assert fake_ray.calls[-1]["address"] == "local" and fake_ray.calls[-1]["num_cpus"] == 3


def test_connect_ray_refuses_a_blank_address(fake_ray):
    with pytest.raises(ValueError, match="address must be None.*got ''"):
        env.connect_ray("", num_cpus=2)
    assert fake_ray.calls == []


def _configs(tmp_path):
    from services.collect import CollectConfig
    from services.demo import DemoConfig
    from services.reference import ReferenceConfig
    from services.rollout import RolloutConfig
    from services.serve import ServeConfig
    from services.train.config import TrainConfig
    from tests.serve.conftest import make_tiny_checkpoint
    from tune.config import TuneConfig

    ckpt = make_tiny_checkpoint(tmp_path / "tiny")  # serve and rollout validate read it
    return {
        "train.address": lambda a: TrainConfig(data=str(tmp_path), address=a).resolved().validate(),
        "tune.address": lambda a: TuneConfig(
            train=TrainConfig(data=str(tmp_path)), address=a
        ).validate(),
        "serve": lambda a: ServeConfig(checkpoint=str(ckpt), address=a).validate(),
        "rollout": lambda a: RolloutConfig(checkpoint=str(ckpt), address=a).validate(),
        "collect": lambda a: CollectConfig(address=a, out=tmp_path / "d"),
        "demo": lambda a: DemoConfig(address=a).validate(),
        "reference": lambda a: ReferenceConfig(address=a).validate(),
    }


def test_every_entry_point_has_an_address_field(tmp_path):
    for name, check in _configs(tmp_path).items():
        check(None)
        check("127.0.0.1:6379")
        field = name if "." in name else "address"
        with pytest.raises(ValueError, match=f"{field} must be None.*got ' x'"):
            check(" x")
