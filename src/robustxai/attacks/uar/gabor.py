"""Gabor attack (Kang et al. 2019, after Co et al.'s procedural noise): sparse weights convolved with a Gabor kernel.

Per image, a random Gabor kernel (23x23; 1-10 rotated copies summed, sigma in [0.1, 0.4),
wavelength parameter in [3, 23/4), orientation in [0, pi)) filters a weight map ``w`` with entries
in [-1, 1]. The weights live on a random sparse support (density 1/14): ``support="sparse"`` keeps
them there (the paper); ``support="complement"`` is what the seed's code does (advex-uar masks with
``mask = (draw == 0)``, so after the first step the weights live on the other 13/14 of the pixels).
The filtered map ``o`` is normalised as the seed does (its spectral variance step, an
``rfft``/``irfft`` round trip, is the identity, leaving ``|o - mean(o)|``):
``g = m + (o - m) (1 + c) / (c + |o - m| / max|o - m|)`` with ``c = 0.001`` and the factors held
constant, then rescaled to [0, 1]. The image is ``clip(x + (eps / 255) g)`` (``eps`` in 0-255 pixel
units: 400 on MNIST and CIFAR-10); the noise is shared by all channels.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from robustxai.attacks.base import ModelMode, TargetClass
from robustxai.utils.validation import check_choice, check_range
from robustxai.attacks.uar.base import (
    UPSTREAM_CALIBRATED_STEP,
    StepRule,
    UARAttack,
    check_int,
)

Support = Literal["sparse", "complement"]
MAX_SIDES = 10
NORMALISATION_FLOOR = 0.001


def gabor_kernels(size: int, sigma: Tensor, wavelength: Tensor, theta: Tensor, sides: Tensor) -> Tensor:
    """(N, 1, size, size): per image, the sum over ``i < sides`` of Gabor filters rotated by ``pi i / sides``.

    A filter on the grid [-0.5, 0.5]^2 is ``exp(-(u^2 + v^2) / (2 (sigma + 1e-3)^2)) cos(2 pi wavelength u)``
    with ``(u, v)`` the coordinates rotated by its angle.
    """
    axis = torch.linspace(-0.5, 0.5, size, dtype=sigma.dtype, device=sigma.device)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    i = torch.arange(MAX_SIDES, dtype=sigma.dtype, device=sigma.device)
    angle = theta[:, None] + math.pi * i[None, :] / sides[:, None].to(sigma.dtype)        # (N, MAX_SIDES)
    cos, sin = angle.cos()[..., None, None], angle.sin()[..., None, None]
    u = xx * cos + yy * sin
    v = -xx * sin + yy * cos
    s = (sigma + 1e-3)[:, None, None, None]
    g = torch.exp(-0.5 * (u ** 2 + v ** 2) / s ** 2) * torch.cos(2 * math.pi * wavelength[:, None, None, None] * u)
    used = (i[None, :] < sides[:, None]).to(sigma.dtype)[..., None, None]
    return (g * used).sum(dim=1, keepdim=True)


def normalise_noise(o: Tensor) -> Tensor:
    """The seed's normalisation of the filtered map (N, 1, H, W) to [0, 1] (scale factors held constant)."""
    m = o.mean(dim=(2, 3), keepdim=True).detach()
    dev = o - m
    magnitude = dev.abs()
    magnitude = magnitude / magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    gain = ((1 + NORMALISATION_FLOOR) / (NORMALISATION_FLOOR + magnitude)).detach()
    g = m + dev * gain
    low = g.amin(dim=(2, 3), keepdim=True).detach()
    high = g.amax(dim=(2, 3), keepdim=True).detach()
    return (g - low) / (high - low).clamp_min(1e-12)


class GaborAttack(UARAttack):
    """Targeted Gabor noise: sign steps on the weight map, kept in [-1, 1] on its support."""

    calibrated_step = UPSTREAM_CALIBRATED_STEP

    def __init__(self, eps: float = 400.0, steps: int = 200, step_size: float | None = None,
                 step_rule: StepRule = "seed", targeted: bool = True,
                 target_class: TargetClass = "random", random_init: bool = True,
                 kernel_size: int = 23, density: float = 1.0 / 14.0, support: Support = "complement",
                 box: tuple[float, float] = (0.0, 1.0), model_mode: ModelMode = "eval") -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, step_rule=step_rule, targeted=targeted,
                         target_class=target_class, random_init=random_init, box=box, model_mode=model_mode)
        check_int("kernel_size", kernel_size, low=1, odd=True)
        check_range("density", density, low=0.0, high=1.0, low_open=True)
        check_choice("support", support, ("sparse", "complement"))
        self.kernel_size = int(kernel_size)
        self.density = float(density)
        self.support: Support = support

    def _setup(self, x: Tensor) -> dict[str, Any]:
        n, k = x.shape[0], self.kernel_size
        kw = {"dtype": x.dtype, "device": x.device}
        sigma = 0.3 * torch.rand(n, **kw) + 0.1
        wavelength = (k / 4.0 - 3.0) * torch.rand(n, **kw) + 3.0
        theta = math.pi * torch.rand(n, **kw)
        sides = torch.randint(1, MAX_SIDES + 1, (n,), device=x.device)
        drawn = torch.rand(n, 1, x.shape[2], x.shape[3], **kw) < self.density   # the random sparse support
        mask = drawn if self.support == "sparse" else ~drawn
        return {"kernels": gabor_kernels(k, sigma, wavelength, theta, sides), "drawn": drawn,
                "mask": mask.to(x.dtype)}

    def _init(self, x: Tensor, ctx: dict[str, Any]) -> dict[str, Tensor]:
        # the seed's start: uniform [-1, 1] values on the drawn sparse support (for either mask)
        values = torch.rand_like(x[:, :1]) * 2 - 1 if self.random_init else torch.zeros_like(x[:, :1])
        return {"weights": values * ctx["drawn"].to(x.dtype)}

    def _project(self, variables: dict[str, Tensor], ctx: dict[str, Any]) -> dict[str, Tensor]:
        return {"weights": variables["weights"].clamp(-1.0, 1.0) * ctx["mask"]}

    def _update(self, variables: dict[str, Tensor], direction: dict[str, Tensor], iteration: int,
                ctx: dict[str, Any]) -> dict[str, Tensor]:
        return self._project({"weights": variables["weights"] + self.step * direction["weights"].sign()}, ctx)

    def noise(self, weights: Tensor, kernels: Tensor) -> Tensor:
        """The normalised Gabor noise (N, 1, H, W) in [0, 1] of a weight map and per-image kernels."""
        n, _, h, w = weights.shape
        filtered = F.conv2d(weights.reshape(1, n, h, w), kernels, padding=self.kernel_size // 2, groups=n)
        return normalise_noise(filtered.reshape(n, 1, h, w))

    def _render(self, x: Tensor, variables: dict[str, Tensor], ctx: dict[str, Any]) -> Tensor:
        noise = self.noise(variables["weights"], ctx["kernels"])
        return (x + (self.eps / 255.0) * noise).clamp(0.0, 1.0)


__all__ = ["GaborAttack", "gabor_kernels", "normalise_noise"]
