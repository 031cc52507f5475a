"""Normalization statistics in openpi's format and π0.5's quantile normalization.

`assets/<asset_id>/norm_stats.json` = {"norm_stats": {"state": {"mean", "std", "q01",
"q99"}, "actions": {...}}}. π0.5 normalizes by quantiles, `(x - q01) / (q99 - q01 + 1e-6)
* 2 - 1`, without clipping (openpi transforms.py `Normalize(use_quantiles=True)`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prunepi.files import write_text

EPS = 1e-6


@dataclass(frozen=True)
class NormStats:
    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)
    q01: np.ndarray  # (D,) 1st percentile
    q99: np.ndarray  # (D,) 99th percentile

    @staticmethod
    def from_data(x: np.ndarray) -> NormStats:
        """x (T, D) -> per-dimension statistics (exact quantiles, not openpi's histogram)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
        if len(x) == 0:
            raise ValueError("norm stats need at least one sample, got an empty array")
        return NormStats(
            mean=x.mean(0).astype(np.float32),
            std=x.std(0).astype(np.float32),
            q01=np.quantile(x, 0.01, axis=0).astype(np.float32),
            q99=np.quantile(x, 0.99, axis=0).astype(np.float32),
        )

    def normalize(self, x: np.ndarray) -> np.ndarray:
        d = x.shape[-1]
        q01, q99 = self.q01[..., :d], self.q99[..., :d]
        return ((x - q01) / (q99 - q01 + EPS) * 2.0 - 1.0).astype(np.float32)

    def unnormalize(self, x: np.ndarray) -> np.ndarray:
        d = min(x.shape[-1], self.q01.shape[-1])
        q01, q99 = self.q01[:d], self.q99[:d]
        return ((x[..., :d] + 1.0) / 2.0 * (q99 - q01 + EPS) + q01).astype(np.float32)

    def to_json(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("mean", "std", "q01", "q99")}

    @staticmethod
    def from_json(d: dict, name: str) -> NormStats:
        missing = [k for k in ("mean", "std", "q01", "q99") if k not in d]
        if missing:
            raise ValueError(f"norm_stats[{name!r}] is missing {missing}")
        # openpi's NormStats has q01/q99 optional (shared/normalize.py), written as null when
        # computed without quantiles; π0.5 normalizes by quantiles, so they must be there.
        null = [k for k in ("mean", "std", "q01", "q99") if d[k] is None]
        if null:
            raise ValueError(
                f"norm_stats[{name!r}] has null {null}: π0.5 normalizes by quantiles (openpi "
                f"use_quantile_norm); recompute them with openpi's scripts/compute_norm_stats.py"
            )
        return NormStats(
            **{k: np.asarray(d[k], dtype=np.float32) for k in ("mean", "std", "q01", "q99")}
        )


def save_norm_stats(stats: dict[str, NormStats], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"norm_stats": {k: v.to_json() for k, v in stats.items()}}, indent=1)
    write_text(path, body)


def load_norm_stats(path: Path) -> dict[str, NormStats]:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())["norm_stats"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{path}: not an openpi norm_stats.json ({e})") from e
    return {k: NormStats.from_json(v, k) for k, v in raw.items()}
