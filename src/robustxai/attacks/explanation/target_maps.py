"""Target maps of the target-map attack: named (H, W) patterns, or maps read from .pt/.npy/image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robustxai.utils.validation import check_choice

TARGET_PATTERNS = ("top_left", "top_right", "bottom_left", "bottom_right", "center", "border")


def target_pattern(name: str, height: int, width: int) -> Tensor:
    """A named (H, W) 0/1 target region: a quadrant, the central half-size square, or the border around it."""
    check_choice("target_map", name, TARGET_PATTERNS)
    region = torch.zeros(height, width)
    h2, w2 = height // 2, width // 2
    if name == "top_left":
        region[:h2, :w2] = 1
    elif name == "top_right":
        region[:h2, w2:] = 1
    elif name == "bottom_left":
        region[h2:, :w2] = 1
    elif name == "bottom_right":
        region[h2:, w2:] = 1
    else:
        region[height // 4:height // 4 + h2, width // 4:width // 4 + w2] = 1
        if name == "border":
            region = 1 - region
    return region


def load_target_map(path: str) -> Tensor:
    """Read an (H, W) target map from ``.pt``/``.pth``, ``.npy`` or an image file (grey levels scaled to [0,1])."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"target_map file {str(file)!r} does not exist; give an existing .pt/.npy/image file "
                         f"or one of the patterns {', '.join(TARGET_PATTERNS)}")
    suffix = file.suffix.lower()
    if suffix in (".pt", ".pth"):
        data = torch.load(file, weights_only=True, map_location="cpu")
        if not isinstance(data, Tensor):
            raise ValueError(f"target_map {str(file)!r} must hold a tensor, found {type(data).__name__}")
        region = data.float()
    elif suffix == ".npy":
        region = torch.from_numpy(np.load(file, allow_pickle=False)).float()
    else:
        try:
            from PIL import Image

            region = torch.from_numpy(np.asarray(Image.open(file).convert("L"), dtype=np.float32) / 255.0)
        except Exception as err:  # an unreadable or unknown format
            raise ValueError(f"target_map {str(file)!r} could not be read as .pt, .npy or an image ({err})") from err
    region = region.squeeze()
    if region.dim() != 2:
        raise ValueError(f"target_map {str(file)!r} must be an (H, W) map, got shape {tuple(region.shape)}")
    return region


__all__ = ["TARGET_PATTERNS", "load_target_map", "target_pattern"]
