"""Natural training: cross-entropy on clean inputs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from robustxai.methods.base import ClassifierModule


class NaturalTraining(ClassifierModule):
    """Minimise CE(f(x), y)."""

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(x)
        return F.cross_entropy(logits, y), logits
