"""Projected gradient descent (Madry et al.) under an L-inf or L2 budget, and FGSM as its one-step case."""

from __future__ import annotations

import copy
from typing import Literal, Union

import torch
from torch import Tensor, nn

from robustxai.attacks.base import TARGET_CLASSES, Attack, AttackResult, ModelMode, TargetClass, choose_targets
from robustxai.attacks.losses import LOSSES
from robustxai.utils.validation import check_choice, check_range

Norm = Literal["linf", "l2"]
Objective = Union[Tensor, tuple[Tensor, Tensor]]
_DIV_EPS = 1e-10  # guards the per-example L2 normalisation, as torchattacks' PGDL2 does
_KIM_EPS = 1e-8  # the constant of Kim et al.'s L2 normalisation and projection (update="kim")
Update = Literal["madry", "kim"]


def _per_example_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


class PGD(Attack):
    """Maximise a per-example objective inside ``{x' : ||x' - x|| <= eps} ∩ box`` with ``steps`` projected steps.

    L-inf steps move by ``step_size * sign(grad)``; L2 steps by ``step_size`` along the normalised
    gradient. ``restarts`` repeats the attack from fresh random starts and keeps, per example, the
    strongest result; ``track_best`` keeps the strongest iterate of each run instead of the last.
    "Strongest" means successful first (misclassified; the target class for a targeted attack), then
    the highest objective. The objective is :meth:`attack_objective`, ``loss`` by default (``"ce"``, ``"cw"``,
    or ``"kl"``: TRADES' KL(p(x) || p(x')) from the clean prediction; ``"cw_kim"``: Kim et al.'s zero-masked,
    capped CW training loss); ``targeted=True`` descends the
    loss of a target class chosen by ``target_class`` (see :func:`~robustxai.attacks.base.choose_targets`).
    Subclasses change what is maximised by overriding :meth:`attack_objective` (and :meth:`targets`), never the loop.

    ``update="kim"`` runs Kim et al.'s L2 arithmetic (seed 002, spec section 2): ``g / (||g|| + 1e-8)``
    steps, the projection ``delta * min(eps, ||delta||) / (||delta|| + 1e-8)`` then the box clip, and a
    random start on the eps-sphere. Its L-inf update (sign step, clip to the eps-box, then to the box)
    is the default's.
    """

    def __init__(
        self,
        norm: Norm = "linf",
        eps: float = 0.3,
        step_size: float = 0.01,
        steps: int = 40,
        random_start: bool = True,
        restarts: int = 1,
        loss: Literal["ce", "cw", "kl", "cw_kim"] = "ce",
        track_best: bool = False,
        targeted: bool = False,
        target_class: TargetClass = "random",
        box: tuple[float, float] = (0.0, 1.0),
        model_mode: ModelMode = "eval",
        update: Update = "madry",
    ) -> None:
        super().__init__(box=box, model_mode=model_mode)
        check_choice("norm", norm, ("linf", "l2"))
        check_range("eps", eps, low=0.0)
        check_range("step_size", step_size, low=0.0, low_open=True)
        check_range("steps", steps, low=1)
        check_range("restarts", restarts, low=1)
        check_choice("loss", loss, tuple(LOSSES))
        check_choice("target_class", target_class, TARGET_CLASSES)
        check_choice("update", update, ("madry", "kim"))
        if restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start=True (otherwise every restart is identical)")
        if targeted and loss == "kl":
            raise ValueError("loss='kl' (TRADES) has no target class: use targeted=false, or loss='ce'/'cw'")
        if targeted and loss == "cw_kim":
            raise ValueError("loss='cw_kim' is Kim et al.'s untargeted training loss: use targeted=false, or loss='cw'")
        self.norm: Norm = norm
        self.eps = float(eps)
        self.step_size = float(step_size)
        self.steps = int(steps)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.loss = loss
        self.update: Update = update
        self.track_best = bool(track_best)
        self.targeted = bool(targeted)
        self.target_class: TargetClass = target_class

    def rescaled(self, fraction: float) -> "PGD":
        """A copy with ``eps`` and ``step_size`` multiplied by ``fraction`` (budget schedules)."""
        check_range("fraction", fraction, low=0.0, low_open=True)
        clone = copy.copy(self)
        clone.eps, clone.step_size = self.eps * fraction, self.step_size * fraction
        return clone

    # -- what a subclass may override ---------------------------------------------------------
    def targets(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """What the objective compares with (computed once per batch): the labels, the target classes of a
        targeted attack, or the clean softmax for ``loss="kl"``."""
        if self.loss == "kl":
            with torch.no_grad():
                return torch.softmax(model(x), dim=1)
        if self.targeted:
            with torch.no_grad():
                return choose_targets(model(x), y, self.target_class)
        return y

    def attack_objective(self, model: nn.Module, x: Tensor, x_adv: Tensor, targets: Tensor) -> Objective:
        """Per-example quantity to *increase* at ``x_adv`` (differentiable w.r.t. it), or ``(value, logits)``
        when the logits at ``x_adv`` come for free (best-iterate tracking then needs no extra pass)."""
        logits = model(x_adv)
        loss = LOSSES[self.loss](logits, targets)
        return (-loss if self.targeted else loss), logits

    def _random_delta(self, x: Tensor) -> Tensor:
        if self.norm == "linf":
            return torch.empty_like(x).uniform_(-self.eps, self.eps)
        direction = torch.randn_like(x)
        if self.update == "kim":  # the seed: eps along a normalised Gaussian direction (then projected)
            return direction / (_per_example_norm(direction) + _KIM_EPS) * self.eps
        radius = torch.rand(x.shape[0], device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return direction / (_per_example_norm(direction) + _DIV_EPS) * radius * self.eps

    # -- the algorithm ------------------------------------------------------------------------
    def _project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        delta = x_adv - x
        if self.norm == "linf":
            delta = torch.clamp(delta, -self.eps, self.eps)
        elif self.update == "kim":
            norms = _per_example_norm(delta)
            delta = delta / (norms + _KIM_EPS) * torch.clamp(norms, max=self.eps)
        else:
            norms = _per_example_norm(delta).clamp_min(1e-12)  # a zero delta stays zero (no 0/0)
            delta = delta * torch.clamp(self.eps / norms, max=1.0)
        return torch.clamp(x + delta, *self.box)

    def _step(self, x_adv: Tensor, grad: Tensor) -> Tensor:
        if self.norm == "linf":
            return x_adv + self.step_size * grad.sign()
        guard = _KIM_EPS if self.update == "kim" else _DIV_EPS
        return x_adv + self.step_size * grad / (_per_example_norm(grad) + guard)

    def _success(self, logits: Tensor, y: Tensor, targets: Tensor) -> Tensor:
        """Per example: the target class reached (targeted), else the label ``y`` lost."""
        pred = logits.argmax(dim=1)
        return pred == targets if self.targeted else pred != y

    def _evaluate(self, model: nn.Module, x: Tensor, x_adv: Tensor, targets: Tensor) -> tuple[Tensor, Tensor | None]:
        value = self.attack_objective(model, x, x_adv, targets)
        return value if isinstance(value, tuple) else (value, None)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self._attack(model, x, y, judge=self.restarts > 1).x

    def search(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        best = self._attack(model, x, y, judge=True)
        extras = {"target": best.targets} if self.targeted else {}
        return AttackResult(best.x, best.fooled, extras=extras)

    def _attack(self, model: nn.Module, x: Tensor, y: Tensor, judge: bool) -> "_BestIterate":
        targets = self.targets(model, x, y)
        best = None
        for _ in range(self.restarts):
            run = self._run(model, x, y, targets, judge=judge)
            best = run if best is None else _BestIterate.merge(best, run)
        best.targets = targets
        return best

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor, judge: bool) -> "_BestIterate":
        x_adv = self._project(x + self._random_delta(x), x) if self.random_start else x.clone()
        best = _BestIterate.empty(x) if self.track_best else None
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            value, logits = self._evaluate(model, x, x_adv, targets)
            (grad,) = torch.autograd.grad(value.sum(), x_adv)
            x_adv = x_adv.detach()
            if best is not None:
                if logits is None:
                    with torch.no_grad():
                        logits = model(x_adv)
                best.update(x_adv, self._success(logits.detach(), y, targets), value.detach())
            x_adv = self._project(self._step(x_adv, grad), x)
        if best is None and not judge:
            return _BestIterate(x_adv, None, None)
        with torch.no_grad():
            value, logits = self._evaluate(model, x, x_adv, targets)
            if logits is None:
                logits = model(x_adv)
        if best is None:
            best = _BestIterate.empty(x)
        best.update(x_adv, self._success(logits, y, targets), value)
        return best


class _BestIterate:
    """Per-example strongest iterate so far: misclassified beats classified, then higher loss wins."""

    def __init__(self, x: Tensor, fooled: Tensor | None, loss: Tensor | None) -> None:
        self.x, self.fooled, self.loss = x, fooled, loss
        self.targets: Tensor | None = None

    @classmethod
    def empty(cls, x: Tensor) -> "_BestIterate":
        n = x.shape[0]
        return cls(x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device),
                   torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype))

    def update(self, x: Tensor, fooled: Tensor, loss: Tensor) -> None:
        better = (fooled & ~self.fooled) | ((fooled == self.fooled) & (loss > self.loss))
        self.x = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x, self.x)
        self.fooled = self.fooled | fooled
        self.loss = torch.where(better, loss, self.loss)

    @staticmethod
    def merge(a: "_BestIterate", b: "_BestIterate") -> "_BestIterate":
        better = (b.fooled & ~a.fooled) | ((b.fooled == a.fooled) & (b.loss > a.loss))
        mask = better.view(-1, *([1] * (a.x.dim() - 1)))
        return _BestIterate(torch.where(mask, b.x, a.x), a.fooled | b.fooled, torch.where(better, b.loss, a.loss))


class FGSM(PGD):
    """Fast gradient sign method: one full-size step from the clean point (PGD with ``steps=1``)."""

    def __init__(self, norm: Norm = "linf", eps: float = 0.3, loss: Literal["ce", "cw"] = "ce",
                 box: tuple[float, float] = (0.0, 1.0), model_mode: ModelMode = "eval") -> None:
        check_range("eps", eps, low=0.0, low_open=True)
        super().__init__(norm=norm, eps=eps, step_size=eps, steps=1, random_start=False, loss=loss,
                         box=box, model_mode=model_mode)
