"""Interpretability-aware training of Boopathy et al. 2020 (seed 000): the Int family, one class with options.

    loss = CE(z(x) or z(x'), y) + lam * mean_b D(x, x')

The family differs only in (``ce_on``: clean or adversarial CE) x (``discrepancy``: D_int, D_one or the
loss-IG R_IG2) x (the injected inner attack, :mod:`robustxai.attacks.cam_discrepancy` or plain PGD):

| method | ce_on | discrepancy | inner objective (method/attack) |
|---|---|---|---|
| int | clean | int | D_int (int_pgd) |
| int_one | clean | one | D_one (int_one_pgd) |
| int_adv | adversarial | int | CE(x') + lam D_int (int_adv_pgd) |
| int2 | clean | int | CE(x') (pgd) |
| int2_adv | adversarial | int | CE(x') (pgd) |
| int_ig | clean | ig2 | R_IG2 (int_ig_pgd) |
| int_ig_adv | adversarial | ig2 | CE(x') + R_IG2 (int_ig_adv_pgd) |

Gradients flow through the clean and the perturbed maps and through q(x') (spec §7.3); x' is a constant.
For ``ig2`` the seed's regulariser is (lam / B) mean_b S_b (its IG of the batch-mean CE, spec §7.4).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.attacks.base import Attack
from robustxai.attacks.cam_discrepancy import cam_discrepancy, cam_pair, loss_ig_discrepancy
from robustxai.attributions.cam import require_method
from robustxai.attributions.path_loss import path_fractions
from robustxai.methods.adversarial import AdversarialMethod
from robustxai.methods.base import OptimizerFactory, SchedulerFactory
from robustxai.utils.validation import check_choice, check_range

CEOn = Literal["clean", "adversarial"]
Discrepancy = Literal["int", "one", "ig2"]


class InterpretabilityTraining(AdversarialMethod):
    """Minimise ``CE(x or x') + lam * mean_b D(x, x')`` with x' from the injected attack (spec §1.3).

    ``lam = 0`` is natural training (``ce_on="clean"``: no attack runs) or PGD adversarial training
    (``ce_on="adversarial"``), exactly. ``train/acc`` is measured on the inputs of the CE term.
    ``ig_steps``/``max_batch`` matter only for ``discrepancy="ig2"`` (the seed's 5 right-Riemann points).
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, attack: Attack, lam: float = 0.01,
                 ce_on: CEOn = "clean", discrepancy: Discrepancy = "int", ig_steps: int = 5,
                 max_batch: int | None = None, scheduler: SchedulerFactory | None = None,
                 scheduler_interval: str = "epoch", eps_warmup_steps: int = 0, eps_ramp_steps: int = 0,
                 eps_ramp_step_size: bool = True) -> None:
        super().__init__(model, optimizer, attack, scheduler, scheduler_interval, eps_warmup_steps, eps_ramp_steps,
                         eps_ramp_step_size)
        check_range("lam", lam, low=0.0)
        check_choice("ce_on", ce_on, ("clean", "adversarial"))
        check_choice("discrepancy", discrepancy, ("int", "one", "ig2"))
        path_fractions(ig_steps)  # ValueError unless ig_steps is an integer >= 1
        if max_batch is not None:
            check_range("max_batch", max_batch, low=1)
        attack_lam = getattr(attack, "lam", None)
        if attack_lam is not None and getattr(attack, "ce_weight", 0.0) > 0 and attack_lam != lam:
            raise ValueError(f"the attack maximises CE + {attack_lam} * D but the method's lam is {lam}: the seed uses "
                             f"one lam for both (set method.attack.lam: ${{..lam}})")
        self.lam, self.ce_on, self.discrepancy = float(lam), ce_on, discrepancy
        self.ig_steps, self.max_batch = int(ig_steps), max_batch

    def on_fit_start(self) -> None:
        """Refuse, before the first step, a model without ``cam()`` for the CAM discrepancies (checked here, not
        at construction, so ``method=int`` composes with any model for config checks)."""
        if self.discrepancy != "ig2":
            require_method(self.model, "cam", "discrepancy='ig2' (the loss-IG), or a GAP model (model=boopathy_small)")

    def regulariser(self, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Per-example D (B,) with its graph, the logits at x' and at x (None when not computed)."""
        if self.discrepancy == "ig2":
            s, logits_adv = loss_ig_discrepancy(self.model, x, x_adv, y, "ig2", self.ig_steps, self.max_batch)
            return s / x.shape[0], logits_adv, None  # the seed's 1/B: IG of the batch-mean CE
        cam_clean, cam_adv = cam_pair(self.model, x, x_adv)
        d, logits_adv = cam_discrepancy(cam_clean, cam_adv, y, self.discrepancy)
        return d, logits_adv, cam_clean.mean((2, 3))

    def training_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.lam == 0.0 and self.ce_on == "clean":
            logits = self.model(x)
            return F.cross_entropy(logits, y), logits
        x_adv = self.adversarial(x, y)
        if self.lam == 0.0 or x_adv is x:  # lam = 0 (PGD-AT), or the eps warm-up: D(x, x) = 0
            logits = self.model(x_adv)
            return F.cross_entropy(logits, y), logits
        reg, logits_adv, logits_clean = self.regulariser(x, x_adv, y)
        if self.ce_on == "clean":
            logits = self.model(x) if logits_clean is None else logits_clean
        else:
            logits = logits_adv
        ce = F.cross_entropy(logits, y)
        if self._trainer is not None:  # also usable outside a Trainer (tests, benchmarks)
            self.log("train/ce", ce.detach())
            self.log("train/discrepancy", reg.detach().mean())
        return ce + self.lam * reg.mean(), logits


__all__ = ["InterpretabilityTraining"]
