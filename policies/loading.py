"""One loader for both checkpoint layouts: prunepi's, and openpi's PyTorch folders as they are.

prunepi (policies/policy.py): config.json {"model", "policy"}, model.safetensors,
pruner.safetensors for a learnable scorer, assets/<asset_id>/norm_stats.json and
assets/<asset_id>/tokenizer.model. Everything is in the folder.

openpi: `examples/convert_jax_model_to_pytorch.py` writes model.safetensors
(`safetensors.torch.save_model`), copies the JAX checkpoint's assets/ (so
assets/<asset_id>/norm_stats.json, asset ids like `physical-intelligence/libero`, i.e.
nested folders) and a config.json of its own ({"action_dim", "action_horizon",
"paligemma_variant", "action_expert_variant", "precision"}); `scripts/train_pytorch.py`
writes model.safetensors, optimizer.pt, metadata.pt and assets/<asset_id>/norm_stats.json.
Neither holds a tokenizer (openpi's PaligemmaTokenizer downloads
gs://big_vision/paligemma_tokenizer.model at run time, src/openpi/models/tokenizer.py) nor
head counts. So an openpi folder needs `LoadOptions`: a preset or model config (checked
against the safetensors shapes), a tokenizer, and norm stats when assets/ is ambiguous.

`plan_load` resolves and checks everything without loading a tensor (service configs call
it in validate(), before Ray starts); `load_policy` then builds the Policy.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from policies.normalize import NormStats, load_norm_stats
from policies.pi05.checkpoint import (
    EMBED_KEY,
    EXPERT_LM_HEAD_KEY,
    LM_HEAD_KEY,
    MODEL_FILE,
    PRUNER_FILE,
    CheckpointError,
    check_config,
    load_openpi_weights,
    missing_pruner_message,
    read_shapes,
)
from policies.pi05.config import PRESETS, Pi05Config, from_openpi_fixture_config, get_preset
from policies.pi05.model import Pi05Model
from policies.policy import CONFIG_FILE, Policy, PolicyConfig, asset_id_problem
from policies.pruning.config import PrunerConfig
from policies.pruning.pruner import TokenPruner
from policies.tokenizer import PromptTokenizer

NORM_STATS_FILE = "norm_stats.json"
PALIGEMMA_TOKENIZER = (
    "PaliGemma's sentencepiece model paligemma_tokenizer.model, the one openpi uses "
    "(src/openpi/models/tokenizer.py fetches gs://big_vision/paligemma_tokenizer.model)"
)
BOTH_LAYOUTS = ("pruning", "noise_seed")  # LoadOptions a prunepi checkpoint also takes
MAX_KEY_ERRORS = 8  # shape mismatches listed by name before "... and N more"


@dataclass(frozen=True)
class LoadOptions:
    """What an openpi folder does not say about itself (a prunepi folder says it all)."""

    preset: str | None = None  # policies.pi05.config preset with the checkpoint's sizes
    model_config: str | None = None  # or a JSON of sizes: Pi05Config's, or an openpi fixture's
    tokenizer_path: str | None = None  # sentencepiece .model (PaliGemma's for a released π0.5)
    norm_stats: str | None = None  # norm_stats.json (or its folder) instead of the assets'
    asset_id: str | None = None  # assets/<asset_id>/ to read, when several hold norm stats
    state_dim: int | None = None  # raw state width; None: len(norm_stats["state"])
    env_action_dim: int | None = None  # actions returned; None: len(norm_stats["actions"])
    # the pruner (both layouts); None: a prunepi checkpoint's own, none for an openpi folder
    pruning: PrunerConfig | None = None
    # the sampler's one fixed noise draw (both layouts; PolicyConfig.noise_seed); None: the
    # checkpoint's own (0 for an openpi folder). Choosing it is choosing a setting: do it on
    # the selection block of initial states (services/rollout/config.py).
    noise_seed: int | None = None

    def given(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    @staticmethod
    def of(cfg: object) -> LoadOptions:
        """The options of a service config with these fields (ServeConfig, RolloutConfig),
        whose `pruning` left at PrunerConfig's defaults means "none given"."""
        vals = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(LoadOptions)}
        if vals["pruning"] == PrunerConfig():
            vals["pruning"] = None
        return LoadOptions(**vals)


