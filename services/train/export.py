"""`python -m services.train.export RUN DEST`: a run's last checkpoint as a policy folder.

The policy folder is the checkpoint without its training state (train_state.safetensors and
.json: optimizer moments, data order), which only `--resume` reads: model.safetensors,
config.json, pruner.safetensors when the scorer has parameters, assets/. That is what serve,
rollout and `--init-from` load, and what `make reference` commits as models/reference/
(a few MB instead of three times that).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policies.policy import set_policy_fields
from services.train.state import STATE_FILE, STATE_JSON, latest_checkpoint

TRAIN_ONLY = (STATE_FILE, STATE_JSON)


def export_policy(
    run: str | Path, dest: str | Path, policy: Mapping[str, Any] | None = None
) -> Path:
    """Copy RUN's latest checkpoint, less its training state, to DEST (replaced atomically);
    `policy` overrides fields of its PolicyConfig (set_policy_fields)."""
    src = latest_checkpoint(Path(run))
    if src is None:
        raise FileNotFoundError(f"run {run} has no checkpoint under checkpoints/<step>/")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent))
    try:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*TRAIN_ONLY), dirs_exist_ok=True)
        if policy:
            set_policy_fields(tmp, policy)
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp / a worker's umask: readable copies
            path.chmod(0o755 if path.is_dir() else 0o644)
        old = dest.with_name(dest.name + ".old")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m services.train.export RUN DEST")
    print(f"[export] {latest_checkpoint(Path(args[0]))} -> {export_policy(*args)}")


if __name__ == "__main__":
    main()
