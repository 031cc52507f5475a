"""The rollout Ray actor: owns its environments (one per task) and one policy connection."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.rollout.config import RolloutConfig
from services.rollout.episode import EpisodeResult, run_episode


def make_policy(cfg: RolloutConfig):
    """openpi-client to a served policy, or the checkpoint's Policy in this process."""
    if cfg.policy is not None:
        from openpi_client.websocket_client_policy import WebsocketClientPolicy

        # host may be a full ws:// URL (openpi-client then appends nothing when port=None).
        return WebsocketClientPolicy(cfg.policy, None, api_key=cfg.api_key)
    from policies.loading import LoadOptions, load_policy

    # a prunepi or an openpi checkpoint folder (with the options it lacks)
    return load_policy(cfg.checkpoint, LoadOptions.of(cfg), device="cpu", prune=cfg.prune)


def policy_metadata(policy) -> dict:
    if hasattr(policy, "get_server_metadata"):
        return policy.get_server_metadata()
    return policy.metadata


class RolloutWorker:
    """Wrapped with `ray.remote` by the driver (driver.py), so it also runs without Ray."""

    def __init__(self, cfg: RolloutConfig):
        import envs

        self.cfg = cfg
        self.policy = make_policy(cfg)
        meta = policy_metadata(self.policy)
        self.image_size = cfg.image_size or int(meta.get("image_size", 224))
        self.max_steps = cfg.max_steps or envs.suite_max_steps(cfg.suite)
        self._envs: dict[int, object] = {}

    def _env(self, task_id: int):
        if task_id not in self._envs:
            import envs

            env = envs.make(
                self.cfg.suite,
                task_id,
                image_size=self.image_size,
                seed=self.cfg.seed,
                init_spread=self.cfg.init_spread,
            )
            self._envs[task_id] = env
        # openpi counts warm-up outside the policy's step budget: bypass the TimeLimit wrapper.
        return self._envs[task_id].unwrapped

    def run(self, task_id: int, episode: int) -> EpisodeResult:
        record = self.cfg.video_dir is not None
        result = run_episode(
            self._env(task_id),
            self.policy,
            task_id=task_id,
            episode=episode,
            max_steps=self.max_steps,
            replan_steps=self.cfg.replan_steps,
            num_warmup_steps=self.cfg.warmup_steps,
            record=record,
        )
        if record:
            from envs.video import write_video

            tag = "success" if result.success else "failure"
            name = f"{self.cfg.suite}_task{task_id}_ep{episode:03d}_{tag}.mp4"
            write_video(result.frames, Path(self.cfg.video_dir) / name)
        return dataclasses.replace(result, frames=[])  # frames stay in the actor

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        if hasattr(self.policy, "_ws"):  # openpi-client keeps its connection private
            self.policy._ws.close()
