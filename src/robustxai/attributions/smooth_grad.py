"""SmoothGrad: the input gradient averaged over Gaussian-noised copies of the input, batched."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustxai.attributions.base import Attribution, check_positive_int, target_logit_grad
from robustxai.attributions.path_points import DEFAULT_MAX_POINTS_PER_PASS, point_chunks


class SmoothGrad(Attribution):
    """Mean over ``samples`` draws of d logit_y / dz at z = x + N(0, noise_level^2) (Smilkov et al.).

    ``noise_level`` is the noise standard deviation in input units; for inputs in the [0, 1] pixel
    box it is Smilkov et al.'s fraction of the input range. With ``seed`` set, every call draws the
    same noise (a fresh generator seeded with ``seed`` on x's device); the noise also depends on
    ``max_points_per_pass`` (it is drawn chunk by chunk). ``seed=None`` uses torch's global RNG.
    ``noise_level=0`` gives :class:`Saliency` exactly.
    """

    def __init__(self, noise_level: float = 0.15, samples: int = 50, seed: int | None = None,
                 max_points_per_pass: int | None = DEFAULT_MAX_POINTS_PER_PASS) -> None:
        if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)) or noise_level < 0:
            raise ValueError(f"noise_level must be a number >= 0, got {noise_level!r}")
        check_positive_int("samples", samples)
        check_positive_int("max_points_per_pass", max_points_per_pass, allow_none=True)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.noise_level = float(noise_level)
        self.samples = samples
        self.seed = seed
        self.max_points_per_pass = max_points_per_pass

    @property
    def points_per_input(self) -> int:
        return self.samples

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, create_graph: bool) -> Tensor:
        x_in = x if create_graph else x.detach()
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        grad_sum = torch.zeros_like(x)
        for img, _ in point_chunks(len(x), self.samples, self.max_points_per_pass, x.device):
            noise = torch.randn((len(img),) + tuple(x.shape[1:]), generator=generator,
                                dtype=x.dtype, device=x.device)
            z = x_in[img] + self.noise_level * noise
            grads = target_logit_grad(model, z, target[img], create_graph)
            if create_graph:
                grad_sum = grad_sum.index_add(0, img, grads)
            else:
                grad_sum.index_add_(0, img, grads)
        return grad_sum / self.samples