@dataclass(frozen=True)
class LoadPlan:
    """Everything `load_policy` needs, resolved and checked."""

    layout: str  # "prunepi" | "openpi"
    folder: Path  # the checkpoint folder
    model: Pi05Config  # sizes, horizon and pruner of the model to build
    policy: PolicyConfig  # state / action widths, asset id
    tokenizer: Path  # sentencepiece model for prompts
    norm_stats: Path  # openpi-format norm_stats.json


def plan_load(
    folder: str | Path, options: LoadOptions | None = None, prune: bool | None = None
) -> LoadPlan:
    """Resolve a checkpoint folder of either layout; CheckpointError says what is missing."""
    options = options or LoadOptions()
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"checkpoint must be a checkpoint folder (prunepi's or openpi's, holding "
            f"{MODEL_FILE}), got {str(folder)!r}: no such folder"
        )
    if not (folder / MODEL_FILE).is_file():
        raise CheckpointError(
            f"checkpoint folder {folder} has no {MODEL_FILE} (prunepi and openpi checkpoints "
            f"both keep their weights there)"
        )
    raw = _folder_config(folder)
    if raw is not None and "model" in raw:
        plan = _plan_prunepi(folder, raw, options)
    else:
        plan = _plan_openpi(folder, raw, options)
    if prune is True and not plan.model.pruning.enabled:
        raise CheckpointError(
            f"prune=True but the model of {folder} has no pruner (pruning.enabled=False): "
            f"give a pruner config, e.g. pruning.enabled=True pruning.scorer=lightvla"
        )
    return plan


def load_policy(
    folder: str | Path,
    options: LoadOptions | None = None,
    *,
    device: str | torch.device = "cpu",
    prune: bool | None = None,
) -> Policy:
    """An eval-mode Policy from a prunepi or openpi checkpoint folder (see `plan_load`)."""
    plan = plan_load(folder, options, prune)
    model = Pi05Model(plan.model)
    load_openpi_weights(model, plan.folder / MODEL_FILE, pruner="required")
    tokenizer = PromptTokenizer(plan.tokenizer, plan.model.max_token_len)
    policy = Policy(model.eval(), plan.policy, tokenizer, load_norm_stats(plan.norm_stats), device)
    policy.prune = prune
    return policy


# ---------------------------------------------------------------------------------------
# prunepi layout


def _folder_config(folder: Path) -> dict | None:
    path = folder / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    return raw if isinstance(raw, dict) else None


def _plan_prunepi(folder: Path, raw: dict, options: LoadOptions) -> LoadPlan:
    extra = [name for name in options.given() if name not in BOTH_LAYOUTS]
    if extra:
        raise CheckpointError(
            f"{', '.join(extra)} apply to openpi checkpoint folders; {folder} is a prunepi "
            f"checkpoint whose {CONFIG_FILE} and assets/ give them: drop {', '.join(extra)}"
        )
    cfg_path = folder / CONFIG_FILE
    try:
        model_cfg = Pi05Config.from_dict(raw["model"])
        policy_cfg = PolicyConfig(**raw.get("policy", {}))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path} is not a prunepi checkpoint config: {e}") from e
    policy_cfg = _with_noise_seed(policy_cfg, options)
    if options.pruning is not None:
        model_cfg = dataclasses.replace(model_cfg, pruning=options.pruning)
    model_cfg.validate()
    assets = folder / "assets" / policy_cfg.asset_id
    stats, tok = assets / NORM_STATS_FILE, assets / policy_cfg.tokenizer_file
    missing = [str(p.relative_to(folder)) for p in (stats, tok) if not p.is_file()]
    if missing:
        raise CheckpointError(f"prunepi checkpoint {folder} is missing {', '.join(missing)}")
    _check_pruner_file(folder, model_cfg)
    return LoadPlan("prunepi", folder, model_cfg, policy_cfg, tok, stats)


