"""`python -m services.train --preset tiny --data DATA --out RUN ...` (the entry point
`ray job submit ... -- python -m services.train ...` runs). It is `prunepi train`: the same
parser (`prunepi.cli.parse`), the same flags, `--config-json` included."""

from __future__ import annotations

from prunepi import env

env.apply_defaults()

from prunepi import cli  # noqa: E402
from services.train.driver import run_train  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    import sys

    cfg = cli.parse(
        "train", list(sys.argv[1:] if argv is None else argv), "python -m services.train"
    )
    cli.configure_logging()
    print(f"[train] run folder: {run_train(cfg)}", flush=True)


if __name__ == "__main__":
    main()
