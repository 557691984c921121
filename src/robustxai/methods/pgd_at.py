"""Madry adversarial training: cross-entropy on adversarial examples only."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from robustxai.methods.adversarial import AdversarialMethod


class PGDAdversarialTraining(AdversarialMethod):
    """Minimise CE(f(x'), y) with x' = attack(f, x, y) (no clean term, as in Madry et al. 2018)."""

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x_adv = self.adversarial(x, y)
        logits = self.model(x_adv)
        return F.cross_entropy(logits, y), logits
