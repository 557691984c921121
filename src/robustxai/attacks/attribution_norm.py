"""The inner maximisation of IG-NORM / IG-SUM-NORM: L-inf PGD on the loss-IG norm (RAR, Chen et al. 2019)."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from robustxai.attacks.base import ModelMode
from robustxai.utils.validation import check_choice, check_range
from robustxai.attacks.pgd import PGD
from robustxai.attributions.path_loss import loss_path_ig, path_fractions

Objective = Literal["ig_norm", "ig_sum_norm"]


class AttributionNormPGD(PGD):
    """L-inf PGD that maximises ``R_approx(x, x')`` (``ig_norm``) or ``CE(x') + beta R_approx(x, x')`` (``ig_sum_norm``).

    ``R_approx`` is the L1 norm of the loss-IG along x -> x' with ``ig_steps / approx_factor`` right
    Riemann points (:func:`~robustxai.attributions.path_loss.loss_path_ig`); its gradient w.r.t. x' is
    a gradient of a gradient. Steps are ``step_size * sign(grad)`` of the batch sum (so per example),
    then projection onto the eps-ball and the pixel box; the last iterate is returned, as in the seed.
    The random start is mandatory for ``ig_norm``: at x' = x the IG is 0, the gradient of |.| at 0 is
    0, so sign steps would never leave x. Unlike the seed, the random start is clipped to the box.
    With ``beta = 0`` the ``ig_sum_norm`` objective is plain CE and no IG is computed (it is then
    exactly :class:`~robustxai.attacks.pgd.PGD` with the same random start).
    """

    def __init__(
        self,
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        objective: Objective = "ig_norm",
        beta: float = 1.0,
        ig_steps: int = 50,
        approx_factor: int = 5,
        random_start: bool = True,
        max_batch: int | None = None,
        box: tuple[float, float] = (0.0, 1.0),
        model_mode: ModelMode = "eval",
    ) -> None:
        super().__init__(norm="linf", eps=eps, step_size=step_size, steps=steps, random_start=random_start,
                         restarts=1, loss="ce", track_best=False, box=box, model_mode=model_mode)
        check_choice("objective", objective, ("ig_norm", "ig_sum_norm"))
        check_range("beta", beta, low=0.0)
        path_fractions(ig_steps, approx_factor)  # ValueError unless approx_factor divides ig_steps
        if objective == "ig_norm" and not random_start:
            raise ValueError("random_start must be true for objective='ig_norm': at x' = x the loss-IG is 0 and the "
                             "gradient of its L1 norm is 0, so sign steps would never move away from x")
        if max_batch is not None:
            check_range("max_batch", max_batch, low=1)
        self.objective: Objective = objective
        self.beta = float(beta)
        self.ig_steps = int(ig_steps)
        self.approx_factor = int(approx_factor)
        self.max_batch = max_batch

    def attack_objective(self, model: nn.Module, x: Tensor, x_adv: Tensor, targets: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Per-example ``R_approx(x, x')`` (ig_norm) or ``CE(x') + beta R_approx(x, x')`` (ig_sum_norm)."""
        if self.objective == "ig_sum_norm" and self.beta == 0.0:
            logits = model(x_adv)
            return F.cross_entropy(logits, targets, reduction="none"), logits
        path = loss_path_ig(model, x, x_adv, targets, steps=self.ig_steps, every=self.approx_factor,
                            reduction="none", create_graph=True, max_batch=self.max_batch)
        if self.objective == "ig_norm":
            return path.norm
        return F.cross_entropy(path.end_logits, targets, reduction="none") + self.beta * path.norm, path.end_logits

    def batch_objective(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> Tensor:
        """The batch sum of the maximised objective at ``x_adv`` (differentiable w.r.t. ``x_adv``)."""
        value = self.attack_objective(model, x, x_adv, y)
        return (value[0] if isinstance(value, tuple) else value).sum()


__all__ = ["AttributionNormPGD"]
