"""Elastic attack (Kang et al. 2019): warp the image along a smooth flow field.

The variable is a flow ``f`` of shape (N, 2, H, W) (x then y displacement, in pixels) with
``|f| <= eps`` everywhere; it is smoothed by a Gaussian (``kernel_size``, ``kernel_std``; reflected
borders) and the image is resampled bilinearly at ``pixel + smooth(f)`` (outside the image: 0).
Because the Gaussian is a weighted average, the displacement actually applied is also ``<= eps``
pixels in each coordinate. The seed cannot run this attack (its kernel parameters were deleted from
``pyt_common.py``); the defaults are advex-uar's CIFAR-10 ones: kernel 5, std ``3 / 224 * side``
(0.43 at 32 pixels), and ``eps = 1`` pixel (the fourth of its six calibrated CIFAR-10 sizes, as the
seed's other budgets are their attacks' fourth sizes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robustxai.attacks.base import ModelMode, TargetClass
from robustxai.utils.validation import check_range
from robustxai.attacks.uar.base import StepRule, UARAttack, check_int


def gaussian_kernel(size: int, std: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """(size, size) Gaussian weights summing to 1."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * std ** 2))
    return (g / g.sum()).to(dtype)


def identity_grid(n: int, height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(N, H, W, 2) sampling grid that reproduces the image (``align_corners=True`` convention)."""
    ys = torch.linspace(-1.0, 1.0, height, dtype=dtype, device=device)
    xs = torch.linspace(-1.0, 1.0, width, dtype=dtype, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1).expand(n, height, width, 2)


class ElasticAttack(UARAttack):
    """Targeted elastic warp: sign steps on a pixel flow field kept in ``[-eps, eps]``."""

    def __init__(self, eps: float = 1.0, steps: int = 200, step_size: float | None = None,
                 step_rule: StepRule = "seed", targeted: bool = True,
                 target_class: TargetClass = "random", random_init: bool = True,
                 kernel_size: int = 5, kernel_std: float | None = None, box: tuple[float, float] = (0.0, 1.0),
                 model_mode: ModelMode = "eval") -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, step_rule=step_rule, targeted=targeted,
                         target_class=target_class, random_init=random_init, box=box, model_mode=model_mode)
        check_int("kernel_size", kernel_size, low=1, odd=True)
        if kernel_std is not None:
            check_range("kernel_std", kernel_std, low=0.0, low_open=True)
        self.kernel_size = int(kernel_size)
        self.kernel_std = None if kernel_std is None else float(kernel_std)

    def _setup(self, x: Tensor) -> dict[str, Any]:
        n, _, h, w = x.shape
        std = self.kernel_std if self.kernel_std is not None else 3.0 / 224.0 * max(h, w)
        kernel = gaussian_kernel(self.kernel_size, std, x.dtype).to(x.device)
        scale = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], dtype=x.dtype).to(x.device)   # pixels -> grid units
        return {"kernel": kernel.expand(2, 1, -1, -1), "grid": identity_grid(n, h, w, x.dtype, x.device),
                "scale": scale}

    def _init(self, x: Tensor, ctx: dict[str, Any]) -> dict[str, Tensor]:
        shape = (x.shape[0], 2, x.shape[2], x.shape[3])
        if not self.random_init:
            return {"flow": x.new_zeros(shape)}
        return {"flow": torch.empty(shape, dtype=x.dtype, device=x.device).uniform_(-self.eps, self.eps)}

    def _project(self, variables: dict[str, Tensor], ctx: dict[str, Any]) -> dict[str, Tensor]:
        return {"flow": variables["flow"].clamp(-self.eps, self.eps)}

    def displacement(self, flow: Tensor, ctx: dict[str, Any]) -> Tensor:
        """The smoothed flow (N, 2, H, W) in pixels that the warp applies."""
        pad = (self.kernel_size - 1) // 2
        padded = F.pad(flow, (pad, pad, pad, pad), mode="reflect") if pad else flow
        return F.conv2d(padded, ctx["kernel"], groups=2)

    def _render(self, x: Tensor, variables: dict[str, Tensor], ctx: dict[str, Any]) -> Tensor:
        shift = self.displacement(variables["flow"], ctx).permute(0, 2, 3, 1) * ctx["scale"]
        warped = F.grid_sample(x, ctx["grid"] + shift, mode="bilinear", padding_mode="zeros", align_corners=True)
        return warped.clamp(0.0, 1.0)

    def _min_side(self) -> int:
        return max(2, (self.kernel_size - 1) // 2 + 1)   # a sampling grid needs 2 pixels; reflection needs pad < side


__all__ = ["ElasticAttack", "gaussian_kernel", "identity_grid"]
