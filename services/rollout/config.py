"""`prunepi rollout` settings: one frozen dataclass, validated before Ray starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from policies.pruning.config import PrunerConfig
from prunepi.checks import (
    Rule,
    check_fields,
    int_at_least,
    optional,
    real_at_least,
)
from prunepi.env import check_address

# Warm-up no-ops per suite family live in envs/families.py.
# openpi's LIBERO_DUMMY_ACTION: no motion, gripper open (-1 opens ours too).
NOOP_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)

# Blocks of fixed initial states (first state id; episode k of a task starts from state
# start + k). LIBERO's protocol is 50 episodes per task, episode k from state k (openpi
# examples/libero/main.py), so reports use states 0-49. Choosing settings on the states a
# report then quotes would overfit the report; Tune selects on states 100-149 instead. The
# report block is every state below SELECTION_BLOCK (a report of up to 100 episodes a task),
# the selection block every state from it on; a run reaching into both is refused
# (`check_one_block`). Our suites have 200 states per task (envs.suites.NUM_INIT_STATES);
# real LIBERO has only its 50, the report block.
REPORT_BLOCK = 0
SELECTION_BLOCK = 100
BLOCK_EPISODES = 50


ROLLOUT_RULES = {
    **dict.fromkeys(
        ("episodes_per_task", "num_workers", "replan_steps", "envs_per_worker"), int_at_least(1)
    ),
    "num_warmup_steps": optional(int_at_least(0)),
    "num_cpus_per_worker": real_at_least(0),
    "max_steps": optional(int_at_least(1)),
    "image_size": optional(int_at_least(16)),
    "tasks": Rule(lambda v: len(set(v)) == len(tuple(v)), "task ids without repeats"),
}


def check_init_block(suite: str, start: int, count: int, name: str = "init_state_start") -> None:
    """Raise naming `name` unless states start..start+count-1 exist in every task of `suite`."""
    import envs  # the suite's state count; real LIBERO's without importing LIBERO

    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"{name} must be an int >= 0, got {start!r}")
    n = envs.suite_num_init_states(suite)
    if start + count > n:
        raise ValueError(
            f"{name} + episodes_per_task must be <= {n} (the initial states per task of suite "
            f"{suite!r}), got {name}={start} + episodes_per_task={count} = {start + count}"
        )
    check_one_block(start, count, name, n)


def check_one_block(start: int, count: int, name: str, num_states: int) -> None:
    """Raise naming both ranges when states start..start+count-1 reach into both blocks:
    settings chosen on one block and reported on the other must never share a state. The
    report block is every state below SELECTION_BLOCK, the selection block the rest."""
    end = start + count - 1
    if count > 0 and start < SELECTION_BLOCK <= end:
        raise ValueError(
            f"{name}={start} with episodes_per_task={count} runs initial states {start}-{end}, "
            f"which overlap both the report block (states {REPORT_BLOCK}-{SELECTION_BLOCK - 1})"
            f" and the selection block (states {SELECTION_BLOCK}-{num_states - 1}); keep a run "
            f"inside one of them"
        )


@dataclass(frozen=True)
class RolloutConfig:
    """Closed-loop evaluation of one policy on one suite, episodes spread over Ray actors."""

    policy: str | None = None  # served policy "ws://HOST:PORT[/prefix/]" (openpi-client)
    checkpoint: str | None = None  # or a checkpoint folder, loaded in-process by each worker
    suite: str = "goal"  # ours (spatial | object | goal | long), libero_*, metaworld_mt10
    tasks: tuple[int, ...] = ()  # task ids to run; () = every task of the suite
    episodes_per_task: int = BLOCK_EPISODES  # per task; LIBERO's protocol runs 50
    # episode k of a task starts from fixed initial state init_state_start + k: 0 reports
    # (REPORT_BLOCK), 100 Tune's selection (SELECTION_BLOCK); must fit the suite's states
    # (ours: 200 per task, LIBERO: 50)
    init_state_start: int = REPORT_BLOCK
    out: str = "runs/rollout/RESULTS.json"  # results file (docs/architecture.md §3.7)
    num_workers: int = 2  # Ray actors, each owning its environments and a policy client
    num_cpus_per_worker: float = 1.0  # Ray CPUs per actor (rendering + in-process policy)
    # environments each actor steps in lockstep, with ONE policy query per step for all that
    # need a chunk (in-process: one forward; served: concurrent requests the server fuses);
    # 1 = one episode at a time. Episodes are the same either way (worker.py).
    envs_per_worker: int = 1
    replan_steps: int = 5  # actions executed from each chunk before re-planning (openpi: 5)
    # no-op steps before the policy acts; None = the suite family's (envs/families.py: ours
    # 5, LIBERO 10 as openpi, Meta-World 0)
    num_warmup_steps: int | None = None
    max_steps: int | None = None  # policy steps per episode; None = the suite's limit
    seed: int = 7  # environment seed (openpi LIBERO: 7)
    image_size: int | None = None  # rendered side in px; None = the policy's metadata size
    video_dir: str | None = None  # write one video per episode here (envs.video.write_video)
    prune: bool | None = None  # in-process only: None = checkpoint's setting, True/False force
    # -- in-process openpi checkpoint folder: what it does not say (policies/loading.py) -----
    preset: str | None = None  # model sizes and head counts: pi05 | pi05_libero | tiny
    model_config: str | None = None  # or a JSON of model sizes (Pi05Config / openpi fixture)
    tokenizer_path: str | None = None  # sentencepiece .model: PaliGemma's for openpi's π0.5
    norm_stats: str | None = None  # norm_stats.json (or its folder); None: from assets/
    asset_id: str | None = None  # assets/<asset_id>/ to use when several (openpi: a/b ids)
    state_dim: int | None = None  # raw state width; None: the norm stats' state length
    env_action_dim: int | None = None  # actions returned; None: the norm stats' action length
    # the sampler's fixed noise draw (policies/loading.py LoadOptions); None: the checkpoint's
    noise_seed: int | None = None
    # In-process pruner config, for either layout (it replaces a prunepi checkpoint's). Left
    # at its defaults: the checkpoint's own pruner (an openpi folder has none).
    pruning: PrunerConfig = field(default_factory=PrunerConfig)
    api_key: str | None = None  # sent as `Authorization: Api-Key <key>` to a served policy
    # envs init regions (m): None = anywhere; must match the demos' CollectConfig.init_spread
    init_spread: float | None = None
    # Ray cluster to join (HOST:PORT, "auto", ray://HOST:PORT); None: RAY_ADDRESS if set (as
    # `ray job submit` sets it), else the embedded local Ray; "local": always embedded
    address: str | None = None

    @property
    def warmup_steps(self) -> int:
        """num_warmup_steps, or the suite's default (openpi's 10 for real LIBERO)."""
        if self.num_warmup_steps is not None:
            return self.num_warmup_steps
        import envs

        return envs.suite_warmup_steps(self.suite)  # envs/families.py

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RolloutConfig:
        """Inverse of `dataclasses.asdict` (JSON lists back to the tasks tuple, the nested
        pruner back to a PrunerConfig), as TrainConfig.from_dict is for training."""
        d = dict(d)
        d["tasks"] = tuple(d.get("tasks", ()))
        if isinstance(d.get("pruning"), dict):
            d["pruning"] = PrunerConfig.from_dict(d["pruning"])
        return RolloutConfig(**d)

    def validate(self) -> None:
        """Raise ValueError naming the offending field and value."""
        if (self.policy is None) == (self.checkpoint is None):
            raise ValueError(
                f"give exactly one of policy or checkpoint, got policy={self.policy!r} "
                f"checkpoint={self.checkpoint!r}"
            )
        if self.policy is not None and not self.policy.startswith(("ws://", "wss://")):
            raise ValueError(f"policy must be a ws://HOST:PORT URL, got {self.policy!r}")
        if self.policy is not None and self.prune is not None:
            raise ValueError(
                f"prune applies to an in-process checkpoint; a served policy prunes as its "
                f"ServeConfig.prune says, got prune={self.prune!r} with policy={self.policy!r}"
            )
        check_fields("rollout", self, ROLLOUT_RULES)
        check_address("address", self.address)
        check_init_block(self.suite, self.init_state_start, self.episodes_per_task)
        self._validate_checkpoint()

    def _validate_checkpoint(self) -> None:
        from policies.loading import LoadOptions, plan_load  # torch: only when validating

        options = LoadOptions.of(self)
        if self.policy is not None and options.given():
            raise ValueError(
                f"{', '.join(options.given())} apply to an in-process checkpoint; a served "
                f"policy is loaded as its ServeConfig says, got policy={self.policy!r}"
            )
        if self.checkpoint is not None:  # either layout; says what an openpi folder lacks
            plan_load(self.checkpoint, options, self.prune)
