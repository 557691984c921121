"""Smooth surrogates of piecewise-linear networks, whose input-Hessian is not zero (Ghorbani et al.).

A ReLU network's saliency map is piecewise constant in the input, so its gradient gives an attack on
the explanation no direction. The attacks therefore take their directions from a copy of the network
in which every ReLU is a softplus (and every leaky ReLU a "leaky softplus"), as the RAR code does.
"""

from __future__ import annotations

import copy

import torch.nn.functional as F
from torch import Tensor, nn


class LeakySoftplus(nn.Module):
    """``s * x + (1 - s) * softplus(x, beta)``: the smooth twin of ``LeakyReLU(s)`` (RAR's ResNets, s = 0.1)."""

    def __init__(self, negative_slope: float = 0.01, beta: float = 1.0) -> None:
        super().__init__()
        self.negative_slope, self.beta = float(negative_slope), float(beta)

    def forward(self, x: Tensor) -> Tensor:
        s = self.negative_slope
        return s * x + (1.0 - s) * F.softplus(x, beta=self.beta)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope:g}, beta={self.beta:g}"


def _smooth_twin(module: nn.Module, beta: float) -> nn.Module | None:
    if isinstance(module, nn.ReLU):
        return nn.Softplus(beta=beta)
    if isinstance(module, nn.LeakyReLU):
        return LeakySoftplus(module.negative_slope, beta=beta)
    return None


def softplus_surrogate(model: nn.Module, beta: float = 1.0) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.ReLU`` -> ``nn.Softplus(beta)`` and every
    ``nn.LeakyReLU(s)`` -> :class:`LeakySoftplus` ``(s, beta)``; the original is not touched.

    Raises ValueError when the model has no such activation modules (e.g. it calls ``F.relu``), since
    the "surrogate" would then silently be the original network.
    """
    if not beta > 0:
        raise ValueError(f"softplus beta must be > 0, got {beta}")
    surrogate = copy.deepcopy(model)
    replaced = 0
    for parent in list(surrogate.modules()):
        for name, child in list(parent.named_children()):
            twin = _smooth_twin(child, beta)
            if twin is not None:
                twin.train(child.training)
                setattr(parent, name, twin)
                replaced += 1
    if replaced == 0:
        raise ValueError(
            f"surrogate='softplus' found no nn.ReLU or nn.LeakyReLU modules in {type(model).__name__}; "
            "write its activations as modules (not F.relu) or use surrogate='none'")
    return surrogate


__all__ = ["LeakySoftplus", "softplus_surrogate"]
