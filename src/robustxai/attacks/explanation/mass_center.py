"""The mass-centre attack: move the map's centre of mass away from the clean one (Ghorbani et al.)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustxai.attacks.explanation.base import ExplanationAttack
from robustxai.metrics import functional as MF


class MassCenterAttack(ExplanationAttack):
    """Move the map's centre of mass away from the clean one: ascend ‖c(S̃) − c₀‖².

    As in the seed, c₀ is the centre of the *surrogate's* clean map truncated to whole pixels; the
    truncation is what gives the first step a direction (at c₀ = c(S̃) exactly the gradient is zero).
    """

    def prepare(self, surrogate: nn.Module, x: Tensor, target: Tensor, clean_map: Tensor) -> dict[str, Tensor]:
        with torch.enable_grad():
            smooth = self.maps(surrogate, x, target).detach()
        return {"center": torch.trunc(MF.mass_center(smooth))}

    def objective(self, maps: Tensor, context: dict[str, Tensor]) -> Tensor:
        return (MF.mass_center(maps) - context["center"]).square().sum(dim=1)


__all__ = ["MassCenterAttack"]
