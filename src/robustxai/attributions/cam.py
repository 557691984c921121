"""Class activation maps (Zhou et al. 2016) of GAP networks, raw as seed 000 uses them in every loss and metric.

For a network whose logits are the spatial mean of per-class maps (``model.cam(x)``, e.g.
:class:`robustxai.models.boopathy.BoopathyNet`), CAM_y(x) is the target class's map: signed (no
ReLU), unnormalised and at feature resolution unless ``upsample`` asks for the input size.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.attributions.base import Attribution

Upsample = Literal["bilinear", "nearest"]


def check_upsample(upsample: str | None) -> None:
    """Raise a ValueError naming the argument unless ``upsample`` is None, 'bilinear' or 'nearest'."""
    if upsample not in (None, "bilinear", "nearest"):
        raise ValueError(f"upsample must be None (feature resolution), 'bilinear' or 'nearest', got {upsample!r}")


def upsample_maps(maps: Tensor, size: tuple[int, int], mode: Upsample | None) -> Tensor:
    """(N, h, w) maps resized to ``size`` (``mode`` None: unchanged). Bilinear uses half-pixel centres
    (``align_corners=False``, as OpenCV's ``resize``); nearest repeats cells as the seed's plots do."""
    if mode is None or tuple(maps.shape[-2:]) == tuple(size):
        return maps
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(maps.unsqueeze(1), size=size, mode=mode, **kwargs).squeeze(1)


def class_maps(maps: Tensor, target: Tensor) -> Tensor:
    """The target class's map of every image: (N, C, h, w) per-class maps -> (N, h, w)."""
    if maps.ndim != 4:
        raise ValueError(f"per-class maps must have shape (N, classes, h, w), got {tuple(maps.shape)}")
    return maps[torch.arange(len(target), device=maps.device), target]


def require_method(model: nn.Module, name: str, instead: str) -> None:
    """Raise a ValueError unless ``model`` has the method ``name`` (saying which attribution to use instead)."""
    if not callable(getattr(model, name, None)):
        raise ValueError(f"{type(model).__name__} has no {name}() method (a GAP network such as BoopathyNet "
                         f"has); for any other network use {instead}")


class CAM(Attribution):
    """CAM_y(x) = sum_k V[k, y] A_k(x) from ``model.cam(x)``: raw, signed, (N, h, w) at feature resolution.

    ``upsample='bilinear'`` (or ``'nearest'``) resizes the maps to the input's H x W. With
    ``create_graph=True`` the maps are differentiable w.r.t. x and the parameters (Int, ISA).
    """

    def __init__(self, upsample: Upsample | None = None) -> None:
        check_upsample(upsample)
        self.upsample = upsample

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, create_graph: bool) -> Tensor:
        require_method(model, "cam", "GradCAM(layer=...)")
        with torch.set_grad_enabled(create_graph):
            maps = class_maps(model.cam(x), target)
        return upsample_maps(maps, tuple(x.shape[-2:]), self.upsample)


__all__ = ["CAM", "Upsample", "check_upsample", "class_maps", "require_method", "upsample_maps"]
