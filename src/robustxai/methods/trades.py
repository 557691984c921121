"""TRADES (Zhang et al. 2019): clean cross-entropy plus a KL smoothness term at an adversarial point."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.attacks.base import Attack
from robustxai.utils.validation import check_range
from robustxai.methods.adversarial import AdversarialMethod
from robustxai.methods.base import OptimizerFactory, SchedulerFactory


class TRADES(AdversarialMethod):
    """Minimise CE(f(x), y) + beta * KL(p(x) || p(x')), gradients flowing through both p(x) and p(x').

    x' comes from the injected attack (normally :class:`~robustxai.attacks.TradesKL`). Both terms are
    batch means. The interpretability-aware training code (seed 000, note T) sums a mean CE with
    per-example KLs under Adam, which is this loss with ``beta=1``, up to Adam's scale invariance.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, attack: Attack, beta: float = 1.0,
                 scheduler: SchedulerFactory | None = None, scheduler_interval: str = "epoch",
                 eps_warmup_steps: int = 0, eps_ramp_steps: int = 0, eps_ramp_step_size: bool = True) -> None:
        super().__init__(model, optimizer, attack, scheduler, scheduler_interval, eps_warmup_steps, eps_ramp_steps,
                         eps_ramp_step_size)
        check_range("beta", beta, low=0.0)
        self.beta = beta

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x_adv = self.adversarial(x, y)
        logits = self.model(x)
        log_p_clean = F.log_softmax(logits, dim=1)
        log_p_adv = F.log_softmax(self.model(x_adv), dim=1)
        kl = F.kl_div(log_p_adv, log_p_clean, log_target=True, reduction="batchmean")
        return F.cross_entropy(logits, y) + self.beta * kl, logits
