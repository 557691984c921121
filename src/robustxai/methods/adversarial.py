"""Shared base of methods trained on attacked inputs: the injected attack and its budget schedule."""

from __future__ import annotations

from torch import Tensor, nn

from robustxai.attacks.base import Attack
from robustxai.methods.base import ClassifierModule, OptimizerFactory, SchedulerFactory
from robustxai.utils.validation import check_range


def budget_fraction(step: int, warmup_steps: int, ramp_steps: int) -> float:
    """0 for the first ``warmup_steps`` optimiser steps, then linear up to 1 over ``ramp_steps``."""
    if step < warmup_steps:
        return 0.0
    if ramp_steps == 0:
        return 1.0
    return min(1.0, (step - warmup_steps + 1) / ramp_steps)


class AdversarialMethod(ClassifierModule):
    """A method whose loss uses ``attack(model, x, y)``; the budget may be ramped up over training.

    With ``eps_warmup_steps``/``eps_ramp_steps`` (optimiser steps, as in seed 000's schedules) the
    attack's ``eps`` and ``step_size`` are scaled by :func:`budget_fraction`; at 0 the clean input is used.
    ``eps_ramp_step_size=False`` ramps ``eps`` only and keeps the full step size, as seed 000 does
    (its rule "0 while step <= W, then eps * (step - W) / R" is ``eps_warmup_steps = W + 1``, ``eps_ramp_steps = R``).
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, attack: Attack,
                 scheduler: SchedulerFactory | None = None, scheduler_interval: str = "epoch",
                 eps_warmup_steps: int = 0, eps_ramp_steps: int = 0, eps_ramp_step_size: bool = True) -> None:
        super().__init__(model, optimizer, scheduler, scheduler_interval)
        check_range("eps_warmup_steps", eps_warmup_steps, low=0)
        check_range("eps_ramp_steps", eps_ramp_steps, low=0)
        if not eps_ramp_step_size and not hasattr(attack, "step_size"):
            raise ValueError(f"eps_ramp_step_size=false keeps the attack's step_size fixed, but {type(attack).__name__} "
                             f"has no step_size: use eps_ramp_step_size=true")
        self.attack = attack
        self.eps_warmup_steps, self.eps_ramp_steps = eps_warmup_steps, eps_ramp_steps
        self.eps_ramp_step_size = bool(eps_ramp_step_size)

    def adversarial(self, x: Tensor, y: Tensor) -> Tensor:
        """The attacked batch under the current budget."""
        fraction = budget_fraction(self.global_step, self.eps_warmup_steps, self.eps_ramp_steps)
        if fraction == 0.0:
            return x
        attack = self.attack if fraction == 1.0 else self.attack.rescaled(fraction)
        if not self.eps_ramp_step_size and attack is not self.attack:
            attack.step_size = self.attack.step_size  # a copy: eps ramps, the step stays (seed 000)
        return attack(self.model, x, y)
