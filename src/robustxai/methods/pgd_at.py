"""Madry adversarial training: cross-entropy on adversarial examples only."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.attacks.base import Attack
from robustxai.methods.base import ClassifierModule, OptimizerFactory, SchedulerFactory


class PGDAdversarialTraining(ClassifierModule):
    """Minimise CE(f(x'), y) with x' = attack(f, x, y) (no clean term, as in Madry et al. 2018)."""

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, attack: Attack,
                 scheduler: SchedulerFactory | None = None, scheduler_interval: str = "epoch") -> None:
        super().__init__(model, optimizer, scheduler, scheduler_interval)
        self.attack = attack

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x_adv = self.attack(self.model, x, y)
        logits = self.model(x_adv)
        return F.cross_entropy(logits, y), logits
