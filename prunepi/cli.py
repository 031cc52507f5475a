"""`prunepi` command line: one subcommand per entry point, each a frozen config (tyro)."""

from __future__ import annotations

from typing import Annotated

import tyro

from prunepi import env

env.apply_defaults()

from prunepi.quickstart import QuickstartConfig, run_quickstart  # noqa: E402

COMMANDS = {
    QuickstartConfig: ("demo", run_quickstart, "build the tiny π0.5 and sample one action chunk"),
}


def main(argv: list[str] | None = None) -> None:
    union = tuple(
        Annotated[cls, tyro.conf.subcommand(name, description=doc)]
        for cls, (name, _, doc) in COMMANDS.items()
    )
    cfg = tyro.cli(
        union[0] if len(union) == 1 else __import__("typing").Union[union],  # noqa: UP007
        args=argv,
        config=(tyro.conf.FlagConversionOff,),
    )
    COMMANDS[type(cfg)][1](cfg)


if __name__ == "__main__":
    main()
