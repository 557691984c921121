"""Random sign steps: the baseline that needs no attribution gradients."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustxai.attacks.explanation.base import ExplanationAttack


class RandomDirectionAttack(ExplanationAttack):
    """Random sign steps (the seed's ``random`` baseline): a fresh N(0, 1) sign per pixel and step.

    The seed aggregates one Gaussian draw per counterfactual as Σ_i (i/m) n_i, which is itself Gaussian,
    so its sign is a fair ±1 per pixel; no attribution gradients are needed. The only random attack, so
    the only one where ``restarts > 1`` helps (the repeat with the lowest Kendall tau is kept, as in RAR).
    """

    deterministic = False

    def direction(self, surrogate: nn.Module, x: Tensor, target: Tensor, context: dict[str, Tensor]) -> Tensor:
        return torch.randn_like(x)

    def _surrogate(self, model: nn.Module) -> nn.Module:
        return model  # directions do not use the model


__all__ = ["RandomDirectionAttack"]