def _with_noise_seed(policy_cfg: PolicyConfig, options: LoadOptions) -> PolicyConfig:
    """The checkpoint's policy config, its noise_seed replaced when the options give one."""
    if options.noise_seed is not None:
        policy_cfg = dataclasses.replace(policy_cfg, noise_seed=options.noise_seed)
    try:
        policy_cfg.validate()
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    return policy_cfg


def checkpoint_tokenizer(folder: Path) -> Path | None:
    """A prunepi checkpoint's own tokenizer (assets/<asset_id>/<tokenizer_file>); None for
    an openpi folder or a prunepi one without it."""
    raw = _folder_config(Path(folder))
    if raw is None or "model" not in raw:
        return None
    try:
        policy_cfg = PolicyConfig(**raw.get("policy", {}))
    except TypeError as e:
        raise CheckpointError(f"{folder / CONFIG_FILE} is not a prunepi config: {e}") from e
    if asset_id_problem(policy_cfg.asset_id) is not None:
        return None
    path = Path(folder) / "assets" / policy_cfg.asset_id / policy_cfg.tokenizer_file
    return path if path.is_file() else None


def _check_pruner_file(folder: Path, cfg: Pi05Config) -> None:
    """A learnable scorer without its pruner.safetensors would prune at random."""
    if not cfg.pruning.enabled or (folder / PRUNER_FILE).is_file():
        return
    with torch.device("meta"):  # shapes only, no memory
        learnable = any(True for _ in TokenPruner(cfg.pruning, cfg.paligemma.width).parameters())
    if learnable:
        raise CheckpointError(missing_pruner_message(cfg, folder / PRUNER_FILE))


# ---------------------------------------------------------------------------------------
# openpi layout


def _plan_openpi(folder: Path, raw: dict | None, options: LoadOptions) -> LoadPlan:
    model_cfg = _openpi_model_config(folder, raw, options)
    stats_path, asset_id = _norm_stats_path(folder, options)
    state_dim, action_dim = _dims(load_norm_stats(stats_path), stats_path, options, model_cfg)
    tokenizer = _tokenizer_path(folder, options)
    check_tokenizer_fits(tokenizer, folder / MODEL_FILE)
    _check_pruner_file(folder, model_cfg)
    policy_cfg = PolicyConfig(
        asset_id=asset_id or PolicyConfig.asset_id,
        state_dim=state_dim,
        env_action_dim=action_dim,
    )
    policy_cfg = _with_noise_seed(policy_cfg, options)
    return LoadPlan("openpi", folder, model_cfg, policy_cfg, tokenizer, stats_path)


def read_model_config(path: Path) -> Pi05Config:
    """A model-sizes JSON: Pi05Config.to_dict(), a prunepi checkpoint's config.json, or an
    openpi fixture's config.json (tests/fixtures/openpi_pi05_tiny_a/README.md)."""
    try:
        raw = json.loads(Path(path).read_text())
        if "model" in raw:
            raw = raw["model"]
        if "hidden_size" in raw.get("vision", {}):  # the openpi fixture format
            return from_openpi_fixture_config(raw)
        return Pi05Config.from_dict(raw)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(
            f"model_config must be a JSON file of model sizes (Pi05Config.to_dict(), a prunepi "
            f"config.json or an openpi fixture config.json), got {str(path)!r}: {e}"
        ) from e


