"""Woods et al. (2019) training: optional RMS adversarial examples plus the Lipschitz "robust additions".

One method covers the seed's four networks (spec section 2): ``standard`` (neither), ``adv-train``
(``attack``), ``robust`` (``lipschitz``) and ``all`` (both, the attack with half-and-half batches).
The half-Huber ReLU belongs to the model config (``model.activation=half_huber``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from robustxai.attacks.base import Attack
from robustxai.utils.validation import check_range
from robustxai.methods.base import ClassifierModule, OptimizerFactory, SchedulerFactory
from robustxai.methods.lipschitz import PsiIntegrator, draw_selection, input_gradient_penalty, selected_outputs


class WoodsTraining(ClassifierModule):
    """Minimise CE(f(x'), y) [+ psi * mean(|d s / d x'|^power)], x' = attack(f, x, y) or x.

    ``attack`` (optional): normally :class:`~robustxai.attacks.woods.WoodsAttack` with
    ``model_mode="train"``, as the seed: BN uses batch statistics during the attack and every attack
    forward updates the running statistics. ``lipschitz``: add the input-gradient penalty on one
    output per example (a uniformly random logit, or with probability ``zeta`` the tandem margin),
    computed in train mode with double backprop, weighted by the adaptive psi of
    :class:`~robustxai.methods.lipschitz.PsiIntegrator` (updated before the penalty from the batch CE;
    under DDP from the CE averaged over ranks, i.e. the global batch, as the seed's DataParallel).
    Logs ``train/ce`` and, with the penalty, ``train/psi`` and ``train/penalty`` (unweighted) per step,
    and ``train/ce_epoch``: per-example CE summed over the epoch / examples trained on (the seed's
    printed "Loss", the README's "Final Training Loss").
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, attack: Attack | None = None,
                 lipschitz: bool = False, scheduler: SchedulerFactory | None = None,
                 scheduler_interval: str = "epoch", zeta: float = 0.2, penalty_power: float = 2.0,
                 psi_0: float = 220.0, psi_rate: float = 0.02, ce_target: float = 1.5,
                 eps_better: float = 1.0, eps_worse: float = 0.01) -> None:
        super().__init__(model, optimizer, scheduler, scheduler_interval)
        check_range("zeta", zeta, low=0.0, high=1.0)
        check_range("penalty_power", penalty_power, low=0.0, low_open=True)
        self.attack = attack
        self.lipschitz = bool(lipschitz)
        self.zeta = float(zeta)
        self.penalty_power = float(penalty_power)
        self.psi = PsiIntegrator(psi_0=psi_0, rate=psi_rate, ce_target=ce_target,
                                 eps_better=eps_better, eps_worse=eps_worse)
        self.train_ce_epoch = MeanMetric()

    def _global_mean(self, value: Tensor) -> Tensor:
        """The mean of ``value`` over DDP ranks (every rank has an equal-size batch), else ``value``.

        Lightning's DDP reduce works in place, so it gets a copy: ``value`` (a view of the loss) is kept.
        """
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            return trainer.strategy.reduce(value.clone(), reduce_op="mean")
        return value

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.attack is not None:
            x = self.attack(self.model, x, y)
        if self.lipschitz:
            x = x.detach().requires_grad_(True)
        logits = self.model(x)
        ce_each = F.cross_entropy(logits, y, reduction="none")
        ce = ce_each.mean()
        self.train_ce_epoch.update(ce_each.detach())
        self.log("train/ce", ce.detach())
        if not self.lipschitz:
            return ce, logits
        psi = self.psi.update(self._global_mean(ce.detach()))
        tandem, fair_class = draw_selection(x.shape[0], logits.shape[1], self.zeta, device=x.device)
        outputs = selected_outputs(logits, y, tandem, fair_class)
        penalty = input_gradient_penalty(outputs, x, self.penalty_power, create_graph=True)
        self.log("train/psi", psi.float())
        self.log("train/penalty", penalty.detach())
        return ce + psi.to(ce.dtype) * penalty, logits

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log("train/ce_epoch", self.train_ce_epoch, prog_bar=False)


__all__ = ["WoodsTraining"]
