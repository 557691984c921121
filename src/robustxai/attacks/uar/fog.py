"""Fog attack (Kang et al. 2019): optimise the random draws of a diamond-square fractal, blend it into the image.

The fog map is the diamond-square ("plasma") fractal of ImageNet-C's fog corruption, built on a
``M x M`` grid with ``M = 2^(floor(log2 S) + 1)`` (``S``: the larger image side rounded up to a
multiple of 16, as the seed pads MNIST to 32; 64 for 28- and 32-pixel images). Each midpoint is the
mean of its four neighbours plus ``wibble * (2 w - 1)``, where ``w`` in [0, 1] is one of the
attack's variables (three per level: squares and the two diamond sets) and ``wibble`` starts at 100
and is divided by ``wibble_decay`` per level. The map is rescaled to [0, 1] per image, centre-cropped
to the image and blended as the seed does: ``x' = (x + e F) / (max_c(x) + e)`` with
``e = eps / 255`` (``eps`` in the seed's 0-255 pixel units, 2048 on MNIST and CIFAR-10) and
``max_c`` the per-image, per-channel maximum.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from robustxai.attacks.base import ModelMode, TargetClass
from robustxai.utils.validation import check_range
from robustxai.attacks.uar.base import UPSTREAM_CALIBRATED_STEP, StepRule, UARAttack

INITIAL_WIBBLE = 100.0


def fog_map_size(height: int, width: int) -> int:
    """Side ``M`` of the fractal grid for an image: ``2^(floor(log2 S) + 1)``, ``S`` = larger side up to x16."""
    side = -(-max(height, width) // 16) * 16
    return 2 ** (int(math.log2(side)) + 1)


def fog_levels(map_size: int) -> int:
    """Number of diamond-square levels for an ``M x M`` grid (``log2 M``)."""
    return round(math.log2(map_size))


def diamond_square(weights: list[Tensor], wibble_decay: float) -> Tensor:
    """The fractal of the variables ``weights`` (3 per level, level ``i`` of shape (N, 2^i, 2^i)), in [0, 1].

    Returns (N, M, M) with ``M = 2^levels``; the grid wraps around (periodic neighbours), as in ImageNet-C.
    """
    n = weights[0].shape[0]
    grid = weights[0].new_zeros(n, 1, 1)
    wibble = INITIAL_WIBBLE
    for level in range(len(weights) // 3):
        w_square, w_top, w_left = weights[3 * level:3 * level + 3]
        corners = grid                                         # points at (a s, b s)
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        centres = square / 4 + wibble * (2 * w_square - 1)     # (a s + s/2, b s + s/2)
        top = (centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)) / 4 + wibble * (2 * w_top - 1)
        left = (centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)) / 4 + wibble * (2 * w_left - 1)
        size = corners.shape[1]
        # interleave: new[2a + p, 2b + q] = [[corners, top], [left, centres]][p][q][a, b]
        grid = torch.stack([torch.stack([corners, top], dim=-1), torch.stack([left, centres], dim=-1)], dim=2)
        grid = grid.reshape(n, 2 * size, 2 * size)
        wibble /= wibble_decay
    low = grid.amin(dim=(1, 2), keepdim=True)
    high = grid.amax(dim=(1, 2), keepdim=True)
    return (grid - low) / (high - low).clamp_min(1e-12)


class FogAttack(UARAttack):
    """Targeted fog: sign steps on the fractal's variables, kept in [0, 1]; ``eps`` in 0-255 pixel units."""

    calibrated_step = UPSTREAM_CALIBRATED_STEP

    def __init__(self, eps: float = 2048.0, steps: int = 200, step_size: float | None = None,
                 step_rule: StepRule = "seed", targeted: bool = True,
                 target_class: TargetClass = "random", random_init: bool = True,
                 wibble_decay: float = 2.0, box: tuple[float, float] = (0.0, 1.0),
                 model_mode: ModelMode = "eval") -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, step_rule=step_rule, targeted=targeted,
                         target_class=target_class, random_init=random_init, box=box, model_mode=model_mode)
        check_range("wibble_decay", wibble_decay, low=0.0, low_open=True)
        self.wibble_decay = float(wibble_decay)

    def _setup(self, x: Tensor) -> dict[str, Any]:
        return {"map_size": fog_map_size(x.shape[2], x.shape[3])}

    def _init(self, x: Tensor, ctx: dict[str, Any]) -> dict[str, Tensor]:
        n, levels = x.shape[0], fog_levels(ctx["map_size"])
        draw = torch.rand if self.random_init else torch.zeros
        return {f"w{level}_{part}": draw(n, 2 ** level, 2 ** level, dtype=x.dtype, device=x.device)
                for level in range(levels) for part in range(3)}

    def _render(self, x: Tensor, variables: dict[str, Tensor], ctx: dict[str, Any]) -> Tensor:
        fog = self.fog(variables, x.shape[2], x.shape[3])
        e = self.eps / 255.0
        peak = x.amax(dim=(2, 3), keepdim=True)
        return ((x + e * fog) / (peak + e)).clamp(0.0, 1.0)

    def fog(self, variables: dict[str, Tensor], height: int, width: int) -> Tensor:
        """The fog map (N, 1, H, W) in [0, 1] that the variables make, centre-cropped to the image."""
        grid = diamond_square(list(variables.values()), self.wibble_decay)
        top, left = (grid.shape[1] - height) // 2, (grid.shape[2] - width) // 2
        return grid[:, None, top:top + height, left:left + width]

    def _project(self, variables: dict[str, Tensor], ctx: dict[str, Any]) -> dict[str, Tensor]:
        return {k: v.clamp(0.0, 1.0) for k, v in variables.items()}


__all__ = ["FogAttack", "diamond_square", "fog_map_size"]
