"""Activations of the Woods et al. robust networks: the half-Huber ReLU (seed 001, spec 1.3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class HalfHuberReLU(nn.Module):
    """f(x) = 0 (x <= 0), x^2 / (2 delta) (0 < x <= delta), x - delta / 2 (x > delta).

    A ReLU with a quadratic knee: continuous first derivative clamp(x, 0, delta) / delta and a
    non-zero second derivative, which the seed's double-backprop Lipschitz penalty needs. Plain
    autograd through ``torch.where``; ``delta`` is kept as the scalar buffer ``d`` so the seed's
    state dicts (key ``...d``) load unchanged. Unlike the seed's in-place kernel (correct only for
    delta = 0.5) this is the exact piecewise formula for every delta.
    """

    def __init__(self, delta: float = 0.5) -> None:
        super().__init__()
        if not delta > 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        self.register_buffer("d", torch.tensor(float(delta)))

    def forward(self, x: Tensor) -> Tensor:
        d = self.d.to(x.dtype)
        quadratic = x * x / (2 * d)
        linear = x - d / 2
        return torch.where(x <= 0, torch.zeros_like(x), torch.where(x <= d, quadratic, linear))

    def extra_repr(self) -> str:
        return f"delta={float(self.d):g}"


__all__ = ["HalfHuberReLU"]
