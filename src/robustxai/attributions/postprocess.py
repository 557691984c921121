"""Map post-processing as composable steps: |.|, channel sum, normalisation to sum H*W (RAR's saliency).

RAR (seed_rar.md section 2) turns an IG or gradient map A of shape (N, C, H, W) into
S = H*W * sum_c |A| / sum(sum_c |A|): the absolute value BEFORE the channel sum, then each map
is scaled to sum to its number of pixels. Everything here is differentiable (``create_graph``
maps can be post-processed inside an attack or a training loss).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def channel_sum(maps: Tensor) -> Tensor:
    """Sum a (N, C, H, W) batch of maps over channels, giving (N, H, W)."""
    if maps.ndim != 4:
        raise ValueError(f"channel_sum expects (N, C, H, W) maps, got shape {tuple(maps.shape)}")
    return maps.sum(dim=1)


def normalize_to_size(maps: Tensor) -> Tensor:
    """Scale each map (dims 1..) to sum to its number of elements (H*W for (N, H, W) maps).

    Meant for non-negative maps. A map whose sum is exactly 0 (e.g. an all-zero gradient) carries
    no ranking information; it becomes the uniform map of ones (which also sums to H*W) instead
    of the 0/0 = NaN the seed code would produce, and its gradient stays finite.
    """
    if maps.ndim < 2:
        raise ValueError(f"maps must be batched, shape (N, ...), got {tuple(maps.shape)}")
    size = maps[0].numel()
    dims = tuple(range(1, maps.ndim))
    total = maps.sum(dim=dims, keepdim=True)
    zero = total == 0
    scaled = maps * (size / torch.where(zero, torch.ones_like(total), total))
    return torch.where(zero, torch.ones_like(maps), scaled)


def rar_saliency(maps: Tensor) -> Tensor:
    """RAR's saliency map: |A| summed over channels, normalised to sum H*W; (N, C, H, W) -> (N, H, W)."""
    return normalize_to_size(channel_sum(maps.abs()))


class Postprocess:
    """A configurable post-processing step (Hydra-friendly): ``Postprocess()(maps)`` is :func:`rar_saliency`.

    ``absolute``: take |A| first; ``channels``: "sum" reduces (N, C, H, W) to (N, H, W), "keep"
    leaves the channels; ``normalize``: "size" scales each map to sum to its element count
    (see :func:`normalize_to_size` for the all-zero rule), "none" leaves the scale.
    """

    def __init__(self, absolute: bool = True, channels: Literal["sum", "keep"] = "sum",
                 normalize: Literal["size", "none"] = "size") -> None:
        if channels not in ("sum", "keep"):
            raise ValueError(f"channels must be 'sum' or 'keep', got {channels!r}")
        if normalize not in ("size", "none"):
            raise ValueError(f"normalize must be 'size' or 'none', got {normalize!r}")
        self.absolute = absolute
        self.channels = channels
        self.normalize = normalize

    def __call__(self, maps: Tensor) -> Tensor:
        if self.absolute:
            maps = maps.abs()
        if self.channels == "sum":
            maps = channel_sum(maps)
        if self.normalize == "size":
            maps = normalize_to_size(maps)
        return maps

    def __repr__(self) -> str:
        return (f"Postprocess(absolute={self.absolute}, channels={self.channels!r}, "
                f"normalize={self.normalize!r})")
