"""The CLI shows our INFO lines (rollout's per-episode progress) and nothing twice."""

from __future__ import annotations

import logging

from prunepi import cli


def test_configure_logging_shows_our_info_lines_once(capfd):
    cli.configure_logging()
    cli.configure_logging()  # idempotent: a second call adds no second handler
    logging.getLogger("services.rollout.driver").info("[rollout] 1/2 episodes")
    logging.getLogger("otherlib.module").info("not ours")  # root level: WARNING
    err = capfd.readouterr().err
    assert err.splitlines() == ["[rollout] 1/2 episodes"]