def _openpi_model_config(folder: Path, raw: dict | None, options: LoadOptions) -> Pi05Config:
    if (options.preset is None) == (options.model_config is None):
        raise CheckpointError(
            f"{folder} is an openpi checkpoint folder (no prunepi {CONFIG_FILE}): its sizes and "
            f"head counts must come from exactly one of preset (one of {sorted(PRESETS)}, e.g. "
            f"pi05_libero) or model_config (a JSON file), got preset={options.preset!r} "
            f"model_config={options.model_config!r}"
        )
    if options.preset is not None:
        base, source = get_preset(options.preset), f"preset {options.preset!r}"
    else:
        base, source = read_model_config(Path(options.model_config)), options.model_config
    # openpi's converter records the horizon; the weights' shapes do not fix it.
    horizon = (raw or {}).get("action_horizon")
    if isinstance(horizon, int) and horizon != base.action_horizon:
        raise CheckpointError(
            f"{folder / CONFIG_FILE} (openpi's) says action_horizon {horizon} but {source} has "
            f"{base.action_horizon}: use the checkpoint's preset (pi05_libero: 10, pi05: 50)"
        )
    cfg = dataclasses.replace(base, pruning=options.pruning or PrunerConfig())
    cfg.validate()
    check_shapes(folder / MODEL_FILE, cfg, source)
    return cfg


def check_shapes(path: Path, cfg: Pi05Config, source: str) -> None:
    """Every size of `cfg` and every key's shape against the file's header (no tensor load).

    The sizes are taken as given, not read off the file (`config_from_checkpoint`): head
    counts are not in the shapes, so a mismatch means the wrong preset, not a fixable one.
    """
    shapes = read_shapes(path)
    problems = []
    try:
        check_config(cfg, shapes)
    except CheckpointError as e:  # its lines below its own heading
        problems += [line.strip() for line in str(e).splitlines()[1:]] or [str(e)]
    with torch.device("meta"):  # state-dict shapes even of the full-size model, no memory
        own = {
            k: tuple(v.shape)
            for k, v in Pi05Model(cfg).state_dict().items()
            if not k.startswith("pruner.")
        }
    problems += _key_problems(own, shapes, source)
    if problems:
        raise CheckpointError(f"{path} does not match {source}:\n  " + "\n  ".join(problems))


def _key_problems(
    own: dict[str, tuple[int, ...]], shapes: dict[str, tuple[int, ...]], source: str
) -> list[str]:
    """load_openpi_weights' strict key check, on shapes alone (file keys mapped as it maps
    them: the tied embedding is stored as lm_head, the expert's lm_head is ignored)."""
    own = dict(own)
    out = []
    for fkey, shape in shapes.items():
        if fkey == EXPERT_LM_HEAD_KEY:
            continue
        mkey = EMBED_KEY if fkey == LM_HEAD_KEY else fkey
        want = own.pop(mkey, None)
        if want is None:
            out.append(f"unexpected key {fkey!r} with shape {list(shape)}")
        elif want != shape:
            out.append(
                f"key {fkey!r}: checkpoint shape {list(shape)} != {source} shape {list(want)}"
            )
    for mkey, want in own.items():
        fkey = LM_HEAD_KEY if mkey == EMBED_KEY else mkey
        out.append(f"missing key {fkey!r} ({source} shape {list(want)})")
    if len(out) > MAX_KEY_ERRORS:
        out = out[:MAX_KEY_ERRORS] + [f"... and {len(out) - MAX_KEY_ERRORS} more keys"]
    return out


def norm_stats_file(value: str | Path, name: str = "norm_stats") -> Path:
    """A norm_stats.json given as the file or the folder holding it (`name`: the field)."""
    path = Path(value)
    path = path / NORM_STATS_FILE if path.is_dir() else path
    if not path.is_file():
        raise CheckpointError(
            f"{name} must be a {NORM_STATS_FILE} file or a folder holding one, got {str(value)!r}"
        )
    return path


