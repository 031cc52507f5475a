"""openpi's input/output transforms for LIBERO-style observations.

Raw dict (openpi LIBERO keys, what clients and our envs send) -> model `Observation`:
  observation/image       -> base_0_rgb
  observation/wrist_image -> left_wrist_0_rgb
  (absent)                -> right_wrist_0_rgb, zeros with mask False (openpi LiberoInputs)
  observation/state (8)   -> quantile-normalized, zero-padded to action_dim
  prompt                  -> tokenized (policies/tokenizer.py)
Actions come back as the first `env_action_dim` (7) dims, un-normalized.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_KEYS = {"observation/image": "base_0_rgb", "observation/wrist_image": "left_wrist_0_rgb"}
STATE_KEY = "observation/state"
PROMPT_KEY = "prompt"
MAX_IMAGE_SIDE = 2048  # larger images are refused, not resized (protects servers)
MAX_PROMPT_CHARS = 2000


class ObservationError(ValueError):
    """A raw observation is malformed; the message names the field and the value."""


def resize_with_pad(img: np.ndarray, size: int) -> np.ndarray:
    """openpi image_tools.resize_with_pad: keep aspect, bilinear, zero-pad to size x size."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    ratio = max(w / size, h / size)
    rh, rw = int(h / ratio), int(w / ratio)
    resized = Image.fromarray(img).resize((rw, rh), resample=Image.BILINEAR)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = max(0, (size - rh) // 2), max(0, (size - rw) // 2)
    out[top : top + rh, left : left + rw] = np.asarray(resized)
    return out


def parse_image(value, field: str) -> np.ndarray:
    """-> uint8 (H, W, 3). Accepts HWC/CHW, uint8 or float in [0, 1] (openpi _parse_image)."""
    if not isinstance(value, np.ndarray):
        raise ObservationError(f"{field} must be a numpy array, got {type(value).__name__}")
    if value.ndim != 3:
        raise ObservationError(f"{field} must be (H, W, 3), got shape {value.shape}")
    if value.shape[0] == 3 and value.shape[-1] != 3:
        value = np.transpose(value, (1, 2, 0))
    if value.shape[-1] != 3:
        raise ObservationError(f"{field} must have 3 channels, got shape {value.shape}")
    if not (1 <= value.shape[0] <= MAX_IMAGE_SIDE and 1 <= value.shape[1] <= MAX_IMAGE_SIDE):
        raise ObservationError(f"{field} side must be in [1, {MAX_IMAGE_SIDE}], got {value.shape}")
    if value.dtype == np.uint8:
        return value
    if value.dtype.kind != "f":
        raise ObservationError(f"{field} must be uint8 or float, got dtype {value.dtype}")
    if not np.isfinite(value).all():
        raise ObservationError(f"{field} contains NaN or inf")
    return (np.clip(value, 0.0, 1.0) * 255).astype(np.uint8)


def parse_state(value, dim: int) -> np.ndarray:
    arr = value
    if not isinstance(arr, np.ndarray):
        raise ObservationError(f"{STATE_KEY} must be a numpy array, got {type(value).__name__}")
    if arr.dtype.kind not in "fiu":
        raise ObservationError(f"{STATE_KEY} must be numeric, got dtype {arr.dtype}")
    if arr.shape != (dim,):
        raise ObservationError(f"{STATE_KEY} must have shape ({dim},), got {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ObservationError(f"{STATE_KEY} contains NaN or inf: {arr.tolist()}")
    return arr


def parse_prompt(value) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ObservationError(f"{PROMPT_KEY} is not valid UTF-8: {e}") from e
    if not isinstance(value, str):
        raise ObservationError(f"{PROMPT_KEY} must be a string, got {type(value).__name__}")
    if len(value) > MAX_PROMPT_CHARS:
        raise ObservationError(f"{PROMPT_KEY} has {len(value)} chars, max {MAX_PROMPT_CHARS}")
    return value


def check_keys(obs) -> None:
    if not isinstance(obs, dict):
        raise ObservationError(f"observation must be a dict, got {type(obs).__name__}")
    for key in (*IMAGE_KEYS, STATE_KEY, PROMPT_KEY):
        if key not in obs:
            raise ObservationError(f"observation is missing key {key!r}")


# ---------------------------------------------------------------------------------------
# Training-time image augmentation (openpi preprocessing_pytorch, train=True)


def augment_images(
    images: dict[str, torch.Tensor], generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Random 95% crop + resize and +-5 deg rotation (not for wrist cameras), then colour
    jitter (brightness, contrast, saturation), as openpi augments. (B, 3, H, W) in [-1, 1]."""
    out = {}
    for name, img in images.items():
        B, _, H, W = img.shape
        x = (img + 1) / 2  # [0, 1]

        def rand(lo: float, hi: float, B=B, device=img.device) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(B, generator=generator).to(device)

        if "wrist" not in name:
            ch, cw = int(H * 0.95), int(W * 0.95)
            top = (torch.rand(B, generator=generator) * (H - ch + 1)).long()
            left = (torch.rand(B, generator=generator) * (W - cw + 1)).long()
            x = torch.stack(
                [x[i, :, top[i] : top[i] + ch, left[i] : left[i] + cw] for i in range(B)]
            )
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
            ang = rand(-5.0, 5.0) * math.pi / 180
            theta = torch.zeros(B, 2, 3, device=img.device)
            theta[:, 0, 0], theta[:, 0, 1] = ang.cos(), -ang.sin()
            theta[:, 1, 0], theta[:, 1, 1] = ang.sin(), ang.cos()
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, align_corners=False)
        x = x * rand(0.7, 1.3)[:, None, None, None]  # brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * rand(0.6, 1.4)[:, None, None, None] + mean  # contrast
        gray = x.mean(dim=1, keepdim=True)
        x = (x - gray) * rand(0.5, 1.5)[:, None, None, None] + gray  # saturation
        out[name] = x.clamp(0, 1) * 2 - 1
    return out
