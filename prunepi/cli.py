"""`prunepi` command line: one subcommand per entry point, each a frozen config (tyro).

    prunepi collect --suite spatial --episodes-per-task 20 --out data/demos
    prunepi train   --preset tiny --data data/demos --out runs/train --workers 2
    prunepi serve   --checkpoint runs/train/checkpoints/200
    prunepi rollout --checkpoint runs/train/checkpoints/200 --suite spatial --out r.json
    prunepi curve   --checkpoint runs/train/checkpoints/200 --suite goal --out-dir runs/curve
    prunepi tune    --data data/demos --trials 8 --out runs/tune
    prunepi demo

`prunepi train --config-json FILE` starts from a saved TrainConfig (e.g. the
`best_train_config.json` that `prunepi tune` exports); other flags override it.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Union

import tyro

from prunepi import env

env.apply_defaults()

# name -> (module, config class, run function, one-line description)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "collect": (
        "services.collect",
        "CollectConfig",
        "run_collect",
        "scripted-expert demos in the LeRobot layout, on Ray actors",
    ),
    "train": (
        "services.train",
        "TrainConfig",
        "run_train",
        "Ray Train DDP fine-tuning of π0.5 with the pruner",
    ),
    "serve": (
        "services.serve",
        "ServeConfig",
        "run_serve",
        "Ray Serve: an eval-mode pruned policy over openpi's websocket protocol",
    ),
    "rollout": (
        "services.rollout",
        "RolloutConfig",
        "run_rollout",
        "closed-loop rollouts on Ray actors: success and kept tokens",
    ),
    "curve": (
        "services.curve",
        "CurveConfig",
        "run_curve",
        "kept tokens against success: rollouts of training-free and trained selectors",
    ),
    "tune": (
        "tune.driver",
        "TuneConfig",
        "run_tune",
        "Ray Tune over noise schedule, keep budget and scorer",
    ),
    "reference": (
        "services.reference",
        "ReferenceConfig",
        "run_reference",
        "rebuild the committed reference policy: demos, training, export to models/",
    ),
    "demo": (
        "services.demo",
        "DemoConfig",
        "run_demo",
        "the whole loop on an embedded local Ray: collect, train, serve, roll out",
    ),
}


# Top-level packages whose loggers the CLI shows at INFO.
OUR_PACKAGES = ("prunepi", "policies", "envs", "services", "tune")


def _load(name: str) -> tuple[type, Any]:
    module, cls, fn, _ = COMMANDS[name]
    mod = importlib.import_module(module)
    return getattr(mod, cls), getattr(mod, fn)


def _defaults_from_json(name: str, cls: type, argv: list[str]) -> tuple[Any, list[str]]:
    """`--config-json FILE`: a saved config as the defaults (train only)."""
    if "--config-json" not in argv:
        return None, argv
    i = argv.index("--config-json")
    if i + 1 >= len(argv):
        raise SystemExit("--config-json needs a file")
    path = Path(argv[i + 1])
    body = json.loads(path.read_text())
    body = body.get(name, body)
    return cls.from_dict(body), argv[:i] + argv[i + 2 :]


def parse(name: str, argv: list[str], prog: str | None = None) -> Any:
    """`argv` (flags only) -> the frozen config of command `name`. The one parser of every
    entry point: `prunepi train ...` and `python -m services.train ...` read flags alike."""
    cls, _ = _load(name)
    default, rest = _defaults_from_json(name, cls, argv)
    return tyro.cli(
        cls,
        args=rest,
        default=default,
        prog=prog or f"prunepi {name}",
        description=COMMANDS[name][3],
    )


def configure_logging() -> None:
    """Our loggers (per-episode rollout lines, serve readiness) at INFO on stderr; everything
    else, Ray's own loggers included, keeps its level and handlers."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for package in OUR_PACKAGES:
        logger = logging.getLogger(package)
        logger.setLevel(logging.INFO)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.propagate = False  # a root handler set by a library would print it twice


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        # Import only the chosen command (Ray, MuJoCo and torch imports are slow).
        name = argv[0]
        cfg = parse(name, argv[1:])
        configure_logging()
        _load(name)[1](cfg)
        return
    # No or unknown command: full help over every subcommand.
    union = Union[  # noqa: UP007
        tuple(
            Annotated[_load(n)[0], tyro.conf.subcommand(n, description=d[3])]
            for n, d in COMMANDS.items()
        )
    ]
    tyro.cli(union, args=argv, prog="prunepi")


if __name__ == "__main__":
    main()