def _norm_stats_path(folder: Path, options: LoadOptions) -> tuple[Path, str | None]:
    """-> norm_stats.json, asset id. openpi loads assets/<data_config.asset_id>/ of the
    checkpoint (policies/policy_config.py `create_trained_policy`); we take the only one
    there, or the one `asset_id` names, or the file `norm_stats` names."""
    if options.norm_stats is not None:
        if options.asset_id is not None:
            raise CheckpointError(
                f"give norm_stats or asset_id, not both: got norm_stats="
                f"{options.norm_stats!r} asset_id={options.asset_id!r}"
            )
        return norm_stats_file(options.norm_stats), None
    assets = folder / "assets"
    found = (
        sorted(p.parent.relative_to(assets).as_posix() for p in assets.rglob(NORM_STATS_FILE))
        if assets.is_dir()
        else []
    )
    if options.asset_id is not None:
        if (problem := asset_id_problem(options.asset_id)) is not None:
            raise CheckpointError(f"asset_id must be {problem}, got {options.asset_id!r}")
        path = assets / options.asset_id / NORM_STATS_FILE
        if not path.is_file():
            raise CheckpointError(
                f"asset_id {options.asset_id!r}: {path} does not exist; {folder} has norm "
                f"stats for asset ids {found}"
            )
        return path, options.asset_id
    if len(found) == 1:
        return assets / found[0] / NORM_STATS_FILE, found[0]
    if not found:
        raise CheckpointError(
            f"openpi checkpoint {folder} has no assets/<asset_id>/{NORM_STATS_FILE} (openpi "
            f"training writes its data's norm stats there): pass norm_stats=PATH"
        )
    raise CheckpointError(
        f"{folder} has norm stats for several asset ids {found}: pass asset_id (one of "
        f"them) or norm_stats=PATH"
    )


def _dims(
    stats: dict[str, NormStats], path: Path, options: LoadOptions, cfg: Pi05Config
) -> tuple[int, int]:
    """-> state_dim, env_action_dim: given, else the lengths of the norm stats."""
    missing = [k for k in ("state", "actions") if k not in stats]
    if missing:
        raise CheckpointError(f"{path} has no norm stats for {missing}, got {sorted(stats)}")
    out = []
    for name, key in (("state_dim", "state"), ("env_action_dim", "actions")):
        n = len(stats[key].q01)
        value = getattr(options, name)
        value = n if value is None else value
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= n:
            raise CheckpointError(
                f"{name} must be in [1, {n}] (the length of norm_stats[{key!r}] in {path}), "
                f"got {value!r}"
            )
        out.append(value)
    if out[1] > cfg.action_dim:
        raise CheckpointError(
            f"env_action_dim must be <= the model's action_dim {cfg.action_dim}, got {out[1]} "
            f"(from {path} unless given)"
        )
    return out[0], out[1]


def _tokenizer_path(folder: Path, options: LoadOptions) -> Path:
    if options.tokenizer_path is None:
        raise CheckpointError(
            f"{folder} is an openpi checkpoint folder: it carries no tokenizer (openpi loads "
            f"one at run time); pass tokenizer_path: {PALIGEMMA_TOKENIZER}"
        )
    path = Path(options.tokenizer_path)
    if not path.is_file():
        raise CheckpointError(
            f"tokenizer_path must be a sentencepiece .model file, got {options.tokenizer_path!r}"
        )
    return path


def embedding_rows(weights: Path) -> int:
    """Rows of the token embedding, from the safetensors header (openpi stores it as
    paligemma's lm_head, checkpoint.py)."""
    shapes = read_shapes(weights)
    if LM_HEAD_KEY not in shapes:
        raise CheckpointError(f"{weights} has no token embedding (key {LM_HEAD_KEY!r})")
    return shapes[LM_HEAD_KEY][0]


def check_tokenizer_fits(tokenizer: Path, weights: Path) -> None:
    """More pieces than embedding rows: prompt ids would index past the embedding."""
    pieces = PromptTokenizer(tokenizer, 1).vocab_size
    rows = embedding_rows(weights)
    if pieces > rows:
        raise CheckpointError(
            f"tokenizer {tokenizer} has {pieces} pieces, more than the {rows} rows of the "
            f"token embedding in {weights}: pass the tokenizer the checkpoint was trained "
            f"with ({PALIGEMMA_TOKENIZER} for openpi's π0.5)"
        )
