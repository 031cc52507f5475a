"""`python -m services.train --preset tiny --data DATA --out RUN ...` (the entry point
`ray job submit ... -- python -m services.train ...` runs; `prunepi train` wraps the same)."""

from __future__ import annotations

from prunepi import env

env.apply_defaults()

import tyro  # noqa: E402

from services.train.config import TrainConfig  # noqa: E402
from services.train.driver import run_train  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    cfg = tyro.cli(TrainConfig, args=argv, config=(tyro.conf.FlagConversionOff,))
    print(f"[train] run folder: {run_train(cfg)}", flush=True)


if __name__ == "__main__":
    main()
