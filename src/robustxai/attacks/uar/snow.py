"""Snow attack (Kang et al. 2019): optimise the intensities of snowflakes laid on a grid, blend them into the image.

Seven flake shapes are drawn per call (shared by the batch, as advex-uar does): anti-aliased line
segments through the centre of a 13x13 kernel (half-length 2-6 pixels, width 1, 3 or 5 with
probabilities 0.6/0.3/0.1, all mirrored left-right with probability 1/2), each blurred by a 3x3
Gaussian (sigma in [0.41, 0.6)). The variables are flake intensities ``u`` of shape
(N, 7, ceil(H/4), ceil(W/4)) in (0, 1]; flake ``k`` sits at offset (0, k) (k < 4) or (k - 3, 0)
of every 4x4 cell, its weight is ``u^4``. Budget: every 8x8 region of the intensity grid has mean
``<= budget`` (0.2) per flake shape (a region above it is scaled down to it). The image is
``clip((1 - d) x + d max(x, 1.5 lum(x) + 0.5) + eps * snow)`` with ``d = 0.25`` and
``eps`` = 2 on MNIST and CIFAR-10 (``lum``: Rec. 709 luma, or the grey value itself).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robustxai.attacks.base import ModelMode, TargetClass
from robustxai.utils.validation import check_range
from robustxai.attacks.uar.base import UPSTREAM_CALIBRATED_STEP, StepRule, UARAttack

FLAKES = 7
FLAKE_SIZE = 13
CELL = 4            # flakes sit on a grid with one cell per 4x4 pixels
REGION = 8          # the budget is a mean over 8x8 cells of that grid
MIN_INTENSITY = 1e-9
LUMA = (0.2126, 0.7152, 0.0722)


def flake_kernels(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """Seven random blurred line-segment kernels, (7, 13, 13), drawn from the global torch RNG."""
    mid = FLAKE_SIZE // 2
    end = torch.randint(mid + 2, FLAKE_SIZE, (FLAKES, 2)).to(dtype)
    width = torch.tensor([1.0, 3.0, 5.0], dtype=dtype)[torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), FLAKES,
                                                                        replacement=True)]
    start = 2 * mid - end                                               # mirrored through the centre
    coords = torch.stack(torch.meshgrid(torch.arange(FLAKE_SIZE, dtype=dtype), torch.arange(FLAKE_SIZE, dtype=dtype),
                                        indexing="ij"), dim=-1)          # (13, 13, 2)
    seg = (end - start)[:, None, None, :]                               # (7, 1, 1, 2)
    rel = coords[None] - start[:, None, None, :]
    t = ((rel * seg).sum(-1) / (seg ** 2).sum(-1)).clamp(0.0, 1.0)
    dist = (rel - t[..., None] * seg).norm(dim=-1)
    kernels = ((width[:, None, None] + 1) / 2 - dist).clamp(0.0, 1.0)
    if torch.rand(()) < 0.5:
        kernels = kernels.flip(-1)
    sigma = torch.empty(FLAKES, dtype=dtype).uniform_(0.41, 0.6)
    offsets = torch.arange(3, dtype=dtype) - 1
    blur = torch.exp(-(offsets[None, :, None] ** 2 + offsets[None, None, :] ** 2) / (2 * sigma[:, None, None] ** 2))
    blur = blur / blur.sum(dim=(1, 2), keepdim=True)
    kernels = F.conv2d(kernels[None], blur[:, None], padding=1, groups=FLAKES)[0]
    return kernels.to(device)


def flake_offsets(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """(7, 4, 4) one-hot: where flake ``k`` sits in its 4x4 cell, (0, k) for k < 4 and (k - 3, 0) after."""
    onehot = torch.zeros(FLAKES, CELL, CELL, dtype=dtype)
    for k, (r, c) in enumerate([(0, j) for j in range(4)] + [(j + 1, 0) for j in range(3)]):
        onehot[k, r, c] = 1.0
    return onehot.to(device)


def place_flakes(weights: Tensor, offsets: Tensor) -> Tensor:
    """(N, 7, gh, gw) flake weights -> (N, 7, 4 gh, 4 gw), flake ``k`` at its ``offsets[k]`` in every 4x4 cell."""
    n, k, gh, gw = weights.shape
    grid = weights[:, :, :, None, :, None] * offsets[None, :, None, :, None, :]    # (N, 7, gh, 4, gw, 4)
    return grid.reshape(n, k, gh * CELL, gw * CELL)


def flake_stamps(kernels: Tensor) -> Tensor:
    """(7, 1, 16, 16) transposed-convolution weights: flake ``k``'s kernel, flipped, at its offset in the cell.

    With these, ``conv_transpose2d(u^4, stamps, stride=4)[6:6 + H, 6:6 + W]`` is the snow layer.
    """
    offsets = [(0, j) for j in range(4)] + [(j + 1, 0) for j in range(3)]
    size = FLAKE_SIZE + CELL - 1
    stamps = kernels.new_zeros(FLAKES, 1, size, size)
    for k, (r, c) in enumerate(offsets):
        stamps[k, 0, r:r + FLAKE_SIZE, c:c + FLAKE_SIZE] = kernels[k].flip(0, 1)
    return stamps


def region_means(u: Tensor) -> Tensor:
    """Mean of ``u`` (N, K, gh, gw) over each 8x8 region (edge regions over their cells only): (N, K, rh, rw)."""
    gh, gw = u.shape[-2:]
    pad = (0, (-gw) % REGION, 0, (-gh) % REGION)
    total = F.avg_pool2d(F.pad(u, pad), REGION) * REGION ** 2
    count = F.avg_pool2d(F.pad(torch.ones_like(u[:1, :1]), pad), REGION) * REGION ** 2
    return total / count


class SnowAttack(UARAttack):
    """Targeted snow: sign steps on the flake intensities, kept in (0, 1] with regional mean <= ``budget``."""

    calibrated_step = UPSTREAM_CALIBRATED_STEP

    def __init__(self, eps: float = 2.0, steps: int = 200, step_size: float | None = None,
                 step_rule: StepRule = "seed", targeted: bool = True,
                 target_class: TargetClass = "random", random_init: bool = True,
                 budget: float = 0.2, discolor: float = 0.25, box: tuple[float, float] = (0.0, 1.0),
                 model_mode: ModelMode = "eval") -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, step_rule=step_rule, targeted=targeted,
                         target_class=target_class, random_init=random_init, box=box, model_mode=model_mode)
        check_range("budget", budget, low=0.0, high=1.0, low_open=True)
        check_range("discolor", discolor, low=0.0, high=1.0)
        self.budget = float(budget)
        self.discolor = float(discolor)

    def _setup(self, x: Tensor) -> dict[str, Any]:
        kernels = flake_kernels(x.dtype, x.device)
        return {"kernels": kernels[None], "stamps": flake_stamps(kernels),   # (1, 7, 13, 13), (7, 1, 16, 16)
                "luma": torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1).to(x.device)}

    def _init(self, x: Tensor, ctx: dict[str, Any]) -> dict[str, Tensor]:
        shape = (x.shape[0], FLAKES, -(-x.shape[2] // CELL), -(-x.shape[3] // CELL))
        if not self.random_init:
            return {"intensities": torch.full(shape, MIN_INTENSITY, dtype=x.dtype, device=x.device)}
        # the seed's start: exponentially distributed intensities, exp(-U / budget)
        return {"intensities": torch.exp(-torch.rand(shape, dtype=x.dtype, device=x.device) / self.budget)}

    def _project(self, variables: dict[str, Tensor], ctx: dict[str, Any]) -> dict[str, Tensor]:
        u = variables["intensities"].clamp(MIN_INTENSITY, 1.0)
        scale = self.budget / region_means(u).clamp_min(self.budget)               # 1 where within budget
        scale = scale.repeat_interleave(REGION, dim=2).repeat_interleave(REGION, dim=3)
        return {"intensities": u * scale[..., :u.shape[2], :u.shape[3]]}

    @staticmethod
    def snow(intensities: Tensor, ctx: dict[str, Any], height: int, width: int) -> Tensor:
        """The snow layer (N, 1, H, W) that the intensities make with the run's flake kernels.

        Equal to ``conv2d(place_flakes(u^4), kernels, padding=6)`` cropped to H x W (tested), computed as one
        stride-4 transposed convolution of the intensity grid: each cell writes its flakes once,
        ~10x fewer operations than convolving the mostly-zero full-resolution flake map.
        """
        full = F.conv_transpose2d(intensities ** 4, ctx["stamps"], stride=CELL)
        return full[:, :, FLAKE_SIZE // 2:FLAKE_SIZE // 2 + height, FLAKE_SIZE // 2:FLAKE_SIZE // 2 + width]

    def _render(self, x: Tensor, variables: dict[str, Tensor], ctx: dict[str, Any]) -> Tensor:
        snow = self.snow(variables["intensities"], ctx, x.shape[2], x.shape[3])
        luma = (x * ctx["luma"]).sum(dim=1, keepdim=True) if x.shape[1] == 3 else x
        base = (1 - self.discolor) * x + self.discolor * torch.maximum(x, 1.5 * luma + 0.5)
        return (base + self.eps * snow).clamp(0.0, 1.0)


__all__ = ["SnowAttack", "flake_kernels", "flake_offsets", "flake_stamps", "place_flakes", "region_means"]
