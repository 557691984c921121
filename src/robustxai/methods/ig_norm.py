"""IG-NORM and IG-SUM-NORM (Chen et al., "Robust Attribution Regularization", NeurIPS 2019).

IG-NORM:      min  CE(x) + lam * max_{x'} ||IG^loss(x, x')||_1
IG-SUM-NORM:  min  max_{x'} [CE(x') + beta * ||IG^loss(x, x')||_1]

x' comes from the injected attack (normally :class:`~robustxai.attacks.attribution_norm.AttributionNormPGD`,
which uses the cheap m/approx_factor-point IG) and is a constant; the outer loss uses the full
m-point IG with a graph, so the update differentiates through the input gradients (double backprop).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.attacks.base import Attack
from robustxai.utils.validation import check_choice, check_range
from robustxai.attributions.path_loss import loss_path_ig, path_fractions
from robustxai.methods.adversarial import AdversarialMethod
from robustxai.methods.base import OptimizerFactory, SchedulerFactory

Reduction = Literal["sum", "mean", "seed000"]


class _AttributionRegularised(AdversarialMethod):
    """Shared parts: the regulariser R(x, x'), the reduction and the separate logs of both terms.

    ``reduction="sum"`` (the seed's) sums CE over the batch and sums |IG| over the batch and every
    pixel; ``"mean"`` divides both by the batch size. ``"seed000"`` is Boopathy et al.'s variant (their
    IG of the batch-*mean* CE, spec seed_boopathy §1.3, §7.4): mean CE + weight * mean_b ||IG_b||_1 / B,
    the explicit 1/B being the only weight in that seed (which has no lam: weight 1). ``train/ce`` and
    ``train/ig_norm`` are always logged as per-example means, so runs with any reduction compare directly.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, attack: Attack, weight: float,
                 ig_steps: int, reduction: Reduction, max_batch: int | None,
                 scheduler: SchedulerFactory | None, scheduler_interval: str,
                 eps_warmup_steps: int, eps_ramp_steps: int, eps_ramp_step_size: bool = True) -> None:
        super().__init__(model, optimizer, attack, scheduler, scheduler_interval, eps_warmup_steps, eps_ramp_steps,
                         eps_ramp_step_size)
        path_fractions(ig_steps)  # ValueError unless ig_steps is an integer >= 1
        check_choice("reduction", reduction, ("sum", "mean", "seed000"))
        if max_batch is not None:
            check_range("max_batch", max_batch, low=1)
        self.weight = float(weight)
        self.ig_steps = int(ig_steps)
        self.reduction: Reduction = reduction
        self.max_batch = max_batch

    def regulariser(self, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-example ||IG(x, x')||_1 with the full m points (graph kept), and the logits at x'.

        During an eps warm-up (``x_adv is x``) the IG is 0 by definition and no path is evaluated.
        """
        if x_adv is x:
            return x.new_zeros(x.shape[0]), self.model(x)
        path = loss_path_ig(self.model, x, x_adv, y, steps=self.ig_steps, every=1, reduction="none",
                            create_graph=True, max_batch=self.max_batch)
        return path.norm, path.end_logits

    def combine(self, ce: Tensor, reg: Tensor | None) -> Tensor:
        """``reduce(CE) + weight * reduce(R)`` (``seed000``: ``mean(CE) + weight * mean(R) / B``) from per-example
        terms, and log both terms."""
        reduce = torch.sum if self.reduction == "sum" else torch.mean
        if reg is None:
            loss = reduce(ce)
        elif self.reduction == "seed000":  # Boopathy et al.: the IG of the batch-mean CE carries a 1/B
            loss = ce.mean() + self.weight * reg.mean() / ce.shape[0]
        else:
            loss = reduce(ce) + self.weight * reduce(reg)
        if self._trainer is not None:  # also usable outside a Trainer (tests, benchmarks)
            self.log("train/ce", ce.detach().mean())
            if reg is not None:
                self.log("train/ig_norm", reg.detach().mean())
        return loss


class IGNorm(_AttributionRegularised):
    """Minimise CE(x) + lam * ||IG(x, x')||_1 with x' maximising the IG norm (the attack's job).

    With ``lam = 0`` neither the attack nor the IG is computed: this is natural training (exactly, with
    ``reduction="mean"``; ``"sum"`` only scales the loss by the batch size).
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, attack: Attack, lam: float = 1.0,
                 ig_steps: int = 50, reduction: Reduction = "mean", max_batch: int | None = None,
                 scheduler: SchedulerFactory | None = None, scheduler_interval: str = "epoch",
                 eps_warmup_steps: int = 0, eps_ramp_steps: int = 0, eps_ramp_step_size: bool = True) -> None:
        check_range("lam", lam, low=0.0)
        super().__init__(model, optimizer, attack, lam, ig_steps, reduction, max_batch, scheduler,
                         scheduler_interval, eps_warmup_steps, eps_ramp_steps, eps_ramp_step_size)
        self.lam = float(lam)

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(x)
        ce = F.cross_entropy(logits, y, reduction="none")
        if self.lam == 0.0:
            return self.combine(ce, None), logits
        x_adv = self.adversarial(x, y)
        reg, _ = self.regulariser(x, x_adv, y)
        return self.combine(ce, reg), logits


class IGSumNorm(_AttributionRegularised):
    """Minimise CE(x') + beta * ||IG(x, x')||_1 with x' maximising the same sum (with the cheap IG).

    ``train/acc`` is the accuracy on x'. CE(x') reuses the logits of the IG path's last point (x').
    With ``beta = 0`` no IG is computed anywhere: this is PGD adversarial training (exactly, with
    ``reduction="mean"`` and an attack whose ``beta`` is 0 too).
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, attack: Attack, beta: float = 1.0,
                 ig_steps: int = 50, reduction: Reduction = "mean", max_batch: int | None = None,
                 scheduler: SchedulerFactory | None = None, scheduler_interval: str = "epoch",
                 eps_warmup_steps: int = 0, eps_ramp_steps: int = 0, eps_ramp_step_size: bool = True) -> None:
        check_range("beta", beta, low=0.0)
        super().__init__(model, optimizer, attack, beta, ig_steps, reduction, max_batch, scheduler,
                         scheduler_interval, eps_warmup_steps, eps_ramp_steps, eps_ramp_step_size)
        self.beta = float(beta)
        if reduction == "seed000" and getattr(attack, "objective", None) == "ig_sum_norm":
            raise ValueError("reduction='seed000' weights R by beta / B, but this attack maximises CE + beta * R without "
                             "the 1/B: use method/attack=int_ig_adv_pgd with method.attack.regulariser=ig and "
                             "method.attack.lam=${..beta} (as experiment=boopathy_mnist_ig_sum_norm does)")
        attack_beta = getattr(attack, "beta", None)
        if attack_beta is not None and getattr(attack, "objective", None) == "ig_sum_norm" and attack_beta != beta:
            raise ValueError(f"the attack maximises CE + {attack_beta} * R but the method's beta is {beta}: "
                             f"IG-SUM-NORM uses one beta for both (set method.attack.beta: ${{..beta}})")

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x_adv = self.adversarial(x, y)
        if self.beta == 0.0:
            logits = self.model(x_adv)
            return self.combine(F.cross_entropy(logits, y, reduction="none"), None), logits
        reg, logits = self.regulariser(x, x_adv, y)
        return self.combine(F.cross_entropy(logits, y, reduction="none"), reg), logits
